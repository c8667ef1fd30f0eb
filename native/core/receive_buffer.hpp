// The receive side of a connection: which chunk the socket reads into next,
// where its complete frames end ([0, parsed) handed out, [parsed, filled) a
// frame in progress) and how many chunks the connection holds. Shared by
// replica sessions and client sessions. io thread of the connection, except
// on_chunk_released().
#pragma once

#include "chunk_pool.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace nexres {

class receive_buffer {
 public:
  /// grow_with_arrival: a frame bigger than a chunk gets a buffer sized by
  /// the bytes that have arrived (doubling), not by the length its header
  /// declares (client port: the sender is not trusted to send what it declares).
  receive_buffer(chunk_pool& pool, std::size_t max_chunks, bool grow_with_arrival = false)
      : pool_(pool), max_chunks_(max_chunks), grow_with_arrival_(grow_with_arrival) {}
  receive_buffer(const receive_buffer&) = delete;
  receive_buffer& operator=(const receive_buffer&) = delete;
  ~receive_buffer() { release(); }

  /// Makes room for the next read, moving a frame in progress to a fresh
  /// chunk when needed (an oversized one for a frame bigger than a chunk).
  /// False when the connection holds its maximum of chunks or the pool is at
  /// its bound: stop reading until one comes back (backpressure). waiter:
  /// told when the pool has memory again (chunk_pool::acquire).
  bool ensure_space(const std::weak_ptr<chunk_owner>& owner, const std::weak_ptr<chunk_owner>* waiter = nullptr);
  /// Drops our reference to the current chunk.
  void release();
  /// Drops the current chunk when no frame is in progress in it (what was
  /// handed out keeps its own references): a connection waiting for its
  /// next frame then holds no receive memory.
  void release_if_idle() {
    if (current != nullptr && filled == parsed) {
      release();
      parsed = filled = decrypted = 0;
    }
  }
  /// The last ensure_space() failed because the pool was at its bound (not
  /// because this connection holds its maximum of chunks).
  bool refused_by_pool() const noexcept { return refused_by_pool_; }
  /// Bytes of a frame in progress (read, not yet a complete frame).
  std::size_t partial() const noexcept { return filled - parsed; }
  /// Any thread: one of our chunks came back from the consumer.
  void on_chunk_released() { inflight_.fetch_sub(1, std::memory_order_acq_rel); }

  /// auth seal: decrypts in place, in one call, what has arrived past the
  /// plaintext [parsed, decrypted), at most `left` bytes (the rest of the
  /// batch in progress), with decrypt(pointer, length) -> bool; false when
  /// it refused.
  template <typename Decrypt>
  bool decrypt_arrived(std::size_t left, Decrypt&& decrypt) {
    const std::size_t from = decrypted > parsed ? decrypted : parsed;
    const std::size_t n = filled - from < left ? filled - from : left;
    if (n == 0) return true;
    if (!decrypt(current->data() + from, n)) return false;
    decrypted = from + n;
    return true;
  }
  /// auth seal: the end of the plaintext from `parsed`.
  std::size_t plain_end() const noexcept { return decrypted > parsed ? decrypted : parsed; }

  std::uint8_t* write_ptr() const noexcept { return current->data() + filled; }
  std::size_t write_room() const noexcept { return current->capacity - filled; }

  chunk* current = nullptr;
  std::size_t parsed = 0;
  std::size_t filled = 0;
  /// auth seal: [parsed, decrypted) is already plaintext (decrypted in place).
  std::size_t decrypted = 0;

 private:
  chunk_pool& pool_;
  const std::size_t max_chunks_;
  const bool grow_with_arrival_;
  std::atomic<int> inflight_{0};
  bool refused_by_pool_ = false;
};

}  // namespace nexres
