// Deliveries whose handlers have not finished (an async handler's promise
// not settled yet). A held delivery keeps its receive chunk (the payload
// stays valid) and is not acknowledged; deliveries of the same source that
// came after it wait behind it, so a source's ACKs stay in read order. The
// consumer also counts the messages still pending per source, which bounds
// what it takes from each (fair_queue::take's skip predicate).
// One thread (the consumer's).
#pragma once

#include "engine.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_map>

namespace nexres {

class hold_queue {
 public:
  /// A delivery the consumer is done with: released now (through `release`)
  /// unless earlier deliveries of its source are still held.
  template <typename Release>
  void done(const delivery& d, Release&& release) {
    if (sources_.empty()) return release(d);  // the common case: nothing held
    auto it = sources_.find(d.peer);
    if (it == sources_.end() || it->second.runs.empty()) return release(d);
    it->second.runs.push_back(entry{d, 0, 0});
  }

  /// A delivery with `messages` handlers still running, identified by token
  /// (non-zero, unique while held).
  void hold(const delivery& d, std::uint64_t token, std::uint32_t messages) {
    source& s = sources_[d.peer];
    s.runs.push_back(entry{d, token, messages});
    s.pending += messages;
    pending_total_ += messages;
    tokens_.emplace(token, d.peer);
  }

  /// The handlers of a held delivery finished: it and what waited behind it
  /// are released in order. False for an unknown token.
  template <typename Release>
  bool settle(std::uint64_t token, Release&& release) {
    auto t = tokens_.find(token);
    if (t == tokens_.end()) return false;
    const std::uint32_t peer = t->second;
    tokens_.erase(t);
    auto it = sources_.find(peer);
    if (it == sources_.end()) return false;
    source& s = it->second;
    for (entry& e : s.runs) {
      if (e.token != token) continue;
      s.pending -= e.messages;
      pending_total_ -= e.messages;
      e.token = 0;
      e.messages = 0;
      break;
    }
    while (!s.runs.empty() && s.runs.front().token == 0) {
      const delivery d = s.runs.front().d;
      s.runs.pop_front();
      release(d);
    }
    if (s.runs.empty()) sources_.erase(it);
    return true;
  }

  /// Messages of a source whose handlers have not finished.
  std::size_t pending(std::uint32_t peer) const {
    auto it = sources_.find(peer);
    return it == sources_.end() ? 0 : it->second.pending;
  }
  std::size_t pending_total() const noexcept { return pending_total_; }
  /// Sources with handlers pending.
  std::size_t sources() const noexcept { return sources_.size(); }
  bool empty() const noexcept { return sources_.empty(); }

  /// Everything held or waiting, in no particular order (shutdown).
  template <typename F>
  void drain_all(F&& f) {
    for (auto& kv : sources_)
      for (const entry& e : kv.second.runs) f(e.d);
    sources_.clear();
    tokens_.clear();
    pending_total_ = 0;
  }

 private:
  struct entry {
    delivery d;
    std::uint64_t token;  // 0: done, waits only for the ones before it
    std::uint32_t messages;
  };
  struct source {
    std::deque<entry> runs;
    std::size_t pending = 0;
  };
  std::unordered_map<std::uint32_t, source> sources_;
  std::unordered_map<std::uint64_t, std::uint32_t> tokens_;
  std::size_t pending_total_ = 0;
};

}  // namespace nexres
