// Authenticated replica connections (auth mode `mac`, docs/PROTOCOL.md §2a,
// docs/SECURITY.md): the handshake proves both replica ids with Ed25519
// signatures over a transcript of fresh nonces and ephemeral X25519 keys
// (and the cluster id, protocol version, ids and incarnations); HKDF of the
// X25519 secret gives one key per direction; every batch of frames is then
// followed by a SEAL frame whose tag (AES-256-GCM as a MAC, nonce = the
// batch's sequence number) covers the batch's bytes. Auth `seal`: the same,
// with the batch (and its SEAL header) encrypted by AES-256-GCM and the
// direction's key ratcheted forward (rekey_policy).
#pragma once

#include "crypto.hpp"
#include "protocol.hpp"

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nexres::auth {

constexpr std::size_t nonce_bytes = 32;
constexpr std::size_t eph_bytes = 32;
constexpr std::size_t sig_bytes = 64;
constexpr std::size_t tag_bytes = 16;
/// HELLO body after the cluster id: nonce_i | X_i.
constexpr std::size_t hello_ext_bytes = nonce_bytes + eph_bytes;
/// WELCOME body after the cluster id: nonce_r | X_r | signature_r.
constexpr std::size_t welcome_ext_bytes = nonce_bytes + eph_bytes + sig_bytes;
/// AUTH frame: header (kind auth, length 64) | signature_i.
constexpr std::size_t auth_frame_bytes = frame_header_bytes + sig_bytes;
/// SEAL frame: header (kind seal, length 16, msg_id = batch seq) | tag.
constexpr std::size_t seal_frame_bytes = frame_header_bytes + tag_bytes;
/// auth 'seal': what encryption adds to a batch's frames: the clear SEALED
/// header before them, their SEAL header (encrypted with them) and the tag.
constexpr std::size_t sealed_overhead = frame_header_bytes + seal_frame_bytes;
/// The sender seals at least this often (at a frame boundary).
constexpr std::size_t seal_batch_bytes = 256u << 10;
/// A client (PROTOCOL.md §6a) seals at least this often: a frame may start
/// at most this far into a batch (the batch then ends with that frame).
constexpr std::size_t client_seal_batch_bytes = 64u << 10;

/// Everything both sides sign (each with its own role label).
struct transcript_input {
  std::string cluster_id;
  std::uint32_t initiator = 0, responder = 0;
  std::uint64_t initiator_incarnation = 0, responder_incarnation = 0;
  const std::uint8_t* nonce_i = nullptr;  // nonce_bytes
  const std::uint8_t* eph_i = nullptr;    // eph_bytes
  const std::uint8_t* nonce_r = nullptr;
  const std::uint8_t* eph_r = nullptr;
  /// Replica links (PROTOCOL.md §2a): the responder's cluster id (another
  /// cluster's for a remote link) and both configuration epochs follow the
  /// rest. Client handshakes (§6a) have none.
  bool replica_link = false;
  std::string responder_cluster_id;
  std::uint32_t initiator_epoch = 0, responder_epoch = 0;
};

std::vector<std::uint8_t> transcript(const transcript_input& in);

/// role: 'I' (initiator, the dialing side) or 'R' (responder).
bool sign(const crypto::ed25519_signer& key, char role, const std::vector<std::uint8_t>& t,
          std::uint8_t sig[sig_bytes]);
bool verify(const crypto::ed25519_verifier& key, char role, const std::vector<std::uint8_t>& t,
            const std::uint8_t sig[sig_bytes]);

/// The two directions' MAC keys from the X25519 secret, the nonces and the
/// transcript. False if the peer's ephemeral key is bad (all-zero secret).
struct session_keys {
  crypto::key32 initiator_to_responder;
  crypto::key32 responder_to_initiator;
};
bool derive(const crypto::x25519_keypair& mine, const std::uint8_t peer_eph[eph_bytes],
            const std::vector<std::uint8_t>& t, session_keys& out);

/// auth 'seal': a direction's key is replaced after this many batches or
/// bytes (whichever comes first), at the batch boundary, by
/// HKDF-SHA256(key, "nexres-rpc/1 rekey"); the old key is erased, so a key
/// taken from memory later does not open earlier traffic. Protocol
/// constants: both sides count the same batches and bytes.
struct rekey_policy {
  std::uint64_t batches = 1u << 16;
  std::uint64_t bytes = 1ull << 30;
};

/// One direction's sealing state: the key's MAC (auth 'mac'; also any frame
/// sealed outside the stream of batches), with auth 'seal' its cipher, and
/// the next batch number. Batch numbers are the nonces: every seal() and
/// encrypt() takes the next one and none is ever taken twice under a key
/// (the counter only moves forward; it would have to pass 2^64 to wrap, and
/// sealing refuses before that).
class sealer {
 public:
  explicit sealer(const crypto::key32& key, bool encrypt = false, rekey_policy rekey = {});
  /// Tags `count` buffers as the next batch and writes its SEAL frame.
  bool seal(const crypto::byte_view* bufs, std::size_t count, std::uint32_t sender,
            std::uint8_t out[seal_frame_bytes]);
  /// auth 'seal': encrypts `count` buffers as the next batch into `out`
  /// (their total + sealed_overhead): the batch's clear SEALED header (the
  /// AEAD's additional data), the ciphertext of the buffers and of the
  /// batch's SEAL header, then the tag. `out` + frame_header_bytes may be
  /// the one buffer's own bytes (encrypted in place).
  bool encrypt(const crypto::byte_view* bufs, std::size_t count, std::uint32_t sender, std::uint8_t* out);
  std::uint64_t next_seq() const noexcept { return seq_; }
  /// Keys used so far in this direction (1 + rekeys).
  std::uint64_t generation() const noexcept { return generation_; }

 private:
  bool take_seq(std::uint64_t& seq);
  bool after_batch(std::size_t bytes);

  crypto::key32 key_;
  crypto::frame_mac mac_;
  std::unique_ptr<crypto::batch_aead> aead_;
  rekey_policy rekey_;
  std::uint64_t seq_ = 0;
  std::uint64_t generation_ = 1;
  std::uint64_t batches_since_ = 0, bytes_since_ = 0;
};

/// The receiving direction: bytes are fed as frames are parsed; a SEAL
/// frame checks everything fed since the previous one. With auth 'seal' the
/// batch's bytes are decrypted in place instead (decrypt()), the SEAL header
/// among them, and open_sealed() checks the tag.
class opener {
 public:
  explicit opener(const crypto::key32& key, bool decrypt = false, rekey_policy rekey = {});
  bool update(const std::uint8_t* data, std::size_t size);
  /// Checks a SEAL frame's header fields and tag; starts the next batch.
  bool open(const frame_header& h, const std::uint8_t tag[tag_bytes]);
  /// auth 'seal': the clear SEALED header starting the next batch (`raw`,
  /// decoded as `h`): checks its fields and takes it as additional data.
  bool begin_sealed(const frame_header& h, const std::uint8_t raw[frame_header_bytes]);
  /// auth 'seal': decrypts n bytes of the batch in place.
  bool decrypt(std::uint8_t* data, std::size_t n);
  /// auth 'seal': the batch's SEAL (its header decrypted) and its tag.
  bool open_sealed(const frame_header& h, const std::uint8_t tag[tag_bytes]);
  bool decrypting() const noexcept { return aead_ != nullptr; }
  std::uint64_t next_seq() const noexcept { return seq_; }
  std::uint64_t generation() const noexcept { return generation_; }

 private:
  bool seal_header_ok(const frame_header& h) const;
  bool after_batch();

  crypto::key32 key_;
  crypto::frame_mac mac_;
  std::unique_ptr<crypto::batch_aead> aead_;
  rekey_policy rekey_;
  std::uint64_t seq_ = 0;
  std::uint64_t generation_ = 1;
  std::uint64_t batches_since_ = 0, bytes_since_ = 0, batch_bytes_ = 0;
};

/// The next key of a direction (rekey_policy).
bool next_key(crypto::key32& key);

/// Frame flag: the body ends with the sender's incarnation (u64) and its
/// Ed25519 signature over "nexres-rpc/1 signed" | u8 cluster id length |
/// cluster id | u32 sender | u32 route | u64 message id | u64 incarnation |
/// payload (PROTOCOL.md §3). Transferable: anyone with the sender's public
/// key can check a forwarded message; the id and incarnation make a copy
/// sent again under another id (or by a later process) fail.
constexpr std::uint8_t flag_signed = 0x01;
/// What a signed frame's body carries after its payload: incarnation, signature.
constexpr std::size_t signed_trailer_bytes = 8 + sig_bytes;

/// Signs the frame at `frame` (header with its final message id, payload,
/// signed_trailer_bytes for the incarnation and the signature).
bool sign_frame(const crypto::ed25519_signer& key, const std::string& cluster_id, std::uint64_t incarnation,
                std::uint8_t* frame);
/// Checks a complete signed frame sent under `incarnation` (another one in
/// the frame fails before any public-key operation).
bool verify_frame(const crypto::ed25519_verifier& key, const std::string& cluster_id, std::uint64_t incarnation,
                  const std::uint8_t* frame);

}  // namespace nexres::auth
