// MIQ (bounded MPMC) and MOQ (MPSC) under concurrent producers: every
// element arrives once, per-producer order holds, and every element built is
// destroyed (counted like rigtorp's SPSCQueueTest).
#include "bounded_queue.hpp"
#include "check.hpp"
#include "chunk_pool.hpp"
#include "fair_queue.hpp"
#include "hold_queue.hpp"
#include "mpsc_queue.hpp"

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace {
std::atomic<long> live{0};
struct counted {
  std::uint32_t producer = 0, seq = 0;
  counted() { live.fetch_add(1); }
  counted(std::uint32_t p, std::uint32_t s) : producer(p), seq(s) { live.fetch_add(1); }
  counted(const counted& o) : producer(o.producer), seq(o.seq) { live.fetch_add(1); }
  counted& operator=(const counted&) = default;
  ~counted() { live.fetch_sub(1); }
};
constexpr std::uint32_t producers = 4;
constexpr std::uint32_t per_producer = 200000;
}  // namespace

namespace {
// fair_queue: round robin by source, up to a quantum of bytes each per take,
// read order kept within a source.
void fair_queue_checks() {
  nexres::fair_queue q;
  auto run = [](std::uint32_t peer, std::uint32_t len, std::uint64_t id) {
    nexres::delivery d;
    d.peer = peer;
    d.length = len;
    d.last_id = id;
    return d;
  };
  for (std::uint64_t i = 1; i <= 10; ++i) q.push(run(1, 100, i));  // a flooding source
  q.push(run(2, 50, 1));                                            // an honest one
  q.push(run(3, 1000, 1));                                          // one run above the quantum
  std::vector<nexres::delivery> out;
  // Sources that become active go first (the newest first), then the ring.
  CHECK(q.take(100, 250, out) == 4);
  CHECK(out[0].peer == 3);  // a run above the quantum still goes
  CHECK(out[1].peer == 2);
  CHECK(out[2].peer == 1 && out[2].last_id == 1 && out[3].peer == 1 && out[3].last_id == 2);
  out.clear();
  q.push(run(2, 50, 2));
  CHECK(q.take(100, 250, out) == 3);  // source 2 had nothing waiting: it goes before the busy source 1
  CHECK(out[0].peer == 2 && out[0].last_id == 2 && out[1].peer == 1 && out[1].last_id == 3 && out[2].last_id == 4);
  out.clear();
  CHECK(q.take(1, 250, out) == 1 && out[0].last_id == 5);  // max bounds a take
  out.clear();
  std::size_t left = 0;
  q.drain_all([&](const nexres::delivery& d) { left += d.peer == 1 ? 1 : 100; });
  CHECK(left == 5 && q.empty());
  // A lone source is not held to the quantum.
  for (std::uint64_t i = 1; i <= 10; ++i) q.push(run(1, 100, i));
  CHECK(q.take(100, 250, out) == 10);
  out.clear();
  // A message budget per source: 0 passes it over (it keeps its runs), a
  // budget is met with whole runs (at most one run past it).
  for (std::uint64_t i = 1; i <= 6; ++i) {
    nexres::delivery d = run(1, 100, i);
    d.messages = 10;
    q.push(d);
  }
  nexres::delivery h = run(2, 10, 1);
  h.messages = 1;
  q.push(h);
  CHECK(q.take(100, ~std::size_t{0}, out, [](std::uint32_t peer) { return peer == 1 ? std::size_t{0} : std::size_t{100}; }) == 1);
  CHECK(out[0].peer == 2);
  out.clear();
  CHECK(q.take(100, ~std::size_t{0}, out, [](std::uint32_t) { return std::size_t{15}; }) == 2);
  CHECK(out[0].last_id == 1 && out[1].last_id == 2);
  out.clear();
  q.drain_all([](const nexres::delivery&) {});
}

// hold_queue: held runs keep later runs of their source from being released
// (ACK order), other sources are not affected, pending counts per source.
void hold_queue_checks() {
  nexres::hold_queue q;
  std::vector<std::uint64_t> released;
  auto rel = [&](const nexres::delivery& d) { released.push_back(d.peer * 100 + d.last_id); };
  auto run = [](std::uint32_t peer, std::uint64_t id) {
    nexres::delivery d;
    d.peer = peer;
    d.last_id = id;
    return d;
  };
  q.done(run(1, 1), rel);  // nothing held: released at once
  CHECK(released.size() == 1 && released[0] == 101);
  q.hold(run(1, 2), 7, 5);
  q.done(run(1, 3), rel);  // waits behind the held run
  q.hold(run(1, 4), 8, 2);
  q.done(run(2, 1), rel);  // another source: not held back
  CHECK(released.size() == 2 && released[1] == 201);
  CHECK(q.pending(1) == 7 && q.pending_total() == 7 && q.pending(2) == 0 && q.sources() == 1);
  CHECK(q.settle(8, rel));  // the later one settles first: nothing goes yet
  CHECK(released.size() == 2 && q.pending(1) == 5);
  CHECK(!q.settle(8, rel));  // once only
  CHECK(q.settle(7, rel));   // now 2, 3 and 4, in read order
  CHECK(released.size() == 5 && released[2] == 102 && released[3] == 103 && released[4] == 104);
  CHECK(q.empty() && q.pending_total() == 0);
  q.hold(run(3, 1), 9, 1);
  std::size_t left = 0;
  q.drain_all([&](const nexres::delivery&) { ++left; });
  CHECK(left == 1 && q.empty() && !q.settle(9, rel));
}
}  // namespace

namespace {
// chunk_pool: pooled chunks and oversized ones each have their region; a
// refused waiter is woken when memory comes back, in order, one per chunk
// freed, and wait_first puts an owner ahead of the others; a waiter that no
// longer waits passes its wake-up on.
struct waiter : nexres::chunk_owner {
  std::atomic<int> woken{0};
  bool waiting = true;
  void on_chunk_released() override {}
  bool on_pool_memory() override {
    if (!waiting) return false;
    woken.fetch_add(1);
    return true;
  }
};

void chunk_pool_checks() {
  // 4 chunks of 1 KiB in all: 2 KiB for pooled chunks, 2 KiB oversized, of
  // which 1 KiB is kept for final buffers.
  nexres::chunk_pool pool(1024, 4096, 1, 2, 2048, 1024);
  auto a = std::make_shared<waiter>(), b = std::make_shared<waiter>(), c = std::make_shared<waiter>();
  std::weak_ptr<nexres::chunk_owner> wa = a, wb = b, wc = c;
  nexres::chunk* p1 = pool.acquire(100, {});
  nexres::chunk* p2 = pool.acquire(100, {});
  CHECK(p1 != nullptr && p2 != nullptr && p1->id % 2 == 1);
  CHECK(pool.acquire(100, {}, false, &wa) == nullptr);  // pooled region full
  nexres::chunk* big = pool.acquire(1024 + 1, {});
  CHECK(big == nullptr);  // growing: 2 KiB - 1 KiB reserve leaves 1 KiB
  big = pool.acquire(1000 + 24, {});  // a pooled-size request never takes the oversized region
  CHECK(big == nullptr);
  nexres::chunk* fin = pool.acquire(2048, {}, true);  // a final buffer may use the reserve
  CHECK(fin != nullptr);
  CHECK(pool.acquire(100, {}, false, &wb) == nullptr);
  CHECK(pool.acquire(100, {}, false, &wc) == nullptr);
  // b left meanwhile: a's wake-up, then c's (b passes its turn on).
  b->waiting = false;
  nexres::chunk_pool::unref(p1);
  CHECK(a->woken == 1 && b->woken == 0 && c->woken == 0);
  pool.wait_first(wb);
  b->waiting = true;
  nexres::chunk_pool::unref(p2);
  CHECK(b->woken == 1 && c->woken == 0);
  nexres::chunk_pool::unref(fin);  // 2 KiB freed: up to two wake-ups; only c waits
  CHECK(c->woken == 1);
  CHECK(pool.allocated_bytes() == 2048);  // pooled chunks are kept; oversized freed

  // Concurrent releases and refused acquires: every refusal registered while
  // memory was short is followed by a wake-up (no lost wake-up).
  nexres::chunk_pool small(64, 64 * 2, 1, 2);  // 2 chunks, 4 threads
  std::vector<std::shared_ptr<waiter>> ws;
  for (int i = 0; i < 4; ++i) ws.push_back(std::make_shared<waiter>());
  std::vector<std::thread> ts;
  std::atomic<long> taken{0};
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&, i] {
      std::weak_ptr<nexres::chunk_owner> me = ws[i];
      for (int k = 0; k < 20000; ++k) {
        const int before = ws[i]->woken.load();
        nexres::chunk* x = small.acquire(10, {}, false, &me);
        if (x == nullptr) {
          // Refused: another thread holds memory and will release it.
          while (ws[i]->woken.load() == before) std::this_thread::yield();
          continue;
        }
        taken.fetch_add(1);
        nexres::chunk_pool::unref(x);
      }
    });
  for (auto& t : ts) t.join();
  CHECK(taken.load() >= 2 * 20000);  // some rounds were refused, none hung
}
}  // namespace

int main() {
  chunk_pool_checks();
  fair_queue_checks();
  hold_queue_checks();
  {
    nexres::bounded_queue<counted> q(1024);
    std::vector<std::thread> ts;
    for (std::uint32_t p = 0; p < producers; ++p)
      ts.emplace_back([&q, p] {
        for (std::uint32_t i = 0; i < per_producer;) {
          counted c(p, i);
          if (q.try_push(c)) ++i;
          else std::this_thread::yield();
        }
      });
    std::vector<std::uint32_t> next(producers, 0);
    std::uint64_t got = 0;
    while (got < std::uint64_t{producers} * per_producer) {
      counted c;
      if (!q.try_pop(c)) continue;
      CHECK(c.seq == next[c.producer]);
      ++next[c.producer];
      ++got;
    }
    for (auto& t : ts) t.join();
    counted extra;
    CHECK(!q.try_pop(extra));
    // Leave some inside: the destructor must destroy them.
    for (std::uint32_t i = 0; i < 10; ++i) {
      counted c(0, i);
      CHECK(q.try_push(c));
    }
  }
  CHECK(live.load() == 0);
  {
    nexres::mpsc_queue<counted> q;
    std::vector<std::thread> ts;
    for (std::uint32_t p = 0; p < producers; ++p)
      ts.emplace_back([&q, p] {
        for (std::uint32_t i = 0; i < per_producer; ++i) q.push(counted(p, i));
      });
    std::vector<std::uint32_t> next(producers, 0);
    std::uint64_t got = 0;
    while (got < std::uint64_t{producers} * per_producer) {
      counted c;
      if (!q.pop(c)) continue;
      CHECK(c.seq == next[c.producer]);
      ++next[c.producer];
      ++got;
    }
    for (auto& t : ts) t.join();
    CHECK(q.empty());
    for (std::uint32_t i = 0; i < 10; ++i) q.push(counted(0, i));
  }
  CHECK(live.load() == 0);
  std::puts("queues ok");
  return 0;
}
