// Builds data frames into one shared block for native producers (tests, the
// native benchmark): the C++ counterpart of lib/outbox.ts.
#pragma once

#include "engine.hpp"
#include "protocol.hpp"

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace nexres {

class frame_builder {
 public:
  explicit frame_builder(std::uint32_t sender, std::size_t reserve = 1u << 20) : sender_(sender) {
    buf_ = std::make_shared<std::vector<std::uint8_t>>();
    buf_->reserve(reserve);
  }

  /// Appends one data frame.
  void add(std::uint32_t route, std::uint64_t msg_id, const void* payload, std::uint32_t length) {
    const std::size_t at = buf_->size();
    buf_->resize(at + frame_header_bytes + length);
    frame_header h{};
    h.length = length;
    h.route = route;
    h.sender = sender_;
    h.kind = frame_kind::data;
    h.msg_id = msg_id;
    encode_header(buf_->data() + at, h);
    if (length > 0) std::memcpy(buf_->data() + at + frame_header_bytes, payload, length);
    ++messages_;
    last_id_ = msg_id;
  }

  std::size_t bytes() const noexcept { return buf_->size(); }
  std::uint32_t messages() const noexcept { return messages_; }

  /// The frames so far as one segment; the builder starts a new block.
  segment take() {
    segment s;
    s.data = buf_->data();
    s.length = static_cast<std::uint32_t>(buf_->size());
    s.messages = messages_;
    s.last_msg_id = last_id_;
    s.owner = buf_;
    const std::size_t cap = buf_->capacity();
    buf_ = std::make_shared<std::vector<std::uint8_t>>();
    buf_->reserve(cap);
    messages_ = 0;
    return s;
  }

 private:
  std::uint32_t sender_;
  std::shared_ptr<std::vector<std::uint8_t>> buf_;
  std::uint32_t messages_ = 0;
  std::uint64_t last_id_ = 0;
};

}  // namespace nexres
