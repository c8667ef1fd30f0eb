// Queue benchmark (npm run bench:native): the engine's queues against
// established ones, same workload. P producer threads push N items each
// (a 32-byte item, like a delivery), one consumer pops them all; items/s
// from the first push to the last pop, median of 5 rounds.
//   nexres bounded_queue (the MIQ: Vyukov's bounded MPMC array queue)
//   nexres mpsc_queue    (the MOQ: intrusive MPSC list, one node per push)
//   boost::lockfree::queue       (bounded MPMC, when <boost/lockfree/queue.hpp> is there)
//   moodycamel::ConcurrentQueue  (when <concurrentqueue.h> or <concurrentqueue/concurrentqueue.h> is there)
// Prints one JSON line per queue and producer count.
#include "bounded_queue.hpp"
#include "mpsc_queue.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#if __has_include(<boost/lockfree/queue.hpp>)
#include <boost/lockfree/queue.hpp>
#define NEXRES_HAVE_BOOST 1
#endif
#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#define NEXRES_HAVE_MOODYCAMEL 1
#elif __has_include(<concurrentqueue.h>)
#include <concurrentqueue.h>
#define NEXRES_HAVE_MOODYCAMEL 1
#endif

namespace {

struct item {
  std::uint64_t a = 0, b = 0, c = 0, d = 0;
};

constexpr std::size_t capacity = 1u << 16;

// push(p, i) by each producer, pop(out) by the consumer; returns items/s.
template <typename Push, typename Pop>
double run(int producers, std::uint64_t per, Push push, Pop pop) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ps;
  for (int p = 0; p < producers; ++p) {
    ps.emplace_back([&, p] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      for (std::uint64_t i = 0; i < per; ++i) {
        item it{i, static_cast<std::uint64_t>(p), 0, 0};
        while (!push(it)) std::this_thread::yield();
      }
    });
  }
  while (ready.load() < producers) {
  }
  const std::uint64_t total = per * static_cast<std::uint64_t>(producers);
  std::uint64_t got = 0, sum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  item out;
  while (got < total) {
    if (pop(out)) {
      ++got;
      sum += out.a;
    } else {
      std::this_thread::yield();
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (auto& t : ps) t.join();
  if (sum != static_cast<std::uint64_t>(producers) * (per * (per - 1) / 2)) std::fprintf(stderr, "checksum mismatch\n");
  return static_cast<double>(total) / s;
}

template <typename F>
void report(const char* name, int producers, F once) {
  std::vector<double> r;
  for (int k = 0; k < 5; ++k) r.push_back(once());
  std::sort(r.begin(), r.end());
  std::printf("{\"queue\":\"%s\",\"producers\":%d,\"itemsPerSec\":%.0f,\"runs\":[%.0f,%.0f,%.0f,%.0f,%.0f]}\n", name, producers, r[2], r[0],
              r[1], r[2], r[3], r[4]);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const std::uint64_t total = argc > 1 ? std::stoull(argv[1]) : 4'000'000;
  for (int producers : {1, 2}) {
    const std::uint64_t per = total / static_cast<std::uint64_t>(producers);
    report("nexres bounded_queue (MIQ)", producers, [&] {
      nexres::bounded_queue<item> q(capacity);
      return run(producers, per, [&](item& it) { return q.try_push(it); }, [&](item& o) { return q.try_pop(o); });
    });
    report("nexres mpsc_queue (MOQ)", producers, [&] {
      nexres::mpsc_queue<item> q;
      return run(producers, per, [&](item& it) {
        q.push(it);
        return true;
      }, [&](item& o) { return q.pop(o); });
    });
#ifdef NEXRES_HAVE_BOOST
    report("boost::lockfree::queue", producers, [&] {
      boost::lockfree::queue<item> q(capacity);
      return run(producers, per, [&](item& it) { return q.bounded_push(it); }, [&](item& o) { return q.pop(o); });
    });
#endif
#ifdef NEXRES_HAVE_MOODYCAMEL
    report("moodycamel::ConcurrentQueue", producers, [&] {
      moodycamel::ConcurrentQueue<item> q(capacity);
      return run(producers, per, [&](item& it) { return q.enqueue(it); }, [&](item& o) { return q.try_dequeue(o); });
    });
#endif
  }
  return 0;
}
