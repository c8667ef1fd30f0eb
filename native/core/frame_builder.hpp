// Builds data frames into one shared block for native producers (tests, the
// native benchmark): the C++ counterpart of lib/outbox.ts.
#pragma once

#include "engine.hpp"
#include "protocol.hpp"

#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace nexres {

/// Gives the frames staged in [data, data + length) consecutive message ids
/// after `last` (which it advances) and returns the last one given. A run may
/// end with the header of a frame whose payload is sent by reference (not in
/// the range): it gets an id too. Used when several producers share one
/// replica's links: ids must rise in queue order on every link.
inline std::uint64_t stamp_ids(std::uint8_t* data, std::size_t length, std::uint64_t& last) noexcept {
  std::size_t p = 0;
  while (p + frame_header_bytes <= length) {
    store_u64(data + p + 16, ++last);
    const std::size_t body = load_u32(data + p);
    p += frame_header_bytes + (p + frame_header_bytes + body <= length ? body : 0);
  }
  return last;
}

class frame_builder {
 public:
  explicit frame_builder(std::uint32_t sender, std::size_t reserve = 1u << 20)
      : sender_(sender), reserve_(reserve) {
    fresh(reserve);
  }

  /// Appends one data frame.
  void add(std::uint32_t route, std::uint64_t msg_id, const void* payload, std::uint32_t length) {
    const std::size_t need = frame_header_bytes + length;
    if (size_ + need > block_->capacity) grow(size_ + need);
    std::uint8_t* at = block_->data.get() + size_;
    frame_header h{};
    h.length = length;
    h.route = route;
    h.sender = sender_;
    h.kind = frame_kind::data;
    h.msg_id = msg_id;
    encode_header(at, h);
    if (length > 0) std::memcpy(at + frame_header_bytes, payload, length);
    size_ += need;
    ++messages_;
    last_id_ = msg_id;
  }

  std::size_t bytes() const noexcept { return size_; }
  std::uint32_t messages() const noexcept { return messages_; }

  /// The frames so far as one segment; the builder starts a new block.
  segment take() {
    segment s;
    s.data = block_->data.get();
    s.length = static_cast<std::uint32_t>(size_);
    s.messages = messages_;
    s.last_msg_id = last_id_;
    s.owner = std::move(block_);
    fresh(reserve_);
    return s;
  }

 private:
  // Uninitialised storage: frames are written over it right away.
  struct block {
    struct free_deleter {
      void operator()(std::uint8_t* p) const noexcept { std::free(p); }
    };
    explicit block(std::size_t n)
        : data(static_cast<std::uint8_t*>(std::malloc(n == 0 ? 1 : n))), capacity(n) {
      if (!data) throw std::bad_alloc();
    }
    std::unique_ptr<std::uint8_t, free_deleter> data;
    std::size_t capacity;
  };

  void fresh(std::size_t n) {
    block_ = std::make_shared<block>(n);
    size_ = 0;
    messages_ = 0;
  }

  void grow(std::size_t n) {
    auto bigger = std::make_shared<block>(std::max(n, block_->capacity * 2));
    if (size_ > 0) std::memcpy(bigger->data.get(), block_->data.get(), size_);
    block_ = std::move(bigger);
  }

  std::uint32_t sender_;
  std::size_t reserve_;
  std::shared_ptr<block> block_;
  std::size_t size_ = 0;
  std::uint32_t messages_ = 0;
  std::uint64_t last_id_ = 0;
};

}  // namespace nexres
