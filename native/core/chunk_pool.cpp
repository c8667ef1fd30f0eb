#include "chunk_pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <new>

namespace nexres {

namespace {
struct free_deleter {
  void operator()(std::uint8_t* p) const noexcept { std::free(p); }
};
}  // namespace

chunk_pool::chunk_pool(std::size_t chunk_bytes, std::size_t max_total_bytes, std::uint32_t id_base,
                       std::uint32_t id_stride, std::size_t max_oversized_bytes, std::size_t final_reserve_bytes)
    : chunk_bytes_(chunk_bytes),
      max_total_bytes_(max_total_bytes),
      id_base_(id_base),
      id_stride_(id_stride == 0 ? 1 : id_stride),
      max_oversized_bytes_(max_oversized_bytes),
      max_pooled_bytes_(max_oversized_bytes < max_total_bytes ? max_total_bytes - max_oversized_bytes : max_total_bytes),
      final_reserve_bytes_(std::min(final_reserve_bytes, max_oversized_bytes)) {}

chunk* chunk_pool::acquire(std::size_t min_capacity, std::weak_ptr<chunk_owner> owner, bool final_buffer,
                           const std::weak_ptr<chunk_owner>* waiter) {
  std::lock_guard<std::mutex> lock(mu_);
  auto refuse = [&]() -> chunk* {
    if (waiter != nullptr) waiters_.push_back(*waiter);
    return nullptr;
  };
  chunk* c = nullptr;
  if (min_capacity <= chunk_bytes_ && !free_.empty()) {
    c = free_.back();
    free_.pop_back();
  } else {
    const bool pooled = min_capacity <= chunk_bytes_;
    const std::size_t cap = pooled ? chunk_bytes_ : min_capacity;
    if (total_bytes_ + cap > max_total_bytes_) return refuse();
    if (pooled && pooled_bytes_ + cap > max_pooled_bytes_) return refuse();
    const std::size_t oversized_room = max_oversized_bytes_ - (final_buffer ? 0 : final_reserve_bytes_);
    if (!pooled && oversized_bytes_ + cap > oversized_room) return refuse();
    auto* raw = static_cast<std::uint8_t*>(std::malloc(cap));
    if (raw == nullptr) return refuse();
    auto fresh = std::make_unique<chunk>();
    fresh->memory = std::shared_ptr<std::uint8_t>(raw, free_deleter{});
    fresh->capacity = cap;
    fresh->pooled = pooled;
    std::uint32_t index;
    if (free_ids_.empty()) {
      index = static_cast<std::uint32_t>(slots_.size());
      slots_.push_back(nullptr);
    } else {
      index = free_ids_.back();
      free_ids_.pop_back();
    }
    fresh->id = id_base_ + index * id_stride_;
    fresh->home = this;
    c = fresh.get();
    slots_[index] = std::move(fresh);
    total_bytes_ += cap;
    (pooled ? pooled_bytes_ : oversized_bytes_) += cap;
  }
  c->owner = std::move(owner);
  c->refs.store(1, std::memory_order_relaxed);
  return c;
}

void chunk_pool::unref(chunk* c) {
  if (c->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  c->home->drop(c);
}

void chunk_pool::drop(chunk* c) {
  std::shared_ptr<chunk_owner> owner;
  // Waiters woken: as many as the freed memory can serve (at least one),
  // not all of them (a herd of wake-ups per release under load).
  std::size_t wake = std::max<std::size_t>(1, c->capacity / chunk_bytes_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    owner = c->owner.lock();
    c->owner.reset();
    recycle(c);
    if (waiters_.empty()) wake = 0;
  }
  if (owner) owner->on_chunk_released();
  if (wake > 0) wake_waiters(wake);
}

void chunk_pool::wait_first(std::weak_ptr<chunk_owner> waiter) {
  std::lock_guard<std::mutex> lock(mu_);
  waiters_.push_front(std::move(waiter));
}

void chunk_pool::wake_waiters(std::size_t wake) {
  while (wake > 0) {
    std::weak_ptr<chunk_owner> next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiters_.empty()) break;
      next = std::move(waiters_.front());
      waiters_.pop_front();
    }
    auto o = next.lock();
    if (o && o->on_pool_memory()) --wake;
  }
}

// Holds mu_.
void chunk_pool::recycle(chunk* c) {
  if (c->pooled) {
    free_.push_back(c);
    return;
  }
  total_bytes_ -= c->capacity;
  oversized_bytes_ -= c->capacity;
  const std::uint32_t index = (c->id - id_base_) / id_stride_;
  free_ids_.push_back(index);
  slots_[index].reset();  // memory lives on while a consumer still holds it
}

std::size_t chunk_pool::allocated_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_bytes_;
}

}  // namespace nexres
