// engine::reconfigure while a producer thread sends and every engine's io
// threads run (the slot table is read without a lock: this is the test
// ThreadSanitizer runs over it). Replica 3 is removed and added back, the
// epoch moves on all three; replica 2 stays a member throughout and must get
// everything, in order, once; replica 3 gets in order what it gets, and
// what it does not is reported undelivered. Replica 1 also reads its stats
// meanwhile.
#include "check.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

namespace {

membership config_of(const std::vector<std::uint16_t>& ports, std::uint32_t self, std::vector<std::uint32_t> ids,
                     std::uint32_t epoch) {
  membership m;
  m.epoch = epoch;
  for (std::uint32_t id : ids) {
    if (id == self) continue;
    peer_config p;
    p.id = id;
    p.host = "127.0.0.1";
    p.port = ports[id - 1];
    m.peers.push_back(p);
  }
  return m;
}

struct receiver {
  explicit receiver(engine_options o) : n(std::move(o)) {}
  nexres_test::node n;
  std::atomic<bool> run{true};
  std::atomic<std::uint64_t> got{0}, last{0}, bad{0}, direct{0};
  std::thread th;
  void start() {
    th = std::thread([this] {
      while (run.load()) {
        n.poll(
            [this](std::uint32_t, const frame_header& h, const std::uint8_t*) {
              if (h.msg_id <= last.load()) bad.fetch_add(1);
              last.store(h.msg_id);
              got.fetch_add(1);
              if (h.route == 3) direct.fetch_add(1);
            },
            5ms);
      }
    });
  }
  void stop() {
    run.store(false);
    th.join();
  }
};

}  // namespace

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port(), nexres_test::free_port()};
  nexres_test::node a(nexres_test::options_for(1, ports, 2));
  receiver b(nexres_test::options_for(2, ports, 2));
  receiver c(nexres_test::options_for(3, ports, 2));
  CHECK(!a.eng().start());
  CHECK(!b.n.eng().start());
  CHECK(!c.n.eng().start());
  b.start();
  c.start();

  // The producer: runs of frames to 2, to 3 and to everyone, ids increasing.
  std::atomic<bool> sending{true};
  std::atomic<std::uint64_t> sent_to_2{0}, sent_to_3{0};
  std::uint64_t id = 0;
  std::thread producer([&] {
    for (int round = 0; round < 4000 && sending.load(); ++round) {
      const std::uint32_t dest = round % 3 == 0 ? 2u : round % 3 == 1 ? 3u : broadcast_destination;
      frame_builder fb(1);
      for (int i = 0; i < 8; ++i) {
        ++id;
        fb.add(dest == broadcast_destination ? 7 : dest, id, &id, 8);  // route: who it was for
      }
      if (dest != 3u) sent_to_2.fetch_add(8);
      if (dest == 3u) sent_to_3.fetch_add(8);
      a.eng().enqueue(dest, fb.take());
      if (round % 64 == 0) std::this_thread::sleep_for(1ms);
    }
  });

  std::vector<std::int32_t> slots;
  std::string error;
  std::uint32_t epoch = 0;
  std::size_t undelivered = 0;
  for (int cycle = 0; cycle < 6; ++cycle) {
    std::this_thread::sleep_for(20ms);
    // 3 leaves (same epoch), then comes back on the next epoch everywhere.
    slots.clear();
    CHECK(a.eng().reconfigure(config_of(ports, 1, {1, 2}, epoch), slots, error));
    CHECK(slots.size() == 1);
    for (int k = 0; k < 5; ++k) {
      (void)a.eng().stats();
      a.poll([](std::uint32_t, const frame_header&, const std::uint8_t*) {}, 2ms);
    }
    ++epoch;
    CHECK(b.n.eng().reconfigure(config_of(ports, 2, {1, 2, 3}, epoch), slots, error));
    CHECK(c.n.eng().reconfigure(config_of(ports, 3, {1, 2, 3}, epoch), slots, error));
    slots.clear();
    CHECK(a.eng().reconfigure(config_of(ports, 1, {1, 2, 3}, epoch), slots, error));
    CHECK(slots.size() == 2 && slots[1] == 1);  // 3 got its old slot back
  }
  // An older epoch is refused, changing nothing.
  CHECK(!a.eng().reconfigure(config_of(ports, 1, {1, 2}, epoch - 1), slots, error));
  CHECK(a.eng().config_epoch() == epoch);
  producer.join();

  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (b.got.load() < sent_to_2.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  CHECK(b.got.load() == sent_to_2.load());
  CHECK(b.bad.load() == 0);
  CHECK(c.bad.load() == 0);
  const auto drained = std::chrono::steady_clock::now() + 10s;
  while (a.eng().queued_bytes_total() > 0 && std::chrono::steady_clock::now() < drained)
    a.poll([](std::uint32_t, const frame_header&, const std::uint8_t*) {}, 5ms);
  CHECK(a.eng().queued_bytes_total() == 0);
  // What was sent to 3 and it did not get was reported, not lost in silence
  // (the reports also count broadcasts given up, and may count some it got).
  // Reports come from io threads (a retired link gives up its queue there,
  // and what a sender put in it after): collected until they add up, for a
  // bounded time, not only while the queue was draining.
  const auto count_reports = [&] {
    undelivered = 0;
    for (const auto& e : a.events)
      if (e.type == event_type::undelivered && e.peer == 3) undelivered += e.messages;
    return undelivered;
  };
  const auto reported = std::chrono::steady_clock::now() + 10s;
  while (c.direct.load() + count_reports() < sent_to_3.load() && std::chrono::steady_clock::now() < reported)
    a.poll([](std::uint32_t, const frame_header&, const std::uint8_t*) {}, 5ms);
  CHECK(c.direct.load() + undelivered >= sent_to_3.load());
  CHECK(undelivered > 0);
  // Each removal keeps the retired link (and its queue-less shell) for the
  // engine's life: measure what one costs.
  const auto rss_kib = [] {
    long pages = 0, resident = 0;
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
      std::fclose(f);
    }
    return resident * 4;
  };
  const long before = rss_kib();
  constexpr int cycles = 300;
  for (int k = 0; k < cycles; ++k) {
    CHECK(a.eng().reconfigure(config_of(ports, 1, {1, 2}, epoch), slots, error));
    CHECK(a.eng().reconfigure(config_of(ports, 1, {1, 2, 3}, epoch), slots, error));
    if (k % 50 == 0) a.poll([](std::uint32_t, const frame_header&, const std::uint8_t*) {}, 1ms);
  }
  a.events.clear();
  std::printf("%d removals: RSS %+ld KiB (%.1f KiB each)\n", cycles, rss_kib() - before,
              static_cast<double>(rss_kib() - before) / cycles);
  b.stop();
  c.stop();
  std::printf("engine reconfigure ok: %llu to 2, %llu at 3, %zu reported undelivered\n",
              static_cast<unsigned long long>(b.got.load()), static_cast<unsigned long long>(c.got.load()), undelivered);
  return 0;
}
