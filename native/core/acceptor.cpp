#include "acceptor.hpp"

#include "engine.hpp"

#include <asio/post.hpp>

#include <chrono>

namespace nexres {

acceptor::acceptor(engine& eng, asio::io_context& io, socket_handler on_socket)
    : engine_(eng), io_(io), on_socket_(std::move(on_socket)), acceptor_(io), retry_(io) {}

std::error_code acceptor::listen(const std::string& host, std::uint16_t port) {
  std::error_code ec;
  auto addr = asio::ip::make_address(host.empty() ? std::string("0.0.0.0") : host, ec);
  if (ec) return ec;
  asio::ip::tcp::endpoint ep(addr, port);
  acceptor_.open(ep.protocol(), ec);
  if (ec) return ec;
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (ec) return ec;
  acceptor_.bind(ep, ec);
  if (ec) return ec;
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
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

void acceptor::do_accept() {
  if (closed_) return;
  auto self = shared_from_this();
  acceptor_.async_accept(engine_.pool().next(), [self](const std::error_code& ec,
                                                        asio::ip::tcp::socket socket) {
    if (self->closed_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors or similar: back off briefly instead of spinning.
      self->retry_.expires_after(std::chrono::milliseconds(50));
      self->retry_.async_wait([self](const std::error_code& e) {
        if (!e) self->do_accept();
      });
      return;
    }
    self->on_socket_(std::move(socket));
    self->do_accept();
  });
}

}  // namespace nexres
