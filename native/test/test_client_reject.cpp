// Client port: a refused connection's reason frame is not destroyed by a
// reset. A raw client that does not read for a moment (its replies wait in
// the engine's send queue, as they would on a slow network) sends a bad
// frame and then more bytes: the engine refuses it (BAD_FRAME). Closing with
// that unread input would reset the connection and drop everything still
// queued, the REJECT included; with the lingering close the client, once it
// reads, gets every reply, then the REJECT, then the end of the stream.
#include "check.hpp"
#include "fd_probe.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <atomic>
#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port()};
  auto opts = nexres_test::options_for(1, ports);
  opts.client_port = 0;
  nexres_test::node server(opts);
  CHECK(!server.eng().start());
  const std::uint16_t cport = server.eng().client_port();

  // Consumer: answers every request with 16 KiB.
  constexpr std::uint32_t reply_bytes = 16 * 1024;
  std::atomic<bool> stop{false};
  std::thread consumer([&] {
    std::vector<std::uint8_t> body(reply_bytes, 0x52);
    while (!stop.load()) {
      std::vector<std::pair<std::uint32_t, std::uint64_t>> asked;
      server.poll([&](std::uint32_t peer, const frame_header& h, const std::uint8_t*) { asked.push_back({peer, h.msg_id}); },
                  10ms);
      for (auto& a : asked) {
        frame_builder fb(1, reply_bytes + 64);
        fb.add(9, a.second, body.data(), reply_bytes);
        segment s = fb.take();
        encode_header(const_cast<std::uint8_t*>(s.data),
                      frame_header{reply_bytes, 9, 1, frame_kind::reply, 0, 0, a.second});
        s.messages = 1;
        server.eng().enqueue(a.first, s);
      }
    }
  });

  asio::io_context io;
  asio::ip::tcp::socket c(io);
  c.open(asio::ip::tcp::v4());
  c.set_option(asio::socket_base::receive_buffer_size(4096));
  c.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), cport));
  c.set_option(asio::ip::tcp::no_delay(true));
  {
    std::vector<std::uint8_t> h(hello_fixed_bytes);
    hello_message m{};
    m.type = hello_type::client_hello;
    m.version = protocol_version;
    encode_hello(h.data(), m);
    asio::write(c, asio::buffer(h));
    std::uint8_t w[hello_fixed_bytes];
    asio::read(c, asio::buffer(w));
    std::uint32_t magic = 0;
    const hello_message wm = decode_hello(w, magic);
    CHECK(magic == hello_magic && wm.type == hello_type::client_welcome);
    std::vector<std::uint8_t> body(wm.body_length);
    asio::read(c, asio::buffer(body));
  }
  // Room in the engine's send buffer for every reply: they leave the
  // engine's own queue and wait in the kernel, as on a slow network.
  const int efd = nexres_test::engine_fd(cport, c.local_endpoint().port());
  CHECK(efd >= 0);
  const int big = 4 << 20;
  CHECK(::setsockopt(efd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big) == 0);

  constexpr std::uint64_t requests = 32;
  for (std::uint64_t id = 1; id <= requests; ++id) {
    std::uint8_t f[frame_header_bytes + 8] = {};
    encode_header(f, frame_header{8, 9, 0, frame_kind::request, 0, 0, id});
    asio::write(c, asio::buffer(f));
  }
  // Every reply written to the kernel, some still unsent (we do not read).
  auto answered = [&] {
    const engine_stats st = server.eng().stats();
    return st.clients.size() == 1 && st.clients[0].replies == requests && st.clients[0].reply_backlog_bytes == 0;
  };
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!answered() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  CHECK(answered());
  int unsent = 0;
  ::ioctl(efd, SIOCOUTQ, &unsent);
  CHECK(unsent > 0);

  // A frame that is not a REQUEST, then more bytes once it has been read.
  std::uint8_t bad[frame_header_bytes + 8] = {};
  encode_header(bad, frame_header{8, 9, 0, frame_kind::data, 0, 0, 999});
  asio::write(c, asio::buffer(bad));
  const auto refused = std::chrono::steady_clock::now() + 10s;
  while (server.eng().stats().rejects_total == 0 && std::chrono::steady_clock::now() < refused)
    std::this_thread::sleep_for(1ms);
  CHECK(server.eng().stats().rejects_total == 1);
  std::vector<std::uint8_t> more(64 * 1024, 0x42);
  std::error_code wec;
  asio::write(c, asio::buffer(more), wec);  // may fail: the engine is gone
  std::this_thread::sleep_for(50ms);

  // Now read everything.
  std::vector<std::uint8_t> in;
  std::array<std::uint8_t, 65536> buf;
  std::error_code end;
  for (;;) {
    const std::size_t n = c.read_some(asio::buffer(buf), end);
    in.insert(in.end(), buf.begin(), buf.begin() + n);
    if (end) break;
  }
  std::uint64_t replies = 0;
  int reject = -1;
  std::size_t p = 0;
  while (in.size() - p >= frame_header_bytes) {
    const frame_header h = decode_header(in.data() + p);
    if (in.size() - p < frame_header_bytes + h.length) break;
    if (h.kind == frame_kind::reply) ++replies;
    if (h.kind == frame_kind::reject && h.length >= 2) reject = load_u16(in.data() + p + frame_header_bytes);
    p += frame_header_bytes + h.length;
  }
  std::fprintf(stderr, "client reject: %llu bytes were unsent, read %zu bytes (%s): %llu replies, reject %d\n",
               static_cast<unsigned long long>(unsent), in.size(), end.message().c_str(),
               static_cast<unsigned long long>(replies), reject);
  CHECK(end == asio::error::eof);  // a FIN, not a reset
  CHECK(replies == requests);
  CHECK(reject == static_cast<int>(reject_code::bad_frame));
  CHECK(p == in.size());  // nothing after the REJECT
  stop.store(true);
  consumer.join();
  std::puts("client reject ok");
  return 0;
}
