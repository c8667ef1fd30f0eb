// sealed_receiver: a batch's runs (and a deferred PING answer) are released
// only when its SEAL checks; tampered, truncated, reordered and replayed
// batches and a SEAL naming another sender fail and release nothing; a
// batch past its bound is refused.
// sealed_sender: a queue of runs (small, larger than a batch, a payload sent
// by reference after its header, a control frame) is cut into batches at
// frame boundaries, each within its bound unless one frame is bigger, with
// every frame and message count kept; each batch opens at a receiver; a
// tail that ends inside a frame waits until the rest is queued.
#include "check.hpp"
#include "engine.hpp"
#include "sealed_stream.hpp"

#include <deque>
#include <memory>

#include <cstring>
#include <optional>
#include <vector>

namespace {
using nexres::auth::seal_frame_bytes;

struct batch {
  std::vector<std::uint8_t> bytes;
  std::array<std::uint8_t, seal_frame_bytes> seal{};
};

batch make(nexres::auth::sealer& tx, std::uint32_t sender, std::uint8_t fill, std::size_t n) {
  batch b;
  b.bytes.assign(n, fill);
  nexres::crypto::byte_view v{b.bytes.data(), b.bytes.size()};
  CHECK(tx.seal(&v, 1, sender, b.seal.data()));
  return b;
}

// Feeds `b` in two pieces (as two reads would), holds runs `first`..`first+1`.
bool deliver(nexres::sealed_receiver<int>& rx, const batch& b, int first, std::vector<int>& out,
             std::optional<std::uint64_t>& pong, std::size_t cut_tail = 0) {
  const std::size_t half = b.bytes.size() / 2;
  CHECK(rx.feed(b.bytes.data(), half) == nexres::sealed_receiver<int>::fed::ok);
  rx.hold(first);
  CHECK(rx.feed(b.bytes.data() + half, b.bytes.size() - half - cut_tail) == nexres::sealed_receiver<int>::fed::ok);
  rx.hold(first + 1);
  const nexres::frame_header h = nexres::decode_header(b.seal.data());
  return rx.open(h, b.seal.data() + nexres::frame_header_bytes, out, pong);
}

// A framed run of `n` DATA frames of `body` bytes, message ids from `first`.
nexres::segment run(std::uint64_t first, std::size_t n, std::size_t body) {
  auto bytes = std::make_shared<std::vector<std::uint8_t>>(n * (nexres::frame_header_bytes + body), 0);
  for (std::size_t i = 0; i < n; ++i) {
    nexres::frame_header h{};
    h.length = static_cast<std::uint32_t>(body);
    h.sender = 1;
    h.kind = nexres::frame_kind::data;
    h.msg_id = first + i;
    nexres::encode_header(bytes->data() + i * (nexres::frame_header_bytes + body), h);
  }
  nexres::segment s;
  s.owner = bytes;
  s.data = bytes->data();
  s.length = static_cast<std::uint32_t>(bytes->size());
  s.messages = static_cast<std::uint32_t>(n);
  s.last_msg_id = first + n - 1;
  return s;
}

// Seals `q`, then reads it as a receiver would: every batch's bytes fed,
// its SEAL opened; counts frames (all DATA, ids in order) and checks that
// each batch ends at a frame boundary and stays within `bound` unless it
// is one frame. Returns the frames seen.
std::size_t check_sealed(std::deque<nexres::segment>& q, std::size_t sealed, const nexres::crypto::key32& key,
                         std::size_t bound) {
  nexres::sealed_receiver<int> rx(key, 1, 64u << 20);
  std::vector<std::uint8_t> stream;
  std::size_t frames = 0, batch_frames = 0;
  std::uint64_t next_id = 1;
  std::vector<int> out;
  std::optional<std::uint64_t> pong;
  for (std::size_t k = 0; k < sealed; ++k) {
    const nexres::segment& s = q[k];
    const bool is_seal = s.control && !s.framed && s.length == nexres::auth::seal_frame_bytes &&
                         nexres::decode_header(s.data).kind == nexres::frame_kind::seal;
    if (!is_seal) {
      stream.insert(stream.end(), s.data, s.data + s.length);
      continue;
    }
    // The batch: whole frames only.
    std::size_t p = 0;
    batch_frames = 0;
    while (p < stream.size()) {
      CHECK(stream.size() - p >= nexres::frame_header_bytes);
      const nexres::frame_header h = nexres::decode_header(stream.data() + p);
      CHECK(p + nexres::frame_header_bytes + h.length <= stream.size());
      if (h.kind == nexres::frame_kind::data) CHECK(h.msg_id == next_id++);
      p += nexres::frame_header_bytes + h.length;
      ++batch_frames;
    }
    CHECK(stream.size() <= bound || batch_frames == 1);
    frames += batch_frames;
    CHECK(rx.feed(stream.data(), stream.size()) == nexres::sealed_receiver<int>::fed::ok);
    const nexres::frame_header sh = nexres::decode_header(s.data);
    CHECK(rx.open(sh, s.data + nexres::frame_header_bytes, out, pong));
    stream.clear();
  }
  CHECK(stream.empty());  // nothing sealed is left outside a batch
  return frames;
}
}  // namespace

int main() {
  nexres::crypto::key32 key{};
  for (std::size_t i = 0; i < key.size(); ++i) key.bytes[i] = static_cast<std::uint8_t>(i * 7 + 1);
  const std::uint32_t peer = 3;
  {
    nexres::auth::sealer tx(key);
    nexres::sealed_receiver<int> rx(key, peer, 1 << 20);
    std::vector<int> out;
    std::optional<std::uint64_t> pong;
    const batch a = make(tx, peer, 1, 1000);
    rx.defer_pong(42);
    CHECK(!rx.holding());
    CHECK(deliver(rx, a, 10, out, pong));
    CHECK(out == (std::vector<int>{10, 11}) && pong && *pong == 42 && !rx.holding());
    const batch b = make(tx, peer, 2, 500);
    out.clear();
    CHECK(deliver(rx, b, 20, out, pong));
    CHECK(out == (std::vector<int>{20, 21}) && !pong);
  }
  {
    // Tampered: one byte of the batch changed.
    nexres::auth::sealer tx(key);
    nexres::sealed_receiver<int> rx(key, peer, 1 << 20);
    batch a = make(tx, peer, 1, 1000);
    a.bytes[700] ^= 0x40;
    std::vector<int> out;
    std::optional<std::uint64_t> pong;
    rx.defer_pong(7);
    CHECK(!deliver(rx, a, 10, out, pong));
    CHECK(out.empty() && !pong && rx.holding());
    int dropped = 0;
    rx.drop([&](int) { ++dropped; });
    CHECK(dropped == 2 && !rx.holding());
  }
  {
    // Truncated: the SEAL comes before the batch's last bytes.
    nexres::auth::sealer tx(key);
    nexres::sealed_receiver<int> rx(key, peer, 1 << 20);
    const batch a = make(tx, peer, 1, 1000);
    std::vector<int> out;
    std::optional<std::uint64_t> pong;
    CHECK(!deliver(rx, a, 10, out, pong, 1));
    CHECK(out.empty());
  }
  {
    // Reordered: the second batch first.
    nexres::auth::sealer tx(key);
    nexres::sealed_receiver<int> rx(key, peer, 1 << 20);
    const batch a = make(tx, peer, 1, 300);
    const batch b = make(tx, peer, 2, 300);
    std::vector<int> out;
    std::optional<std::uint64_t> pong;
    CHECK(!deliver(rx, b, 20, out, pong));
    CHECK(out.empty());
    (void)a;
  }
  {
    // Replayed: the same batch and SEAL twice.
    nexres::auth::sealer tx(key);
    nexres::sealed_receiver<int> rx(key, peer, 1 << 20);
    const batch a = make(tx, peer, 1, 300);
    std::vector<int> out;
    std::optional<std::uint64_t> pong;
    CHECK(deliver(rx, a, 10, out, pong));
    out.clear();
    CHECK(!deliver(rx, a, 30, out, pong));
    CHECK(out.empty());
  }
  {
    // A SEAL that names another sender; a key that is not the session's.
    nexres::auth::sealer tx(key);
    nexres::sealed_receiver<int> rx(key, peer, 1 << 20);
    const batch a = make(tx, peer + 1, 1, 300);
    std::vector<int> out;
    std::optional<std::uint64_t> pong;
    CHECK(!deliver(rx, a, 10, out, pong));
    nexres::crypto::key32 other = key;
    other.bytes[0] ^= 1;
    nexres::auth::sealer tx2(other);
    nexres::sealed_receiver<int> rx2(key, peer, 1 << 20);
    CHECK(!deliver(rx2, make(tx2, peer, 1, 300), 10, out, pong));
    CHECK(out.empty());
  }
  {
    // Past its bound without a SEAL.
    nexres::sealed_receiver<int> rx(key, peer, 1000);
    std::vector<std::uint8_t> bytes(600, 1);
    CHECK(rx.feed(bytes.data(), bytes.size()) == nexres::sealed_receiver<int>::fed::ok);
    CHECK(rx.feed(bytes.data(), bytes.size()) == nexres::sealed_receiver<int>::fed::too_big);
  }
  {
    // The send side: runs of every shape cut into batches at frame boundaries.
    constexpr std::size_t bound = 64u << 10;
    nexres::sealed_sender<nexres::segment> tx(key, 1, bound);
    std::deque<nexres::segment> q;
    std::uint64_t id = 1;
    std::size_t messages = 0;
    auto add = [&](std::size_t n, std::size_t body) {
      q.push_back(run(id, n, body));
      id += n;
      messages += n;
    };
    add(10, 100);     // small
    add(300, 1000);   // ~300 KiB: split over several batches
    add(1, 0);        // an empty message
    // A payload sent by reference: its header in one segment, its bytes in the next.
    auto big = std::make_shared<std::vector<std::uint8_t>>(200u << 10, 7);
    nexres::segment header = run(id, 1, 0);
    nexres::store_u32(const_cast<std::uint8_t*>(header.data), static_cast<std::uint32_t>(big->size()));
    q.push_back(header);
    nexres::segment payload;
    payload.owner = big;
    payload.data = big->data();
    payload.length = static_cast<std::uint32_t>(big->size());
    payload.framed = false;
    q.push_back(payload);
    ++id;
    ++messages;
    add(50, 3000);
    const std::optional<std::size_t> sealed = tx.seal(q, 0);
    CHECK(sealed && *sealed == q.size());
    std::size_t counted = 0;
    for (const nexres::segment& s : q) counted += s.control ? 0 : s.messages;
    CHECK(counted == messages);  // splitting runs kept every message count
    CHECK(check_sealed(q, *sealed, key, bound) == messages);

    // A tail that ends inside a frame (a header whose payload is not queued
    // yet) waits; once the payload is queued it is sealed.
    nexres::segment lone = run(id, 1, 0);
    nexres::store_u32(const_cast<std::uint8_t*>(lone.data), 5000);
    q.push_back(lone);
    const std::optional<std::size_t> waiting = tx.seal(q, *sealed);
    CHECK(waiting && *waiting == *sealed);
    auto rest = std::make_shared<std::vector<std::uint8_t>>(5000, 9);
    nexres::segment tail;
    tail.owner = rest;
    tail.data = rest->data();
    tail.length = 5000;
    tail.framed = false;
    q.push_back(tail);
    const std::optional<std::size_t> done = tx.seal(q, *sealed);
    CHECK(done && *done == q.size());
    CHECK(check_sealed(q, *done, key, bound) == messages + 1);
  }
  std::puts("sealed_stream ok");
  return 0;
}
