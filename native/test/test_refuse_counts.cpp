// A refused connection: what it sent before the refused frame still counts.
// Replica port: three DATA frames and a bad frame in one write: the three are
// delivered, the sender gets the REJECT, then the end of the stream (FIN).
// Client port: two REQUESTs and a bad frame: both requests are delivered.
#include "check.hpp"
#include "harness.hpp"

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

namespace {

void append_frame(std::vector<std::uint8_t>& out, frame_kind kind, std::uint32_t sender, std::uint64_t id,
                  std::uint32_t length) {
  const std::size_t at = out.size();
  out.resize(at + frame_header_bytes + length, 0x5a);
  encode_header(out.data() + at, frame_header{length, 7, sender, kind, 0, 0, id});
}

// Reads to the end; returns the REJECT code found (-1: none) and whether the
// stream ended with a FIN.
int read_reject(asio::ip::tcp::socket& s, bool& fin) {
  std::vector<std::uint8_t> in;
  std::array<std::uint8_t, 4096> buf;
  std::error_code ec;
  for (;;) {
    const std::size_t n = s.read_some(asio::buffer(buf), ec);
    in.insert(in.end(), buf.begin(), buf.begin() + n);
    if (ec) break;
  }
  fin = ec == asio::error::eof;
  std::size_t p = 0;
  if (in.size() >= hello_fixed_bytes && load_u32(in.data()) == hello_magic)
    p = hello_fixed_bytes + load_u32(in.data() + 24);  // a CLIENT_WELCOME first
  while (in.size() - p >= frame_header_bytes) {
    const frame_header h = decode_header(in.data() + p);
    if (in.size() - p < frame_header_bytes + h.length) break;
    if (h.kind == frame_kind::reject && h.length >= 2) return load_u16(in.data() + p + frame_header_bytes);
    p += frame_header_bytes + h.length;
  }
  return -1;
}

}  // namespace

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port()};
  auto o = nexres_test::options_for(2, ports);
  o.client_port = 0;
  nexres_test::node r(std::move(o));
  CHECK(!r.eng().start());
  asio::io_context io;

  // Replica port.
  {
    asio::ip::tcp::socket s(io);
    s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), ports[1]));
    const std::vector<std::uint8_t> welcome = nexres_test::raw_hello(s, 1, 5);
    std::vector<std::uint8_t> out;
    for (std::uint64_t id = 1; id <= 3; ++id) append_frame(out, frame_kind::data, 1, id, 16);
    append_frame(out, frame_kind::request, 1, 4, 0);  // not a DATA frame: BAD_FRAME
    asio::write(s, asio::buffer(out));
    bool fin = false;
    CHECK(read_reject(s, fin) == static_cast<int>(reject_code::bad_frame));
    CHECK(fin);
    std::size_t got = 0;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (got < 3 && std::chrono::steady_clock::now() < until)
      got += r.poll([](std::uint32_t peer, const frame_header& h, const std::uint8_t*) { CHECK(peer == 1 && h.kind == frame_kind::data); },
                    20ms);
    CHECK(got == 3);
  }

  // Client port.
  {
    asio::ip::tcp::socket c(io);
    c.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), r.eng().client_port()));
    std::vector<std::uint8_t> out(hello_fixed_bytes);
    hello_message m{};
    m.type = hello_type::client_hello;
    m.version = protocol_version;
    encode_hello(out.data(), m);
    for (std::uint64_t id = 1; id <= 2; ++id) append_frame(out, frame_kind::request, 0, id, 8);
    append_frame(out, frame_kind::data, 0, 3, 8);  // not a REQUEST: BAD_FRAME
    asio::write(c, asio::buffer(out));
    bool fin = false;
    CHECK(read_reject(c, fin) == static_cast<int>(reject_code::bad_frame));
    CHECK(fin);
    std::size_t got = 0;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (got < 2 && std::chrono::steady_clock::now() < until)
      got += r.poll([](std::uint32_t peer, const frame_header& h, const std::uint8_t*) {
        CHECK((peer & client_flag) != 0 && h.kind == frame_kind::request);
      }, 20ms);
    CHECK(got == 2);
  }
  std::puts("refuse counts ok");
  return 0;
}
