// See crypto.hpp. OpenSSL 3 EVP only; every OpenSSL symbol used here must
// also be exported by the node binary (see the symbol check in the report
// for the addon build), so keep the set small.
#include "crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <climits>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#if OPENSSL_VERSION_MAJOR < 3
#error "nexres crypto needs OpenSSL 3 (EVP_MAC/EVP_KDF); install libssl-dev >= 3.0"
#endif

namespace nexres::crypto {

namespace {

// A valid pointer for zero-length inputs (OpenSSL rejects NULL in places).
const std::uint8_t empty_input[1] = {0};
inline const std::uint8_t* nonnull(const byte_view& v) { return v.data ? v.data : empty_input; }

// Failure on a non-throwing path: drop what OpenSSL queued on this thread.
inline bool fail() {
  ERR_clear_error();
  return false;
}

[[noreturn]] void throw_openssl(const char* what) {
  char buf[256];
  const unsigned long e = ERR_get_error();
  std::string msg = std::string("nexres crypto: ") + what;
  if (e != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    msg += ": ";
    msg += buf;
  }
  ERR_clear_error();
  throw std::runtime_error(msg);
}

struct pkey_deleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct pkey_ctx_deleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct kdf_deleter {
  void operator()(EVP_KDF* p) const { EVP_KDF_free(p); }
};
struct kdf_ctx_deleter {
  void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); }
};
struct cipher_deleter {
  void operator()(EVP_CIPHER* p) const { EVP_CIPHER_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, md_ctx_deleter>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, pkey_ctx_deleter>;
using kdf_ptr = std::unique_ptr<EVP_KDF, kdf_deleter>;
using kdf_ctx_ptr = std::unique_ptr<EVP_KDF_CTX, kdf_ctx_deleter>;
using cipher_ptr = std::unique_ptr<EVP_CIPHER, cipher_deleter>;

pkey_ptr load_private(int type, const std::uint8_t* raw) {
  return pkey_ptr(EVP_PKEY_new_raw_private_key(type, nullptr, raw, 32));
}
pkey_ptr load_public(int type, const std::uint8_t* raw) {
  return pkey_ptr(EVP_PKEY_new_raw_public_key(type, nullptr, raw, 32));
}

bool raw_public(EVP_PKEY* p, public_key32& out) {
  std::size_t len = out.size();
  return EVP_PKEY_get_raw_public_key(p, out.data(), &len) == 1 && len == out.size();
}

bool sign_with(EVP_PKEY* pkey, byte_view msg, std::uint8_t sig[64]) {
  // Ed25519 is one-shot (EVP_DigestSign) and needs a fresh init per message;
  // a per-call EVP_MD_CTX keeps the signer const and thread-safe.
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  std::size_t len = 64;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey) != 1 ||
      EVP_DigestSign(ctx.get(), sig, &len, nonnull(msg), msg.size) != 1 || len != 64)
    return fail();
  return true;
}

bool verify_with(EVP_PKEY* pkey, byte_view msg, const std::uint8_t sig[64]) {
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey) != 1) return fail();
  if (EVP_DigestVerify(ctx.get(), sig, 64, nonnull(msg), msg.size) != 1) return fail();
  return true;
}

}  // namespace

void cleanse(void* p, std::size_t n) { OPENSSL_cleanse(p, n); }

bool random_bytes(std::uint8_t* out, std::size_t n) {
  while (n > 0) {
    const int chunk = n > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(n);
    if (RAND_bytes(out, chunk) != 1) return fail();
    out += chunk;
    n -= static_cast<std::size_t>(chunk);
  }
  return true;
}

bool equal_ct(const void* a, const void* b, std::size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

// ------------------------------------------------------------------ Ed25519

ed25519_keypair ed25519_keypair::generate() {
  key32 seed;
  if (RAND_priv_bytes(seed.data(), 32) != 1) throw_openssl("RAND_priv_bytes");
  return from_seed(seed.data());
}

ed25519_keypair ed25519_keypair::from_seed(const std::uint8_t seed[32]) {
  pkey_ptr p = load_private(EVP_PKEY_ED25519, seed);
  ed25519_keypair kp;
  if (!p || !raw_public(p.get(), kp.public_key)) throw_openssl("load Ed25519 private key");
  std::memcpy(kp.seed.data(), seed, 32);
  return kp;
}

ed25519_signer::ed25519_signer(const std::uint8_t seed[32]) {
  pkey_ptr p = load_private(EVP_PKEY_ED25519, seed);
  if (!p || !raw_public(p.get(), public_key_)) throw_openssl("load Ed25519 private key");
  pkey_ = p.release();
}
ed25519_signer::ed25519_signer(ed25519_signer&& o) noexcept
    : pkey_(std::exchange(o.pkey_, nullptr)), public_key_(o.public_key_) {}
ed25519_signer& ed25519_signer::operator=(ed25519_signer&& o) noexcept {
  std::swap(pkey_, o.pkey_);
  std::swap(public_key_, o.public_key_);
  return *this;
}
ed25519_signer::~ed25519_signer() { EVP_PKEY_free(pkey_); }

bool ed25519_signer::sign(byte_view msg, std::uint8_t sig[64]) const {
  return pkey_ != nullptr && sign_with(pkey_, msg, sig);
}
std::optional<signature64> ed25519_signer::sign(byte_view msg) const {
  signature64 s;
  if (!sign(msg, s.data())) return std::nullopt;
  return s;
}

std::optional<ed25519_verifier> ed25519_verifier::from_public(const std::uint8_t pub[32]) {
  pkey_ptr p = load_public(EVP_PKEY_ED25519, pub);
  if (!p) {
    fail();
    return std::nullopt;
  }
  return ed25519_verifier(p.release(), pub);
}
ed25519_verifier::ed25519_verifier(ed25519_verifier&& o) noexcept
    : pkey_(std::exchange(o.pkey_, nullptr)), public_key_(o.public_key_) {}
ed25519_verifier& ed25519_verifier::operator=(ed25519_verifier&& o) noexcept {
  std::swap(pkey_, o.pkey_);
  std::swap(public_key_, o.public_key_);
  return *this;
}
ed25519_verifier::~ed25519_verifier() { EVP_PKEY_free(pkey_); }

bool ed25519_verifier::verify(byte_view msg, const std::uint8_t sig[64]) const {
  return pkey_ != nullptr && verify_with(pkey_, msg, sig);
}

std::optional<signature64> ed25519_sign(const std::uint8_t seed[32], byte_view msg) {
  pkey_ptr p = load_private(EVP_PKEY_ED25519, seed);
  signature64 s;
  if (!p) {
    fail();
    return std::nullopt;
  }
  if (!sign_with(p.get(), msg, s.data())) return std::nullopt;
  return s;
}

bool ed25519_verify(const std::uint8_t pub[32], byte_view msg, const std::uint8_t sig[64]) {
  pkey_ptr p = load_public(EVP_PKEY_ED25519, pub);
  if (!p) return fail();
  return verify_with(p.get(), msg, sig);
}

// ------------------------------------------------------------------- X25519

namespace {

bool derive_with(EVP_PKEY* ours, const std::uint8_t peer_public[32], key32& shared) {
  pkey_ptr peer = load_public(EVP_PKEY_X25519, peer_public);
  if (!peer) return fail();
  pkey_ctx_ptr ctx(EVP_PKEY_CTX_new(ours, nullptr));
  std::size_t len = 32;
  key32 out;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), out.data(), &len) != 1 || len != 32)
    return fail();  // OpenSSL itself refuses an all-zero result here
  static const std::uint8_t zeros[32] = {0};
  if (CRYPTO_memcmp(out.data(), zeros, 32) == 0) return fail();  // small-order peer point
  shared = out;
  return true;
}

}  // namespace

x25519_keypair x25519_keypair::generate() {
  key32 priv;
  if (RAND_priv_bytes(priv.data(), 32) != 1) throw_openssl("RAND_priv_bytes");
  return from_private(priv.data());
}

x25519_keypair x25519_keypair::from_private(const std::uint8_t priv[32]) {
  pkey_ptr p = load_private(EVP_PKEY_X25519, priv);
  public_key32 pub;
  if (!p || !raw_public(p.get(), pub)) throw_openssl("load X25519 private key");
  return x25519_keypair(p.release(), pub);
}
x25519_keypair::x25519_keypair(x25519_keypair&& o) noexcept
    : pkey_(std::exchange(o.pkey_, nullptr)), public_key_(o.public_key_) {}
x25519_keypair& x25519_keypair::operator=(x25519_keypair&& o) noexcept {
  std::swap(pkey_, o.pkey_);
  std::swap(public_key_, o.public_key_);
  return *this;
}
x25519_keypair::~x25519_keypair() { EVP_PKEY_free(pkey_); }

bool x25519_keypair::derive(const std::uint8_t peer_public[32], key32& shared) const {
  return pkey_ != nullptr && derive_with(pkey_, peer_public, shared);
}

bool x25519_derive(const key32& our_private, const std::uint8_t peer_public[32], key32& shared) {
  pkey_ptr ours = load_private(EVP_PKEY_X25519, our_private.data());
  if (!ours) return fail();
  return derive_with(ours.get(), peer_public, shared);
}

// --------------------------------------------------------------- HKDF-SHA256

bool hkdf_sha256(byte_view ikm, byte_view salt, byte_view info, std::uint8_t* out,
                 std::size_t out_len) {
  if (out == nullptr || out_len == 0 || out_len > 255 * 32) return false;
  kdf_ptr kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) return fail();
  kdf_ctx_ptr kctx(EVP_KDF_CTX_new(kdf.get()));
  if (!kctx) return fail();
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  std::size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(nonnull(ikm)), ikm.size);
  if (salt.size > 0)
    params[n++] = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_SALT, const_cast<std::uint8_t*>(salt.data), salt.size);
  if (info.size > 0)
    params[n++] = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_INFO, const_cast<std::uint8_t*>(info.data), info.size);
  params[n] = OSSL_PARAM_construct_end();
  if (EVP_KDF_derive(kctx.get(), out, out_len, params) != 1) return fail();
  return true;
}

// ---------------------------------------------------------------- frame MAC

frame_mac::frame_mac(const std::uint8_t key[32]) {
  cipher_ptr gcm(EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr));
  if (!gcm) throw_openssl("fetch AES-256-GCM");
  ctx_ = EVP_CIPHER_CTX_new();
  if (!ctx_) throw_openssl("EVP_CIPHER_CTX_new");
  // Key schedule and GHASH key once; the context keeps its own reference to
  // the fetched cipher. Default IV length for GCM is 12.
  if (EVP_EncryptInit_ex(ctx_, gcm.get(), nullptr, key, nullptr) != 1 ||
      EVP_CIPHER_CTX_get_iv_length(ctx_) != 12) {
    EVP_CIPHER_CTX_free(ctx_);
    ctx_ = nullptr;
    throw_openssl("AES-256-GCM key setup");
  }
}
frame_mac::frame_mac(frame_mac&& o) noexcept : ctx_(std::exchange(o.ctx_, nullptr)) {}
frame_mac& frame_mac::operator=(frame_mac&& o) noexcept {
  std::swap(ctx_, o.ctx_);
  return *this;
}
frame_mac::~frame_mac() { EVP_CIPHER_CTX_free(ctx_); }  // clears the key schedule

bool frame_mac::begin(std::uint64_t seq) {
  if (ctx_ == nullptr) return false;
  std::uint8_t iv[12] = {0};
  for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<std::uint8_t>(seq >> (56 - 8 * i));
  // New IV only: keeps the key schedule, allocates nothing.
  if (EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, iv) != 1) return fail();
  return true;
}

bool frame_mac::update(const std::uint8_t* p, std::size_t left) {
  if (ctx_ == nullptr) return false;
  int outl = 0;
  while (left > 0) {  // AAD only: out == NULL
    const int chunk = left > (1u << 30) ? (1 << 30) : static_cast<int>(left);
    if (EVP_EncryptUpdate(ctx_, nullptr, &outl, p, chunk) != 1) return fail();
    p += chunk;
    left -= static_cast<std::size_t>(chunk);
  }
  return true;
}

bool frame_mac::finish(std::uint8_t out[16]) {
  if (ctx_ == nullptr) return false;
  int outl = 0;
  std::uint8_t none[16];
  if (EVP_EncryptFinal_ex(ctx_, none, &outl) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, 16, out) != 1)
    return fail();
  return true;
}

bool frame_mac::finish_verify(const std::uint8_t expected[16]) {
  std::uint8_t t[16];
  if (!finish(t)) return false;
  return CRYPTO_memcmp(t, expected, 16) == 0;
}

bool frame_mac::tag(std::uint64_t seq, const byte_view* bufs, std::size_t count,
                    std::uint8_t out[16]) {
  if (!begin(seq)) return false;
  for (std::size_t i = 0; i < count; ++i)
    if (!update(bufs[i].data, bufs[i].size)) return false;
  return finish(out);
}

bool frame_mac::verify(std::uint64_t seq, const byte_view* bufs, std::size_t count,
                       const std::uint8_t expected[16]) {
  std::uint8_t t[16];
  if (!tag(seq, bufs, count, t)) return false;
  return CRYPTO_memcmp(t, expected, 16) == 0;
}

// ----------------------------------------------------------- batch AEAD

batch_aead::batch_aead(const std::uint8_t key[32], bool encrypt) : encrypt_(encrypt) {
  cipher_ptr gcm(EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr));
  if (!gcm) throw_openssl("fetch AES-256-GCM");
  ctx_ = EVP_CIPHER_CTX_new();
  if (!ctx_) throw_openssl("EVP_CIPHER_CTX_new");
  if (EVP_CipherInit_ex(ctx_, gcm.get(), nullptr, key, nullptr, encrypt ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_get_iv_length(ctx_) != 12) {
    EVP_CIPHER_CTX_free(ctx_);
    ctx_ = nullptr;
    throw_openssl("AES-256-GCM key setup");
  }
}
batch_aead::batch_aead(batch_aead&& o) noexcept : ctx_(std::exchange(o.ctx_, nullptr)), encrypt_(o.encrypt_) {}
batch_aead& batch_aead::operator=(batch_aead&& o) noexcept {
  std::swap(ctx_, o.ctx_);
  std::swap(encrypt_, o.encrypt_);
  return *this;
}
batch_aead::~batch_aead() { EVP_CIPHER_CTX_free(ctx_); }

bool batch_aead::begin(std::uint64_t seq) {
  if (ctx_ == nullptr) return false;
  std::uint8_t iv[12] = {0};
  for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<std::uint8_t>(seq >> (56 - 8 * i));
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, iv, encrypt_ ? 1 : 0) != 1) return fail();
  return true;
}

bool batch_aead::aad(const std::uint8_t* data, std::size_t n) {
  int outl = 0;
  if (ctx_ == nullptr || n > (1u << 30) || EVP_CipherUpdate(ctx_, nullptr, &outl, data, static_cast<int>(n)) != 1)
    return fail();
  return true;
}

bool batch_aead::update(const std::uint8_t* in, std::uint8_t* out, std::size_t left) {
  if (ctx_ == nullptr) return false;
  while (left > 0) {
    const int chunk = left > (1u << 30) ? (1 << 30) : static_cast<int>(left);
    int outl = 0;
    if (EVP_CipherUpdate(ctx_, out, &outl, in, chunk) != 1 || outl != chunk) return fail();
    in += chunk;
    out += chunk;
    left -= static_cast<std::size_t>(chunk);
  }
  return true;
}

bool batch_aead::finish(std::uint8_t tag[16]) {
  if (ctx_ == nullptr || !encrypt_) return false;
  int outl = 0;
  std::uint8_t none[16];
  if (EVP_CipherFinal_ex(ctx_, none, &outl) != 1 || EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
    return fail();
  return true;
}

bool batch_aead::finish_verify(const std::uint8_t tag[16]) {
  if (ctx_ == nullptr || encrypt_) return false;
  int outl = 0;
  std::uint8_t none[16];
  std::uint8_t t[16];
  std::memcpy(t, tag, 16);
  if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, 16, t) != 1) return fail();
  if (EVP_CipherFinal_ex(ctx_, none, &outl) != 1) return fail();  // the tag does not check
  return true;
}

}  // namespace nexres::crypto
