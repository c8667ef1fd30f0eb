#include "shared_engine.hpp"

#include <iterator>
#include <mutex>
#include <unordered_map>

namespace nexres::addon {

namespace {
std::mutex registry_mu;
std::unordered_map<std::uint32_t, std::weak_ptr<shared_engine>> registry;
std::uint32_t registry_next = 1;
}  // namespace

std::uint32_t register_engine(const std::shared_ptr<shared_engine>& se) {
  std::lock_guard<std::mutex> lock(registry_mu);
  for (auto it = registry.begin(); it != registry.end();) it = it->second.expired() ? registry.erase(it) : std::next(it);
  const std::uint32_t key = registry_next++;
  registry[key] = se;
  return key;
}

std::shared_ptr<shared_engine> find_engine(std::uint32_t key) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry.find(key);
  return it == registry.end() ? nullptr : it->second.lock();
}

}  // namespace nexres::addon
