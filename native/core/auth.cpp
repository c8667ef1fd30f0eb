#include "auth.hpp"

#include <cstring>

namespace nexres::auth {

namespace {
constexpr char transcript_label[] = "nexres-rpc/1 handshake";
constexpr char keys_label[] = "nexres-rpc/1 session keys";

// resize + memcpy rather than vector::insert of a range (GCC 12 reports a
// false -Wstringop-overflow on the latter at -O3).
void append(std::vector<std::uint8_t>& v, const void* p, std::size_t n) {
  if (n == 0) return;
  const std::size_t at = v.size();
  v.resize(at + n);
  std::memcpy(v.data() + at, p, n);
}

void put_u32(std::vector<std::uint8_t>& v, std::uint32_t x) {
  std::uint8_t b[4];
  store_u32(b, x);
  append(v, b, 4);
}
void put_u64(std::vector<std::uint8_t>& v, std::uint64_t x) {
  std::uint8_t b[8];
  store_u64(b, x);
  append(v, b, 8);
}
}  // namespace

std::vector<std::uint8_t> transcript(const transcript_input& in) {
  std::vector<std::uint8_t> t;
  t.reserve(sizeof transcript_label + 2 + 1 + in.cluster_id.size() + 24 + 4 * 32);
  append(t, transcript_label, sizeof transcript_label - 1);
  std::uint8_t v[2];
  store_u16(v, protocol_version);
  append(t, v, 2);
  t.push_back(static_cast<std::uint8_t>(in.cluster_id.size()));
  append(t, in.cluster_id.data(), in.cluster_id.size());
  put_u32(t, in.initiator);
  put_u32(t, in.responder);
  put_u64(t, in.initiator_incarnation);
  put_u64(t, in.responder_incarnation);
  if (in.replica_link) {
    // Before the nonces and keys, which derive() finds at the end.
    t.push_back(static_cast<std::uint8_t>(in.responder_cluster_id.size()));
    append(t, in.responder_cluster_id.data(), in.responder_cluster_id.size());
    put_u32(t, in.initiator_epoch);
    put_u32(t, in.responder_epoch);
  }
  append(t, in.nonce_i, nonce_bytes);
  append(t, in.eph_i, eph_bytes);
  append(t, in.nonce_r, nonce_bytes);
  append(t, in.eph_r, eph_bytes);
  return t;
}

bool sign(const crypto::ed25519_signer& key, char role, const std::vector<std::uint8_t>& t,
          std::uint8_t sig[sig_bytes]) {
  std::vector<std::uint8_t> m;
  m.reserve(t.size() + 1);
  m.push_back(static_cast<std::uint8_t>(role));
  append(m, t.data(), t.size());
  return key.sign(crypto::byte_view(m.data(), m.size()), sig);
}

bool verify(const crypto::ed25519_verifier& key, char role, const std::vector<std::uint8_t>& t,
            const std::uint8_t sig[sig_bytes]) {
  std::vector<std::uint8_t> m;
  m.reserve(t.size() + 1);
  m.push_back(static_cast<std::uint8_t>(role));
  append(m, t.data(), t.size());
  return key.verify(crypto::byte_view(m.data(), m.size()), sig);
}

bool derive(const crypto::x25519_keypair& mine, const std::uint8_t peer_eph[eph_bytes],
            const std::vector<std::uint8_t>& t, session_keys& out) {
  crypto::key32 shared;
  if (!mine.derive(peer_eph, shared)) return false;
  // salt: both nonces (fresh per connection); info: label and transcript.
  const std::uint8_t* nonce_i = t.data() + (t.size() - 4 * 32);
  const std::uint8_t* nonce_r = t.data() + (t.size() - 2 * 32);
  std::uint8_t salt[2 * nonce_bytes];
  std::memcpy(salt, nonce_i, nonce_bytes);
  std::memcpy(salt + nonce_bytes, nonce_r, nonce_bytes);
  std::vector<std::uint8_t> info;
  append(info, keys_label, sizeof keys_label - 1);
  append(info, t.data(), t.size());
  std::uint8_t okm[64];
  const bool ok = crypto::hkdf_sha256(crypto::byte_view(shared.bytes.data(), 32), crypto::byte_view(salt, sizeof salt),
                                      crypto::byte_view(info.data(), info.size()), okm, sizeof okm);
  if (ok) {
    std::memcpy(out.initiator_to_responder.bytes.data(), okm, 32);
    std::memcpy(out.responder_to_initiator.bytes.data(), okm + 32, 32);
  }
  crypto::cleanse(okm, sizeof okm);
  return ok;
}

sealer::sealer(const crypto::key32& key, bool encrypt, rekey_policy rekey)
    : key_(key), mac_(key), rekey_(rekey) {
  if (encrypt) aead_ = std::make_unique<crypto::batch_aead>(key, true);
}

bool sealer::take_seq(std::uint64_t& seq) {
  if (seq_ == UINT64_MAX) return false;  // never reached: 2^64 batches
  seq = seq_++;
  return true;
}

bool next_key(crypto::key32& key) {
  static constexpr char label[] = "nexres-rpc/1 rekey";
  crypto::key32 next;
  if (!crypto::hkdf_sha256(crypto::byte_view(key.data(), 32), crypto::byte_view(), crypto::byte_view(label, sizeof label - 1),
                           next.data(), 32))
    return false;
  key = next;  // `next` is cleansed as it goes
  return true;
}

// A batch is out: rekey at the boundary once the policy says so.
bool sealer::after_batch(std::size_t bytes) {
  ++batches_since_;
  bytes_since_ += bytes;
  if (batches_since_ < rekey_.batches && bytes_since_ < rekey_.bytes) return true;
  if (!next_key(key_)) return false;
  aead_ = std::make_unique<crypto::batch_aead>(key_, true);
  mac_ = crypto::frame_mac(key_);
  ++generation_;
  batches_since_ = bytes_since_ = 0;
  return true;
}

bool sealer::seal(const crypto::byte_view* bufs, std::size_t count, std::uint32_t sender,
                  std::uint8_t out[seal_frame_bytes]) {
  std::uint64_t seq = 0;
  if (!take_seq(seq)) return false;
  frame_header h{};
  h.length = static_cast<std::uint32_t>(tag_bytes);
  h.sender = sender;
  h.kind = frame_kind::seal;
  h.msg_id = seq;
  if (!mac_.tag(seq, bufs, count, out + frame_header_bytes)) return false;
  encode_header(out, h);
  return true;
}

bool sealer::encrypt(const crypto::byte_view* bufs, std::size_t count, std::uint32_t sender, std::uint8_t* out) {
  std::uint64_t seq = 0;
  if (!aead_ || !take_seq(seq) || !aead_->begin(seq)) return false;
  std::size_t payload = 0;
  for (std::size_t k = 0; k < count; ++k) payload += bufs[k].size;
  frame_header sh{};
  sh.length = static_cast<std::uint32_t>(payload + seal_frame_bytes);
  sh.sender = sender;
  sh.kind = frame_kind::sealed;
  sh.msg_id = seq;
  std::uint8_t clear[frame_header_bytes];
  encode_header(clear, sh);
  if (payload > UINT32_MAX - seal_frame_bytes || !aead_->aad(clear, frame_header_bytes)) return false;
  // Written after the buffers are read: out's header may overlap nothing
  // but out + frame_header_bytes may be the buffer itself (in place).
  std::size_t at = frame_header_bytes;
  for (std::size_t k = 0; k < count; ++k) {
    if (!aead_->update(bufs[k].data, out + at, bufs[k].size)) return false;
    at += bufs[k].size;
  }
  std::memcpy(out, clear, frame_header_bytes);
  frame_header h{};
  h.length = static_cast<std::uint32_t>(tag_bytes);
  h.sender = sender;
  h.kind = frame_kind::seal;
  h.msg_id = seq;
  std::uint8_t head[frame_header_bytes];
  encode_header(head, h);
  if (!aead_->update(head, out + at, frame_header_bytes) || !aead_->finish(out + at + frame_header_bytes)) return false;
  return after_batch(payload + frame_header_bytes);
}

opener::opener(const crypto::key32& key, bool decrypt, rekey_policy rekey) : key_(key), mac_(key), rekey_(rekey) {
  mac_.begin(0);
  if (decrypt) {
    aead_ = std::make_unique<crypto::batch_aead>(key, false);
    aead_->begin(0);
  }
}

// A frame sealed outside the stream of batches (a REJECT during the
// handshake) is MAC'd in either mode.
bool opener::update(const std::uint8_t* data, std::size_t size) { return mac_.update(data, size); }

bool opener::seal_header_ok(const frame_header& h) const {
  return h.kind == frame_kind::seal && h.length == tag_bytes && h.msg_id == seq_ && h.flags == 0 && h.reserved == 0 &&
         h.route == 0;
}

bool opener::open(const frame_header& h, const std::uint8_t tag[tag_bytes]) {
  if (!seal_header_ok(h) || batch_bytes_ != 0) return false;
  const bool ok = mac_.finish_verify(tag);
  ++seq_;
  mac_.begin(seq_);
  if (aead_) aead_->begin(seq_);
  return ok;
}

bool opener::begin_sealed(const frame_header& h, const std::uint8_t raw[frame_header_bytes]) {
  return aead_ != nullptr && h.kind == frame_kind::sealed && h.msg_id == seq_ && h.flags == 0 && h.reserved == 0 &&
         h.route == 0 && batch_bytes_ == 0 && h.length >= seal_frame_bytes && aead_->aad(raw, frame_header_bytes);
}

bool opener::decrypt(std::uint8_t* data, std::size_t n) {
  if (!aead_) return false;
  batch_bytes_ += n;
  return aead_->update(data, data, n);
}

bool opener::after_batch() {
  ++batches_since_;
  bytes_since_ += batch_bytes_;
  batch_bytes_ = 0;
  if (batches_since_ >= rekey_.batches || bytes_since_ >= rekey_.bytes) {
    if (!next_key(key_)) return false;
    aead_ = std::make_unique<crypto::batch_aead>(key_, false);
    mac_ = crypto::frame_mac(key_);
    ++generation_;
    batches_since_ = bytes_since_ = 0;
  }
  return mac_.begin(seq_) && aead_->begin(seq_);
}

bool opener::open_sealed(const frame_header& h, const std::uint8_t tag[tag_bytes]) {
  if (!aead_ || !seal_header_ok(h)) return false;
  const bool ok = aead_->finish_verify(tag);
  ++seq_;
  return after_batch() && ok;
}

namespace {
constexpr char signed_label[] = "nexres-rpc/1 signed";

// The signed bytes of a frame, in a per-thread buffer (no allocation once warm).
const std::vector<std::uint8_t>& signed_bytes(const std::string& cluster_id, const std::uint8_t* frame) {
  thread_local std::vector<std::uint8_t> m;
  const frame_header h = decode_header(frame);
  const std::size_t payload = h.length - signed_trailer_bytes;
  m.clear();
  append(m, signed_label, sizeof signed_label - 1);
  m.push_back(static_cast<std::uint8_t>(cluster_id.size()));
  append(m, cluster_id.data(), cluster_id.size());
  append(m, frame + frame_offset::sender, 4);
  append(m, frame + frame_offset::route, 4);
  append(m, frame + frame_offset::msg_id, 8);
  append(m, frame + frame_header_bytes + payload, 8);  // incarnation
  append(m, frame + frame_header_bytes, payload);
  return m;
}
}  // namespace

bool sign_frame(const crypto::ed25519_signer& key, const std::string& cluster_id, std::uint64_t incarnation,
                std::uint8_t* frame) {
  const frame_header h = decode_header(frame);
  if (h.length < signed_trailer_bytes) return false;
  std::uint8_t* trailer = frame + frame_header_bytes + h.length - signed_trailer_bytes;
  store_u64(trailer, incarnation);
  const auto& m = signed_bytes(cluster_id, frame);
  return key.sign(crypto::byte_view(m.data(), m.size()), trailer + 8);
}

bool verify_frame(const crypto::ed25519_verifier& key, const std::string& cluster_id, std::uint64_t incarnation,
                  const std::uint8_t* frame) {
  const frame_header h = decode_header(frame);
  if (h.length < signed_trailer_bytes) return false;
  const std::uint8_t* trailer = frame + frame_header_bytes + h.length - signed_trailer_bytes;
  if (load_u64(trailer) != incarnation) return false;  // another process's message
  const auto& m = signed_bytes(cluster_id, frame);
  return key.verify(crypto::byte_view(m.data(), m.size()), trailer + 8);
}

}  // namespace nexres::auth
