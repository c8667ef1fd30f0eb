// Throughput of the replica-link crypto on this machine, to pick the frame
// MAC by measurement. Run from the build dir: ./crypto_bench [seconds-per-cell]
//
// MAC candidates (all 16-byte tags, 32-byte key, EVP contexts allocated once
// and re-initialised per batch, sequence number bound into every tag):
//   hmac-sha256   EVP_MAC "HMAC"/SHA256 over seq||batch, truncated to 16
//   gmac          AES-256-GCM, batch as AAD only, nonce = 0^32 || seq
//   chacha-poly   ChaCha20-Poly1305 AEAD, empty plaintext, batch as AAD
//   poly1305      EVP_MAC "POLY1305", one-time key = ChaCha20(key, seq) block 0
//   blake2b-mac   EVP_MAC "BLAKE2BMAC" (size 16) over seq||batch
//   frame_mac     nexres::crypto::frame_mac itself (the chosen one)
// Only frame_mac lives in core/crypto.cpp; the others exist only here.
#include "crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/params.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nexres::crypto;
using clk = std::chrono::steady_clock;

namespace {

double g_seconds = 0.3;
volatile std::uint8_t g_sink = 0;

void die(const char* what) {
  std::fprintf(stderr, "crypto_bench: %s failed\n", what);
  std::exit(1);
}

void put_be64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (56 - 8 * i));
}

struct mac_candidate {
  virtual ~mac_candidate() = default;
  virtual bool tag(std::uint64_t seq, const byte_view* b, std::size_t n, std::uint8_t out[16]) = 0;
};

// EVP_MAC with a fixed key: EVP_MAC_init(ctx, NULL, 0, NULL) re-uses the key.
struct evp_mac_candidate : mac_candidate {
  EVP_MAC_CTX* ctx = nullptr;
  std::size_t full = 0;
  evp_mac_candidate(const char* name, const OSSL_PARAM* params, const std::uint8_t key[32]) {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, name, nullptr);
    if (!mac) die(name);
    ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (!ctx || EVP_MAC_init(ctx, key, 32, params) != 1) die(name);
    full = EVP_MAC_CTX_get_mac_size(ctx);
  }
  ~evp_mac_candidate() override { EVP_MAC_CTX_free(ctx); }
  bool tag(std::uint64_t seq, const byte_view* b, std::size_t n, std::uint8_t out[16]) override {
    std::uint8_t s[8], full_tag[64];
    put_be64(s, seq);
    std::size_t len = 0;
    if (EVP_MAC_init(ctx, nullptr, 0, nullptr) != 1 || EVP_MAC_update(ctx, s, 8) != 1) return false;
    for (std::size_t i = 0; i < n; ++i)
      if (EVP_MAC_update(ctx, b[i].data, b[i].size) != 1) return false;
    if (EVP_MAC_final(ctx, full_tag, &len, sizeof full_tag) != 1 || len < 16) return false;
    std::memcpy(out, full_tag, 16);
    return true;
  }
};

struct hmac_sha256 : evp_mac_candidate {
  static const OSSL_PARAM* params() {
    static char digest[] = "SHA256";
    static OSSL_PARAM p[] = {OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_END};
    return p;
  }
  explicit hmac_sha256(const std::uint8_t key[32]) : evp_mac_candidate("HMAC", params(), key) {}
};

struct blake2b_mac : evp_mac_candidate {
  static const OSSL_PARAM* params() {
    static std::size_t size = 16;
    static OSSL_PARAM p[] = {OSSL_PARAM_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_END};
    return p;
  }
  explicit blake2b_mac(const std::uint8_t key[32]) : evp_mac_candidate("BLAKE2BMAC", params(), key) {}
};

// AEAD with empty plaintext: only the batch as AAD, 12-byte nonce from seq.
struct aead_aad_only : mac_candidate {
  EVP_CIPHER_CTX* ctx = nullptr;
  aead_aad_only(const char* name, const std::uint8_t key[32]) {
    EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, name, nullptr);
    ctx = EVP_CIPHER_CTX_new();
    if (!c || !ctx || EVP_EncryptInit_ex(ctx, c, nullptr, key, nullptr) != 1) die(name);
    EVP_CIPHER_free(c);
  }
  ~aead_aad_only() override { EVP_CIPHER_CTX_free(ctx); }
  bool tag(std::uint64_t seq, const byte_view* b, std::size_t n, std::uint8_t out[16]) override {
    std::uint8_t iv[12] = {0}, none[16];
    put_be64(iv + 4, seq);
    int outl = 0;
    if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv) != 1) return false;
    for (std::size_t i = 0; i < n; ++i)
      if (EVP_EncryptUpdate(ctx, nullptr, &outl, b[i].data, static_cast<int>(b[i].size)) != 1)
        return false;
    return EVP_EncryptFinal_ex(ctx, none, &outl) == 1 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out) == 1;
  }
};

// Poly1305 with a per-batch one-time key: first 32 bytes of the ChaCha20
// keystream under (key, nonce = 0^32 || seq), as in RFC 8439 2.6.
struct poly1305_otk : mac_candidate {
  EVP_CIPHER_CTX* chacha = nullptr;
  EVP_MAC_CTX* mac = nullptr;
  explicit poly1305_otk(const std::uint8_t key[32]) {
    EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "ChaCha20", nullptr);
    chacha = EVP_CIPHER_CTX_new();
    if (!c || !chacha || EVP_EncryptInit_ex(chacha, c, nullptr, key, nullptr) != 1) die("ChaCha20");
    EVP_CIPHER_free(c);
    EVP_MAC* m = EVP_MAC_fetch(nullptr, "POLY1305", nullptr);
    if (!m) die("POLY1305");
    mac = EVP_MAC_CTX_new(m);
    EVP_MAC_free(m);
    if (!mac) die("POLY1305 ctx");
  }
  ~poly1305_otk() override {
    EVP_CIPHER_CTX_free(chacha);
    EVP_MAC_CTX_free(mac);
  }
  bool tag(std::uint64_t seq, const byte_view* b, std::size_t n, std::uint8_t out[16]) override {
    // OpenSSL ChaCha20 IV: 4-byte little-endian block counter || 12-byte nonce.
    std::uint8_t iv[16] = {0}, otk[32] = {0};
    put_be64(iv + 8, seq);
    int outl = 0;
    if (EVP_EncryptInit_ex(chacha, nullptr, nullptr, nullptr, iv) != 1 ||
        EVP_EncryptUpdate(chacha, otk, &outl, otk, 32) != 1 || EVP_MAC_init(mac, otk, 32, nullptr) != 1)
      return false;
    OPENSSL_cleanse(otk, sizeof otk);
    for (std::size_t i = 0; i < n; ++i)
      if (EVP_MAC_update(mac, b[i].data, b[i].size) != 1) return false;
    std::size_t len = 0;
    return EVP_MAC_final(mac, out, &len, 16) == 1 && len == 16;
  }
};

struct frame_mac_candidate : mac_candidate {
  frame_mac m;
  explicit frame_mac_candidate(const std::uint8_t key[32]) : m(key) {}
  bool tag(std::uint64_t seq, const byte_view* b, std::size_t n, std::uint8_t out[16]) override {
    return m.tag(seq, b, n, out);
  }
};

// Runs op in chunks until g_seconds have passed; returns operations/second.
template <class Op>
double ops_per_second(Op&& op) {
  std::uint64_t iters = 0, chunk = 1;
  const auto t0 = clk::now();
  const auto budget = std::chrono::duration<double>(g_seconds);
  for (;;) {
    for (std::uint64_t i = 0; i < chunk; ++i) op(iters + i);
    iters += chunk;
    const auto el = clk::now() - t0;
    if (el >= budget) return static_cast<double>(iters) / std::chrono::duration<double>(el).count();
    if (chunk < (1u << 20)) chunk *= 2;
    if (iters > (1ull << 40)) return 0;  // bound, should never happen
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_seconds = std::atof(argv[1]);
  if (!(g_seconds > 0)) g_seconds = 0.3;
  std::printf("OpenSSL (headers) %s, (runtime) %s\n", OPENSSL_VERSION_TEXT,
              OpenSSL_version(OPENSSL_VERSION));
  std::printf("%.2f s per cell\n\n", g_seconds);

  std::uint8_t key[32];
  if (!random_bytes(key, sizeof key)) die("random_bytes");

  struct named {
    const char* name;
    std::function<std::unique_ptr<mac_candidate>()> make;
  };
  const std::vector<named> cands = {
      {"hmac-sha256", [&] { return std::unique_ptr<mac_candidate>(new hmac_sha256(key)); }},
      {"gmac (aes-256-gcm)", [&] { return std::unique_ptr<mac_candidate>(new aead_aad_only("AES-256-GCM", key)); }},
      {"chacha20-poly1305", [&] { return std::unique_ptr<mac_candidate>(new aead_aad_only("ChaCha20-Poly1305", key)); }},
      {"poly1305 (chacha otk)", [&] { return std::unique_ptr<mac_candidate>(new poly1305_otk(key)); }},
      {"blake2b-mac", [&] { return std::unique_ptr<mac_candidate>(new blake2b_mac(key)); }},
      {"frame_mac (crypto.cpp)", [&] { return std::unique_ptr<mac_candidate>(new frame_mac_candidate(key)); }},
  };
  const std::size_t sizes[] = {64, 1024, 64 * 1024, 256 * 1024};
  std::vector<std::uint8_t> data(256 * 1024);
  if (!random_bytes(data.data(), data.size())) die("random_bytes");

  std::printf("%-24s %12s %12s %12s %12s %14s %10s\n", "MAC (MB/s, 1e6 B)", "64 B", "1 KiB",
              "64 KiB", "256 KiB", "64K in 64 bufs", "64 B ns");
  const char* best = nullptr;
  double best_score = 0;
  for (const auto& c : cands) {
    auto m = c.make();
    double mbps[4];
    double ns64 = 0;
    std::uint8_t t[16];
    for (int s = 0; s < 4; ++s) {
      const byte_view b(data.data(), sizes[s]);
      const double ops = ops_per_second([&](std::uint64_t i) {
        if (!m->tag(i, &b, 1, t)) die(c.name);
        g_sink ^= t[0];
      });
      mbps[s] = ops * static_cast<double>(sizes[s]) / 1e6;
      if (s == 0) ns64 = 1e9 / ops;
    }
    // Scattered batch: 64 KiB as 64 buffers of 1 KiB.
    byte_view parts[64];
    for (int i = 0; i < 64; ++i) parts[i] = byte_view(data.data() + i * 1024, 1024);
    const double ops_sc = ops_per_second([&](std::uint64_t i) {
      if (!m->tag(i, parts, 64, t)) die(c.name);
      g_sink ^= t[0];
    });
    std::printf("%-24s %12.0f %12.0f %12.0f %12.0f %14.0f %10.0f\n", c.name, mbps[0], mbps[1],
                mbps[2], mbps[3], ops_sc * 65536 / 1e6, ns64);
    // Score: geometric-ish mean over the 1 KiB..256 KiB columns (the real
    // batch sizes); frame_mac itself is excluded from the choice.
    if (std::strncmp(c.name, "frame_mac", 9) != 0) {
      const double score = std::cbrt(mbps[1] * mbps[2] * mbps[3]);
      if (score > best_score) {
        best_score = score;
        best = c.name;
      }
    }
  }
  std::printf("\nfastest over 1 KiB..256 KiB (geometric mean): %s (%.0f MB/s)\n\n", best, best_score);

  // ------------------------------------------------- AEAD encryption (seal)
  // auth 'seal' encrypts each batch in place: one begin, one update over the
  // batch, the tag. Both ciphers the issue names, and the engine's own
  // batch_aead (AES-256-GCM) encrypting and decrypting.
  std::printf("%-28s %12s %12s %12s %12s\n", "AEAD in place (MB/s)", "64 B", "1 KiB", "64 KiB", "256 KiB");
  auto aead_row = [&](const char* label, const char* cipher, int enc) {
    EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, cipher, nullptr);
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    if (!c || !ctx || EVP_CipherInit_ex(ctx, c, nullptr, key, nullptr, enc) != 1) die(cipher);
    EVP_CIPHER_free(c);
    double mbps[4];
    for (int s = 0; s < 4; ++s) {
      const int n = static_cast<int>(sizes[s]);
      const double ops = ops_per_second([&](std::uint64_t i) {
        std::uint8_t iv[12] = {0}, tag[16], none[16];
        put_be64(iv + 4, i);
        int outl = 0;
        if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, enc) != 1 ||
            EVP_CipherUpdate(ctx, data.data(), &outl, data.data(), n) != 1)
          die(cipher);
        if (enc) {
          if (EVP_CipherFinal_ex(ctx, none, &outl) != 1 || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
            die(cipher);
          g_sink ^= tag[0];
        }
        g_sink ^= data[0];
      });
      mbps[s] = ops * static_cast<double>(sizes[s]) / 1e6;
    }
    EVP_CIPHER_CTX_free(ctx);
    std::printf("%-28s %12.0f %12.0f %12.0f %12.0f\n", label, mbps[0], mbps[1], mbps[2], mbps[3]);
  };
  aead_row("aes-256-gcm encrypt", "AES-256-GCM", 1);
  aead_row("aes-256-gcm decrypt", "AES-256-GCM", 0);
  aead_row("chacha20-poly1305 encrypt", "ChaCha20-Poly1305", 1);
  aead_row("chacha20-poly1305 decrypt", "ChaCha20-Poly1305", 0);
  {
    batch_aead enc(key, true);
    double mbps[4];
    for (int s = 0; s < 4; ++s) {
      const double ops = ops_per_second([&](std::uint64_t i) {
        std::uint8_t tag[16];
        if (!enc.begin(i) || !enc.update(data.data(), data.data(), sizes[s]) || !enc.finish(tag)) die("batch_aead");
        g_sink ^= tag[0];
      });
      mbps[s] = ops * static_cast<double>(sizes[s]) / 1e6;
    }
    std::printf("%-28s %12.0f %12.0f %12.0f %12.0f\n\n", "batch_aead encrypt (engine)", mbps[0], mbps[1], mbps[2],
                mbps[3]);
  }

  // ------------------------------------------------------ public-key ops
  const auto kp = ed25519_keypair::generate();
  const ed25519_signer signer(kp);
  auto verifier = ed25519_verifier::from_public(kp.public_key.data());
  if (!verifier) die("verifier");
  std::uint8_t msg[64];
  if (!random_bytes(msg, sizeof msg)) die("random_bytes");
  std::uint8_t sig[64];
  if (!signer.sign(byte_view(msg, 64), sig)) die("sign");

  std::printf("%-44s %12s\n", "public-key op (64-byte messages)", "ops/s");
  auto row = [](const char* name, double ops) { std::printf("%-44s %12.0f\n", name, ops); };
  row("ed25519 sign (signer, key imported once)", ops_per_second([&](std::uint64_t) {
        if (!signer.sign(byte_view(msg, 64), sig)) die("sign");
      }));
  row("ed25519 sign (one-shot, re-import seed)", ops_per_second([&](std::uint64_t) {
        auto s = ed25519_sign(kp.seed.data(), byte_view(msg, 64));
        if (!s) die("sign");
        g_sink ^= (*s)[0];
      }));
  row("ed25519 verify (verifier, key imported once)", ops_per_second([&](std::uint64_t) {
        if (!verifier->verify(byte_view(msg, 64), sig)) die("verify");
      }));
  row("ed25519 verify (one-shot, re-import public)", ops_per_second([&](std::uint64_t) {
        if (!ed25519_verify(kp.public_key.data(), byte_view(msg, 64), sig)) die("verify");
      }));
  const auto a = x25519_keypair::generate();
  const auto b = x25519_keypair::generate();
  key32 shared;
  row("x25519 derive (keypair object, import peer)", ops_per_second([&](std::uint64_t) {
        if (!a.derive(b.public_key().data(), shared)) die("derive");
      }));
  key32 a_raw;
  if (!random_bytes(a_raw.data(), 32)) die("random_bytes");
  row("x25519 derive (one-shot from raw private)", ops_per_second([&](std::uint64_t) {
        if (!x25519_derive(a_raw, b.public_key().data(), shared)) die("derive");
      }));
  row("x25519 ephemeral keypair generate", ops_per_second([&](std::uint64_t) {
        auto k = x25519_keypair::generate();
        g_sink ^= k.public_key()[0];
      }));
  std::uint8_t okm[64];
  row("hkdf-sha256 (64-byte output)", ops_per_second([&](std::uint64_t) {
        if (!hkdf_sha256(shared, byte_view(msg, 32), byte_view("nexres", 6), okm, 64)) die("hkdf");
      }));
  return 0;
}
