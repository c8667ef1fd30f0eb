// The replica-port and client-port acceptors: accepts each connection
// (close-on-exec, sockets.hpp), hands the socket to an io context of the
// pool and to the engine's handler.
#pragma once

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

namespace nexres {

class engine;

class acceptor : public std::enable_shared_from_this<acceptor> {
 public:
  /// on_socket: called on the acceptor's io thread with each accepted
  /// socket (already bound to an io_context of the pool).
  using socket_handler = std::function<void(asio::ip::tcp::socket)>;
  acceptor(engine& eng, asio::io_context& io, socket_handler on_socket);
  /// Caller's thread, before the pool runs: bind and listen.
  std::error_code listen(const std::string& host, std::uint16_t port);
  /// Starts accepting (posts to the acceptor's io thread).
  void start();
  /// Any thread: stop accepting.
  void close_async();
  /// Caller's thread, before start() (a failed engine start): closes the
  /// listening socket now, so its port is free when this returns.
  void close_now();
  std::uint16_t port() const noexcept { return port_; }

 private:
  void do_accept();
  void retry_later();

  engine& engine_;
  asio::io_context& io_;
  socket_handler on_socket_;
  asio::ip::tcp::acceptor acceptor_;
  asio::ip::tcp protocol_ = asio::ip::tcp::v4();
  asio::steady_timer retry_;
  std::uint16_t port_ = 0;
  bool closed_ = false;
};

}  // namespace nexres
