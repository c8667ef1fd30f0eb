// Ed25519 keys for the 'mac' fuzz targets (fuzz_replica_link,
// fuzz_replica_session_mac): N keys derived from fixed labels, so runs and
// crashes reproduce; index 0 is an impostor key nobody configures, index i
// replica i's. Made once per process.
#pragma once

#include "crypto.hpp"
#include "fuzz_net.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace nexres_fuzz {

inline std::array<std::uint8_t, 32> seed_of(const char* label) {
  std::array<std::uint8_t, 32> out{};
  FUZZ_CHECK(nexres::crypto::hkdf_sha256(nexres::crypto::byte_view(label, std::strlen(label)), nexres::crypto::byte_view(),
                                         nexres::crypto::byte_view(), out.data(), out.size()));
  return out;
}

template <int N>
struct test_keys {
  std::array<std::uint8_t, 32> seed[N];
  std::array<std::uint8_t, 32> pub[N];
  std::unique_ptr<nexres::crypto::ed25519_signer> signer[N];
  std::unique_ptr<nexres::crypto::ed25519_verifier> verifier[N];
};

/// Keys 0 (the impostor) .. N-1 (replica i).
template <int N>
test_keys<N>& keys() {
  static test_keys<N>* k = [] {
    auto* t = new test_keys<N>;
    for (int i = 0; i < N; ++i) {
      const std::string label = i == 0 ? "nexres fuzz impostor" : "nexres fuzz replica " + std::to_string(i);
      t->seed[i] = seed_of(label.c_str());
      const nexres::crypto::ed25519_keypair kp = nexres::crypto::ed25519_keypair::from_seed(t->seed[i].data());
      t->pub[i] = kp.public_key;
      t->signer[i] = std::make_unique<nexres::crypto::ed25519_signer>(t->seed[i].data());
      auto v = nexres::crypto::ed25519_verifier::from_public(t->pub[i].data());
      FUZZ_CHECK(v.has_value());
      t->verifier[i] = std::make_unique<nexres::crypto::ed25519_verifier>(std::move(*v));
    }
    return t;
  }();
  return *k;
}

}  // namespace nexres_fuzz
