// Thin RAII wrappers over OpenSSL 3 EVP for authenticated replica links:
// Ed25519 identity signatures, X25519 ephemeral agreement, HKDF-SHA256 and a
// per-batch frame MAC. No primitive is implemented here; everything goes
// through EVP_PKEY / EVP_KDF / EVP_CIPHER.
//
// Error policy: constructors and key-loading factories throw
// std::runtime_error (key-load time only). Everything that can see network
// input (verify, derive, tag/verify of frames) returns bool / std::optional
// and never throws. Failed calls clear this thread's OpenSSL error queue so
// nothing is left behind for other OpenSSL users in the process (Node).
//
// Threading: no global mutable state. `ed25519_signer` and
// `ed25519_verifier` are immutable after construction and their const
// members may be called concurrently from several threads. `frame_mac` owns
// a reusable EVP context and is NOT for concurrent use: keep one per
// connection direction on the io thread that owns the connection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

// OpenSSL types, forward-declared so this header does not pull in OpenSSL.
struct evp_pkey_st;
struct evp_cipher_ctx_st;

namespace nexres::crypto {

/// A read-only view of bytes (C++17 has no std::span). Layout-compatible
/// with a (pointer, length) pair, so a batch scattered over several
/// buffers is passed as an array of these.
struct byte_view {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  byte_view() = default;
  byte_view(const void* d, std::size_t n) : data(static_cast<const std::uint8_t*>(d)), size(n) {}
  template <std::size_t N>
  byte_view(const std::array<std::uint8_t, N>& a) : data(a.data()), size(N) {}
};

/// Fixed-size secret: zeroed (OPENSSL_cleanse) on destruction.
template <std::size_t N>
struct secret_bytes {
  std::array<std::uint8_t, N> bytes{};
  secret_bytes() = default;
  secret_bytes(const secret_bytes&) = default;
  secret_bytes& operator=(const secret_bytes&) = default;
  ~secret_bytes();
  std::uint8_t* data() { return bytes.data(); }
  const std::uint8_t* data() const { return bytes.data(); }
  static constexpr std::size_t size() { return N; }
  operator byte_view() const { return byte_view(bytes.data(), N); }
};
void cleanse(void* p, std::size_t n);
template <std::size_t N>
secret_bytes<N>::~secret_bytes() { cleanse(bytes.data(), N); }

using key32 = secret_bytes<32>;
using public_key32 = std::array<std::uint8_t, 32>;
using signature64 = std::array<std::uint8_t, 64>;

// ---------------------------------------------------------------- utilities

/// Cryptographically secure random bytes (RAND_bytes). False on failure.
bool random_bytes(std::uint8_t* out, std::size_t n);
/// Constant-time equality (CRYPTO_memcmp) of two n-byte buffers.
bool equal_ct(const void* a, const void* b, std::size_t n);

// ------------------------------------------------------------------ Ed25519

struct ed25519_keypair {
  public_key32 public_key{};
  key32 seed;  // the 32-byte private key (RFC 8032 "secret key")

  /// Fresh random key pair. Throws std::runtime_error on failure.
  static ed25519_keypair generate();
  /// Derives the public key from a 32-byte seed. Throws on failure.
  static ed25519_keypair from_seed(const std::uint8_t seed[32]);
};

/// Holds the imported private key so repeated signing does not re-import.
/// Move-only. sign() is const and safe to call from several threads at once.
class ed25519_signer {
 public:
  explicit ed25519_signer(const std::uint8_t seed[32]);  // throws on failure
  explicit ed25519_signer(const ed25519_keypair& kp) : ed25519_signer(kp.seed.data()) {}
  ed25519_signer(ed25519_signer&&) noexcept;
  ed25519_signer& operator=(ed25519_signer&&) noexcept;
  ed25519_signer(const ed25519_signer&) = delete;
  ed25519_signer& operator=(const ed25519_signer&) = delete;
  ~ed25519_signer();

  const public_key32& public_key() const { return public_key_; }
  bool sign(byte_view msg, std::uint8_t sig[64]) const;
  std::optional<signature64> sign(byte_view msg) const;

 private:
  evp_pkey_st* pkey_ = nullptr;
  public_key32 public_key_{};
};

/// A peer's imported public key, for verifying many messages from it.
/// Construction returns nullopt (not throw) for a key that does not load,
/// since peer keys may come off the wire.
class ed25519_verifier {
 public:
  static std::optional<ed25519_verifier> from_public(const std::uint8_t pub[32]);
  ed25519_verifier(ed25519_verifier&&) noexcept;
  ed25519_verifier& operator=(ed25519_verifier&&) noexcept;
  ed25519_verifier(const ed25519_verifier&) = delete;
  ed25519_verifier& operator=(const ed25519_verifier&) = delete;
  ~ed25519_verifier();

  bool verify(byte_view msg, const std::uint8_t sig[64]) const;
  /// The same public key (reconfigure: a changed key ends the sessions).
  bool same_key(const ed25519_verifier& o) const noexcept { return public_key_ == o.public_key_; }

 private:
  ed25519_verifier(evp_pkey_st* p, const std::uint8_t pub[32]) : pkey_(p) {
    std::memcpy(public_key_.data(), pub, public_key_.size());
  }
  evp_pkey_st* pkey_ = nullptr;
  public_key32 public_key_{};
};

/// One-shot sign with a seed (imports the key each call; prefer ed25519_signer).
std::optional<signature64> ed25519_sign(const std::uint8_t seed[32], byte_view msg);
/// One-shot verify. False for a bad signature or a public key that does not load.
bool ed25519_verify(const std::uint8_t pub[32], byte_view msg, const std::uint8_t sig[64]);

// ------------------------------------------------------------------- X25519

/// Ephemeral X25519 key pair. Keeps the imported EVP_PKEY, so derive() costs
/// one scalar multiplication (importing a raw private key computes the
/// public key, a second one). Move-only; derive() is const and thread-safe.
/// The private scalar never leaves the object.
class x25519_keypair {
 public:
  /// Fresh ephemeral key pair. Throws std::runtime_error on failure.
  static x25519_keypair generate();
  /// From a 32-byte private scalar (tests, known answers). Throws on failure.
  static x25519_keypair from_private(const std::uint8_t priv[32]);
  x25519_keypair(x25519_keypair&&) noexcept;
  x25519_keypair& operator=(x25519_keypair&&) noexcept;
  x25519_keypair(const x25519_keypair&) = delete;
  x25519_keypair& operator=(const x25519_keypair&) = delete;
  ~x25519_keypair();

  const public_key32& public_key() const { return public_key_; }
  /// Shared secret with the peer's public key. False if the peer key does not
  /// load or the result is all zero (small-order point); `shared` is then
  /// left untouched.
  bool derive(const std::uint8_t peer_public[32], key32& shared) const;

 private:
  x25519_keypair(evp_pkey_st* p, const public_key32& pub) : pkey_(p), public_key_(pub) {}
  evp_pkey_st* pkey_ = nullptr;
  public_key32 public_key_{};
};

/// One-shot form from a raw private scalar (imports it each call).
bool x25519_derive(const key32& our_private, const std::uint8_t peer_public[32], key32& shared);

// --------------------------------------------------------------- HKDF-SHA256

/// RFC 5869 extract-and-expand with SHA-256 into out[0..out_len).
/// out_len must be 1..8160. salt and info may be empty.
bool hkdf_sha256(byte_view ikm, byte_view salt, byte_view info, std::uint8_t* out,
                 std::size_t out_len);

// ---------------------------------------------------------------- frame MAC

/// Per-batch MAC: AES-256-GCM used as GMAC (the batch is AAD only, empty
/// plaintext), 16-byte tag, 12-byte nonce = 4 zero bytes || seq (big-endian).
/// Chosen by measurement (native/bench/crypto_bench.cpp).
///
/// The sequence number is the nonce, so a replayed or reordered batch fails
/// verification. GMAC requirement: never tag() two different batches with the
/// same (key, seq) — derive a distinct key per connection AND per direction
/// (e.g. HKDF with a direction label) and never reuse a seq under one key.
///
/// The EVP context and AES key schedule are set up once in the constructor;
/// tag()/verify() only re-initialise the IV, so they do not allocate.
/// Not for concurrent use: one instance per direction, owned by one thread.
class frame_mac {
 public:
  static constexpr std::size_t tag_size = 16;
  static constexpr std::size_t key_size = 32;

  explicit frame_mac(const std::uint8_t key[32]);  // throws on failure
  explicit frame_mac(const key32& key) : frame_mac(key.data()) {}
  frame_mac(frame_mac&&) noexcept;
  frame_mac& operator=(frame_mac&&) noexcept;
  frame_mac(const frame_mac&) = delete;
  frame_mac& operator=(const frame_mac&) = delete;
  ~frame_mac();

  /// Tags the concatenation of bufs[0..count). False on failure.
  bool tag(std::uint64_t seq, const byte_view* bufs, std::size_t count, std::uint8_t out[16]);
  bool tag(std::uint64_t seq, byte_view batch, std::uint8_t out[16]) {
    return tag(seq, &batch, 1, out);
  }
  /// Recomputes the tag and compares in constant time.
  bool verify(std::uint64_t seq, const byte_view* bufs, std::size_t count,
              const std::uint8_t expected[16]);
  bool verify(std::uint64_t seq, byte_view batch, const std::uint8_t expected[16]) {
    return verify(seq, &batch, 1, expected);
  }

  /// Incremental form (a receiver authenticates frames as it parses them):
  /// begin(seq), update() any number of times, then finish() or
  /// finish_verify(). The same tag as tag() over the concatenation.
  bool begin(std::uint64_t seq);
  bool update(const std::uint8_t* data, std::size_t size);
  bool finish(std::uint8_t out[16]);
  bool finish_verify(const std::uint8_t expected[16]);

 private:
  evp_cipher_ctx_st* ctx_ = nullptr;
};

// ----------------------------------------------------------- batch AEAD

/// Per-batch encryption (auth 'seal'): AES-256-GCM over the batch's bytes,
/// 16-byte tag, 12-byte nonce = 4 zero bytes || seq (big-endian), as
/// frame_mac. One instance encrypts or decrypts, per its constructor.
/// GCM is a stream mode here: update() takes any length and writes as many
/// bytes as it reads, so a receiver decrypts in place as bytes arrive.
///
/// Nonce discipline is the caller's (auth::sealer / auth::opener own the
/// sequence): never begin() the same seq twice under one key.
/// Not for concurrent use: one instance per direction, owned by one thread.
class batch_aead {
 public:
  static constexpr std::size_t tag_size = 16;

  batch_aead(const std::uint8_t key[32], bool encrypt);  // throws on failure
  batch_aead(const key32& key, bool encrypt) : batch_aead(key.data(), encrypt) {}
  batch_aead(batch_aead&&) noexcept;
  batch_aead& operator=(batch_aead&&) noexcept;
  batch_aead(const batch_aead&) = delete;
  batch_aead& operator=(const batch_aead&) = delete;
  ~batch_aead();

  bool encrypting() const noexcept { return encrypt_; }
  bool begin(std::uint64_t seq);
  /// Additional authenticated data (before any update() of the batch).
  bool aad(const std::uint8_t* data, std::size_t n);
  /// n bytes from `in` to `out` (in == out: in place).
  bool update(const std::uint8_t* in, std::uint8_t* out, std::size_t n);
  /// Encrypting: the tag of everything since begin().
  bool finish(std::uint8_t tag[16]);
  /// Decrypting: true when `tag` checks what was decrypted since begin().
  bool finish_verify(const std::uint8_t tag[16]);

 private:
  evp_cipher_ctx_st* ctx_ = nullptr;
  bool encrypt_ = true;
};

}  // namespace nexres::crypto
