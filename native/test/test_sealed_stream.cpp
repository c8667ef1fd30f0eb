// sealed_receiver: a batch's runs (and a deferred PING answer) are released
// only when its SEAL checks; tampered, truncated, reordered and replayed
// batches and a SEAL naming another sender fail and release nothing; a
// batch past its bound is refused.
// sealed_sender: a queue of runs (small, larger than a batch, a payload sent
// by reference after its header, a control frame) is cut into batches at
// frame boundaries, each within its bound unless one frame is bigger, with
// every frame and message count kept; each batch opens at a receiver; a
// tail that ends inside a frame waits until the rest is queued.
// auth seal: the sender's ciphertext segments hide the frames (no plaintext
// marker survives, two equal batches encrypt differently: every batch has
// its own nonce), the batch's own segments become shadows with every
// message count kept; the receiver decrypts in place in pieces of any size
// and gets the frames back; keys are ratcheted at the same batch on both
// sides (a receiver on another schedule fails at the first rekey); a
// tampered, truncated, reordered or replayed ciphertext fails.
#include "check.hpp"
#include "engine.hpp"
#include "sealed_stream.hpp"

#include <deque>
#include <memory>

#include <cstring>
#include <string_view>
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
// auth seal: reads the ciphertext segments of `q` as a receiver does,
// decrypting in place in pieces of `piece` bytes; returns frames seen, or
// -1 at the first batch that fails.
long open_encrypted(const std::deque<nexres::segment>& q, std::size_t sealed, nexres::sealed_receiver<int>& rx,
                    std::size_t piece, std::uint64_t& next_id) {
  long frames = 0;
  std::vector<int> out;
  std::optional<std::uint64_t> pong;
  for (std::size_t k = 0; k < sealed; ++k) {
    const nexres::segment& s = q[k];
    if (s.shadow) continue;
    CHECK(s.control);
    std::vector<std::uint8_t> wire(s.data, s.data + s.length);  // as received
    // The clear SEALED header: the batch's number and length.
    const nexres::frame_header head = nexres::decode_header(wire.data());
    if (head.kind != nexres::frame_kind::sealed || head.length != wire.size() - nexres::frame_header_bytes) return -1;
    if (rx.begin(wire.data()) != nexres::sealed_receiver<int>::fed::ok) return -1;
    std::uint8_t* c = wire.data() + nexres::frame_header_bytes;
    const std::size_t body = head.length - nexres::auth::tag_bytes;  // frames + SEAL header
    for (std::size_t at = 0; at < body; at += piece)
      CHECK(rx.decrypt(c + at, std::min(piece, body - at)) == nexres::sealed_receiver<int>::fed::ok);
    // Not a byte past the batch's ciphertext.
    std::uint8_t extra = 0;
    CHECK(rx.decrypt(&extra, 1) == nexres::sealed_receiver<int>::fed::bad);
    std::size_t p = 0;
    while (p + nexres::frame_header_bytes < body) {
      const nexres::frame_header h = nexres::decode_header(c + p);
      if (h.kind != nexres::frame_kind::data || h.msg_id != next_id) return -1;
      ++next_id;
      ++frames;
      p += nexres::frame_header_bytes + h.length;
    }
    if (p + nexres::frame_header_bytes != body) return -1;
    const nexres::frame_header sh = nexres::decode_header(c + p);
    if (!rx.open(sh, c + body, out, pong)) return -1;
  }
  return frames;
}

void sealed_mode(const nexres::crypto::key32& key) {
  constexpr std::size_t bound = 16u << 10;
  const nexres::auth::rekey_policy often{3, 40000};
  auto queue = [](std::uint64_t first, std::size_t runs) {
    std::deque<nexres::segment> q;
    std::uint64_t id = first;
    for (std::size_t r = 0; r < runs; ++r) {
      nexres::segment s = run(id, 20, 500);
      // A marker in every payload: it must not be on the wire.
      auto* bytes = const_cast<std::uint8_t*>(s.data);
      for (std::size_t i = 0; i < 20; ++i) std::memcpy(bytes + i * (nexres::frame_header_bytes + 500) + nexres::frame_header_bytes, "SECRET-MARKER", 13);
      id += 20;
      q.push_back(s);
    }
    return q;
  };
  {
    nexres::sealed_sender<nexres::segment> tx(key, 1, bound, true, often);
    std::deque<nexres::segment> q = queue(1, 40);  // 40 x 20 frames of 524 bytes: ~26 batches
    const std::optional<std::size_t> sealed = tx.seal(q, 0);
    CHECK(sealed && *sealed == q.size());
    std::size_t counted = 0, ciphertexts = 0;
    for (const nexres::segment& s : q) {
      counted += s.shadow ? s.messages : 0;
      CHECK(s.shadow != s.control);  // every segment is either a shadow or a ciphertext
      if (!s.control) continue;
      ++ciphertexts;
      const std::string_view wire(reinterpret_cast<const char*>(s.data), s.length);
      CHECK(wire.find("SECRET-MARKER") == std::string_view::npos);
    }
    CHECK(counted == 800 && ciphertexts >= 20);
    for (std::size_t piece : {std::size_t{1}, std::size_t{7}, std::size_t{4096}, std::size_t{1} << 20}) {
      nexres::sealed_receiver<int> rx(key, 1, 1u << 20, true, often);
      std::uint64_t next = 1;
      CHECK(open_encrypted(q, *sealed, rx, piece, next) == 800);
    }
    // A receiver that ratchets on another schedule fails at the first rekey.
    nexres::sealed_receiver<int> late(key, 1, 1u << 20, true, nexres::auth::rekey_policy{2, 1ull << 40});
    std::uint64_t next = 1;
    CHECK(open_encrypted(q, *sealed, late, 1 << 20, next) == -1);
    CHECK(next > 1);  // the batches before the rekey opened
    // Tampered ciphertext, a tampered tag, truncated, reordered, replayed.
    // 5: a frame's worth of ciphertext cut out and the clear header's
    // length made to match (the tag covers the header).
    for (int attack = 0; attack < 6; ++attack) {
      std::deque<nexres::segment> bad;
      std::vector<std::shared_ptr<std::vector<std::uint8_t>>> keep;
      std::vector<const nexres::segment*> cts;
      for (const nexres::segment& s : q)
        if (s.control) cts.push_back(&s);
      auto copy = [&](const nexres::segment& s) {
        auto b = std::make_shared<std::vector<std::uint8_t>>(s.data, s.data + s.length);
        keep.push_back(b);
        bad.push_back(nexres::segment::control_frame(b, b->data(), b->size()));
        return b;
      };
      if (attack == 3) {
        copy(*cts[1]);
        copy(*cts[0]);
      } else if (attack == 4) {
        copy(*cts[0]);
        copy(*cts[0]);
      } else {
        auto b = copy(*cts[0]);
        if (attack == 0) (*b)[100] ^= 1;
        if (attack == 1) b->back() ^= 0x80;
        if (attack == 2) {
          b->erase(b->begin() + 50);
          bad.back().length -= 1;
        }
        if (attack == 5) {
          b->erase(b->begin() + 100, b->begin() + 100 + 524);
          bad.back().length -= 524;
          nexres::store_u32(b->data(), nexres::load_u32(b->data()) - 524);
        }
      }
      nexres::sealed_receiver<int> rx(key, 1, 1u << 20, true, often);
      std::uint64_t n = 1;
      CHECK(open_encrypted(bad, bad.size(), rx, 1000, n) == -1 || (attack == 4 && n == 21));
    }
  }
  {
    // Nonces: equal batches encrypt differently, one sequence per direction
    // shared by MAC'd frames and encrypted batches.
    nexres::auth::sealer tx(key, true, {1u << 20, 1ull << 40});
    std::vector<std::uint8_t> plain(2000, 0x55), a(plain.size() + nexres::auth::sealed_overhead), b(a.size());
    constexpr std::size_t h = nexres::frame_header_bytes;  // the clear SEALED header
    const nexres::crypto::byte_view v(plain.data(), plain.size());
    CHECK(tx.encrypt(&v, 1, 1, a.data()) && tx.next_seq() == 1);
    std::array<std::uint8_t, seal_frame_bytes> mac{};
    CHECK(tx.seal(&v, 1, 1, mac.data()) && tx.next_seq() == 2);
    CHECK(tx.encrypt(&v, 1, 1, b.data()) && tx.next_seq() == 3);
    CHECK(std::memcmp(a.data() + h, b.data() + h, plain.size()) != 0);
    CHECK(std::memcmp(a.data() + a.size() - 16, b.data() + b.size() - 16, 16) != 0);
    // The rekeyed key is not the old one: after a ratchet equal batches at
    // the same position of the schedule differ too.
    nexres::auth::sealer r1(key, true, {1, 1ull << 40});
    std::vector<std::uint8_t> c1(a.size()), c2(a.size());
    CHECK(r1.encrypt(&v, 1, 1, c1.data()) && r1.generation() == 2);
    CHECK(r1.encrypt(&v, 1, 1, c2.data()) && r1.generation() == 3);
    CHECK(std::memcmp(c1.data() + h, c2.data() + h, plain.size()) != 0);
  }
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
  sealed_mode(key);
  std::puts("sealed_stream ok");
  return 0;
}
