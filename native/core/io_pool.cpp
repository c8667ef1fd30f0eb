#include "io_pool.hpp"

namespace nexres {

io_pool::io_pool(std::size_t size) {
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
    threads_.emplace_back([ctx] { ctx->run(); });
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
