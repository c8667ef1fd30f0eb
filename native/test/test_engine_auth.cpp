// Two engines with auth mac, then seal, on loopback (built under ASan and
// TSan in CI): 200,000 small frames in runs of many sizes and 2 MiB frames
// sent by reference arrive in order, exactly once, through sealed batches
// (with seal: encrypted, decrypted in place, and the keys ratcheted forward
// every few batches); the ACKs (sealed the other way) empty the sender's
// queue; every 997th frame is signed (checked in the verification pool, off
// the io threads, and still delivered in order); an engine with the right id
// but another key is refused and never delivers, and a frame whose signature
// does not check closes the connection, nothing after it delivered.
#include "check.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

namespace {
std::array<std::uint8_t, 32> seed_for(int n) {
  std::array<std::uint8_t, 32> s{};
  for (int i = 0; i < 32; ++i) s[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n * 31 + i);
  return s;
}

auth_mode mode = auth_mode::mac;

// One signed frame (payload: the id, then incarnation and signature) by `signer`.
segment signed_frame(const crypto::ed25519_signer& signer, engine& eng, std::uint64_t id) {
  std::array<std::uint8_t, 8 + auth::signed_trailer_bytes> body{};
  std::memcpy(body.data(), &id, 8);
  frame_builder sb(1, 256);
  sb.add(7, id, body.data(), static_cast<std::uint32_t>(body.size()));
  segment sg = sb.take();
  auto* f = const_cast<std::uint8_t*>(sg.data);
  f[frame_offset::flags] |= auth::flag_signed;
  CHECK(auth::sign_frame(signer, eng.options().cluster_id, eng.options().incarnation, f));
  return sg;
}

engine_options keyed(std::uint32_t self, const std::vector<std::uint16_t>& ports, int key_of_self) {
  engine_options o = nexres_test::options_for(self, ports);
  o.auth = mode;
  o.seal_rekey.batches = 7;  // seal: many rekeys in one run
  o.seal_rekey.bytes = 300000;
  o.private_seed = seed_for(key_of_self);
  for (std::uint32_t id = 1; id <= ports.size(); ++id) {
    if (id == self) continue;
    o.public_keys.emplace_back(id, crypto::ed25519_keypair::from_seed(seed_for(static_cast<int>(id)).data()).public_key);
  }
  o.receive_buffer_bytes = 0;
  o.chunk_bytes = 64 * 1024;  // small receive chunks: batches must be cut to fit
  return o;
}

void run() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port()};
  nexres_test::node a(keyed(1, ports, 1));
  nexres_test::node b(keyed(2, ports, 2));
  CHECK(!a.eng().start());
  CHECK(!b.eng().start());

  constexpr std::uint64_t small = 200000, big = 4;
  std::uint64_t next = 1, bad = 0, big_seen = 0;
  std::uint64_t signed_seen = 0;
  auto on_b = [&](std::uint32_t peer, const frame_header& h, const std::uint8_t* body) {
    if (peer != 1 || h.sender != 1 || h.msg_id != next) ++bad;
    if (h.flags & auth::flag_signed) {
      ++signed_seen;
      if (h.length != 8 + auth::signed_trailer_bytes || h.msg_id % 997 != 0) ++bad;
    } else if (h.msg_id % 997 == 0 && h.msg_id <= small) {
      ++bad;
    }
    if (h.length == (2u << 20)) {
      ++big_seen;
      if (body[0] != static_cast<std::uint8_t>(h.msg_id) || body[h.length - 1] != static_cast<std::uint8_t>(h.msg_id)) ++bad;
    } else {
      std::uint64_t v;
      std::memcpy(&v, body, 8);
      if (v != h.msg_id) ++bad;
    }
    ++next;
  };
  std::vector<std::shared_ptr<std::vector<std::uint8_t>>> bigs;
  std::thread producer([&] {
    std::uint64_t id = 1;
    int run = 1;
    const crypto::ed25519_signer signer(seed_for(1).data());
    while (id <= small) {
      frame_builder fb(1);
      for (int i = 0; i < run && id <= small && id % 997 != 0; ++i, ++id) fb.add(7, id, &id, 8);
      if (fb.bytes() > 0) a.eng().enqueue(2, fb.take());
      if (id % 997 == 0 && id <= small) {
        a.eng().enqueue(2, signed_frame(signer, a.eng(), id));
        ++id;
      }
      run = run * 3 % 9973 + 1;  // runs of 1..~10k frames
    }
    for (std::uint64_t k = 0; k < big; ++k, ++id) {
      // header staged, payload by reference (like lib/outbox.ts)
      auto payload = std::make_shared<std::vector<std::uint8_t>>(2u << 20, static_cast<std::uint8_t>(id));
      frame_builder fb(1);
      fb.add(7, id, nullptr, 0);
      segment hs = fb.take();
      store_u32(const_cast<std::uint8_t*>(hs.data), static_cast<std::uint32_t>(payload->size()));
      hs.messages = 0;
      a.eng().enqueue(2, hs);
      segment ps;
      ps.owner = payload;
      ps.data = payload->data();
      ps.length = static_cast<std::uint32_t>(payload->size());
      ps.messages = 1;
      ps.last_msg_id = id;
      ps.framed = false;
      a.eng().enqueue(2, ps);
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (next <= small + big && std::chrono::steady_clock::now() < deadline) b.poll(on_b, 50ms);
  producer.join();
  std::fprintf(stderr, "auth: delivered %llu, bad %llu, big %llu\n", static_cast<unsigned long long>(next - 1),
               static_cast<unsigned long long>(bad), static_cast<unsigned long long>(big_seen));
  CHECK(bad == 0);
  CHECK(signed_seen == small / 997);
  CHECK(next == small + big + 1);
  CHECK(big_seen == big);
  while (a.eng().queued_bytes(2) > 0 && std::chrono::steady_clock::now() < deadline) b.poll(on_b, 20ms);
  CHECK(a.eng().queued_bytes(2) == 0);

  // An impostor: replica 1's id, another key. Refused; nothing delivered.
  {
    const std::vector<std::uint16_t> p2 = {nexres_test::free_port(), ports[1]};
    nexres_test::node fake(keyed(1, p2, 7));
    CHECK(!fake.eng().start());
    frame_builder fb(1);
    std::uint64_t v = 999999;
    fb.add(7, 999999, &v, 8);
    fake.eng().enqueue(2, fb.take());
    std::uint64_t delivered = 0;
    const auto until = std::chrono::steady_clock::now() + 1500ms;
    while (std::chrono::steady_clock::now() < until) b.poll([&](std::uint32_t, const frame_header&, const std::uint8_t*) { ++delivered; }, 20ms);
    CHECK(delivered == 0);
    CHECK(b.eng().stats().rejects_by_code[static_cast<std::size_t>(reject_code::bad_auth)] > 0);
  }
  // A signature that does not check: BAD_SIGNATURE, nothing after it.
  {
    const std::uint64_t before = b.eng().stats().rejects_by_code[static_cast<std::size_t>(reject_code::bad_signature)];
    const crypto::ed25519_signer wrong(seed_for(9).data());
    std::uint64_t id = next;
    a.eng().enqueue(2, signed_frame(wrong, a.eng(), id));
    frame_builder after(1, 256);
    std::uint64_t id2 = id + 1;
    after.add(7, id2, &id2, 8);
    a.eng().enqueue(2, after.take());
    std::uint64_t delivered = 0;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (b.eng().stats().rejects_by_code[static_cast<std::size_t>(reject_code::bad_signature)] == before &&
           std::chrono::steady_clock::now() < until)
      b.poll([&](std::uint32_t, const frame_header&, const std::uint8_t*) { ++delivered; }, 20ms);
    CHECK(b.eng().stats().rejects_by_code[static_cast<std::size_t>(reject_code::bad_signature)] > before);
    b.poll([&](std::uint32_t, const frame_header&, const std::uint8_t*) { ++delivered; }, 100ms);
    CHECK(delivered == 0);
  }
  // The other side on another mode: refused in the handshake.
  {
    const std::vector<std::uint16_t> p2 = {nexres_test::free_port(), ports[1]};
    mode = mode == auth_mode::mac ? auth_mode::seal : auth_mode::mac;
    nexres_test::node other(keyed(1, p2, 1));
    mode = mode == auth_mode::mac ? auth_mode::seal : auth_mode::mac;
    const std::uint64_t before = b.eng().stats().rejects_by_code[static_cast<std::size_t>(reject_code::bad_auth)];
    CHECK(!other.eng().start());
    const auto until = std::chrono::steady_clock::now() + 3s;
    while (b.eng().stats().rejects_by_code[static_cast<std::size_t>(reject_code::bad_auth)] == before &&
           std::chrono::steady_clock::now() < until)
      b.poll([](std::uint32_t, const frame_header&, const std::uint8_t*) {}, 20ms);
    CHECK(b.eng().stats().rejects_by_code[static_cast<std::size_t>(reject_code::bad_auth)] > before);
  }
}
}  // namespace

int main() {
  mode = auth_mode::mac;
  run();
  std::fprintf(stderr, "engine auth mac ok\n");
  mode = auth_mode::seal;
  run();
  std::fprintf(stderr, "engine auth seal ok\n");
  return 0;
}
