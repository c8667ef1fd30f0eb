// Shared by the socket fuzz targets (fuzz_replica_session, fuzz_client_session,
// fuzz_replica_session_mac):
// one engine kept alive across inputs, and a driver that writes one input to
// a fresh TCP connection, half-closes it and reads until the engine closes
// the connection (or a short quiet deadline passes), consuming deliveries the
// engine pushes meanwhile (pop + release, like native/test/harness.hpp's
// node::poll) so receive chunks come back.
#pragma once

#include "engine.hpp"
#include "protocol.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#define FUZZ_CHECK(cond)                                                                                 \
  do {                                                                                                   \
    if (!(cond)) {                                                                                       \
      std::fprintf(stderr, "nexres fuzz: invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
      std::abort();                                                                                      \
    }                                                                                                    \
  } while (0)

namespace nexres_fuzz {

constexpr const char* cluster_id = "fuzz-cluster";
constexpr std::uint32_t self_id = 1;
constexpr std::uint32_t peer_id = 2;
// Small enough that a 64 KiB input reaches every size path: frames bigger than
// a chunk (oversized chunks), frames over the limit, a connection out of chunks.
constexpr std::uint32_t max_frame_bytes = 32 * 1024;
constexpr std::uint32_t max_request_bytes = 32 * 1024;
constexpr std::size_t chunk_bytes = 8 * 1024;
// Quiet time after which an input is given up on (the engine normally closes
// the connection well before: the input ends with our write shutdown).
constexpr std::chrono::milliseconds quiet_deadline{50};
// A connection the engine still holds open this long after the input ended
// (our write side shut down, every delivery consumed and answered) is a hang:
// reported as a finding.
constexpr std::chrono::milliseconds hang_deadline{1500};
// Receive memory the engine may hold: a few connections' worth of chunks
// (max_chunks_per_connection x the largest legal frame) plus the pooled
// chunks. More means a buffer was sized from a length nobody checked.
constexpr std::size_t max_receive_bytes_held = 2u << 20;

inline std::uint16_t unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  FUZZ_CHECK(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FUZZ_CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  FUZZ_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

/// Optional, for a target that needs another engine setup (more replicas,
/// auth mac and keys): called on the options just before the engine is
/// created. Set it before the first the_engine() call (LLVMFuzzerInitialize).
inline void (*configure_engine)(nexres::engine_options&) = nullptr;

/// The engine: replica 1 of a 2-replica cluster on 127.0.0.1 (replica port
/// and client port from the OS, auth none). Replica 2's port has no listener:
/// its outbound link just retries in the background. Never destroyed (io
/// threads may still run while the process exits).
inline nexres::engine& the_engine() {
  static nexres::engine* eng = [] {
    nexres::engine_options o;
    o.self_id = self_id;
    o.cluster_id = cluster_id;
    o.replicas.push_back({self_id, "127.0.0.1", 0});
    o.replicas.push_back({peer_id, "127.0.0.1", unused_port()});
    o.io_threads = 2;
    o.max_frame_bytes = max_frame_bytes;
    o.chunk_bytes = chunk_bytes;
    o.max_chunks_per_connection = 4;
    o.max_receive_bytes = 16u << 20;
    o.miq_capacity = 8;
    o.handshake_timeout_ms = 2000;
    o.reconnect_min_ms = 1000;
    o.reconnect_max_ms = 5000;
    o.send_buffer_bytes = 0;
    o.client_port = 0;
    o.max_request_bytes = max_request_bytes;
    o.max_client_inflight = 8;  // small: the in-flight pause is reached
    // Override (e.g. to steer a long run away from a known in-flight bug).
    if (const char* v = std::getenv("NEXRES_FUZZ_CLIENT_INFLIGHT")) o.max_client_inflight = static_cast<std::uint32_t>(std::atoi(v));
    o.client_idle_timeout_ms = 5000;
    o.heartbeat_interval_ms = 0;  // timers only: not input-driven
    o.heartbeat_timeout_ms = 0;
    o.incarnation = 0x6e657872;
    // Thousands of handshakes a second from one address: the handshake
    // budget (test_handshake_budget, test/handshake-budget.test.ts) is off.
    o.handshakes_per_second_per_address = 0;
    o.handshakes_per_second = 0;
    if (configure_engine != nullptr) configure_engine(o);
    auto* e = new nexres::engine(std::move(o), [] {});
    const std::error_code ec = e->start();
    if (ec) {
      std::fprintf(stderr, "nexres fuzz: engine start failed: %s\n", ec.message().c_str());
      std::abort();
    }
    return e;
  }();
  return *eng;
}

/// Pops every delivery, hands it to f, releases it; drops the events.
template <typename F>
std::size_t drain(nexres::engine& e, F&& f) {
  e.begin_drain();
  std::size_t n = 0;
  nexres::delivery d;
  while (e.pop_delivery(d)) {
    f(d);
    e.release(d);
    ++n;
  }
  std::vector<nexres::engine_event> evs;
  e.take_events(evs);
  return n;
}

struct exchange_result {
  std::vector<std::uint8_t> response;  // what the engine wrote (first 1 MiB)
  bool closed_by_engine = false;       // EOF or reset seen before the deadline
  bool written_all = false;            // the whole input went out, then FIN
  std::size_t peak_receive_bytes = 0;  // receive chunks allocated, sampled while it ran
};

/// One connection: writes `input`, shuts down the write side, reads until the
/// engine closes or nothing happens for quiet_deadline. `on_delivery` sees
/// every delivery popped meanwhile.
inline const char* r_closed_text(bool eof) { return eof ? "closed by the engine" : "deadline passed"; }

/// A blocking TCP connection to the engine on 127.0.0.1:port (TCP_NODELAY).
inline int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int err = errno;
    if (err == EINTR) {
      // A signal (libFuzzer's timers) interrupted connect(); the connection
      // goes on in the background: wait for it and read its outcome.
      pollfd p{fd, POLLOUT, 0};
      while (::poll(&p, 1, 2000) < 0 && errno == EINTR) {
      }
      socklen_t len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err != 0) {
      std::fprintf(stderr, "nexres fuzz: connect failed: %s\n", std::strerror(err));
      std::abort();  // the engine's listener is gone: that is a finding too
    }
  }
  return fd;
}

/// exchange() on a connection already open (a target may run a handshake on
/// it first); closes fd.
template <typename F>
exchange_result exchange_on(int fd, const std::uint8_t* input, std::size_t size, F&& on_delivery) {
  nexres::engine& e = the_engine();
  exchange_result r;
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);

  const auto start = std::chrono::steady_clock::now();
  auto last_progress = start;
  std::size_t written = 0;
  bool write_done = false;
  bool eof_seen = false;
  std::uint8_t buf[64 * 1024];
  for (;;) {
    bool progress = false;
    if (!write_done) {
      if (written < size) {
        const ssize_t n = ::send(fd, input + written, size - written, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          written += static_cast<std::size_t>(n);
          progress = true;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          write_done = true;  // the engine closed on us (EPIPE / ECONNRESET)
        }
      }
      if (!write_done && written == size) {
        ::shutdown(fd, SHUT_WR);
        write_done = true;
      }
    }
    bool eof = false;
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        if (r.response.size() < (1u << 20)) r.response.insert(r.response.end(), buf, buf + n);
        progress = true;
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) eof = true;
      break;
    }
    if (drain(e, on_delivery) > 0) progress = true;
    const std::size_t held = e.chunks().allocated_bytes();
    if (held > r.peak_receive_bytes) r.peak_receive_bytes = held;
    if (eof) {
      eof_seen = true;
      r.closed_by_engine = true;
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (progress) last_progress = now;
    if (now - last_progress > quiet_deadline) {
      // Quiet: normal for an engine still holding a connection it should
      // close; wait for the close up to the hang deadline.
      if (!write_done || now - start > hang_deadline) break;
    }
    pollfd p{fd, static_cast<short>(POLLIN | (write_done ? 0 : POLLOUT)), 0};
    ::poll(&p, 1, 1);
  }
  r.written_all = write_done && written == size;
  ::close(fd);
  if (std::getenv("NEXRES_FUZZ_DEBUG") != nullptr) {
    std::fprintf(stderr, "nexres fuzz: sent %zu of %zu bytes, %s, answer %zu bytes:", written, size,
                 r_closed_text(eof_seen), r.response.size());
    for (std::size_t i = 0; i < r.response.size() && i < 128; ++i) std::fprintf(stderr, " %02x", r.response[i]);
    std::fprintf(stderr, "\n");
  }
  // Whatever the closing session pushed before it closed.
  drain(e, on_delivery);
  return r;
}

template <typename F>
exchange_result exchange(std::uint16_t port, const std::uint8_t* input, std::size_t size, F&& on_delivery) {
  return exchange_on(connect_loopback(port), input, size, std::forward<F>(on_delivery));
}

/// After each input: the engine closed the connection (it read our FIN, or
/// refused us), and its receive memory is back under the bound.
inline void check_after_input(const exchange_result& r) {
  if (!r.closed_by_engine) {
    std::fprintf(stderr,
                 "nexres fuzz: the engine still holds the connection %lld ms after the input ended "
                 "(whole input written: %s); it stopped reading it\n",
                 static_cast<long long>(hang_deadline.count()), r.written_all ? "yes" : "no");
    std::abort();
  }
  const std::size_t held = std::max(r.peak_receive_bytes, the_engine().chunks().allocated_bytes());
  if (held > max_receive_bytes_held) {
    std::fprintf(stderr, "nexres fuzz: %zu bytes of receive chunks allocated (bound %zu): a buffer sized from an unchecked length\n",
                 held, max_receive_bytes_held);
    std::abort();
  }
}

/// The engine's REJECT at r[p] (header h): a known reason code, at most
/// 512 bytes of reason, nothing after it. True when h is a REJECT (the
/// response ends there).
inline bool checked_reject(const std::vector<std::uint8_t>& r, std::size_t p, const nexres::frame_header& h) {
  if (h.kind != nexres::frame_kind::reject) return false;
  FUZZ_CHECK(h.length >= 2 && h.length <= 2 + 512);
  if (r.size() - p - nexres::frame_header_bytes < 2) return true;
  const std::uint16_t code = nexres::load_u16(r.data() + p + nexres::frame_header_bytes);
  FUZZ_CHECK(code != 0 && std::strcmp(nexres::reject_code_name(static_cast<nexres::reject_code>(code)), "UNKNOWN") != 0);
  FUZZ_CHECK(r.size() <= p + nexres::frame_header_bytes + h.length);
  return true;
}

}  // namespace nexres_fuzz
