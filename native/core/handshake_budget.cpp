#include "handshake_budget.hpp"

#include <algorithm>
#include <iterator>

namespace nexres {

namespace {
// Addresses tracked before idle (refilled) buckets are dropped.
constexpr std::size_t max_tracked = 65536;
}  // namespace

handshake_budget::handshake_budget(std::uint32_t per_address, std::uint32_t total)
    : per_address_(per_address), total_(total), all_{static_cast<double>(total), clock::now()} {}

void handshake_budget::refill(bucket& b, double rate, clock::time_point now) {
  const double elapsed = std::chrono::duration<double>(now - b.at).count();
  b.tokens = std::min(rate, b.tokens + std::max(0.0, elapsed) * rate);
  b.at = now;
}

handshake_budget::bucket& handshake_budget::address_bucket(const std::string& address, clock::time_point now) {
  auto it = by_address_.find(address);
  if (it != by_address_.end()) return it->second;
  if (by_address_.size() >= max_tracked) {
    // Buckets that have refilled are idle: they would start full anyway.
    for (auto i = by_address_.begin(); i != by_address_.end();) {
      refill(i->second, per_address_, now);
      i = i->second.tokens >= per_address_ ? by_address_.erase(i) : std::next(i);
    }
    // All busy (a flood from that many addresses): start over.
    if (by_address_.size() >= max_tracked) by_address_.clear();
  }
  return by_address_.emplace(address, bucket{static_cast<double>(per_address_), now}).first->second;
}

bool handshake_budget::take(const std::string& address, clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  bucket* addr = per_address_ != 0 ? &address_bucket(address, now) : nullptr;
  // Both refilled; a token is spent from both or from neither.
  if (total_ != 0) refill(all_, total_, now);
  if (addr != nullptr) refill(*addr, per_address_, now);
  if ((total_ != 0 && all_.tokens < 1.0) || (addr != nullptr && addr->tokens < 1.0)) return false;
  if (total_ != 0) all_.tokens -= 1.0;
  if (addr != nullptr) addr->tokens -= 1.0;
  return true;
}

std::size_t handshake_budget::tracked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_address_.size();
}

}  // namespace nexres
