// Crypto wrappers: Ed25519 (RFC 8032 7.1 TEST 1 known answer, round trip,
// tampering), X25519 (RFC 7748 6.1 known answer, agreement, small-order
// peer), HKDF-SHA256 (RFC 5869 cases 1 and 3), frame_mac (round trip, seq /
// byte / key / tag tampering, scattered == contiguous, no OpenSSL allocation
// per tag) and a shared signer used from several threads.
#include "check.hpp"
#include "crypto.hpp"

#include <openssl/crypto.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace nexres::crypto;

namespace {

// Counts OpenSSL heap calls (installed before OpenSSL allocates anything).
std::atomic<long> g_openssl_allocs{0};
bool g_counting = false;
void* count_malloc(std::size_t n, const char*, int) {
  g_openssl_allocs.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n);
}
void* count_realloc(void* p, std::size_t n, const char*, int) {
  g_openssl_allocs.fetch_add(1, std::memory_order_relaxed);
  return std::realloc(p, n);
}
void count_free(void* p, const char*, int) { std::free(p); }

std::vector<std::uint8_t> hex(const char* s) {
  std::vector<std::uint8_t> out;
  const std::size_t n = std::strlen(s);
  CHECK(n % 2 == 0);
  for (std::size_t i = 0; i < n; i += 2) out.push_back(static_cast<std::uint8_t>(std::stoul(std::string(s + i, 2), nullptr, 16)));
  return out;
}

template <class A>
bool same(const A& a, const std::vector<std::uint8_t>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), b.size()) == 0;
}

void test_ed25519_kat() {
  // RFC 8032 section 7.1, TEST 1 (empty message).
  const auto sk = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  const auto pk = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const auto sig = hex(
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
      "d25bf5f0595bbe24655141438e7a100b");
  const auto kp = ed25519_keypair::from_seed(sk.data());
  CHECK(same(kp.public_key, pk));
  const ed25519_signer signer(kp);
  CHECK(same(signer.public_key(), pk));
  const auto s = signer.sign(byte_view());
  CHECK(s && same(*s, sig));
  const auto s2 = ed25519_sign(sk.data(), byte_view(nullptr, 0));
  CHECK(s2 && same(*s2, sig));
  CHECK(ed25519_verify(pk.data(), byte_view(), sig.data()));
  auto v = ed25519_verifier::from_public(pk.data());
  CHECK(v && v->verify(byte_view(), sig.data()));
  CHECK(!v->verify(byte_view("x", 1), sig.data()));
}

void test_ed25519_roundtrip() {
  const auto kp = ed25519_keypair::generate();
  const auto other = ed25519_keypair::generate();
  CHECK(!equal_ct(kp.public_key.data(), other.public_key.data(), 32));
  ed25519_signer signer(kp);
  CHECK(signer.public_key() == kp.public_key);

  std::uint8_t msg[64];
  CHECK(random_bytes(msg, sizeof msg));
  std::uint8_t sig[64];
  CHECK(signer.sign(byte_view(msg, 64), sig));
  // Deterministic: the one-shot path gives the same signature.
  const auto again = ed25519_sign(kp.seed.data(), byte_view(msg, 64));
  CHECK(again && std::memcmp(again->data(), sig, 64) == 0);

  CHECK(ed25519_verify(kp.public_key.data(), byte_view(msg, 64), sig));
  auto v = ed25519_verifier::from_public(kp.public_key.data());
  CHECK(v && v->verify(byte_view(msg, 64), sig));

  for (int bit : {0, 77, 511}) {  // flipped bit in the message
    msg[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    CHECK(!ed25519_verify(kp.public_key.data(), byte_view(msg, 64), sig));
    CHECK(!v->verify(byte_view(msg, 64), sig));
    msg[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
  }
  for (int bit : {0, 255, 256, 511}) {  // flipped bit in R and in S
    sig[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    CHECK(!ed25519_verify(kp.public_key.data(), byte_view(msg, 64), sig));
    CHECK(!v->verify(byte_view(msg, 64), sig));
    sig[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
  }
  CHECK(!ed25519_verify(other.public_key.data(), byte_view(msg, 64), sig));  // wrong key
  auto wrong = ed25519_verifier::from_public(other.public_key.data());
  CHECK(wrong && !wrong->verify(byte_view(msg, 64), sig));
  CHECK(!ed25519_verify(kp.public_key.data(), byte_view(msg, 63), sig));  // truncated
  CHECK(ed25519_verify(kp.public_key.data(), byte_view(msg, 64), sig));   // untouched still ok

  // Move leaves a usable target and an inert source.
  ed25519_signer moved(std::move(signer));
  std::uint8_t sig2[64];
  CHECK(moved.sign(byte_view(msg, 64), sig2) && std::memcmp(sig, sig2, 64) == 0);
  CHECK(!signer.sign(byte_view(msg, 64), sig2));
}

void test_x25519() {
  // RFC 7748 section 6.1.
  const auto a_priv = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const auto a_pub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  const auto b_priv = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  const auto b_pub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const auto k = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  const auto a = x25519_keypair::from_private(a_priv.data());
  const auto b = x25519_keypair::from_private(b_priv.data());
  CHECK(same(a.public_key(), a_pub));
  CHECK(same(b.public_key(), b_pub));
  key32 ka, kb, kc;
  CHECK(a.derive(b.public_key().data(), ka));
  CHECK(b.derive(a_pub.data(), kb));
  CHECK(same(ka.bytes, k) && same(kb.bytes, k));
  key32 a_raw;  // one-shot form from the raw scalar
  std::memcpy(a_raw.data(), a_priv.data(), 32);
  CHECK(x25519_derive(a_raw, b_pub.data(), kc));
  CHECK(same(kc.bytes, k));

  // Fresh ephemeral pairs agree; a third party gets something else.
  const auto e1 = x25519_keypair::generate(), e2 = x25519_keypair::generate(),
             e3 = x25519_keypair::generate();
  key32 s1, s2, s3;
  CHECK(e1.derive(e2.public_key().data(), s1));
  CHECK(e2.derive(e1.public_key().data(), s2));
  CHECK(e3.derive(e1.public_key().data(), s3));
  CHECK(equal_ct(s1.data(), s2.data(), 32));
  CHECK(!equal_ct(s1.data(), s3.data(), 32));

  // Small-order peer points give an all-zero secret: refused.
  std::uint8_t zero[32] = {0};
  std::uint8_t one[32] = {1};
  key32 out;
  out.bytes.fill(0xAA);
  CHECK(!e1.derive(zero, out));
  CHECK(!e1.derive(one, out));
  CHECK(!x25519_derive(a_raw, zero, out));
  CHECK(out.bytes[0] == 0xAA);  // untouched on failure

  // Moved-from pairs are inert.
  auto e4 = x25519_keypair::generate();
  const auto e5 = std::move(e4);
  CHECK(e5.derive(e1.public_key().data(), out));
  CHECK(!e4.derive(e1.public_key().data(), out));
}

void test_hkdf() {
  // RFC 5869 A.1 (test case 1).
  const auto ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  const auto salt = hex("000102030405060708090a0b0c");
  const auto info = hex("f0f1f2f3f4f5f6f7f8f9");
  const auto okm = hex(
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  std::vector<std::uint8_t> out(42);
  CHECK(hkdf_sha256(byte_view(ikm.data(), ikm.size()), byte_view(salt.data(), salt.size()),
                    byte_view(info.data(), info.size()), out.data(), out.size()));
  CHECK(out == okm);
  // RFC 5869 A.3 (test case 3): empty salt and info.
  const auto okm3 = hex(
      "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
  CHECK(hkdf_sha256(byte_view(ikm.data(), ikm.size()), byte_view(), byte_view(), out.data(),
                    out.size()));
  CHECK(out == okm3);
  // Bounds.
  CHECK(!hkdf_sha256(byte_view(ikm.data(), ikm.size()), byte_view(), byte_view(), out.data(), 0));
  std::vector<std::uint8_t> big(255 * 32 + 1);
  CHECK(!hkdf_sha256(byte_view(ikm.data(), ikm.size()), byte_view(), byte_view(), big.data(), big.size()));
  CHECK(hkdf_sha256(byte_view(ikm.data(), ikm.size()), byte_view(), byte_view(), big.data(), big.size() - 1));
}

void test_frame_mac_incremental() {
  std::uint8_t key[32];
  for (int i = 0; i < 32; ++i) key[i] = static_cast<std::uint8_t>(i * 3 + 1);
  frame_mac a(key), b(key);
  std::vector<std::uint8_t> data(5000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7);
  std::uint8_t one[16], inc[16];
  CHECK(a.tag(42, byte_view(data.data(), data.size()), one));
  CHECK(b.begin(42));
  CHECK(b.update(data.data(), 17));
  CHECK(b.update(data.data() + 17, 1000));
  CHECK(b.update(data.data() + 1017, data.size() - 1017));
  CHECK(b.finish(inc));
  CHECK(std::memcmp(one, inc, 16) == 0);
  CHECK(b.begin(42) && b.update(data.data(), data.size()) && b.finish_verify(one));
  CHECK(b.begin(43) && b.update(data.data(), data.size()) && !b.finish_verify(one));
}

void test_frame_mac() {
  key32 key, key2;
  CHECK(random_bytes(key.data(), 32));
  CHECK(random_bytes(key2.data(), 32));
  const long ctor_before = g_openssl_allocs.load();
  frame_mac mac(key), other(key2), same_key(key);
  // The counters really see OpenSSL's heap (else the zero check is vacuous).
  CHECK(!g_counting || g_openssl_allocs.load() > ctor_before);

  std::vector<std::uint8_t> batch(5000);
  CHECK(random_bytes(batch.data(), batch.size()));
  const byte_view whole(batch.data(), batch.size());
  std::uint8_t t[16], t2[16];
  CHECK(mac.tag(42, whole, t));
  CHECK(mac.verify(42, whole, t));
  CHECK(same_key.verify(42, whole, t));  // the receiving side
  CHECK(mac.tag(42, whole, t2) && std::memcmp(t, t2, 16) == 0);  // deterministic per (key, seq)

  CHECK(!mac.verify(43, whole, t));  // replayed / reordered batch
  CHECK(!mac.verify(41, whole, t));
  CHECK(!mac.verify(42ull | (1ull << 63), whole, t));
  CHECK(!other.verify(42, whole, t));  // different key
  for (std::size_t i : {std::size_t{0}, std::size_t{1}, std::size_t{2047}, batch.size() - 1}) {
    batch[i] ^= 0x01;  // flipped byte
    CHECK(!mac.verify(42, whole, t));
    batch[i] ^= 0x01;
  }
  CHECK(!mac.verify(42, byte_view(batch.data(), batch.size() - 1), t));  // truncated
  for (int i = 0; i < 16; ++i) {  // tampered tag
    t[i] ^= 0x80;
    CHECK(!mac.verify(42, whole, t));
    t[i] ^= 0x80;
  }
  CHECK(mac.verify(42, whole, t));

  // Scattered over several buffers (odd sizes, empty pieces) == contiguous.
  const std::size_t cuts[] = {0, 1, 1, 17, 300, 2048, 2049, 4999, 5000};
  std::vector<byte_view> parts;
  for (std::size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; ++i)
    parts.emplace_back(batch.data() + cuts[i], cuts[i + 1] - cuts[i]);
  CHECK(mac.tag(42, parts.data(), parts.size(), t2));
  CHECK(std::memcmp(t, t2, 16) == 0);
  CHECK(mac.verify(42, parts.data(), parts.size(), t));
  std::vector<byte_view> bytewise;
  for (std::size_t i = 0; i < batch.size(); ++i) bytewise.emplace_back(batch.data() + i, 1);
  CHECK(same_key.verify(42, bytewise.data(), bytewise.size(), t));

  // Empty batch: still bound to seq.
  std::uint8_t e1[16], e2[16];
  CHECK(mac.tag(1, nullptr, 0, e1) && mac.tag(2, byte_view(), e2));
  CHECK(std::memcmp(e1, e2, 16) != 0);
  CHECK(mac.verify(1, nullptr, 0, e1) && !mac.verify(2, nullptr, 0, e1));

  // No OpenSSL allocation per call once constructed.
  const long before = g_openssl_allocs.load();
  for (std::uint64_t s = 0; s < 1000; ++s) {
    CHECK(mac.tag(s, parts.data(), parts.size(), t2));
    CHECK(same_key.verify(s, whole, t2));
  }
  const long allocs = g_openssl_allocs.load() - before;
  std::fprintf(stderr, "frame_mac: %ld OpenSSL allocations over 2000 calls\n", allocs);
  CHECK(allocs == 0);
  CHECK(g_counting);

  // Moved-from instances are inert, moved-to ones work.
  frame_mac moved(std::move(mac));
  CHECK(moved.verify(42, whole, t));
  CHECK(!mac.tag(42, whole, t2));
  CHECK(!mac.verify(42, whole, t));
}

void test_threads() {
  // One signer and one verifier shared by several threads; one frame_mac
  // per thread (frame_mac is not shared).
  const auto kp = ed25519_keypair::generate();
  const ed25519_signer signer(kp);
  const auto verifier = ed25519_verifier::from_public(kp.public_key.data());
  CHECK(verifier);
  key32 key;
  CHECK(random_bytes(key.data(), 32));
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int n = 0; n < 4; ++n) {
    ts.emplace_back([&, n] {
      frame_mac tx(key), rx(key);
      std::uint8_t msg[64], sig[64], t[16];
      for (int i = 0; i < 200; ++i) {
        std::memset(msg, n * 31 + i, sizeof msg);
        if (!signer.sign(byte_view(msg, 64), sig) || !verifier->verify(byte_view(msg, 64), sig)) ++bad;
        msg[0] ^= 1;
        if (verifier->verify(byte_view(msg, 64), sig)) ++bad;
        if (!tx.tag(static_cast<std::uint64_t>(i), byte_view(msg, 64), t) ||
            !rx.verify(static_cast<std::uint64_t>(i), byte_view(msg, 64), t))
          ++bad;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
}

void test_utils() {
  std::uint8_t a[32] = {0}, b[32] = {0};
  CHECK(random_bytes(a, sizeof a) && random_bytes(b, sizeof b));
  CHECK(!equal_ct(a, b, 32));
  std::memcpy(b, a, 32);
  CHECK(equal_ct(a, b, 32));
  b[31] ^= 1;
  CHECK(!equal_ct(a, b, 32));
  CHECK(equal_ct(a, b, 31));
  CHECK(random_bytes(a, 0));
}

}  // namespace

int main() {
  // Must precede every OpenSSL allocation; if something allocated already,
  // the allocation-count check below still runs but counts nothing.
  g_counting = CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) == 1;
  if (!g_counting) std::fprintf(stderr, "note: could not install OpenSSL allocation counters\n");
  test_utils();
  test_ed25519_kat();
  test_ed25519_roundtrip();
  test_x25519();
  test_hkdf();
  test_frame_mac();
  test_threads();
  std::printf("test_crypto: ok\n");
  test_frame_mac_incremental();
  return 0;
}
