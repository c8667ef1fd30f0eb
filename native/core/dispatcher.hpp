// Fan-out of the MIQ to several consumers (worker threads, each with its own
// JS thread), keeping per-source order: runs from one peer (or one client
// connection) are handled by one consumer at a time, in the order read, when
// `ordered`; with ordered == false they go to whichever consumer asks.
//
// Either way a source's deliveries are released to the engine (ACKed to the
// peer, chunk returned) strictly in the order they were read, and only once
// every earlier one is done: a consumer finishing early never acknowledges
// frames another consumer is still handling.
//
// A consumer that goes away (its thread ended) has what it held — taken and
// not done, or handed to it — given to the others, in order.
//
// Runs are taken from the MIQ by deficit round robin over sources
// (fair_queue), as the main thread's consumer does: a flooding peer gets its
// share per take and no more, so another peer's runs do not wait behind its
// backlog.
#pragma once

#include "engine.hpp"
#include "fair_queue.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace nexres {

class dispatcher {
 public:
  dispatcher(engine& eng, std::size_t consumers, bool ordered);
  ~dispatcher();
  dispatcher(const dispatcher&) = delete;
  dispatcher& operator=(const dispatcher&) = delete;

  std::size_t consumers() const noexcept { return consumers_; }

  /// Any thread. Installs (or with an empty function removes) the wake-up of
  /// a consumer: called, never under a lock it could need, when work may be
  /// waiting for it. Attaching a consumer marks it live.
  void attach(std::size_t consumer, std::function<void()> wake);
  /// Any thread. The consumer is gone: what it held goes back for others.
  void detach(std::size_t consumer);

  /// The engine's delivery wake-up: schedules every live consumer that has
  /// no wake-up pending. Any thread.
  void kick();

  /// Consumer thread. Takes up to `max` deliveries (kept until done()); a
  /// consumer calls done() before taking again.
  std::size_t take(std::size_t consumer, std::vector<delivery>& out, std::size_t max);
  /// Consumer thread: everything it took last is handled.
  void done(std::size_t consumer);

  /// Deliveries waiting in the dispatcher itself (handed over, orphaned).
  std::size_t parked() const;

 private:
  struct entry {
    delivery d;
    bool done = false;
  };
  struct source {
    std::deque<entry> entries;   // read order; front is the oldest not released
    std::uint64_t front_ticket = 0;  // ticket of entries.front()
    std::uint64_t next_ticket = 0;
    int owner = -1;              // ordered: consumer handling this source
    std::size_t outstanding = 0; // ordered: assigned to owner, not done
    std::size_t handed = 0;      // ordered: runs in the owner's handoff
  };
  struct taken {
    std::uint32_t key;
    std::uint64_t ticket;
  };
  struct consumer_state {
    std::function<void()> wake;
    bool live = false;
    bool scheduled = false;
    std::deque<taken> handoff;   // ordered: runs popped by others for its sources
    std::vector<taken> in_hand;  // taken, not yet done
  };

  // mu_ held. Routes one ticket to `consumer` (or to the source's owner).
  void assign(std::size_t consumer, const taken& t, std::vector<delivery>& out);
  // mu_ held. Wake-ups are called under the lock: detach() removes a
  // wake-up under it, so none runs after its consumer is gone.
  void schedule_locked(std::size_t c);
  void kick_locked();

  engine& engine_;
  const std::size_t consumers_;
  const bool ordered_;
  mutable std::mutex mu_;
  std::unordered_map<std::uint32_t, source> sources_;
  std::vector<consumer_state> state_;
  std::deque<taken> orphans_;  // from a consumer that went away, oldest first
  fair_queue fair_;            // pulled from the MIQ, not yet taken
  std::vector<delivery> picked_;
  std::size_t next_kick_ = 0;
};

}  // namespace nexres
