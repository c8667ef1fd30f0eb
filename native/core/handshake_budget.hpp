// The handshake CPU budget (SECURITY.md "Handshake budget"): a connection
// that reaches key exchange costs ~70-160 µs of io-thread CPU (X25519, an
// Ed25519 signature and verification). Before any public-key operation a
// handshake takes a token from its remote address's bucket and from the
// engine's; without one it is refused cheaply (RATE_LIMITED). Buckets refill
// continuously up to one second's worth. Any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace nexres {

class handshake_budget {
 public:
  using clock = std::chrono::steady_clock;

  /// per_address, total: handshakes per second (and the burst); 0 = no bound.
  handshake_budget(std::uint32_t per_address, std::uint32_t total);

  /// True when a handshake from `address` (an IP, no port) may do key exchange now.
  bool take(const std::string& address, clock::time_point now = clock::now());

  /// Addresses tracked (bounded: full buckets are dropped when it grows).
  std::size_t tracked() const;

 private:
  struct bucket {
    double tokens = 0;
    clock::time_point at{};
  };
  static void refill(bucket& b, double rate, clock::time_point now);
  bucket& address_bucket(const std::string& address, clock::time_point now);  // holds mu_

  const std::uint32_t per_address_;
  const std::uint32_t total_;
  mutable std::mutex mu_;
  bucket all_;                                        // mu_
  std::unordered_map<std::string, bucket> by_address_;  // mu_
};

}  // namespace nexres
