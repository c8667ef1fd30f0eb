#include "verify_pool.hpp"

#include "auth.hpp"

namespace nexres {

verify_pool::verify_pool(std::size_t threads) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

void verify_pool::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
}

verify_pool::~verify_pool() {
  stop();
  for (auto& q : queues_)
    for (const job& j : q.second) chunk_pool::unref(j.source);
}

void verify_pool::submit(std::uint32_t peer, job j) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::deque<job>& q = queues_[peer];
    if (q.empty()) ring_.push_back(peer);
    q.push_back(std::move(j));
  }
  cv_.notify_one();
}

void verify_pool::run() {
  for (;;) {
    job j;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !ring_.empty(); });
      if (stop_) return;
      // One job from the next peer in turn; a peer with more goes to the back.
      const std::uint32_t peer = ring_.front();
      ring_.pop_front();
      auto it = queues_.find(peer);
      j = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) queues_.erase(it);
      else ring_.push_back(peer);
    }
    const bool ok = auth::verify_frame(*j.key, *j.cluster_id, j.incarnation, j.frame);
    chunk_pool::unref(j.source);
    done_.fetch_add(1, std::memory_order_relaxed);
    if (auto c = j.client.lock()) c->verified(j.ticket, ok);
  }
}

}  // namespace nexres
