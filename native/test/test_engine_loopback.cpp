// Two engines on loopback: 200,000 frames from one peer arrive in order and
// exactly once; an oversized length prefix from a raw socket is refused with
// a reason frame and only that connection closes; honest traffic goes on.
#include "check.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port()};
  nexres_test::node a(nexres_test::options_for(1, ports));
  nexres_test::node b(nexres_test::options_for(2, ports));
  CHECK(!a.eng().start());
  CHECK(!b.eng().start());

  constexpr std::uint64_t total = 200000;
  std::uint64_t next = 1, bad = 0;
  auto on_b = [&](std::uint32_t peer, const frame_header& h, const std::uint8_t* body) {
    std::uint64_t v;
    std::memcpy(&v, body, 8);
    if (peer != 1 || h.sender != 1 || h.msg_id != next || v != next) ++bad;
    ++next;
  };
  std::thread producer([&a] {
    std::uint64_t id = 1;
    while (id <= total) {
      frame_builder fb(1);
      for (int i = 0; i < 1000 && id <= total; ++i, ++id) fb.add(7, id, &id, 8);
      a.eng().enqueue(2, fb.take());
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (next <= total && std::chrono::steady_clock::now() < deadline) b.poll(on_b, 50ms);
  producer.join();
  CHECK(bad == 0);
  CHECK(next == total + 1);

  // A hostile raw connection: valid HELLO, then a frame claiming 2^32-1 bytes.
  {
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), ports[1]));
    const std::vector<std::uint8_t> welcome = nexres_test::raw_hello(s, 1, 99);
    std::uint32_t magic = 0;
    CHECK(decode_hello(welcome.data(), magic).type == hello_type::welcome);
    std::uint8_t bad_frame[frame_header_bytes] = {};
    frame_header h{};
    h.length = 0xffffffffu;
    h.sender = 1;
    h.kind = frame_kind::data;
    h.msg_id = 1;
    encode_header(bad_frame, h);
    asio::write(s, asio::buffer(bad_frame));
    std::uint8_t reply[frame_header_bytes];
    asio::read(s, asio::buffer(reply));
    CHECK(decode_header(reply).kind == frame_kind::reject);
    std::vector<std::uint8_t> body(decode_header(reply).length);
    asio::read(s, asio::buffer(body));
    CHECK(static_cast<reject_code>(load_u16(body.data())) == reject_code::frame_too_large);
    std::error_code ec;
    std::uint8_t one;
    asio::read(s, asio::buffer(&one, 1), ec);
    CHECK(ec);  // closed by the engine
  }
  // The honest link reconnects (its session was replaced by the impostor's)
  // and traffic flows again, exactly once.
  {
    frame_builder fb(1);
    std::uint64_t id = total + 1;
    fb.add(7, id, &id, 8);
    a.eng().enqueue(2, fb.take());
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (next <= total + 1 && std::chrono::steady_clock::now() < until) b.poll(on_b, 50ms);
    CHECK(bad == 0);
    CHECK(next == total + 2);
  }
  CHECK(b.eng().stats().rejects_total >= 1);
  std::puts("engine loopback ok");
  return 0;
}
