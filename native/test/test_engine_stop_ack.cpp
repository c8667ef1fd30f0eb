// engine::stop() writes the last ACK before the sockets close: the ACK of a
// message the consumer has finished waits behind a control-frame write that
// is stuck (the sender does not read for a moment: a raw replica 1 with a
// small receive buffer that pings without reading the PONGs, against an
// engine socket given a small send buffer); stop() begins, the sender starts
// reading, and it must get that ACK before the connection ends. Without the
// stop phase the ACK is dropped with the socket and the sender would report
// the message as unacknowledged.
#include "check.hpp"
#include "fd_probe.hpp"
#include "harness.hpp"

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port()};
  auto o = nexres_test::options_for(2, ports);
  o.max_pings_per_second = 0;  // the raw sender pings a lot
  nexres_test::node r(std::move(o));
  CHECK(!r.eng().start());

  // A raw replica 1 with a small receive buffer.
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.open(asio::ip::tcp::v4());
  s.set_option(asio::socket_base::receive_buffer_size(4096));
  s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), ports[1]));
  s.set_option(asio::ip::tcp::no_delay(true));
  const std::vector<std::uint8_t> welcome = nexres_test::raw_hello(s, 1, 77);

  // The engine's end of this connection gets a small send buffer (found by
  // its addresses among our descriptors: the engine runs in this process),
  // so that control frames we do not read fill it after a few hundred.
  const int engine_fd = nexres_test::engine_fd(ports[1], s.local_endpoint().port());
  CHECK(engine_fd >= 0);
  {
    const int small = 4096;
    CHECK(::setsockopt(engine_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  }
  auto unsent = [engine_fd] {
    int n = 0;
    ::ioctl(engine_fd, SIOCOUTQ, &n);
    return n;
  };

  // PINGs one at a time (each answered by its own PONG write), not reading
  // the PONGs, until the engine's writes are stuck: its send queue stops
  // growing.
  std::uint8_t ping[frame_header_bytes];
  frame_header ph{};
  ph.kind = frame_kind::ping;
  ph.sender = 1;
  ph.msg_id = 1;
  encode_header(ping, ph);
  int queued = -1, still = 0;
  const auto t0 = std::chrono::steady_clock::now();
  int i = 0;
  for (i = 0; i < 20000 && still < 5; ++i) {
    asio::write(s, asio::buffer(ping));
    std::this_thread::sleep_for(50us);
    if (i % 50 == 49) {
      const int n = unsent();
      still = n >= 1024 && n == queued ? still + 1 : 0;
      queued = n;
    }
  }
  std::fprintf(stderr, "ping loop: %d queued, %d pings, %lld ms\n", queued, i,
               (long long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
  CHECK(still >= 5);

  // One message; the consumer finishes it, so it is owed an ACK.
  std::uint8_t data[frame_header_bytes + 8] = {};
  frame_header dh{};
  dh.kind = frame_kind::data;
  dh.sender = 1;
  dh.msg_id = 1;
  dh.length = 8;
  encode_header(data, dh);
  asio::write(s, asio::buffer(data));
  std::size_t got = 0;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (got == 0 && std::chrono::steady_clock::now() < until)
    got += r.poll([](std::uint32_t, const frame_header&, const std::uint8_t*) {}, 20ms);
  if (got != 1) {
    for (auto& e : r.events) std::fprintf(stderr, "event %d code %d %s\n", int(e.type), int(e.code), e.reason.c_str());
    auto st = r.eng().stats();
    std::fprintf(stderr, "rejects %llu, msgs_in %llu\n", (unsigned long long)st.rejects_total, (unsigned long long)st.peers[0].msgs_in);
  }
  CHECK(got == 1);
  std::this_thread::sleep_for(20ms);  // the ACK request reaches the session
  const int stuck = unsent();

  // stop() begins while the writes are stuck; then we read everything.
  std::thread stopper([&r] { r.eng().stop(); });
  std::this_thread::sleep_for(50ms);
  std::uint64_t last_ack = 0;
  std::vector<std::uint8_t> in;
  std::array<std::uint8_t, 65536> buf;
  for (;;) {
    std::error_code ec;
    const std::size_t n = s.read_some(asio::buffer(buf), ec);
    in.insert(in.end(), buf.begin(), buf.begin() + n);
    if (ec) break;
  }
  stopper.join();
  std::size_t p = 0;
  while (in.size() - p >= frame_header_bytes) {
    const frame_header h = decode_header(in.data() + p);
    if (h.kind == frame_kind::ack) last_ack = h.msg_id;
    p += frame_header_bytes + h.length;
  }
  std::fprintf(stderr, "stop ack: %d bytes were stuck, %zu bytes read, last ACK %llu\n", stuck, in.size(),
               static_cast<unsigned long long>(last_ack));
  CHECK(last_ack == 1);
  std::puts("engine stop ack ok");
  return 0;
}
