// libFuzzer target over the real inbound replica session in auth mode `mac`
// (PROTOCOL.md §2a; native/core/inbound_session.cpp start_auth, on_auth_frame,
// parse() with SEAL frames and signed DATA frames). One engine lives across
// inputs: replica 1 of a 3-replica cluster ("fuzz-cluster"), auth mac, fixed
// test keys (seeds derived from labels), the small limits of fuzz_net.hpp.
//
// Input: byte 0 selects a mode (value % 3).
//  0 raw:           the rest is written as is on a fresh connection (HELLO,
//                   WELCOME and AUTH parsing on garbage).
//  1 authenticated: the harness runs a real handshake as replica 2 (or 3),
//                   then writes the stream cut into batches, each followed
//                   by a SEAL computed with auth::sealer over exactly its
//                   bytes, or by a corrupted / misnumbered / missing SEAL.
//  2 impostor:      the handshake as replica 3 (or 2) with a wrong AUTH
//                   signature (another key, the wrong role, a stale
//                   transcript), then the same sealed batches.
// Modes 1 and 2, after byte 0:
//   [1] options (opt_* below), [2] batches - 1 (value % 8),
//   then per batch 2 bytes: action (act_* below) and size (frames, or
//   4-byte units with act_raw_split; the last batch takes the rest),
//   then the frame stream.
//
// Invariants checked besides "no crash, no sanitizer report":
//  - WELCOME: only for a HELLO that passes §2/§2a; its fields are right and
//    its signature checks with replica 1's key over "R" ‖ T;
//  - modes 0 and 2 (and mode 1 with a broken AUTH): nothing is ever
//    delivered; after the WELCOME only a BAD_AUTH REJECT sealed with the
//    R->I key (checked where the harness holds the key: modes 1 and 2);
//    mode 1 with an all-zero X_I: no WELCOME, an unsealed BAD_AUTH REJECT;
//  - mode 1: every delivered frame is a whole DATA frame from the proven
//    replica, byte for byte one of the frames of a batch whose SEAL (and all
//    SEALs before it) was correct, in order, ids rising; a signed frame
//    (flags bit 0) is delivered only if its signature checks; everything the
//    engine writes after the WELCOME is ACK/PONG/REJECT frames each followed
//    by a SEAL that opens with the R->I key, the first an ACK or a keepalive
//    PONG (the AUTH checked), a PONG otherwise only for a PING of an
//    authenticated batch, an ACK never above what was delivered;
//  - the engine closes the connection once the input ended; receive memory
//    stays bounded (fuzz_net.hpp check_after_input).
//
// Built a second time as fuzz_replica_session_seal (NEXRES_FUZZ_SEAL=1):
// auth seal (PROTOCOL.md §2b). The harness then encrypts each batch and its
// SEAL header itself (crypto::batch_aead, its own sequence numbers and key
// ratchet, every 3 batches or 4 KiB: the engine's rekey schedule is set to
// the same) after its clear SEALED header, so the engine decrypts in place
// what it parses; the actions change the SEAL header before encryption, the
// tag after it, and a dropped SEAL leaves ciphertext without SEAL header
// and tag. The invariants are
// the same, checked against the plaintext.
#ifndef NEXRES_FUZZ_SEAL
#define NEXRES_FUZZ_SEAL 0
#endif
#include "fuzz_keys.hpp"
#include "fuzz_net.hpp"

#include "auth.hpp"
#include "crypto.hpp"

#include <array>
#include <set>
#include <string>

using namespace nexres;
using namespace nexres_fuzz;

namespace {

constexpr std::uint32_t third_id = 3;
constexpr auth_mode mode = NEXRES_FUZZ_SEAL ? auth_mode::seal : auth_mode::mac;
// auth seal: the engine's and the harness's rekey schedule.
constexpr auth::rekey_policy fuzz_rekey{3, 4096};
constexpr std::size_t cid_len = sizeof("fuzz-cluster") - 1;
constexpr std::size_t hello_bytes = hello_fixed_bytes + cid_len + auth::hello_ext_bytes;
constexpr std::size_t welcome_bytes = hello_fixed_bytes + cid_len + auth::welcome_ext_bytes;

// Options (byte 1).
constexpr std::uint8_t opt_fix_sender = 0x01;   // set every frame's sender to the claimed id
constexpr std::uint8_t opt_sign = 0x02;         // sign DATA frames with flags bit 0 (auth::sign_frame)
constexpr std::uint8_t opt_reuse_inc = 0x04;    // previous input's incarnation (duplicate filter)
constexpr std::uint8_t opt_bad_auth = 0x08;     // mode 1: flip a bit of the AUTH signature
constexpr std::uint8_t opt_zero_eph = 0x10;     // mode 1: all-zero X_I (X25519 yields zero)
constexpr std::uint8_t opt_other_id = 0x20;     // mode 1: be replica 3; mode 2: claim 2
constexpr std::uint8_t opt_fix_ids = 0x40;      // rising msg ids on DATA frames
// Mode 2: bits 6-7 choose the forgery (unknown key, another replica's key,
// the right key with the responder's role, a stale transcript).
// Batch actions (low 3 bits; 0-3: a correct SEAL).
constexpr std::uint8_t act_corrupt_tag = 4, act_wrong_seq = 5, act_no_seal = 6, act_dropped_seal = 7;
constexpr std::uint8_t act_raw_split = 0x08;    // size counts 4-byte units, not frames
constexpr std::uint8_t act_seal_sender = 0x10;  // SEAL names the other replica
constexpr std::uint8_t act_seal_flags = 0x20;   // SEAL with flags != 0

// Keys by replica id 1..3; index 0 is an impostor key nobody configured.
test_keys<4>& keys() { return nexres_fuzz::keys<4>(); }

void configure(engine_options& o) {
  o.replicas.push_back({third_id, "127.0.0.1", unused_port()});
  o.auth = mode;
  o.seal_rekey = fuzz_rekey;
  o.private_seed = keys().seed[self_id];
  o.public_keys.clear();
  o.public_keys.push_back({peer_id, keys().pub[peer_id]});
  o.public_keys.push_back({third_id, keys().pub[third_id]});
}

std::uint64_t engine_incarnation() { return the_engine().options().incarnation; }

bool known_code(std::uint16_t code) {
  return code != 0 && std::strcmp(reject_code_name(static_cast<reject_code>(code)), "UNKNOWN") != 0;
}

// ---- blocking socket helpers for the handshake --------------------------

void send_all(int fd, const std::uint8_t* p, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t k = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
    if (k > 0) {
      done += static_cast<std::size_t>(k);
    } else if (k < 0 && errno == EINTR) {
      continue;
    } else {
      std::fprintf(stderr, "nexres fuzz: the engine closed the connection during the HELLO: %s\n", std::strerror(errno));
      std::abort();
    }
  }
}

// False on EOF, error or timeout.
bool read_exact(int fd, std::uint8_t* p, std::size_t n, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::size_t got = 0;
  while (got < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pf{fd, POLLIN, 0};
    const int pr = ::poll(&pf, 1, static_cast<int>(left.count()));
    if (pr <= 0) continue;  // EINTR or timeout: the loop rechecks the deadline
    const ssize_t k = ::recv(fd, p + got, n - got, 0);
    if (k > 0) got += static_cast<std::size_t>(k);
    else if (k == 0) return false;
    else if (errno != EINTR && errno != EAGAIN) return false;
  }
  return true;
}

// ---- handshake messages --------------------------------------------------

std::vector<std::uint8_t> make_hello(std::uint32_t sender, std::uint64_t incarnation, const std::uint8_t* nonce,
                                     const std::uint8_t* eph) {
  std::vector<std::uint8_t> h(hello_bytes);
  hello_message m{};
  m.type = hello_type::hello;
  m.auth = mode;
  m.sender = sender;
  m.incarnation = incarnation;
  m.version = protocol_version;
  m.cluster_id_length = static_cast<std::uint8_t>(cid_len);
  m.body_length = static_cast<std::uint32_t>(cid_len + auth::hello_ext_bytes);
  encode_hello(h.data(), m);
  std::memcpy(h.data() + hello_fixed_bytes, cluster_id, cid_len);
  std::memcpy(h.data() + hello_fixed_bytes + cid_len, nonce, auth::nonce_bytes);
  std::memcpy(h.data() + hello_fixed_bytes + cid_len + auth::nonce_bytes, eph, auth::eph_bytes);
  return h;
}

// Whether the engine may WELCOME these bytes (PROTOCOL.md §2 and §2a).
bool hello_may_pass(const std::uint8_t* in, std::size_t size) {
  if (size < hello_bytes) return false;
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(in, magic);
  return magic == hello_magic && m.version == protocol_version && m.type == hello_type::hello &&
         m.auth == mode && m.cluster_id_length == cid_len &&
         m.body_length == cid_len + auth::hello_ext_bytes &&
         std::memcmp(in + hello_fixed_bytes, cluster_id, cid_len) == 0 && (m.sender == peer_id || m.sender == third_id);
}

// The transcript T of PROTOCOL.md §2a for a HELLO and a WELCOME.
std::vector<std::uint8_t> transcript_of(const std::uint8_t* hello, const std::uint8_t* welcome) {
  std::uint32_t magic = 0;
  const hello_message hm = decode_hello(hello, magic);
  const hello_message wm = decode_hello(welcome, magic);
  auth::transcript_input ti;
  ti.cluster_id = cluster_id;
  ti.initiator = hm.sender;
  ti.responder = wm.sender;
  ti.initiator_incarnation = hm.incarnation;
  ti.responder_incarnation = wm.incarnation;
  ti.nonce_i = hello + hello_fixed_bytes + cid_len;
  ti.eph_i = ti.nonce_i + auth::nonce_bytes;
  ti.nonce_r = welcome + hello_fixed_bytes + cid_len;
  ti.eph_r = ti.nonce_r + auth::nonce_bytes;
  ti.replica_link = true;
  ti.responder_cluster_id = cluster_id;
  ti.initiator_epoch = hm.epoch;
  ti.responder_epoch = wm.epoch;
  return auth::transcript(ti);
}

// A WELCOME (welcome_bytes at w) answering `hello`: fields and signature.
std::vector<std::uint8_t> check_welcome(const std::uint8_t* hello, const std::uint8_t* w) {
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(w, magic);
  FUZZ_CHECK(magic == hello_magic);
  FUZZ_CHECK(m.type == hello_type::welcome && m.version == protocol_version && m.auth == mode);
  FUZZ_CHECK(m.sender == self_id && m.incarnation == engine_incarnation());
  FUZZ_CHECK(m.cluster_id_length == cid_len && m.body_length == cid_len + auth::welcome_ext_bytes);
  FUZZ_CHECK(w[11] == 0 && load_u32(w + 28) == 0);
  FUZZ_CHECK(std::memcmp(w + hello_fixed_bytes, cluster_id, cid_len) == 0);
  std::vector<std::uint8_t> t = transcript_of(hello, w);
  FUZZ_CHECK(auth::verify(*keys().verifier[self_id], 'R', t,
                          w + hello_fixed_bytes + cid_len + auth::nonce_bytes + auth::eph_bytes));
  return t;
}

// The answer to a HELLO that is not welcomed (no session keys yet): at most
// one unsealed REJECT with a known code (`want` if set), and nothing after it.
void check_unsealed_tail(const std::vector<std::uint8_t>& r, std::size_t p, std::uint16_t want) {
  if (r.size() - p < frame_header_bytes) return;
  const frame_header h = decode_header(r.data() + p);
  FUZZ_CHECK(h.kind == frame_kind::reject);
  FUZZ_CHECK(h.sender == self_id && h.flags == 0 && h.reserved == 0);
  FUZZ_CHECK(h.length >= 2 && h.length <= 2 + 512);
  if (r.size() - p - frame_header_bytes < 2) return;
  const std::uint16_t code = load_u16(r.data() + p + frame_header_bytes);
  FUZZ_CHECK(known_code(code));
  if (want != 0) FUZZ_CHECK(code == want);
  FUZZ_CHECK(r.size() <= p + frame_header_bytes + h.length);  // unsealed, nothing after
}

// What follows the WELCOME when the harness cannot check seals (mode 0: it
// has no ephemeral key for the input's X_I): nothing, or one REJECT with a
// known code (`want` if set) and a SEAL frame after it, then nothing.
void check_sealed_reject_shape(const std::vector<std::uint8_t>& r, std::size_t p, std::uint16_t want) {
  if (r.size() - p < frame_header_bytes) return;
  const frame_header h = decode_header(r.data() + p);
  FUZZ_CHECK(h.kind == frame_kind::reject);
  FUZZ_CHECK(h.sender == self_id && h.flags == 0 && h.reserved == 0);
  FUZZ_CHECK(h.length >= 2 && h.length <= 2 + 512);
  if (r.size() - p - frame_header_bytes < 2) return;
  const std::uint16_t code = load_u16(r.data() + p + frame_header_bytes);
  FUZZ_CHECK(known_code(code));
  if (want != 0) FUZZ_CHECK(code == want);
  const std::size_t s = p + frame_header_bytes + h.length;
  if (r.size() < s + frame_header_bytes) return;
  const frame_header sh = decode_header(r.data() + s);
  FUZZ_CHECK(sh.kind == frame_kind::seal && sh.sender == self_id && sh.length == auth::tag_bytes && sh.msg_id == 0);
  FUZZ_CHECK(r.size() <= s + auth::seal_frame_bytes);  // nothing after
}

// What follows the WELCOME: frames, each sealed on its own with the R->I key
// (PROTOCOL.md §2a). A proven session starts with an ACK or a keepalive PONG
// (the AUTH checked); an unproven one gets only a BAD_AUTH REJECT.
void check_sealed_tail(const std::vector<std::uint8_t>& r, auth::opener& rx, const std::set<std::uint64_t>& pings,
                       std::uint64_t max_ack, bool proven) {
  std::size_t p = 0;
  while (r.size() - p >= frame_header_bytes) {
    const frame_header h = decode_header(r.data() + p);
    FUZZ_CHECK(h.sender == self_id && h.flags == 0 && h.reserved == 0);
    FUZZ_CHECK(h.kind == frame_kind::ack || h.kind == frame_kind::pong || h.kind == frame_kind::reject);
    if (p == 0 && proven) FUZZ_CHECK(h.kind == frame_kind::ack || (h.kind == frame_kind::pong && h.msg_id == 0));
    if (!proven) FUZZ_CHECK(h.kind == frame_kind::reject);
    if (h.kind == frame_kind::reject) FUZZ_CHECK(h.length >= 2 && h.length <= 2 + 512);
    else FUZZ_CHECK(h.length == 0);
    const std::size_t frame = frame_header_bytes + h.length;
    if (r.size() - p < frame + auth::seal_frame_bytes) return;  // cut short (the engine reset the connection)
    const std::uint8_t* s = r.data() + p + frame;
    const frame_header sh = decode_header(s);
    FUZZ_CHECK(sh.kind == frame_kind::seal && sh.sender == self_id);
    FUZZ_CHECK(rx.update(r.data() + p, frame));
    FUZZ_CHECK(rx.open(sh, s + frame_header_bytes));
    if (h.kind == frame_kind::pong) FUZZ_CHECK(h.msg_id == 0 || pings.count(h.msg_id) == 1);
    if (h.kind == frame_kind::ack) FUZZ_CHECK(h.msg_id <= max_ack);
    p += frame + auth::seal_frame_bytes;
    if (h.kind == frame_kind::reject) {
      const std::uint16_t code = load_u16(r.data() + p - auth::seal_frame_bytes - h.length);
      FUZZ_CHECK(known_code(code));
      if (!proven) FUZZ_CHECK(code == static_cast<std::uint16_t>(reject_code::bad_auth));
      FUZZ_CHECK(p == r.size());
      return;
    }
  }
}

// ---- mode 0 ---------------------------------------------------------------

void run_raw(const std::uint8_t* in, std::size_t size) {
  engine& e = the_engine();
  const exchange_result r = exchange(e.local_port(), in, size, [](const delivery&) {
    FUZZ_CHECK(!"a delivery on a connection that never proved an id");
  });
  check_after_input(r);
  std::size_t p = 0;
  if (r.response.size() >= 4 && load_u32(r.response.data()) == hello_magic) {
    FUZZ_CHECK(hello_may_pass(in, size));
    if (r.response.size() < welcome_bytes) return;
    check_welcome(in, r.response.data());
    p = welcome_bytes;
    // Nobody can sign the engine's fresh nonce without a key: BAD_AUTH (sealed:
    // the engine holds the session keys from its WELCOME on) or nothing.
    check_sealed_reject_shape(r.response, p, static_cast<std::uint16_t>(reject_code::bad_auth));
    return;
  }
  check_unsealed_tail(r.response, p, 0);
}

// ---- modes 1 and 2 --------------------------------------------------------

struct span {
  std::size_t off, len;
};

std::uint64_t incarnation_counter = 0x6d616300000000ull;
std::uint64_t last_incarnation = 0;
std::uint64_t id_counter = 0;

void run_handshaken(bool impostor, const std::uint8_t* data, std::size_t size) {
  engine& e = the_engine();
  test_keys<4>& k = keys();
  std::size_t at = 0;
  auto next = [&]() -> std::uint8_t { return at < size ? data[at++] : 0; };
  const std::uint8_t opts = next();
  const std::size_t batches = (next() % 8) + 1;
  std::vector<std::pair<std::uint8_t, std::uint8_t>> desc(batches);
  for (auto& d : desc) {
    d.first = next();
    d.second = next();
  }
  std::vector<std::uint8_t> st(data + std::min(at, size), data + size);

  const std::uint32_t claimed = impostor ? ((opts & opt_other_id) ? peer_id : third_id)
                                         : ((opts & opt_other_id) ? third_id : peer_id);
  const std::uint32_t other = claimed == peer_id ? third_id : peer_id;
  std::uint64_t inc = (opts & opt_reuse_inc) && last_incarnation != 0 ? last_incarnation : ++incarnation_counter;
  last_incarnation = inc;

  // HELLO.
  crypto::x25519_keypair eph = crypto::x25519_keypair::generate();
  std::array<std::uint8_t, auth::nonce_bytes> nonce_i{};
  store_u64(nonce_i.data(), inc);
  store_u64(nonce_i.data() + 8, ++id_counter);
  std::array<std::uint8_t, auth::eph_bytes> x_i = eph.public_key();
  const bool zero_eph = !impostor && (opts & opt_zero_eph);
  if (zero_eph) x_i.fill(0);
  const std::vector<std::uint8_t> hello = make_hello(claimed, inc, nonce_i.data(), x_i.data());

  const int fd = connect_loopback(e.local_port());
  send_all(fd, hello.data(), hello.size());
  std::array<std::uint8_t, welcome_bytes> welcome{};
  if (zero_eph) {
    // No session keys from an all-zero X_I: refused before any WELCOME.
    const exchange_result r = exchange_on(fd, nullptr, 0, [](const delivery&) {
      FUZZ_CHECK(!"a delivery on a connection refused in its handshake");
    });
    check_after_input(r);
    FUZZ_CHECK(r.response.size() >= frame_header_bytes && load_u32(r.response.data()) != hello_magic);
    check_unsealed_tail(r.response, 0, static_cast<std::uint16_t>(reject_code::bad_auth));
    return;
  }
  if (!read_exact(fd, welcome.data(), welcome.size(), 3000)) {
    std::fprintf(stderr, "nexres fuzz: no WELCOME for a valid HELLO from replica %u (first bytes %02x %02x %02x %02x)\n",
                 claimed, welcome[0], welcome[1], welcome[2], welcome[3]);
    std::abort();
  }
  const std::vector<std::uint8_t> t = check_welcome(hello.data(), welcome.data());

  // AUTH.
  std::vector<std::uint8_t> wire(auth::auth_frame_bytes);
  {
    frame_header h{};
    h.length = static_cast<std::uint32_t>(auth::sig_bytes);
    h.sender = claimed;
    h.kind = frame_kind::auth;
    encode_header(wire.data(), h);
    std::uint8_t* sig = wire.data() + frame_header_bytes;
    if (!impostor) {
      FUZZ_CHECK(auth::sign(*k.signer[claimed], 'I', t, sig));
      if (opts & opt_bad_auth) sig[(opts >> 2) % auth::sig_bytes] ^= 0x20;
    } else {
      switch ((opts >> 6) & 3) {
        case 0: FUZZ_CHECK(auth::sign(*k.signer[0], 'I', t, sig)); break;          // unknown key
        case 1: FUZZ_CHECK(auth::sign(*k.signer[other], 'I', t, sig)); break;      // another replica's key
        case 2: FUZZ_CHECK(auth::sign(*k.signer[claimed], 'R', t, sig)); break;    // the right key, wrong role
        default: {                                                                 // a stale transcript
          std::vector<std::uint8_t> stale(welcome.begin(), welcome.end());
          stale[hello_fixed_bytes + cid_len] ^= 1;  // another nonce_R
          FUZZ_CHECK(auth::sign(*k.signer[claimed], 'I', transcript_of(hello.data(), stale.data()), sig));
        }
      }
    }
  }
  const bool proven = !impostor && !(opts & opt_bad_auth);
  auth::session_keys sk;
  FUZZ_CHECK(auth::derive(eph, welcome.data() + hello_fixed_bytes + cid_len + auth::nonce_bytes, t, sk));
  auth::sealer tx(sk.initiator_to_responder);
  auth::opener rx(sk.responder_to_initiator);

  // The stream: optionally fixed up, frame boundaries noted.
  std::vector<std::size_t> bounds{0};
  for (std::size_t pos = 0; st.size() - pos >= frame_header_bytes;) {
    std::uint8_t* f = st.data() + pos;
    if (opts & opt_fix_sender) store_u32(f + 8, claimed);
    if ((opts & opt_fix_ids) && f[12] == static_cast<std::uint8_t>(frame_kind::data)) store_u64(f + 16, ++id_counter);
    const std::uint32_t len = load_u32(f);
    if (len > st.size() - pos - frame_header_bytes) break;
    if ((opts & opt_sign) && f[12] == static_cast<std::uint8_t>(frame_kind::data) && (f[13] & auth::flag_signed) &&
        len >= auth::signed_trailer_bytes)
      FUZZ_CHECK(auth::sign_frame(*k.signer[claimed], cluster_id, inc, f));
    pos += frame_header_bytes + len;
    bounds.push_back(pos);
  }

  // Batches and their SEALs; `good` lists the byte ranges of `wire` the
  // engine may act upon (a correct SEAL, all SEALs before it correct).
  std::vector<span> good;
  bool chain_ok = proven;
  std::size_t tag_from = wire.size();
  std::size_t c = 0;
  // auth seal: what goes on the socket (wire holds the plaintext: the
  // handshake, then each batch's frames and SEAL; cipher the handshake, then
  // each batch's clear SEALED header, its ciphertext and tag), and the
  // I -> R cipher state.
  std::vector<std::uint8_t> cipher(wire);
  crypto::key32 skey = sk.initiator_to_responder;
  std::uint64_t sseq = 0, sbatches = 0, sbytes = 0;
  auto encrypt_to_cipher = [&](std::size_t from, const std::uint8_t* header, std::uint8_t* tag) {
    crypto::batch_aead aead(skey, true);
    FUZZ_CHECK(aead.begin(sseq));
    frame_header bh{};
    bh.kind = frame_kind::sealed;
    bh.sender = claimed;
    bh.msg_id = sseq;
    bh.length = static_cast<std::uint32_t>(wire.size() - from + auth::seal_frame_bytes);
    std::uint8_t clear[frame_header_bytes];
    encode_header(clear, bh);
    FUZZ_CHECK(aead.aad(clear, frame_header_bytes));
    cipher.insert(cipher.end(), clear, clear + frame_header_bytes);
    const std::size_t at = cipher.size();
    cipher.resize(at + wire.size() - from + (header ? frame_header_bytes : 0));
    FUZZ_CHECK(aead.update(wire.data() + from, cipher.data() + at, wire.size() - from));
    if (header) FUZZ_CHECK(aead.update(header, cipher.data() + at + wire.size() - from, frame_header_bytes));
    if (tag) FUZZ_CHECK(aead.finish(tag));
    ++sseq;
    ++sbatches;
    sbytes += wire.size() - from + (header ? frame_header_bytes : 0);
    if (sbatches >= fuzz_rekey.batches || sbytes >= fuzz_rekey.bytes) {
      FUZZ_CHECK(auth::next_key(skey));
      sbatches = sbytes = 0;
    }
  };
  for (std::size_t i = 0; i < batches; ++i) {
    const std::uint8_t action = desc[i].first, sz = desc[i].second;
    std::size_t end = st.size();
    if (i + 1 < batches) {
      if (action & act_raw_split) {
        end = std::min(st.size(), c + 4u * sz);
      } else {
        std::size_t j = static_cast<std::size_t>(std::lower_bound(bounds.begin(), bounds.end(), c) - bounds.begin());
        j = std::min(j + sz, bounds.size() - 1);
        end = std::max(c, bounds[j]);
      }
    }
    wire.insert(wire.end(), st.begin() + static_cast<std::ptrdiff_t>(c), st.begin() + static_cast<std::ptrdiff_t>(end));
    c = end;
    const std::uint8_t a = action & 7;
    if (a == act_no_seal) continue;  // the next SEAL covers these bytes too
    std::uint8_t sf[auth::seal_frame_bytes];
    bool ok = true;
    if (NEXRES_FUZZ_SEAL) {
      // The SEAL header as the actions make it, encrypted after the batch.
      frame_header sh{};
      sh.length = static_cast<std::uint32_t>(auth::tag_bytes);
      sh.sender = (action & act_seal_sender) ? other : claimed;
      sh.kind = frame_kind::seal;
      sh.msg_id = a == act_wrong_seq ? sseq + 1 + sz : sseq;
      if (action & act_seal_flags) sh.flags = 1;
      encode_header(sf, sh);
      encrypt_to_cipher(tag_from, sf, sf + frame_header_bytes);
      if (a == act_dropped_seal) cipher.resize(cipher.size() - frame_header_bytes);  // ciphertext without its SEAL
      ok = a != act_wrong_seq && !(action & (act_seal_sender | act_seal_flags));
    } else {
      const crypto::byte_view v(wire.data() + tag_from, wire.size() - tag_from);
      FUZZ_CHECK(tx.seal(&v, 1, claimed, sf));
      if (a == act_wrong_seq) {
        store_u64(sf + 16, load_u64(sf + 16) + 1 + sz);
        ok = false;
      }
      if (action & act_seal_sender) {
        store_u32(sf + 8, other);
        ok = false;
      }
      if (action & act_seal_flags) {
        sf[13] = 1;
        ok = false;
      }
    }
    if (a == act_corrupt_tag) {
      sf[frame_header_bytes + (sz & 15)] ^= static_cast<std::uint8_t>(1u << (sz >> 5));
      ok = false;
    }
    if (a == act_dropped_seal) {
      tag_from = wire.size();  // the next batch alone, under the next number
      chain_ok = false;
      continue;
    }
    if (ok && chain_ok) good.push_back({tag_from, wire.size() - tag_from});
    else chain_ok = false;
    wire.insert(wire.end(), sf, sf + sizeof sf);
    if (NEXRES_FUZZ_SEAL) cipher.insert(cipher.end(), sf + frame_header_bytes, sf + sizeof sf);  // the tag, in clear
    tag_from = wire.size();
  }
  // A tail without a SEAL goes out encrypted all the same.
  if (NEXRES_FUZZ_SEAL && tag_from < wire.size()) encrypt_to_cipher(tag_from, nullptr, nullptr);

  // The frames of the authenticated ranges, as the engine parses them.
  std::vector<span> frames;
  std::set<std::uint64_t> pings;
  for (const span& g : good) {
    for (std::size_t pos = g.off; g.off + g.len - pos >= frame_header_bytes;) {
      const frame_header h = decode_header(wire.data() + pos);
      const std::size_t total = frame_header_bytes + static_cast<std::size_t>(h.length);
      if (total > g.off + g.len - pos) break;
      if (h.kind == frame_kind::data) frames.push_back({pos, total});
      if (h.kind == frame_kind::ping && h.length == 0 && h.reserved == 0 && h.sender == claimed) pings.insert(h.msg_id);
      pos += total;
    }
  }

  std::size_t cursor = 0;
  std::uint64_t last_delivered = 0, max_delivered = 0;
  bool any = false;
  auto on_delivery = [&](const delivery& d) {
    FUZZ_CHECK(proven && !good.empty());
    FUZZ_CHECK(d.peer == claimed && d.slot == e.slot_of(claimed) && d.incarnation == inc);
    FUZZ_CHECK(d.messages > 0 && d.length >= frame_header_bytes);
    FUZZ_CHECK(d.source != nullptr && d.offset + static_cast<std::size_t>(d.length) <= d.source->capacity);
    const std::uint8_t* p = d.source->data() + d.offset;
    const std::uint8_t* end = p + d.length;
    std::uint32_t n = 0;
    std::uint64_t last = 0;
    while (p < end) {
      FUZZ_CHECK(static_cast<std::size_t>(end - p) >= frame_header_bytes);
      const frame_header h = decode_header(p);
      FUZZ_CHECK(h.kind == frame_kind::data && h.sender == claimed && h.reserved == 0);
      FUZZ_CHECK(h.length <= max_frame_bytes);
      const std::size_t total = frame_header_bytes + static_cast<std::size_t>(h.length);
      FUZZ_CHECK(static_cast<std::size_t>(end - p) >= total);
      if (any) FUZZ_CHECK(h.msg_id > last_delivered);
      any = true;
      last_delivered = last = h.msg_id;
      if (h.msg_id > max_delivered) max_delivered = h.msg_id;
      // Byte for byte the next authenticated frame not yet delivered (ones
      // skipped were duplicates).
      while (cursor < frames.size() &&
             !(frames[cursor].len == total && std::memcmp(wire.data() + frames[cursor].off, p, total) == 0))
        ++cursor;
      FUZZ_CHECK(cursor < frames.size());
      ++cursor;
      if (h.flags & auth::flag_signed) {
        FUZZ_CHECK(h.length >= auth::signed_trailer_bytes);
        FUZZ_CHECK(auth::verify_frame(*k.verifier[claimed], cluster_id, inc, p));
      }
      p += total;
      ++n;
    }
    FUZZ_CHECK(n == d.messages && last == d.last_id);
  };

  const std::vector<std::uint8_t>& out = NEXRES_FUZZ_SEAL ? cipher : wire;
  FUZZ_CHECK(out.size() >= wire.size());  // seal: a clear SEALED header per batch
  const exchange_result r = exchange_on(fd, out.data(), out.size(), on_delivery);
  if (std::getenv("NEXRES_FUZZ_DEBUG") != nullptr)
    std::fprintf(stderr, "nexres fuzz: replica %u%s, %zu batches, %zu sealed, %zu frames authenticated, %zu delivered\n",
                 claimed, proven ? "" : " (not proven)", batches, good.size(), frames.size(), cursor);
  check_after_input(r);
  // An ACK covers what was consumed; with a reused incarnation, earlier inputs too.
  const std::uint64_t max_ack = (opts & opt_reuse_inc) ? ~0ull : max_delivered;
  check_sealed_tail(r.response, rx, pings, max_ack, proven);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  configure_engine = &configure;
  keys();
  the_engine();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  switch (data[0] % 3) {
    case 0: run_raw(data + 1, size - 1); break;
    case 1: run_handshaken(false, data + 1, size - 1); break;
    default: run_handshaken(true, data + 1, size - 1); break;
  }
  return 0;
}
