// sealed_receiver: a batch's runs (and a deferred PING answer) are released
// only when its SEAL checks; tampered, truncated, reordered and replayed
// batches and a SEAL naming another sender fail and release nothing; a
// batch past its bound is refused.
#include "check.hpp"
#include "sealed_stream.hpp"

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
  std::puts("sealed_stream ok");
  return 0;
}
