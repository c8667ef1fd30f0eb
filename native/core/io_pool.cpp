#include "io_pool.hpp"

#include <thread>

#ifdef __linux__
#include <pthread.h>
#endif

namespace nexres {

namespace {

// "nexres-io" in top -H, /proc/<pid>/task/*/comm and debuggers.
void name_this_thread() {
#ifdef __linux__
  pthread_setname_np(pthread_self(), "nexres-io");
#endif
}

// Runs `ctx` until it runs out of work or is stopped, as io_context::run(),
// but after each handler keeps polling (epoll with no wait) for `spin`
// before it blocks: an event within the spin is handled with no wake-up of a
// sleeping thread. Yields between polls, so a thread woken on this core (the
// JS thread a delivery woke) runs at once.
void run_spinning(asio::io_context& ctx, std::chrono::microseconds spin) {
  using clock = std::chrono::steady_clock;
  auto last = clock::now();
  for (;;) {
    if (ctx.poll() > 0) {
      last = clock::now();
      continue;
    }
    if (ctx.stopped()) return;
    if (clock::now() - last < spin) {
      std::this_thread::yield();
      continue;
    }
    if (ctx.run_one() == 0) return;
    last = clock::now();
  }
}

}  // namespace

io_pool::io_pool(std::size_t size, std::chrono::microseconds spin) : spin_(spin) {
  if (size == 0) size = 1;
  for (std::size_t i = 0; i < size; ++i) {
    contexts_.push_back(std::make_unique<asio::io_context>(1));
    guards_.emplace_back(asio::make_work_guard(*contexts_.back()));
  }
}

io_pool::~io_pool() {
  stop();
  for (auto& c : contexts_) c->stop();
  join();
}

void io_pool::run() {
  for (auto& c : contexts_) {
    asio::io_context* ctx = c.get();
    const std::chrono::microseconds spin = spin_;
    threads_.emplace_back([ctx, spin] {
      name_this_thread();
      if (spin.count() > 0)
        run_spinning(*ctx, spin);
      else
        ctx->run();
    });
  }
}

void io_pool::stop() {
  for (auto& g : guards_) g.reset();
}

void io_pool::join() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

asio::io_context& io_pool::next() {
  return at(next_.fetch_add(1, std::memory_order_relaxed));
}

}  // namespace nexres
