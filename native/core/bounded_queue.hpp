// Bounded lock-free multi-producer multi-consumer queue (Dmitry Vyukov's
// array queue). The MIQ: io threads push deliveries, the consumer pops.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>

namespace nexres {

template <typename T>
class bounded_queue {
 public:
  /// Capacity is rounded up to a power of two (at least 2).
  explicit bounded_queue(std::size_t capacity) {
    std::size_t cap = 2;
    while (cap < capacity) cap <<= 1;
    mask_ = cap - 1;
    cells_ = std::make_unique<cell[]>(cap);
    for (std::size_t i = 0; i < cap; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }

  bounded_queue(const bounded_queue&) = delete;
  bounded_queue& operator=(const bounded_queue&) = delete;

  ~bounded_queue() {
    T tmp;
    while (try_pop(tmp)) {
    }
  }

  /// Any thread. Returns false when full (the caller keeps the value).
  bool try_push(T& value) {
    std::size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      cell& c = cells_[pos & mask_];
      std::size_t seq = c.seq.load(std::memory_order_acquire);
      auto diff = static_cast<std::ptrdiff_t>(seq) - static_cast<std::ptrdiff_t>(pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          c.storage.emplace(std::move(value));
          c.seq.store(pos + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
  }

  /// Any thread. Returns false when empty.
  bool try_pop(T& out) {
    std::size_t pos = head_.load(std::memory_order_relaxed);
    for (;;) {
      cell& c = cells_[pos & mask_];
      std::size_t seq = c.seq.load(std::memory_order_acquire);
      auto diff = static_cast<std::ptrdiff_t>(seq) - static_cast<std::ptrdiff_t>(pos + 1);
      if (diff == 0) {
        if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          out = std::move(*c.storage);
          c.storage.reset();
          c.seq.store(pos + mask_ + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;
      } else {
        pos = head_.load(std::memory_order_relaxed);
      }
    }
  }

  /// Approximate; exact when no push/pop runs concurrently.
  std::size_t size_approx() const noexcept {
    std::size_t t = tail_.load(std::memory_order_acquire);
    std::size_t h = head_.load(std::memory_order_acquire);
    return t >= h ? t - h : 0;
  }

  std::size_t capacity() const noexcept { return mask_ + 1; }

 private:
  struct cell {
    std::atomic<std::size_t> seq{0};
    std::optional<T> storage;
  };
  std::unique_ptr<cell[]> cells_;
  std::size_t mask_ = 0;
  alignas(64) std::atomic<std::size_t> tail_{0};
  alignas(64) std::atomic<std::size_t> head_{0};
};

}  // namespace nexres
