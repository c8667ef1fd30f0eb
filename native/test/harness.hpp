// A native-only replica for tests and the native benchmark: an engine plus a
// consumer that sleeps on a condition variable until the engine wakes it.
#pragma once

#include "engine.hpp"
#include "protocol.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <chrono>
#include <cstdio>
#include <thread>
#include <cstring>
#include <string>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

namespace nexres_test {

inline std::uint16_t free_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

/// True when something listens on 127.0.0.1:port (a connection is accepted).
inline bool listening(std::uint16_t port) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  std::error_code ec;
  s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  return !ec;
}

/// Starts the engine made by `make()` on a port a peer has been dialling
/// while nothing listened there. free_port() ports are in the ephemeral
/// range, and such a dial can connect to itself (TCP simultaneous open) and
/// hold the port until its handshake fails: then the port is in use but
/// nothing listens on it, and the start is tried again (for at most 2 s,
/// each try said on stderr). A port held by a listener (a stopped engine
/// that kept its socket) fails at once.
template <typename Node, typename Make>
std::unique_ptr<Node> start_on_dialled_port(Make make, std::uint16_t port) {
  for (int attempt = 0;; ++attempt) {
    auto n = make();
    const std::error_code err = n->eng().start();
    if (!err) return n;
    std::fprintf(stderr, "start on port %u failed: %s (attempt %d)\n", static_cast<unsigned>(port), err.message().c_str(), attempt + 1);
    if (err != std::errc::address_in_use || listening(port) || attempt >= 100) return nullptr;
    n.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// A raw replica connection (auth none) introduces itself as `sender` with
/// HELLO on the test cluster and reads the WELCOME; returns the WELCOME bytes.
inline std::vector<std::uint8_t> raw_hello(asio::ip::tcp::socket& s, std::uint32_t sender, std::uint64_t incarnation) {
  using namespace nexres;
  const std::string cid = "native-test";
  std::vector<std::uint8_t> hello(hello_fixed_bytes + cid.size());
  hello_message m{};
  m.type = hello_type::hello;
  m.sender = sender;
  m.incarnation = incarnation;
  m.version = protocol_version;
  m.cluster_id_length = static_cast<std::uint8_t>(cid.size());
  m.body_length = static_cast<std::uint32_t>(cid.size());
  encode_hello(hello.data(), m);
  std::memcpy(hello.data() + hello_fixed_bytes, cid.data(), cid.size());
  asio::write(s, asio::buffer(hello));
  std::vector<std::uint8_t> welcome(hello_fixed_bytes + cid.size());
  asio::read(s, asio::buffer(welcome));
  return welcome;
}

inline nexres::engine_options options_for(std::uint32_t self, const std::vector<std::uint16_t>& ports,
                                          std::size_t io_threads = 2) {
  nexres::engine_options o;
  o.self_id = self;
  o.cluster_id = "native-test";
  for (std::size_t i = 0; i < ports.size(); ++i)
    o.replicas.push_back({static_cast<std::uint32_t>(i + 1), "127.0.0.1", ports[i]});
  o.io_threads = io_threads;
  o.reconnect_min_ms = 10;
  o.reconnect_max_ms = 100;
  std::random_device rd;
  o.incarnation = (static_cast<std::uint64_t>(rd()) << 32) | rd();
  return o;
}

class node {
 public:
  explicit node(nexres::engine_options o) {
    engine_ = std::make_unique<nexres::engine>(std::move(o), [this] {
      {
        std::lock_guard<std::mutex> lock(mu_);
        woken_ = true;
      }
      cv_.notify_one();
    });
  }
  ~node() { engine_->stop(); }

  nexres::engine& eng() { return *engine_; }

  /// Waits up to `timeout` for a wake-up, then hands every delivered frame to
  /// f(peer, header, body). Returns frames seen.
  template <typename F>
  std::size_t poll(F&& f, std::chrono::milliseconds timeout) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, timeout, [this] { return woken_; });
      woken_ = false;
    }
    engine_->begin_drain();
    std::size_t n = 0;
    nexres::delivery d;
    while (engine_->pop_delivery(d)) {
      const std::uint8_t* p = d.source->data() + d.offset;
      const std::uint8_t* end = p + d.length;
      while (p < end) {
        nexres::frame_header h = nexres::decode_header(p);
        f(d.peer, h, p + nexres::frame_header_bytes);
        p += nexres::frame_header_bytes + h.length;
        ++n;
      }
      engine_->release(d);
    }
    std::vector<nexres::engine_event> evs;
    engine_->take_events(evs);
    for (auto& e : evs) events.push_back(std::move(e));
    return n;
  }

  std::vector<nexres::engine_event> events;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool woken_ = false;
  std::unique_ptr<nexres::engine> engine_;
};

}  // namespace nexres_test
