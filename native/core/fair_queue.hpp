// Deficit round robin over delivery sources (peers, client connections) for
// a consumer: what the MIQ holds is pulled in, then each batch gives every
// source with work up to `quantum` bytes (at least one run) in turn, in its
// own read order. A peer that floods gets its share per batch and no more;
// what it has beyond stays here, holding its receive chunks, so its socket
// stops being read (TCP backpressure) while other sources' runs go first.
#pragma once

#include "engine.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

namespace nexres {

/// Bytes each source may give per round (fair_queue::take's quantum), as
/// used by both consumers: the main thread's and the dispatcher's.
constexpr std::size_t fair_quantum_bytes = 1u << 20;
/// Runs a consumer pulls from the MIQ into its fair queue, at most (each
/// holds a receive chunk, so the receive budget bounds them anyway).
constexpr std::size_t max_fair_held_runs = 1u << 16;

class fair_queue {
 public:
  void push(const delivery& d) {
    auto it = index_.find(d.peer);
    std::size_t i;
    if (it == index_.end()) {
      i = sources_.size();
      sources_.push_back(source{d.peer, {}, false});
      index_.emplace(d.peer, i);
    } else {
      i = it->second;
    }
    source& s = sources_[i];
    s.runs.push_back(d);
    ++size_;
    // A source that had nothing waiting goes first in the next round (as
    // FQ-CoDel serves new flows first): a peer that sends a little now and
    // then is not queued behind the heavy ones' turns, and a heavy one that
    // stays busy never has an empty queue, so it cannot jump ahead this way.
    if (!s.active) {
      s.active = true;
      ring_.push_front(i);
    }
  }

  std::size_t size() const noexcept { return size_; }
  /// Sources with runs waiting.
  std::size_t active_sources() const noexcept { return ring_.size(); }
  bool empty() const noexcept { return size_ == 0; }

  /// One round: each source with work, in ring order, gives up to `quantum`
  /// bytes (at least one run), until `max` runs are out. Sources that still
  /// have work go to the back of the ring. A lone source is not held back
  /// (there is no one to be fair to). Returns runs appended to `out`.
  std::size_t take(std::size_t max, std::size_t quantum, std::vector<delivery>& out) {
    return take(max, quantum, out, [](std::uint32_t) { return static_cast<std::size_t>(-1); });
  }

  /// The same, taking from each source at most budget(peer) messages (at
  /// least one run when the budget is not 0; 0 passes the source over: it
  /// keeps its runs and its place in the ring).
  template <typename Budget>
  std::size_t take(std::size_t max, std::size_t quantum, std::vector<delivery>& out, Budget&& budget) {
    if (ring_.size() == 1) quantum = static_cast<std::size_t>(-1);
    std::size_t n = 0;
    const std::size_t turns = ring_.size();
    for (std::size_t t = 0; t < turns && n < max; ++t) {
      const std::size_t i = ring_.front();
      ring_.pop_front();
      source& s = sources_[i];
      const std::size_t allow = budget(s.peer);
      if (allow == 0) {
        ring_.push_back(i);
        continue;
      }
      std::size_t messages = 0;
      std::size_t bytes = 0;
      while (!s.runs.empty() && n < max && messages < allow &&
             (bytes == 0 || bytes + s.runs.front().length <= quantum)) {
        bytes += s.runs.front().length;
        messages += s.runs.front().messages;
        out.push_back(s.runs.front());
        s.runs.pop_front();
        --size_;
        ++n;
      }
      if (s.runs.empty()) {
        s.active = false;
        forget_if_many(i);
      } else {
        ring_.push_back(i);
      }
    }
    return n;
  }

  /// Everything held, in no particular order (for release at shutdown).
  template <typename F>
  void drain_all(F&& f) {
    for (auto& s : sources_)
      for (const delivery& d : s.runs) f(d);
    sources_.clear();
    index_.clear();
    ring_.clear();
    size_ = 0;
  }

 private:
  struct source {
    std::uint32_t peer;
    std::deque<delivery> runs;
    bool active;
  };

  // Client connections come and go: drop idle sources once there are many.
  void forget_if_many(std::size_t) {
    if (sources_.size() < 1024 || ring_.size() * 2 > sources_.size()) return;
    std::vector<source> keep;
    std::unordered_map<std::uint32_t, std::size_t> index;
    std::vector<std::size_t> remap(sources_.size(), 0);
    for (std::size_t i = 0; i < sources_.size(); ++i) {
      if (!sources_[i].active) continue;
      remap[i] = keep.size();
      index.emplace(sources_[i].peer, keep.size());
      keep.push_back(std::move(sources_[i]));
    }
    for (auto& r : ring_) r = remap[r];
    sources_.swap(keep);
    index_.swap(index);
  }

  std::vector<source> sources_;
  std::unordered_map<std::uint32_t, std::size_t> index_;
  std::deque<std::size_t> ring_;  // active sources, next first
  std::size_t size_ = 0;
};

}  // namespace nexres
