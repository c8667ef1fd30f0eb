// How the engine opens and closes its TCP descriptors.
//
// Close-on-exec: every descriptor is opened with the flag already set
// (SOCK_CLOEXEC, accept4), so a child process that the application spawns
// (Node's child_process forks from the JS thread while io threads may be
// opening sockets) never inherits a listening socket or a connection: a port
// is free again once the engine closes it, whatever children still run.
//
// Closing: a socket closed with unread input makes the kernel reset the
// connection, and a reset destroys what is still in our send buffer (a last
// ACK, a REJECT's reason frame). drain_and_shutdown() reads what has arrived
// and sends FIN first; lingering_close writes a connection's last frame,
// sends FIN and reads (dropping it) what the peer still sends until it
// closes or a deadline passes.
#pragma once

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <system_error>
#include <vector>

namespace nexres::sockets {

/// Opens `s` (closed) for `protocol`, close-on-exec.
std::error_code open(asio::ip::tcp::socket& s, const asio::ip::tcp& protocol);
/// Opens `a` (closed) for `protocol`, close-on-exec.
std::error_code open(asio::ip::tcp::acceptor& a, const asio::ip::tcp& protocol);
/// Accepts one pending connection of the (non-blocking) listening socket
/// `a`: its descriptor, close-on-exec (the caller assigns it to a socket), or
/// -1 with `ec` set (would_block when none is pending).
int accept(asio::ip::tcp::acceptor& a, std::error_code& ec);

/// Before closing `s`: reads (without waiting, bounded) what has already
/// arrived, then sends FIN, so that the close does not reset the connection
/// and what we wrote last still reaches the peer. No-op on a closed socket.
void drain_and_shutdown(asio::ip::tcp::socket& s) noexcept;

/// A connection's last words: writes `bytes`, sends FIN, then reads and drops
/// what the peer sends until it closes the connection (or an error, or the
/// deadline), and closes the socket. Runs on the socket's executor and keeps
/// itself alive until then; close_async() cuts it short (engine stop).
class lingering_close : public std::enable_shared_from_this<lingering_close> {
 public:
  lingering_close(asio::ip::tcp::socket socket, std::vector<std::uint8_t> bytes, std::chrono::milliseconds deadline);
  /// Any thread: starts on the socket's executor.
  void start();
  /// Any thread: closes the socket now.
  void close_async();

 private:
  void discard();
  void close();

  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  std::vector<std::uint8_t> bytes_;
  std::chrono::milliseconds deadline_;
  std::array<std::uint8_t, 4096> scratch_{};
};

}  // namespace nexres::sockets
