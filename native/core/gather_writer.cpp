#include "gather_writer.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <algorithm>
#include <climits>

namespace nexres {

namespace {
#ifdef IOV_MAX
constexpr std::size_t max_iov = IOV_MAX < 1024 ? IOV_MAX : 1024;
#else
constexpr std::size_t max_iov = 1024;
#endif
// Bound one call's work so a fast peer cannot monopolise its io thread.
constexpr std::size_t max_bytes_per_call = 64u << 20;
}  // namespace

gather_result gather_write(int fd, const std::deque<segment>& q, std::size_t& front_offset,
                           std::size_t limit) {
  gather_result res;
  iovec iov[max_iov];
  const std::size_t end = std::min(limit, q.size());
  // Bytes of q[i] on the wire: a shadow segment (auth seal) went out inside
  // the ciphertext before it.
  const auto wire = [&q](std::size_t i) -> std::size_t { return q[i].shadow ? 0 : q[i].length; };
  std::size_t next = 0;  // index of the first segment not fully written
  const auto skip_empty = [&] {
    while (next < end && front_offset == 0 && wire(next) == 0) ++next;
  };
  skip_empty();
  while (next < end && res.bytes < max_bytes_per_call) {
    std::size_t n = 0;
    for (std::size_t i = next; i < end && n < max_iov; ++i) {
      const std::size_t skip = i == next ? front_offset : 0;
      if (wire(i) == 0) continue;
      iov[n].iov_base = const_cast<std::uint8_t*>(q[i].data + skip);
      iov[n].iov_len = wire(i) - skip;
      ++n;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = n;
    const ssize_t w = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        res.would_block = true;
      } else {
        res.error = std::error_code(errno, std::system_category());
      }
      break;
    }
    std::size_t left = static_cast<std::size_t>(w);
    res.bytes += left;
    while (left > 0) {
      const std::size_t rest = wire(next) - front_offset;
      if (left < rest) {
        front_offset += left;
        left = 0;
      } else {
        left -= rest;
        front_offset = 0;
        ++next;
        skip_empty();
      }
    }
  }
  res.segments_done = next;
  return res;
}

}  // namespace nexres
