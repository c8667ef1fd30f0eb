// The dispatcher over a real engine pair: three consumer threads share one
// MIQ fed by two sending peers. Ordered: each peer's frames are handled in
// order, never by two consumers at once, exactly once. A consumer that goes
// away holding a batch it never finished has that batch handled by the
// others, still in order. Unordered: every frame handled exactly once, and
// every sender's queue drains (ACKs only cover finished frames).
// Built under TSan and ASan in CI.
#include "check.hpp"
#include "dispatcher.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

namespace {

// One consumer thread: sleeps until its wake-up, takes, handles, done.
struct consumer_thread {
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;
  std::atomic<bool> quit{false};
  std::thread th;

  void wake() {
    {
      std::lock_guard<std::mutex> lock(mu);
      woken = true;
    }
    cv.notify_one();
  }
  bool wait(std::chrono::milliseconds t) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, t, [this] { return woken || quit.load(); });
    const bool w = woken;
    woken = false;
    return w;
  }
};

struct counters {
  std::atomic<std::uint64_t> next[4];  // expected id per sender (index 2, 3)
  std::atomic<int> running[4];
  std::atomic<std::uint64_t> handled{0}, out_of_order{0}, overlap{0};
  std::atomic<std::uint64_t> per_consumer[3];
  counters() {
    for (auto& v : next) v = 1;
    for (auto& v : running) v = 0;
    for (auto& v : per_consumer) v = 0;
  }
};

void run(bool ordered) {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port(),
                                            nexres_test::free_port()};
  constexpr std::size_t n_consumers = 3;
  std::unique_ptr<dispatcher> disp;
  auto a = std::make_unique<engine>(nexres_test::options_for(1, ports), [&disp] {
    if (disp) disp->kick();
  });
  disp = std::make_unique<dispatcher>(*a, n_consumers, ordered);
  nexres_test::node s2(nexres_test::options_for(2, ports));
  nexres_test::node s3(nexres_test::options_for(3, ports));
  CHECK(!a->start());
  CHECK(!s2.eng().start());
  CHECK(!s3.eng().start());

  counters c;
  constexpr std::uint64_t per_sender = 100000;
  consumer_thread ct[n_consumers];
  std::atomic<bool> dead_done{false};
  for (std::size_t i = 0; i < n_consumers; ++i) {
    disp->attach(i, [&ct, i] { ct[i].wake(); });
    ct[i].th = std::thread([&, i] {
      std::vector<delivery> batch;
      while (!ct[i].quit.load()) {
        if (!ct[i].wait(20ms)) continue;
        if (disp->take(i, batch, 64) == 0) continue;
        // The first consumer to take a batch once a quarter is handled
        // "dies" holding it: never handled, never done.
        if (c.handled.load() >= per_sender / 2 && !dead_done.exchange(true)) {
          disp->detach(i);
          return;
        }
        for (const delivery& d : batch) {
          const std::uint32_t p = d.peer;
          if (c.running[p].fetch_add(1) != 0) c.overlap++;
          const std::uint8_t* q = d.source->data() + d.offset;
          const std::uint8_t* end = q + d.length;
          while (q < end) {
            const frame_header h = decode_header(q);
            std::uint64_t v;
            std::memcpy(&v, q + frame_header_bytes, 8);
            if (ordered && v != c.next[p].load()) c.out_of_order++;
            c.next[p] = v + 1;
            c.handled++;
            c.per_consumer[i]++;
            q += frame_header_bytes + h.length;
          }
          c.running[p].fetch_sub(1);
        }
        disp->done(i);
      }
    });
  }
  auto send_all = [&](nexres_test::node& from, std::uint32_t self) {
    std::uint64_t id = 1;
    while (id <= per_sender) {
      frame_builder fb(self);
      for (int k = 0; k < 500 && id <= per_sender; ++k, ++id) fb.add(7, id, &id, 8);
      from.eng().enqueue(1, fb.take());
      while (from.eng().queued_bytes(1) > (8u << 20)) std::this_thread::sleep_for(1ms);
    }
  };
  std::thread p2([&] { send_all(s2, 2); });
  std::thread p3([&] { send_all(s3, 3); });
  p2.join();
  p3.join();
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (c.handled.load() < 2 * per_sender && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  // Everything handled was acknowledged: the senders' queues empty.
  while ((s2.eng().queued_bytes(1) > 0 || s3.eng().queued_bytes(1) > 0) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  std::fprintf(stderr, "%s: handled %llu (consumers %llu %llu %llu), out of order %llu, overlap %llu, queued %llu %llu\n",
               ordered ? "ordered" : "unordered", static_cast<unsigned long long>(c.handled.load()),
               static_cast<unsigned long long>(c.per_consumer[0].load()),
               static_cast<unsigned long long>(c.per_consumer[1].load()),
               static_cast<unsigned long long>(c.per_consumer[2].load()),
               static_cast<unsigned long long>(c.out_of_order.load()),
               static_cast<unsigned long long>(c.overlap.load()),
               static_cast<unsigned long long>(s2.eng().queued_bytes(1)),
               static_cast<unsigned long long>(s3.eng().queued_bytes(1)));
  CHECK(c.handled.load() == 2 * per_sender);
  CHECK(dead_done.load());
  if (ordered) {
    CHECK(c.out_of_order.load() == 0);
    CHECK(c.overlap.load() == 0);
    CHECK(c.next[2].load() == per_sender + 1 && c.next[3].load() == per_sender + 1);
  }
  CHECK(s2.eng().queued_bytes(1) == 0);
  CHECK(s3.eng().queued_bytes(1) == 0);
  for (auto& t : ct) {
    t.quit = true;
    t.wake();
  }
  for (auto& t : ct)
    if (t.th.joinable()) t.th.join();
  a->stop();  // io threads joined: nothing kicks the dispatcher any more
  disp.reset();
  a.reset();
}

}  // namespace

int main() {
  run(true);
  run(false);
  return 0;
}
