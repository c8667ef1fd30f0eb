#include "sockets.hpp"

#include <asio/post.hpp>
#include <asio/write.hpp>

#include <cerrno>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace nexres::sockets {

namespace {

std::error_code last_error() { return std::error_code(errno, std::system_category()); }

// A descriptor of a new TCP socket, close-on-exec. With SOCK_CLOEXEC the flag
// is set by the same system call that creates the descriptor: a fork in any
// other thread (Node spawning a child) can never see it without the flag.
// Where SOCK_CLOEXEC does not exist (macOS), fcntl sets it right after; a
// fork exactly between the two calls would leak this one descriptor into
// that child until it execs or exits (there is no atomic way there).
int new_socket(const asio::ip::tcp& protocol, std::error_code& ec) {
#if defined(SOCK_CLOEXEC)
  const int fd = ::socket(protocol.family(), SOCK_STREAM | SOCK_CLOEXEC, protocol.protocol());
#else
  const int fd = ::socket(protocol.family(), SOCK_STREAM, protocol.protocol());
  if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
  if (fd < 0) ec = last_error();
  return fd;
}

template <typename Socket>
std::error_code open_into(Socket& s, const asio::ip::tcp& protocol) {
  std::error_code ec;
  const int fd = new_socket(protocol, ec);
  if (fd < 0) return ec;
  s.assign(protocol, fd, ec);
  if (ec) ::close(fd);
  return ec;
}

}  // namespace

std::error_code open(asio::ip::tcp::socket& s, const asio::ip::tcp& protocol) { return open_into(s, protocol); }

std::error_code open(asio::ip::tcp::acceptor& a, const asio::ip::tcp& protocol) { return open_into(a, protocol); }

int accept(asio::ip::tcp::acceptor& a, std::error_code& ec) {
  for (;;) {
    // As new_socket(): accept4 sets close-on-exec atomically; elsewhere
    // fcntl right after, with the same one-descriptor window.
#if defined(SOCK_CLOEXEC) && !defined(__APPLE__)
    const int fd = ::accept4(a.native_handle(), nullptr, nullptr, SOCK_CLOEXEC);
#else
    const int fd = ::accept(a.native_handle(), nullptr, nullptr);
    if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (fd >= 0) return fd;
    if (errno == EINTR) continue;
    ec = (errno == EAGAIN || errno == EWOULDBLOCK) ? std::error_code(asio::error::would_block) : last_error();
    return -1;
  }
}

void drain_and_shutdown(asio::ip::tcp::socket& s) noexcept {
  if (!s.is_open()) return;
  std::error_code ignored;
  s.non_blocking(true, ignored);
  std::array<std::uint8_t, 4096> scratch;
  for (int i = 0; i < 256; ++i) {  // at most 1 MiB
    std::error_code ec;
    if (s.read_some(asio::buffer(scratch), ec) == 0 || ec) break;
  }
  s.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

lingering_close::lingering_close(asio::ip::tcp::socket socket, std::vector<std::uint8_t> bytes,
                                 std::chrono::milliseconds deadline)
    : socket_(std::move(socket)), timer_(socket_.get_executor()), bytes_(std::move(bytes)), deadline_(deadline) {}

void lingering_close::start() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] {
    if (!self->socket_.is_open()) return;
    self->timer_.expires_after(self->deadline_);
    self->timer_.async_wait([self](const std::error_code& ec) {
      if (!ec) self->close();
    });
    asio::async_write(self->socket_, asio::buffer(self->bytes_), [self](const std::error_code& ec, std::size_t) {
      if (ec) return self->close();
      std::error_code ignored;
      self->socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
      self->discard();
    });
  });
}

void lingering_close::close_async() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->close(); });
}

// Until the peer closes (EOF) or the socket is closed (deadline, stop).
void lingering_close::discard() {
  auto self = shared_from_this();
  socket_.async_read_some(asio::buffer(scratch_), [self](const std::error_code& ec, std::size_t) {
    if (!ec) return self->discard();
    self->close();
  });
}

void lingering_close::close() {
  std::error_code ignored;
  timer_.cancel();
  // Cut short (deadline, stop): still no reset for input that has arrived.
  drain_and_shutdown(socket_);
  socket_.close(ignored);
}

}  // namespace nexres::sockets
