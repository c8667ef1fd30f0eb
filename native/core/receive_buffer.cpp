#include "receive_buffer.hpp"

#include "protocol.hpp"

#include <algorithm>
#include <cstring>

namespace nexres {

namespace {
// Below this much free space in the current chunk, switch to a fresh one
// rather than issue small reads.
constexpr std::size_t min_read_bytes = 64 * 1024;
}  // namespace

bool receive_buffer::ensure_space(const std::weak_ptr<chunk_owner>& owner, const std::weak_ptr<chunk_owner>* waiter) {
  const std::size_t partial = filled - parsed;
  // Bytes the frame in progress needs from `parsed`: its total once the
  // header is in, a header until then (its length was checked by the parser).
  std::size_t need = frame_header_bytes;
  if (current != nullptr && partial >= frame_header_bytes) need = frame_header_bytes + load_u32(current->data() + parsed);
  std::size_t want = std::max(need, partial);
  if (current != nullptr) {
    const std::size_t room = current->capacity - filled;
    if (grow_with_arrival_) {
      // Keep reading into what we hold while a useful share of it is free.
      const std::size_t min_read = std::min(min_read_bytes, pool_.chunk_bytes() / 4);
      if (room > 0 && (room >= need - partial || room >= min_read || room * 4 >= current->capacity)) return true;
    } else {
      const std::size_t room_total = current->capacity - parsed;
      if (room_total >= need && room > 0 && (room >= min_read_bytes || room >= need - partial)) return true;
    }
  }
  // Growing: room for what has arrived and as much again (at least a pooled
  // chunk). Once that comes within an eighth of the frame's size, the
  // frame's own size (a 4 MiB request's header would otherwise make its
  // 4 MiB buffer one short): its last buffer, held to the pool's final
  // reserve so a frame that has about half arrived can always complete.
  bool final_buffer = false;
  if (grow_with_arrival_) {
    const std::size_t next = std::max(pool_.chunk_bytes(), 2 * partial);
    if (next >= need - need / 8) {
      want = need;
      final_buffer = need > pool_.chunk_bytes();
    } else {
      want = std::min(want, next);
    }
  }
  refused_by_pool_ = false;
  if (inflight_.load(std::memory_order_acquire) >= static_cast<int>(max_chunks_)) return false;
  chunk* fresh = pool_.acquire(want, owner, final_buffer, waiter);
  if (fresh == nullptr) {
    refused_by_pool_ = true;
    return false;
  }
  inflight_.fetch_add(1, std::memory_order_acq_rel);
  if (partial > 0) std::memcpy(fresh->data(), current->data() + parsed, partial);
  release();
  current = fresh;
  decrypted = decrypted > parsed ? decrypted - parsed : 0;
  parsed = 0;
  filled = partial;
  return true;
}

void receive_buffer::release() {
  if (current == nullptr) return;
  chunk* c = current;
  current = nullptr;
  pool_.unref(c);
}

}  // namespace nexres
