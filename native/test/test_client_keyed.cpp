// Client port, clients with a key (PROTOCOL.md §6a): two connections of one
// key do the handshake by hand (X25519, the client's signature over the
// transcript and its key), then pipeline sealed batches of requests while
// the consumer thread answers each through engine::enqueue: the replies are
// sealed by whichever thread writes them, their batches check on the
// client, every reply arrives once, and the key's shared in-flight count
// goes back to zero. A forged SEAL closes only its connection. Run under
// TSan/ASan in CI.
#include "auth.hpp"
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

struct keyed_conn {
  asio::ip::tcp::socket s;
  std::unique_ptr<auth::sealer> tx;
  std::unique_ptr<auth::opener> rx;
  explicit keyed_conn(asio::io_context& io) : s(io) {}
};

// Handshake as a client with `key`; reads the sealed PONG that says we are served.
void handshake(keyed_conn& c, const crypto::ed25519_keypair& key, const engine_options& opts, std::uint16_t port) {
  c.s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  crypto::x25519_keypair eph = crypto::x25519_keypair::generate();
  std::vector<std::uint8_t> h(hello_fixed_bytes + client_hello_key_bytes);
  hello_message m{};
  m.type = hello_type::client_hello;
  m.version = protocol_version;
  m.auth = auth_mode::mac;
  m.body_length = client_hello_key_bytes;
  encode_hello(h.data(), m);
  std::uint8_t* x = h.data() + hello_fixed_bytes;
  CHECK(crypto::random_bytes(x, auth::nonce_bytes));
  std::memcpy(x + auth::nonce_bytes, eph.public_key().data(), auth::eph_bytes);
  std::memcpy(x + 2 * auth::nonce_bytes, key.public_key.data(), 32);
  asio::write(c.s, asio::buffer(h));

  std::uint8_t w[hello_fixed_bytes];
  asio::read(c.s, asio::buffer(w));
  std::uint32_t magic = 0;
  const hello_message wm = decode_hello(w, magic);
  CHECK(magic == hello_magic && wm.type == hello_type::client_welcome && wm.auth == auth_mode::mac);
  const std::size_t cid = wm.cluster_id_length;
  CHECK(wm.body_length == cid + client_welcome_limits_bytes + client_welcome_key_bytes);
  std::vector<std::uint8_t> body(wm.body_length);
  asio::read(c.s, asio::buffer(body));
  const std::uint8_t* r = body.data() + cid + client_welcome_limits_bytes;  // nonce_R | X_R | sig_R
  auth::transcript_input ti;  // a client handshake: no responder cluster or epochs
  ti.cluster_id = opts.cluster_id;
  ti.responder = wm.sender;
  ti.responder_incarnation = wm.incarnation;
  ti.nonce_i = x;
  ti.eph_i = x + auth::nonce_bytes;
  ti.nonce_r = r;
  ti.eph_r = r + auth::nonce_bytes;
  std::vector<std::uint8_t> t = auth::transcript(ti);
  auth::session_keys keys;
  CHECK(auth::derive(eph, r + auth::nonce_bytes, t, keys));
  t.insert(t.end(), key.public_key.begin(), key.public_key.end());
  crypto::ed25519_signer signer(key);
  std::uint8_t af[auth::auth_frame_bytes];
  frame_header ah{};
  ah.kind = frame_kind::auth;
  ah.length = auth::sig_bytes;
  encode_header(af, ah);
  CHECK(auth::sign(signer, 'C', t, af + frame_header_bytes));
  asio::write(c.s, asio::buffer(af));
  c.tx = std::make_unique<auth::sealer>(keys.initiator_to_responder);
  c.rx = std::make_unique<auth::opener>(keys.responder_to_initiator);
  std::uint8_t pong[frame_header_bytes + auth::seal_frame_bytes];
  asio::read(c.s, asio::buffer(pong));
  CHECK(decode_header(pong).kind == frame_kind::pong);
  CHECK(c.rx->update(pong, frame_header_bytes));
  CHECK(c.rx->open(decode_header(pong + frame_header_bytes), pong + 2 * frame_header_bytes));
}

// Reads `total` replies, checking every batch's SEAL; each request id once.
void read_replies(keyed_conn& c, std::uint64_t first, std::uint64_t total) {
  std::vector<bool> seen(total, false);
  std::uint64_t got = 0;
  while (got < total) {
    std::uint8_t hdr[frame_header_bytes];
    asio::read(c.s, asio::buffer(hdr));
    const frame_header h = decode_header(hdr);
    std::vector<std::uint8_t> b(h.length);
    asio::read(c.s, asio::buffer(b));
    if (h.kind == frame_kind::seal) {
      CHECK(c.rx->open(h, b.data()));
      continue;
    }
    CHECK(h.kind == frame_kind::reply && h.length == 8);
    CHECK(c.rx->update(hdr, sizeof hdr) && c.rx->update(b.data(), b.size()));
    std::uint64_t v = 0;
    std::memcpy(&v, b.data(), 8);
    CHECK(v == h.msg_id && v >= first && v < first + total && !seen[v - first]);
    seen[v - first] = true;
    ++got;
  }
}

// Sealed batches of `per_batch` requests with ids first.. first+total-1.
void write_requests(keyed_conn& c, std::uint64_t first, std::uint64_t total, std::uint32_t per_batch) {
  for (std::uint64_t id = first; id < first + total;) {
    std::vector<std::uint8_t> batch;
    for (std::uint32_t k = 0; k < per_batch && id < first + total; ++k, ++id) {
      std::uint8_t f[frame_header_bytes + 8];
      encode_header(f, frame_header{8, 9, 0, frame_kind::request, 0, 0, id});
      std::memcpy(f + frame_header_bytes, &id, 8);
      batch.insert(batch.end(), f, f + sizeof f);
    }
    const crypto::byte_view v(batch.data(), batch.size());
    std::uint8_t seal[auth::seal_frame_bytes];
    CHECK(c.tx->seal(&v, 1, 0, seal));
    batch.insert(batch.end(), seal, seal + sizeof seal);
    asio::write(c.s, asio::buffer(batch));
  }
}

}  // namespace

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port()};
  auto opts = nexres_test::options_for(1, ports);
  opts.client_port = 0;
  opts.max_client_inflight = 64;
  opts.max_client_key_inflight = 48;  // below two connections' worth: the key's bound is reached
  nexres_test::node server(opts);
  CHECK(!server.eng().start());
  const std::uint16_t cport = server.eng().client_port();

  std::atomic<bool> stop{false};
  std::thread consumer([&] {
    while (!stop.load()) {
      std::vector<std::pair<std::uint32_t, std::uint64_t>> answers;
      server.poll([&](std::uint32_t peer, const frame_header& h, const std::uint8_t*) { answers.push_back({peer, h.msg_id}); }, 20ms);
      for (auto& a : answers) {
        frame_builder fb(1, 64);
        fb.add(9, a.second, &a.second, 8);
        segment s = fb.take();
        encode_header(const_cast<std::uint8_t*>(s.data), frame_header{8, 9, 1, frame_kind::reply, 0, 0, a.second});
        s.messages = 1;
        server.eng().enqueue(a.first, s);
      }
    }
  });

  const crypto::ed25519_keypair key = crypto::ed25519_keypair::generate();
  asio::io_context io;
  keyed_conn a(io), b(io);
  handshake(a, key, opts, cport);
  handshake(b, key, opts, cport);
  std::array<std::uint8_t, 32> proved{};
  CHECK(server.eng().client_key(1, proved) || server.eng().client_key(2, proved));
  CHECK(proved == key.public_key);

  constexpr std::uint64_t total = 20000;
  std::thread wa([&] { write_requests(a, 1, total, 16); });
  std::thread wb([&] { write_requests(b, 1'000'000, total, 7); });
  std::thread rb([&] { read_replies(b, 1'000'000, total); });
  read_replies(a, 1, total);
  rb.join();
  wa.join();
  wb.join();

  // A forged SEAL on a: refused (BAD_MAC); b goes on.
  {
    std::uint8_t f[frame_header_bytes + 8 + auth::seal_frame_bytes] = {};
    const std::uint64_t id = 7;
    encode_header(f, frame_header{8, 9, 0, frame_kind::request, 0, 0, id});
    encode_header(f + frame_header_bytes + 8, frame_header{auth::tag_bytes, 0, 0, frame_kind::seal, 0, 0, 1u << 20});
    asio::write(a.s, asio::buffer(f));
    std::error_code ec;
    std::uint8_t rest[4096];
    std::size_t n = 0;
    while (!ec) n += a.s.read_some(asio::buffer(rest), ec);
    CHECK(ec);  // closed (after its sealed REJECT)
    (void)n;
  }
  write_requests(b, 2'000'000, 100, 10);
  read_replies(b, 2'000'000, 100);
  stop.store(true);
  consumer.join();
  std::puts("client keyed ok");
  return 0;
}
