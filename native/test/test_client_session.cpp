// Client port: a raw client pipelines requests; the consumer thread answers
// each one through engine::enqueue (written directly when the writer is
// idle, by the io thread once the socket is full); every reply arrives,
// matched by id. Then an oversized request is refused and only that
// connection closes. Run under TSan/ASan in CI.
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

std::vector<std::uint8_t> client_hello() {
  std::vector<std::uint8_t> h(hello_fixed_bytes);
  hello_message m{};
  m.type = hello_type::client_hello;
  m.version = protocol_version;
  encode_hello(h.data(), m);
  return h;
}

// Reads CLIENT_WELCOME; checks it carries the limits (PROTOCOL.md §6) after
// the cluster id.
void read_welcome(asio::ip::tcp::socket& s, const engine_options& opts) {
  std::uint8_t w[hello_fixed_bytes];
  asio::read(s, asio::buffer(w));
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(w, magic);
  CHECK(magic == hello_magic && m.type == hello_type::client_welcome);
  CHECK(m.cluster_id_length == opts.cluster_id.size());
  CHECK(m.body_length == opts.cluster_id.size() + client_welcome_limits_bytes);
  std::vector<std::uint8_t> body(m.body_length);
  asio::read(s, asio::buffer(body));
  CHECK(std::memcmp(body.data(), opts.cluster_id.data(), opts.cluster_id.size()) == 0);
  CHECK(load_u32(body.data() + m.cluster_id_length) == opts.max_request_bytes);
  CHECK(load_u32(body.data() + m.cluster_id_length + 4) == opts.max_client_inflight);
}

}  // namespace

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port()};
  auto opts = nexres_test::options_for(1, ports);
  opts.client_port = 0;
  opts.max_request_bytes = 64 * 1024;
  opts.max_client_inflight = 64;
  nexres_test::node server(opts);
  CHECK(!server.eng().start());
  const std::uint16_t cport = server.eng().client_port();
  CHECK(cport != 0);

  std::atomic<bool> stop{false};
  // Consumer: answer every request with its own body, in batches.
  std::thread consumer([&] {
    while (!stop.load()) {
      std::vector<std::pair<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>>> answers;
      server.poll([&](std::uint32_t peer, const frame_header& h, const std::uint8_t* body) {
        std::uint64_t v = 0;
        std::memcpy(&v, body, 8);
        answers.push_back({peer, {h.msg_id, v}});
      }, 20ms);
      for (auto& a : answers) {
        frame_builder fb(1, 64);
        fb.add(9, a.second.first, &a.second.second, 8);
        segment s = fb.take();
        encode_header(const_cast<std::uint8_t*>(s.data), frame_header{8, 9, 1, frame_kind::reply, 0, 0, a.second.first});
        s.messages = 1;
        server.eng().enqueue(a.first, s);
      }
    }
  });

  asio::io_context io;
  asio::ip::tcp::socket c(io);
  c.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), cport));
  asio::write(c, asio::buffer(client_hello()));
  read_welcome(c, opts);
  constexpr std::uint64_t total = 20000;
  std::thread writer([&] {
    for (std::uint64_t id = 1; id <= total; ++id) {
      std::uint8_t f[frame_header_bytes + 8];
      encode_header(f, frame_header{8, 9, 0, frame_kind::request, 0, 0, id});
      std::memcpy(f + frame_header_bytes, &id, 8);
      asio::write(c, asio::buffer(f));
    }
  });
  std::vector<bool> seen(total + 1, false);
  for (std::uint64_t n = 0; n < total; ++n) {
    std::uint8_t f[frame_header_bytes + 8];
    asio::read(c, asio::buffer(f));
    const frame_header h = decode_header(f);
    std::uint64_t v = 0;
    std::memcpy(&v, f + frame_header_bytes, 8);
    CHECK(h.kind == frame_kind::reply && h.msg_id == v && v >= 1 && v <= total && !seen[v]);
    seen[v] = true;
  }
  writer.join();

  // Oversized request on a second connection: refused with a reason frame.
  asio::ip::tcp::socket bad(io);
  bad.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), cport));
  asio::write(bad, asio::buffer(client_hello()));
  read_welcome(bad, opts);
  std::uint8_t big[frame_header_bytes];
  encode_header(big, frame_header{1u << 20, 9, 0, frame_kind::request, 0, 0, 1});
  asio::write(bad, asio::buffer(big));
  std::uint8_t rej[frame_header_bytes];
  asio::read(bad, asio::buffer(rej));
  CHECK(decode_header(rej).kind == frame_kind::reject);
  std::vector<std::uint8_t> body(decode_header(rej).length);
  asio::read(bad, asio::buffer(body));
  CHECK(static_cast<reject_code>(load_u16(body.data())) == reject_code::request_too_large);

  // The first connection still works.
  {
    std::uint64_t id = total + 1;
    std::uint8_t f[frame_header_bytes + 8];
    encode_header(f, frame_header{8, 9, 0, frame_kind::request, 0, 0, id});
    std::memcpy(f + frame_header_bytes, &id, 8);
    asio::write(c, asio::buffer(f));
    asio::read(c, asio::buffer(f));
    CHECK(decode_header(f).msg_id == id);
  }
  stop.store(true);
  consumer.join();
  std::puts("client session ok");
  return 0;
}
