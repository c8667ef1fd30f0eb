// A tiny MIQ (miq_capacity 2) and a consumer that takes what is there every
// few milliseconds: an inbound session that finds the MIQ full waits for
// room and is woken by the consumer, never stalls. Everything arrives, in
// order, exactly once. All of it fits one receive chunk, so no chunk is ever
// released while the stream runs: a session waiting only for a chunk release
// would wait forever.
#include "check.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <atomic>
#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port()};
  nexres_test::node a(nexres_test::options_for(1, ports));
  auto ob = nexres_test::options_for(2, ports);
  ob.miq_capacity = 2;
  ob.chunk_bytes = 1u << 20;  // 4,000 frames of 32 bytes: one chunk
  auto b = std::make_unique<engine>(std::move(ob), [] {});
  CHECK(!a.eng().start());
  CHECK(!b->start());

  constexpr std::uint64_t total = 4000;
  std::atomic<bool> stop{false};
  // One frame per enqueue with small gaps: many small reads, one delivery each.
  std::thread producer([&] {
    for (std::uint64_t id = 1; id <= total && !stop.load(); ++id) {
      frame_builder fb(1, 64);
      fb.add(7, id, &id, 8);
      a.eng().enqueue(2, fb.take());
      if (id % 4 == 0) std::this_thread::sleep_for(100us);
    }
  });

  std::uint64_t next = 1, bad = 0, deliveries = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (next <= total && std::chrono::steady_clock::now() < deadline) {
    // Slower than the session's reads: the MIQ is full most of the time.
    std::this_thread::sleep_for(3ms);
    b->begin_drain();
    delivery d;
    while (b->pop_delivery(d)) {
      ++deliveries;
      const std::uint8_t* p = d.source->data() + d.offset;
      const std::uint8_t* end = p + d.length;
      while (p < end) {
        const frame_header h = decode_header(p);
        std::uint64_t v;
        std::memcpy(&v, p + frame_header_bytes, 8);
        if (h.msg_id != next || v != next) ++bad;
        ++next;
        p += frame_header_bytes + h.length;
      }
      b->release(d);
    }
  }
  stop.store(true);
  producer.join();
  std::fprintf(stderr, "miq: %llu of %llu frames in %llu deliveries\n", static_cast<unsigned long long>(next - 1),
               static_cast<unsigned long long>(total), static_cast<unsigned long long>(deliveries));
  CHECK(bad == 0);
  CHECK(next == total + 1);
  b->stop();
  std::puts("engine miq ok");
  return 0;
}
