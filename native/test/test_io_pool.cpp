// io_pool with and without a spin (engine option io_spin_us, ioSpinMicros in
// TS): every handler posted from other threads and chained from handlers runs,
// timers fire, stop() + join() end the threads with an operation still
// pending; with a spin, a thread handed work more often than the spin keeps
// polling between (busy, where it sleeps without one), and an idle thread
// blocks once the spin is over (no CPU time while idle).
#include "../core/io_pool.hpp"

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>

#include "check.hpp"

using namespace std::chrono_literals;

namespace {

struct thread_probe {
  clockid_t cpu_clock;
  bool named;
};

// Run on the context's own thread: its CPU clock and whether it carries the
// pool's thread name.
thread_probe probe(asio::io_context& ctx) {
  std::promise<thread_probe> p;
  asio::post(ctx, [&p] {
    thread_probe r{};
    CHECK(pthread_getcpuclockid(pthread_self(), &r.cpu_clock) == 0);
    char name[32] = {};
    CHECK(pthread_getname_np(pthread_self(), name, sizeof name) == 0);
    r.named = std::strcmp(name, "nexres-io") == 0;
    p.set_value(r);
  });
  return p.get_future().get();
}

double cpu_ms(clockid_t c) {
  timespec ts{};
  CHECK(clock_gettime(c, &ts) == 0);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// CPU time (ms) of ctx's thread and the wall time over 200 posts 1 ms apart.
struct busy {
  double cpu_ms;
  double wall_ms;
};
busy cpu_over_posts(asio::io_context& ctx) {
  const thread_probe p = probe(ctx);
  const double c0 = cpu_ms(p.cpu_clock);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) {
    asio::post(ctx, [] {});
    std::this_thread::sleep_for(1ms);
  }
  probe(ctx);
  const std::chrono::duration<double, std::milli> wall = std::chrono::steady_clock::now() - t0;
  return {cpu_ms(p.cpu_clock) - c0, wall.count()};
}

double unspun_cpu_ms = -1;  // measured by work(0us), which runs first

void work(std::chrono::microseconds spin) {
  nexres::io_pool pool(2, spin);
  pool.run();
  // 2 x 50,000 posts from this thread, each context's handlers chaining one
  // more post of their own per handler.
  constexpr int posts = 50'000;
  std::atomic<int> ran{0};
  for (int i = 0; i < posts; ++i) {
    for (std::size_t c = 0; c < 2; ++c) {
      asio::io_context& ctx = pool.at(c);
      asio::post(ctx, [&ran, &ctx] {
        ran.fetch_add(1);
        asio::post(ctx, [&ran] { ran.fetch_add(1); });
      });
    }
  }
  // A timer on each context.
  std::atomic<int> fired{0};
  asio::steady_timer t0(pool.at(0), 20ms), t1(pool.at(1), 20ms);
  t0.async_wait([&fired](const asio::error_code& ec) { if (!ec) fired.fetch_add(1); });
  t1.async_wait([&fired](const asio::error_code& ec) { if (!ec) fired.fetch_add(1); });
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while ((ran.load() < 4 * posts || fired.load() < 2) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  CHECK(ran.load() == 4 * posts);
  CHECK(fired.load() == 2);

  thread_probe a = probe(pool.at(0));
  CHECK(a.named);

  // Work every 1 ms: without a spin the thread sleeps between posts; with
  // a 20 ms spin it keeps polling, busy most of the time.
  const busy used = cpu_over_posts(pool.at(0));
  std::fprintf(stderr, "spin %lld us: %.1f ms of CPU over 200 posts 1 ms apart (%.1f ms)\n",
               static_cast<long long>(spin.count()), used.cpu_ms, used.wall_ms);
  if (spin.count() == 0) {
    unspun_cpu_ms = used.cpu_ms;
    CHECK(used.cpu_ms < used.wall_ms / 4);
  } else if (spin >= 10ms) {
    CHECK(unspun_cpu_ms >= 0);
    CHECK(used.cpu_ms > used.wall_ms / 2);
    CHECK(used.cpu_ms > 4 * unspun_cpu_ms);
  }

  // Idle: once the spin is over the threads block and use no CPU.
  thread_probe b = probe(pool.at(1));
  std::this_thread::sleep_for(100ms);  // longer than any spin here
  const double a0 = cpu_ms(a.cpu_clock), b0 = cpu_ms(b.cpu_clock);
  std::this_thread::sleep_for(500ms);
  const double a_used = cpu_ms(a.cpu_clock) - a0, b_used = cpu_ms(b.cpu_clock) - b0;
  std::fprintf(stderr, "spin %lld us: idle CPU over 500 ms: %.1f ms, %.1f ms\n", static_cast<long long>(spin.count()), a_used,
               b_used);
  CHECK(a_used < 50);
  CHECK(b_used < 50);

  // stop() + join() with an operation still pending (a timer far away):
  // the context is stopped, the threads end.
  asio::steady_timer far(pool.at(0), 1h);
  far.async_wait([](const asio::error_code&) {});
  pool.stop();
  for (std::size_t c = 0; c < 2; ++c) pool.at(c).stop();
  pool.join();
}

}  // namespace

int main() {
  work(0us);
  work(20000us);
  work(100us);
  return 0;
}
