// White-box help for tests that need the kernel buffers of an engine socket
// in a given state: the engine runs in the test's process, so its end of a
// loopback connection is one of our descriptors, found by its addresses.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>

namespace nexres_test {

/// The descriptor whose local port is `local_port` and whose peer is
/// 127.0.0.1:`peer_port`, or -1.
inline int engine_fd(std::uint16_t local_port, std::uint16_t peer_port) {
  for (int fd = 0; fd < 65536; ++fd) {
    sockaddr_in peer{}, local{};
    socklen_t pl = sizeof peer, ll = sizeof local;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0 || peer.sin_family != AF_INET) continue;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (ntohs(peer.sin_port) == peer_port && ntohs(local.sin_port) == local_port) return fd;
  }
  return -1;
}

}  // namespace nexres_test
