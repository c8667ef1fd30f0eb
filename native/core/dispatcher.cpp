#include "dispatcher.hpp"

#include <algorithm>

namespace nexres {

namespace {
// Bytes each source gives per take: small, because worker handlers are
// typically the heavy ones (a quantum of 1 MiB of 1 KiB messages at 200 µs
// each is 0.2 s that another peer's message would wait).
constexpr std::size_t dispatch_quantum_bytes = 64u << 10;
}  // namespace

dispatcher::dispatcher(engine& eng, std::size_t consumers, bool ordered)
    : engine_(eng), consumers_(consumers), ordered_(ordered), state_(consumers) {}

dispatcher::~dispatcher() {
  // Runs never released still hold chunk references.
  for (auto& kv : sources_)
    for (auto& e : kv.second.entries) engine_.chunks().unref(e.d.source);
  fair_.drain_all([](const delivery& d) { chunk_pool::unref(d.source); });
}

void dispatcher::attach(std::size_t c, std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(mu_);
  if (c >= consumers_) return;
  consumer_state& st = state_[c];
  st.wake = std::move(wake);
  st.live = static_cast<bool>(st.wake);
  st.scheduled = false;
  if (st.live) schedule_locked(c);  // work may be waiting already
}

void dispatcher::detach(std::size_t c) {
  std::lock_guard<std::mutex> lock(mu_);
  if (c >= consumers_) return;
  consumer_state& st = state_[c];
  st.live = false;
  st.wake = nullptr;
  st.scheduled = false;
  for (const taken& t : st.in_hand) orphans_.push_back(t);
  for (const taken& t : st.handoff) orphans_.push_back(t);
  st.in_hand.clear();
  st.handoff.clear();
  if (ordered_) {
    for (auto& kv : sources_) {
      if (kv.second.owner == static_cast<int>(c)) {
        kv.second.owner = -1;
        kv.second.outstanding = 0;
        kv.second.handed = 0;
      }
    }
  }
  // Per source, oldest first (orphans of an earlier detach may interleave).
  std::stable_sort(orphans_.begin(), orphans_.end(), [](const taken& a, const taken& b) {
    return a.key != b.key ? a.key < b.key : a.ticket < b.ticket;
  });
  kick_locked();
}

void dispatcher::kick() {
  std::lock_guard<std::mutex> lock(mu_);
  kick_locked();
}

void dispatcher::kick_locked() {
  // Starting point rotates: the first woken tends to take first.
  for (std::size_t k = 0; k < consumers_; ++k) schedule_locked((next_kick_ + k) % consumers_);
  next_kick_ = (next_kick_ + 1) % consumers_;
}

void dispatcher::schedule_locked(std::size_t c) {
  consumer_state& st = state_[c];
  if (!st.live || st.scheduled) return;
  st.scheduled = true;
  st.wake();
}

void dispatcher::assign(std::size_t c, const taken& t, std::vector<delivery>& out) {
  source& src = sources_[t.key];
  entry& e = src.entries[static_cast<std::size_t>(t.ticket - src.front_ticket)];
  consumer_state& st = state_[c];
  if (ordered_) {
    if (src.owner < 0) src.owner = static_cast<int>(c);
    ++src.outstanding;
    if (src.owner != static_cast<int>(c)) {
      const auto owner = static_cast<std::size_t>(src.owner);
      state_[owner].handoff.push_back(t);
      ++src.handed;
      schedule_locked(owner);
      return;
    }
  }
  out.push_back(e.d);
  st.in_hand.push_back(t);
}

std::size_t dispatcher::take(std::size_t c, std::vector<delivery>& out, std::size_t max) {
  out.clear();
  std::lock_guard<std::mutex> lock(mu_);
  if (c >= consumers_) return 0;
  consumer_state& st = state_[c];
  st.scheduled = false;
  if (!st.live) return 0;
  // Re-arm the engine's wake-up before popping: a run pushed after our last
  // pop wakes someone.
  engine_.begin_drain();
  while (!st.handoff.empty() && out.size() < max) {
    const taken t = st.handoff.front();
    st.handoff.pop_front();
    source& src = sources_[t.key];
    if (src.handed > 0) --src.handed;
    out.push_back(src.entries[static_cast<std::size_t>(t.ticket - src.front_ticket)].d);
    st.in_hand.push_back(t);
  }
  while (!orphans_.empty() && out.size() < max) {
    const taken t = orphans_.front();
    orphans_.pop_front();
    assign(c, t, out);
  }
  if (!orphans_.empty()) return out.size();  // newer runs wait behind them
  // A fair share of what is waiting, so that idle consumers woken with us
  // find work too (a run is never split: it is one read of one source).
  delivery d;
  while (fair_.size() < max_fair_held_runs && engine_.pop_delivery(d)) fair_.push(d);
  std::size_t live = 0;
  for (const auto& s : state_) live += s.live ? 1 : 0;
  std::size_t quota = max;
  if (live > 1) quota = std::min(max, std::max<std::size_t>(1, (fair_.size() + live - 1) / live));
  std::size_t popped = 0;
  // One round robin over sources per take: at most a quantum (at least one
  // run) of each, so a batch is short and a source's next run waits at most
  // for the batches the consumers are on, not for a flood's backlog. Runs
  // handed to their owner do not count against our share.
  //
  // Ordered, a source another consumer owns gets one round handed to that
  // owner and no more until the owner takes it: the rest stays in the fair
  // queue, in its place in the ring. Handing off without bound would queue
  // a flood's backlog, first come first served, in its owner's handoff,
  // where a quiet source the same consumer owns would wait behind all of it.
  const auto budget = [this, c](std::uint32_t peer) -> std::size_t {
    if (!ordered_) return static_cast<std::size_t>(-1);
    auto it = sources_.find(peer);
    if (it == sources_.end()) return static_cast<std::size_t>(-1);
    const source& s = it->second;
    const bool elsewhere = s.owner >= 0 && s.owner != static_cast<int>(c);
    return elsewhere && s.handed > 0 ? 0 : static_cast<std::size_t>(-1);
  };
  while (out.empty() && popped < max && !fair_.empty()) {
    picked_.clear();
    if (fair_.take(std::min(quota, max - popped), dispatch_quantum_bytes, picked_, budget) == 0) break;
    for (const delivery& p : picked_) {
      ++popped;
      source& src = sources_[p.peer];
      src.entries.push_back(entry{p, false});
      assign(c, taken{p.peer, src.next_ticket++}, out);
    }
  }
  return out.size();
}

void dispatcher::done(std::size_t c) {
  std::vector<delivery> release;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (c >= consumers_) return;
    consumer_state& st = state_[c];
    for (const taken& t : st.in_hand) {
      source& src = sources_[t.key];
      src.entries[static_cast<std::size_t>(t.ticket - src.front_ticket)].done = true;
      if (ordered_ && src.outstanding > 0 && --src.outstanding == 0) src.owner = -1;
    }
    for (const taken& t : st.in_hand) {
      auto it = sources_.find(t.key);
      if (it == sources_.end()) continue;
      source& src = it->second;
      while (!src.entries.empty() && src.entries.front().done) {
        release.push_back(src.entries.front().d);
        src.entries.pop_front();
        ++src.front_ticket;
      }
      if (src.entries.empty() && src.owner < 0) sources_.erase(it);
    }
    st.in_hand.clear();
    if (!st.handoff.empty()) schedule_locked(c);
    if (!orphans_.empty() || !fair_.empty() || engine_.has_deliveries()) kick_locked();
  }
  // In read order per source; ACKs only ever move forward.
  for (const delivery& d : release) engine_.release(d);
}

std::size_t dispatcher::parked() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t n = orphans_.size() + fair_.size();
  for (const auto& st : state_) n += st.handoff.size();
  return n;
}

}  // namespace nexres
