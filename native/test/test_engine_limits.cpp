// Replica-port limits (SECURITY.md "Connection limits") under concurrency:
// raw connections from several threads push past maxConnectionsPerAddress
// while an honest peer streams; the oldest pre-handshake connections are
// refused (TOO_MANY_CONNECTIONS) while their sessions die on other io
// threads; a trickled HELLO gets READ_TIMEOUT; a PING flood TOO_MANY_PINGS.
// Run under TSan too (-DNEXRES_SANITIZE=thread).
#include "check.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <atomic>
#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

namespace {

const std::string cid = "native-test";

std::vector<std::uint8_t> hello_bytes(std::uint32_t sender) {
  std::vector<std::uint8_t> hello(hello_fixed_bytes + cid.size());
  hello_message m{};
  m.type = hello_type::hello;
  m.sender = sender;
  m.incarnation = 7;
  m.version = protocol_version;
  m.cluster_id_length = static_cast<std::uint8_t>(cid.size());
  m.body_length = static_cast<std::uint32_t>(cid.size());
  encode_hello(hello.data(), m);
  std::memcpy(hello.data() + hello_fixed_bytes, cid.data(), cid.size());
  return hello;
}

/// Reads frames until a REJECT (skipping ACK / PONG); returns its code, 0 on close.
std::uint16_t read_reject(asio::ip::tcp::socket& s) {
  for (;;) {
    std::uint8_t head[frame_header_bytes];
    std::error_code ec;
    asio::read(s, asio::buffer(head), ec);
    if (ec) return 0;
    const frame_header h = decode_header(head);
    std::vector<std::uint8_t> body(h.length);
    asio::read(s, asio::buffer(body), ec);
    if (ec) return 0;
    if (h.kind == frame_kind::reject && h.length >= 2) return load_u16(body.data());
  }
}

std::uint64_t rejects(engine& e, reject_code c) {
  return e.stats().rejects_by_code[static_cast<std::size_t>(c)];
}

}  // namespace

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port(),
                                            nexres_test::free_port()};
  auto ob = nexres_test::options_for(2, ports, 4);
  ob.max_connections_per_address = 8;
  ob.max_replica_connections = 1000;
  ob.frame_read_timeout_ms = 200;
  ob.handshake_timeout_ms = 30000;
  nexres_test::node a(nexres_test::options_for(1, ports));
  nexres_test::node b(ob);
  CHECK(!a.eng().start());
  CHECK(!b.eng().start());

  // Honest stream from 1 to 2 the whole time.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> sent{0};
  std::thread producer([&] {
    std::uint64_t id = 1;
    while (!stop.load()) {
      frame_builder fb(1);
      for (int i = 0; i < 50; ++i, ++id) fb.add(7, id, &id, 8);
      a.eng().enqueue(2, fb.take());
      sent.store(id - 1);
      std::this_thread::sleep_for(1ms);
    }
  });
  std::uint64_t next = 1, bad = 0;
  auto on_b = [&](std::uint32_t peer, const frame_header& h, const std::uint8_t* body) {
    std::uint64_t v;
    std::memcpy(&v, body, 8);
    if (peer != 1 || h.msg_id != next || v != next) ++bad;
    ++next;
  };
  auto pump = [&](std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) b.poll(on_b, 10ms);
  };
  pump(200ms);
  CHECK(next > 1);

  // 4 threads x 50 raw connections, half sending part of a HELLO.
  asio::io_context io;
  const auto ep = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), ports[1]);
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> raw(200);
  {
    std::vector<std::thread> openers;
    for (int t = 0; t < 4; ++t)
      openers.emplace_back([&, t] {
        const auto h = hello_bytes(3);
        for (int i = 0; i < 50; ++i) {
          auto s = std::make_unique<asio::ip::tcp::socket>(io);
          s->connect(ep);
          if (i % 2 == 0) asio::write(*s, asio::buffer(h.data(), 5));
          raw[static_cast<std::size_t>(t * 50 + i)] = std::move(s);
        }
      });
    for (auto& t : openers) t.join();
  }
  // 200 - 8 refused. (Some half-HELLOs may hit READ_TIMEOUT first and leave
  // room, so count both reasons.)
  auto refused = [&] {
    return rejects(b.eng(), reject_code::too_many_connections) + rejects(b.eng(), reject_code::read_timeout);
  };
  for (int i = 0; i < 300 && refused() < 192; ++i) pump(10ms);
  CHECK(rejects(b.eng(), reject_code::too_many_connections) >= 150);
  CHECK(refused() >= 192);
  // Every half-HELLO is gone by its read deadline (200 ms): READ_TIMEOUT or evicted.
  pump(400ms);
  for (auto& s : raw) s.reset();

  // A HELLO stopped after 5 bytes: READ_TIMEOUT within the deadline.
  {
    asio::ip::tcp::socket s(io);
    s.connect(ep);
    const auto h = hello_bytes(3);
    const auto t0 = std::chrono::steady_clock::now();
    asio::write(s, asio::buffer(h.data(), 5));
    CHECK(read_reject(s) == static_cast<std::uint16_t>(reject_code::read_timeout));
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 180ms && took < 1500ms);
  }
  // A PING flood after a valid handshake as replica 3.
  {
    asio::ip::tcp::socket s(io);
    s.connect(ep);
    const auto h = hello_bytes(3);
    asio::write(s, asio::buffer(h));
    std::vector<std::uint8_t> welcome(hello_fixed_bytes + cid.size());
    asio::read(s, asio::buffer(welcome));
    std::vector<std::uint8_t> pings(frame_header_bytes * 500);
    for (std::size_t i = 0; i < 500; ++i) {
      frame_header p{};
      p.kind = frame_kind::ping;
      p.sender = 3;
      p.msg_id = i + 1;
      encode_header(pings.data() + i * frame_header_bytes, p);
    }
    asio::write(s, asio::buffer(pings));
    CHECK(read_reject(s) == static_cast<std::uint16_t>(reject_code::too_many_pings));
  }

  stop.store(true);
  producer.join();
  const std::uint64_t total = sent.load();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (next <= total && std::chrono::steady_clock::now() < deadline) b.poll(on_b, 10ms);
  CHECK(bad == 0);
  CHECK(next == total + 1);
  std::printf("engine limits ok: %llu honest frames, %llu TOO_MANY_CONNECTIONS, %llu READ_TIMEOUT\n",
              static_cast<unsigned long long>(total),
              static_cast<unsigned long long>(rejects(b.eng(), reject_code::too_many_connections)),
              static_cast<unsigned long long>(rejects(b.eng(), reject_code::read_timeout)));
  return 0;
}
