// A pool of io_contexts, one thread each. Connections are spread over them.
#pragma once

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

namespace nexres {

class io_pool {
 public:
  /// Creates `size` io_contexts (at least one); threads start in run().
  /// `spin`: how long a thread keeps polling its context after the last
  /// handler it ran before it blocks (zero: it blocks at once).
  explicit io_pool(std::size_t size, std::chrono::microseconds spin = std::chrono::microseconds(0));
  io_pool(const io_pool&) = delete;
  io_pool& operator=(const io_pool&) = delete;
  /// Stops and joins if still running.
  ~io_pool();

  /// Starts one thread per io_context.
  void run();
  /// Lets the contexts finish: drops the work guards (pending handlers run).
  void stop();
  /// Waits for every thread; call after stop(). Never from a pool thread.
  void join();

  /// The io_context with this index (modulo the pool size).
  asio::io_context& at(std::size_t index) { return *contexts_[index % contexts_.size()]; }
  /// Round-robin choice for a new connection. Any thread.
  asio::io_context& next();
  std::size_t size() const noexcept { return contexts_.size(); }

 private:
  using guard = asio::executor_work_guard<asio::io_context::executor_type>;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<guard> guards_;
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> next_{0};
  std::chrono::microseconds spin_;
};

}  // namespace nexres
