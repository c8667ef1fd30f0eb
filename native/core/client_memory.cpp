// client_session, its receive memory: a connection holds client-port
// memory only while a request is arriving; when the port's memory is at
// its bound it waits (woken by the pool, no polling), and the connection
// whose current request has been arriving longest (1 s or more) is
// refused to make room. The rest of the session is in client_session.cpp.
#include "client_session.hpp"

#include <asio/post.hpp>

#include <chrono>

namespace nexres {

void client_session::evict_async() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] {
    self->refuse(reject_code::too_many_connections,
                 "client receive memory (maxClientReceiveBytes) is full: the request that was arriving longest is dropped");
  });
}

// io thread: registers / unregisters a request in progress (the oldest is
// the first refused when client receive memory runs out).
void client_session::track_partial() {
  const bool partial = open_ && rx_.partial() > 0;
  if (partial && (partial_registration_ == 0 || frames_at_start_ != frames_read_)) {
    // A new request began arriving: its age is what eviction looks at.
    frames_at_start_ = frames_read_;
    frame_started_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
  if (partial && partial_registration_ == 0) {
    partial_registration_ = engine_.client_partial_begin(weak_from_this());
  } else if (!partial && partial_registration_ != 0) {
    engine_.client_partial_end(partial_registration_);
    partial_registration_ = 0;
  }
}

// io thread: room for the next read, or false when the connection waits
// for receive memory (paused; a release or the pool wakes it, no polling).
// When the client port's memory is at its bound, the connection whose
// request has been arriving longest (1 s or more) gives way.
bool client_session::take_receive_memory() {
  const std::weak_ptr<chunk_owner> me = weak_from_this();
  if (rx_.ensure_space(me)) return true;
  // Flag first, then one more try registered with the pool: a release that
  // raced with the first try is seen by one side or the other.
  waiting_chunk_.store(true, std::memory_order_seq_cst);
  if (rx_.ensure_space(me, &me)) {
    waiting_chunk_.store(false, std::memory_order_relaxed);
    return true;
  }
  paused_ = true;
  if (!rx_.refused_by_pool() && rx_seal_ && rx_seal_->holding() && ready_.empty() &&
      inflight_.load(std::memory_order_acquire) == 0) {
    // §6a: this connection's own receive memory is full of a batch still
    // waiting for its SEAL and nothing of it is with the consumer: no chunk
    // will come back, the SEAL can never be read.
    refuse(reject_code::bad_mac, "too much data without a SEAL (more than this connection's receive memory)");
    return false;
  }
  if (rx_.refused_by_pool()) {
    constexpr std::chrono::steady_clock::duration min_age = std::chrono::seconds(1);
    auto wait = engine_.evict_oldest_client_partial(this, min_age);
    // The memory we freed comes to us, not to whoever waited first.
    if (wait == std::chrono::steady_clock::duration::zero()) engine_.client_chunks().wait_first(me);
    // No request in progress to give way (the memory is held by connections
    // woken a moment ago that have not read yet, or by requests being
    // handed on): one that registers now may give way in 1 s at the
    // earliest. Without this look, a connection that found none waited
    // behind stalled requests for good (they never release).
    if (wait == std::chrono::steady_clock::duration::max()) wait = min_age;
    // Younger requests only: look again when the oldest turns 1 s.
    if (wait != std::chrono::steady_clock::duration::zero()) {
      auto self = shared_from_this();
      retry_.expires_after(wait + std::chrono::milliseconds(1));
      retry_.async_wait([self](const std::error_code& ec) {
        if (!ec) self->resume();
      });
    }
  }
  return false;
}

void client_session::on_chunk_released() {
  rx_.on_chunk_released();
  wake_if_waiting();
}

bool client_session::on_pool_memory() { return wake_if_waiting(); }

bool client_session::wake_if_waiting() {
  if (!waiting_chunk_.load(std::memory_order_seq_cst)) return false;
  if (wake_posted_.exchange(true, std::memory_order_acq_rel)) return false;
  std::weak_ptr<client_session> weak = weak_from_this();
  asio::post(socket_.get_executor(), [weak] {
    if (auto self = weak.lock()) self->resume();
  });
  return true;
}

}  // namespace nexres
