// Receive chunks: large buffers that sockets read into and that are handed to
// the consumer (JS) without copying. A chunk is reference counted: the
// connection reading into it holds one reference and every delivered batch
// that points into it holds one. At zero it returns to the pool.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace nexres {

/// Told when one of its chunks is released (the owner may resume reading).
class chunk_owner {
 public:
  virtual ~chunk_owner() = default;
  /// Any thread (JS thread or an io thread); must not block.
  virtual void on_chunk_released() = 0;
  /// Any thread; must not block. Memory came back to a pool that refused
  /// this owner (chunk_pool::acquire with a waiter). False when the owner
  /// no longer waits (or a wake-up is already on its way): the pool then
  /// wakes the next waiter instead.
  virtual bool on_pool_memory() { return false; }
};

class chunk_pool;

struct chunk {
  /// Unique across the engine's pools (the consumer keys chunks by it).
  std::uint32_t id = 0;
  /// The pool it comes from and returns to.
  chunk_pool* home = nullptr;
  std::size_t capacity = 0;
  /// malloc'd bytes, shared so a consumer (a JS ArrayBuffer) can outlive the pool.
  std::shared_ptr<std::uint8_t> memory;
  /// False for an oversized chunk made for one big frame: freed, not pooled.
  bool pooled = true;
  std::atomic<int> refs{0};
  /// Guarded by the pool's mutex while idle; set by acquire().
  std::weak_ptr<chunk_owner> owner;
  /// Consumer thread only: the consumer already holds its own handle on memory.
  bool consumer_bound = false;

  std::uint8_t* data() const noexcept { return memory.get(); }
};

class chunk_pool {
 public:
  /// chunk_bytes: size of pooled chunks; max_total_bytes: bound on all chunks.
  /// Chunk ids are id_base + k * id_stride, so several pools feeding one
  /// consumer never share an id. max_oversized_bytes, when given, splits the
  /// bound in two regions: pooled chunks take at most max_total_bytes -
  /// max_oversized_bytes and the chunks made bigger than chunk_bytes (frames
  /// that outgrow a chunk) at most max_oversized_bytes, so neither kind can
  /// lock the other out (pooled chunks are kept once made: a consumer holds
  /// their memory). Of the oversized region, final_reserve_bytes (the
  /// largest final buffer) is kept for final buffers (acquire's
  /// final_buffer), so a frame that has half arrived can always complete.
  chunk_pool(std::size_t chunk_bytes, std::size_t max_total_bytes, std::uint32_t id_base = 0,
             std::uint32_t id_stride = 1, std::size_t max_oversized_bytes = static_cast<std::size_t>(-1),
             std::size_t final_reserve_bytes = 0);
  chunk_pool(const chunk_pool&) = delete;
  chunk_pool& operator=(const chunk_pool&) = delete;

  /// Any thread. A chunk of at least min_capacity with one reference held by
  /// the caller, or nullptr when the byte bound is reached.
  /// final_buffer: a frame's last buffer (its full size): may use the
  /// oversized region's reserve (no deadlock among growing frames).
  /// waiter: when nothing can be had, it is told once memory comes back
  /// (on_pool_memory), decided under the pool's lock: no lost wake-up, no
  /// polling.
  chunk* acquire(std::size_t min_capacity, std::weak_ptr<chunk_owner> owner, bool final_buffer = false,
                 const std::weak_ptr<chunk_owner>* waiter = nullptr);
  /// Any thread: `waiter` is woken first by the next release (it made that
  /// memory come back: it refused another owner to get it).
  void wait_first(std::weak_ptr<chunk_owner> waiter);
  /// Any thread. Drops one reference on a chunk of any pool; at zero the
  /// chunk goes back to its own pool and its owner is told.
  static void unref(chunk* c);

  /// Any thread: wakes up to n waiters (a woken waiter that went away
  /// without using its wake-up passes it on with this).
  void wake_waiters(std::size_t n);

  std::size_t chunk_bytes() const noexcept { return chunk_bytes_; }
  /// Bytes currently allocated to chunks (pooled or in use).
  std::size_t allocated_bytes() const;
  std::size_t max_bytes() const noexcept { return max_total_bytes_; }

 private:
  void recycle(chunk* c);
  void drop(chunk* c);

  const std::size_t chunk_bytes_;
  const std::size_t max_total_bytes_;
  const std::uint32_t id_base_;
  const std::uint32_t id_stride_;
  const std::size_t max_oversized_bytes_;
  const std::size_t max_pooled_bytes_;
  const std::size_t final_reserve_bytes_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<chunk>> slots_;  // index == (id - id_base) / id_stride
  std::vector<chunk*> free_;                   // idle pooled chunks
  std::vector<std::uint32_t> free_ids_;        // empty slots
  std::deque<std::weak_ptr<chunk_owner>> waiters_;  // refused, in order; woken as memory comes back
  std::size_t total_bytes_ = 0;
  std::size_t oversized_bytes_ = 0;
  std::size_t pooled_bytes_ = 0;
};

}  // namespace nexres
