// Ed25519 verification of signed frames off the io threads (auth mac and
// seal, PROTOCOL.md §3). An inbound session that parses a signed frame
// hands it here and holds the frame's run until the answer comes back; the
// io thread goes on with the other connections it carries.
//
// Fair by peer: every peer with work waiting has its own queue, and the
// threads take one job at a time from the peers in turn, so a peer that
// sends signed messages as fast as it can gets its share of the threads and
// no more while others wait. The sessions bound how many jobs one
// connection may have here (inbound_session: verify_window), so a peer's
// queue is bounded too, and a peer with a full window stops being read
// (TCP backpressure) until its answers come back.
//
// Threads: the pool's own (one per core, at least one). submit() from any
// thread; a client's verified() is called on a pool thread.
#pragma once

#include "chunk_pool.hpp"
#include "crypto.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace nexres {

/// Receives the answers of its jobs, on a pool thread, in any order.
class verify_client {
 public:
  virtual ~verify_client() = default;
  virtual void verified(std::uint64_t ticket, bool ok) = 0;
};

class verify_pool {
 public:
  struct job {
    std::weak_ptr<verify_client> client;
    std::uint64_t ticket = 0;
    const crypto::ed25519_verifier* key = nullptr;  // lives as long as the engine
    const std::string* cluster_id = nullptr;        // likewise
    std::uint64_t incarnation = 0;
    const std::uint8_t* frame = nullptr;  // the whole signed frame, in `source`
    chunk* source = nullptr;              // one reference, held by the job
  };

  explicit verify_pool(std::size_t threads);
  /// Stops and joins the threads; jobs not run are dropped (their chunk
  /// references released, no answer).
  ~verify_pool();
  verify_pool(const verify_pool&) = delete;
  verify_pool& operator=(const verify_pool&) = delete;

  /// Stops and joins the threads (the engine's stop, before its io threads
  /// go: no answer is posted after this). Jobs submitted later wait, unrun.
  void stop();
  /// Any thread. Queues `j` behind the other jobs of `peer`.
  void submit(std::uint32_t peer, job j);
  std::size_t threads() const noexcept { return threads_.size(); }
  /// Jobs verified so far (stats, tests).
  std::uint64_t done() const noexcept { return done_.load(std::memory_order_relaxed); }

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<std::uint32_t, std::deque<job>> queues_;
  std::deque<std::uint32_t> ring_;  // peers with jobs waiting, next first
  bool stop_ = false;
  std::atomic<std::uint64_t> done_{0};
  std::vector<std::thread> threads_;
};

}  // namespace nexres
