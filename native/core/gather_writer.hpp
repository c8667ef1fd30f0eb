// Gather writes of queued segments straight to a non-blocking socket:
// sendmsg() with up to IOV_MAX buffers per call (Asio's own gather write
// stops at 64), MSG_NOSIGNAL so a closed peer never raises SIGPIPE. When
// the socket is full the caller waits for writability through Asio.
#pragma once

#include "engine.hpp"

#include <cstddef>
#include <deque>
#include <system_error>

namespace nexres {

struct gather_result {
  std::size_t segments_done = 0;  // fully written, from the front of the queue
  std::size_t bytes = 0;          // bytes written by this call
  bool would_block = false;       // the socket is full: wait, then call again
  std::error_code error;
};

/// io thread of the socket. Writes q in order (its first `limit` segments),
/// starting `front_offset` bytes into q.front(); updates front_offset for the
/// segment left partial.
gather_result gather_write(int fd, const std::deque<segment>& q, std::size_t& front_offset,
                           std::size_t limit = static_cast<std::size_t>(-1));

}  // namespace nexres
