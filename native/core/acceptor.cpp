#include "acceptor.hpp"

#include "engine.hpp"
#include "sockets.hpp"

#include <asio/post.hpp>

#include <chrono>

#include <unistd.h>

namespace nexres {

acceptor::acceptor(engine& eng, asio::io_context& io, socket_handler on_socket)
    : engine_(eng), io_(io), on_socket_(std::move(on_socket)), acceptor_(io), retry_(io) {}

std::error_code acceptor::listen(const std::string& host, std::uint16_t port) {
  std::error_code ec;
  auto addr = asio::ip::make_address(host.empty() ? std::string("0.0.0.0") : host, ec);
  if (ec) return ec;
  asio::ip::tcp::endpoint ep(addr, port);
  protocol_ = ep.protocol();
  if ((ec = sockets::open(acceptor_, protocol_))) return ec;
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (ec) return ec;
  acceptor_.bind(ep, ec);
  if (ec) return ec;
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return ec;
  // do_accept() takes connections until none is left.
  acceptor_.non_blocking(true, ec);
  if (ec) return ec;
  port_ = acceptor_.local_endpoint(ec).port();
  return ec;
}

void acceptor::start() {
  auto self = shared_from_this();
  asio::post(io_, [self] { self->do_accept(); });
}

void acceptor::close_async() {
  auto self = shared_from_this();
  asio::post(io_, [self] {
    self->closed_ = true;
    std::error_code ignored;
    self->retry_.cancel();
    self->acceptor_.close(ignored);
  });
}

void acceptor::close_now() {
  closed_ = true;
  std::error_code ignored;
  acceptor_.close(ignored);
}

// Accepts itself (sockets::accept): Asio's own accept has no way to set
// close-on-exec atomically. Takes every pending connection, then waits for
// the listening socket to be readable. Asio's reactor is edge-triggered and
// drops a readiness edge that arrives while no wait is queued: so the wait
// is queued right after accept said "none left", on this same thread, before
// the reactor can see a newer edge.
void acceptor::do_accept() {
  if (closed_) return;
  auto self = shared_from_this();
  // Bounded per turn so the other connections on this io thread are served.
  for (int i = 0; i < 64; ++i) {
    std::error_code ec;
    const int fd = sockets::accept(acceptor_, ec);
    if (ec == asio::error::would_block) {
      acceptor_.async_wait(asio::socket_base::wait_read, [self](const std::error_code& e) {
        if (self->closed_ || e == asio::error::operation_aborted) return;
        if (e) return self->retry_later();
        self->do_accept();
      });
      return;
    }
    if (ec == asio::error::connection_aborted || ec == std::errc::protocol_error) continue;  // gone already
    // Out of descriptors or similar: back off briefly instead of spinning.
    if (ec) return retry_later();
    asio::ip::tcp::socket socket(engine_.pool().next());
    socket.assign(protocol_, fd, ec);
    if (ec) {
      ::close(fd);
      continue;
    }
    on_socket_(std::move(socket));
  }
  asio::post(io_, [self] { self->do_accept(); });
}

void acceptor::retry_later() {
  auto self = shared_from_this();
  retry_.expires_after(std::chrono::milliseconds(50));
  retry_.async_wait([self](const std::error_code& e) {
    if (!e) self->do_accept();
  });
}

}  // namespace nexres
