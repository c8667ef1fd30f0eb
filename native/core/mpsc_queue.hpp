// Unbounded lock-free multi-producer single-consumer queue (Dmitry Vyukov's
// node-based queue). The per-peer MOQ: producers are the threads that send
// (the JS thread today, worker threads later), the consumer is the peer's
// writer on its io thread. Bounds are enforced by the caller in bytes.
#pragma once

#include <atomic>
#include <memory>
#include <utility>

namespace nexres {

template <typename T>
class mpsc_queue {
 public:
  mpsc_queue() {
    auto stub = std::make_unique<node>();
    tail_ = stub.get();
    head_.store(stub.release(), std::memory_order_relaxed);
  }
  mpsc_queue(const mpsc_queue&) = delete;
  mpsc_queue& operator=(const mpsc_queue&) = delete;

  ~mpsc_queue() {
    // Single-threaded by now: free every node from the consumer end.
    std::unique_ptr<node> n(tail_);
    while (n) {
      std::unique_ptr<node> next(n->next.load(std::memory_order_relaxed));
      n = std::move(next);
    }
  }

  /// Any thread.
  void push(T value) {
    auto n = std::make_unique<node>();
    n->value = std::move(value);
    node* raw = n.release();
    node* prev = head_.exchange(raw, std::memory_order_acq_rel);
    prev->next.store(raw, std::memory_order_release);
  }

  /// Consumer thread only. May miss an element whose push is half done; the
  /// producer always signals the consumer after push returns, so it is seen.
  bool pop(T& out) {
    node* tail = tail_;
    node* next = tail->next.load(std::memory_order_acquire);
    if (next == nullptr) return false;
    out = std::move(next->value);
    next->value = T{};
    tail_ = next;
    std::unique_ptr<node> old(tail);
    return true;
  }

  /// Consumer thread only.
  bool empty() const { return tail_->next.load(std::memory_order_acquire) == nullptr; }

 private:
  struct node {
    std::atomic<node*> next{nullptr};
    T value{};
  };
  alignas(64) std::atomic<node*> head_;
  alignas(64) node* tail_;
};

}  // namespace nexres
