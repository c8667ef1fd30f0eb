#include "engine.hpp"

#include "acceptor.hpp"
#include "client_session.hpp"
#include "inbound_session.hpp"
#include "peer_slot.hpp"
#include "peer_link.hpp"
#include "sockets.hpp"

#include <chrono>
#include <stdexcept>
#include <thread>

namespace nexres {

namespace {
// Codes up to 31 fit (17 and 18 are taken by authentication).
constexpr std::size_t reject_code_count = 32;
}

const char* reject_code_name(reject_code c) noexcept {
  switch (c) {
    case reject_code::bad_magic: return "BAD_MAGIC";
    case reject_code::bad_version: return "BAD_VERSION";
    case reject_code::wrong_cluster: return "WRONG_CLUSTER";
    case reject_code::unknown_peer: return "UNKNOWN_PEER";
    case reject_code::frame_too_large: return "FRAME_TOO_LARGE";
    case reject_code::bad_frame: return "BAD_FRAME";
    case reject_code::bad_sender: return "BAD_SENDER";
    case reject_code::handshake_timeout: return "HANDSHAKE_TIMEOUT";
    case reject_code::shutting_down: return "CONNECTION_LOST";
    case reject_code::bad_auth: return "BAD_AUTH";
    case reject_code::request_too_large: return "REQUEST_TOO_LARGE";
    case reject_code::idle_timeout: return "IDLE_TIMEOUT";
    case reject_code::too_many_connections: return "TOO_MANY_CONNECTIONS";
    case reject_code::heartbeat_timeout: return "HEARTBEAT_TIMEOUT";
    case reject_code::bad_signature: return "BAD_SIGNATURE";
    case reject_code::bad_mac: return "BAD_MAC";
    case reject_code::read_timeout: return "READ_TIMEOUT";
    case reject_code::too_many_pings: return "TOO_MANY_PINGS";
  }
  return "UNKNOWN";
}

engine::engine(engine_options options, std::function<void()> wake)
    : options_(std::move(options)),
      wake_(std::move(wake)),
      chunks_(options_.chunk_bytes, options_.max_receive_bytes, 0, 2),
      client_chunks_(options_.client_chunk_bytes, options_.max_client_receive_bytes, 1, 2,
                     options_.max_client_receive_bytes / 2, options_.max_request_bytes + frame_header_bytes),
      miq_(options_.miq_capacity),
      client_miq_(options_.client_miq_capacity),
      rejects_by_code_(std::make_unique<std::atomic<std::uint64_t>[]>(reject_code_count)),
      pool_(options_.io_threads) {
  for (const auto& r : options_.replicas) {
    if (r.id == options_.self_id) continue;
    auto s = std::make_unique<peer_slot>();
    s->id = r.id;
    slots_.push_back(std::move(s));
  }
  for (std::size_t i = 0; i < reject_code_count; ++i) rejects_by_code_[i].store(0);
  if (options_.auth == auth_mode::mac) {
    // Throws on a key that does not load (the caller validated them).
    identity_.signer = std::make_unique<crypto::ed25519_signer>(options_.private_seed.data());
    for (const auto& pk : options_.public_keys) {
      auto v = crypto::ed25519_verifier::from_public(pk.second.data());
      if (!v) throw std::invalid_argument("bad public key of replica " + std::to_string(pk.first));
      identity_.peers.emplace_back(pk.first, std::make_unique<crypto::ed25519_verifier>(std::move(*v)));
    }
    crypto::cleanse(options_.private_seed.data(), options_.private_seed.size());
    crypto::cleanse(options.private_seed.data(), options.private_seed.size());  // the moved-from copy
  }
}

engine::~engine() {
  stop();
  // I/O objects must die before their io_context (pool_ is destroyed after
  // the slots): drop every reference held outside the handlers now.
  for (auto& s : slots_) s->link.reset();
  links_.clear();
  acceptor_.reset();
  client_acceptor_.reset();
  // Deliveries never handed out still hold chunk references.
  delivery d;
  while (miq_.try_pop(d)) chunk_pool::unref(d.source);
  while (client_miq_.try_pop(d)) chunk_pool::unref(d.source);
}

std::error_code engine::start() {
  if (started_) return std::make_error_code(std::errc::operation_in_progress);
  started_ = true;
  std::string host = options_.listen_host;
  std::uint16_t port = 0;
  for (const auto& r : options_.replicas) {
    if (r.id != options_.self_id) continue;
    if (host.empty()) host = r.host;
    port = r.port;
  }
  acceptor_ = std::make_shared<acceptor>(*this, pool_.at(0), [this](asio::ip::tcp::socket s) {
    std::error_code ec;
    const auto ep = s.remote_endpoint(ec);
    const std::string address = ec ? std::string("unknown") : ep.address().to_string();
    auto session = std::make_shared<inbound_session>(*this, std::move(s));
    track_session(session);
    session->set_pending_id(admit_inbound(session, address));
    session->start_on_own_thread();
  });
  // A failed start releases what it took: the io threads have not started,
  // and each listening socket bound so far is closed before returning.
  auto failed = [this](const char* which, const std::string& h, std::uint16_t p, std::error_code ec) {
    listen_failure_ = listen_failure_info{which, h.empty() ? std::string("0.0.0.0") : h, p};
    if (acceptor_) acceptor_->close_now();
    if (client_acceptor_) client_acceptor_->close_now();
    stopped_ = true;
    return ec;
  };
  if (auto ec = acceptor_->listen(host, port)) return failed("replica", host, port, ec);
  local_port_ = acceptor_->port();
  if (options_.client_port >= 0) {
    client_acceptor_ = std::make_shared<acceptor>(*this, pool_.at(0), [this](asio::ip::tcp::socket s) {
      accept_client(std::move(s));
    });
    const std::string chost = options_.client_host.empty() ? host : options_.client_host;
    const auto cport = static_cast<std::uint16_t>(options_.client_port);
    if (auto ec = client_acceptor_->listen(chost, cport)) return failed("client", chost, cport, ec);
    client_port_ = client_acceptor_->port();
  }
  std::size_t i = 0;
  for (const auto& r : options_.replicas) {
    if (r.id == options_.self_id) continue;
    // Spread outbound links over the pool, starting after the acceptor's.
    auto link = std::make_shared<peer_link>(*this, pool_.at(1 + i), r);
    slots_[static_cast<std::size_t>(slot_of(r.id))]->link = link;
    links_.push_back(link);
    ++i;
  }
  pool_.run();
  acceptor_->start();
  if (client_acceptor_) client_acceptor_->start();
  for (auto& l : links_) l->start();
  return {};
}

void engine::stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true, std::memory_order_release);
  if (!started_) return;
  if (acceptor_) acceptor_->close_async();
  if (client_acceptor_) client_acceptor_->close_async();
  for (auto& l : links_) l->close_async();
  std::vector<std::shared_ptr<client_session>> clients;
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    for (auto& kv : clients_)
      if (auto c = kv.second.lock()) clients.push_back(std::move(c));
  }
  for (auto& c : clients) c->close_async();
  clients.clear();
  std::vector<std::shared_ptr<inbound_session>> inbound;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (auto& w : sessions_)
      if (auto s = w.lock()) inbound.push_back(std::move(s));
    sessions_.clear();
  }
  // Stop phase: inbound sessions write the ACK of everything the consumer
  // has finished before their sockets close (bounded: a peer that does not
  // read holds the writes).
  auto latch = std::make_shared<ack_flush_latch>(inbound.size());
  for (auto& s : inbound) s->flush_acks_async(latch);
  latch->wait_until(std::chrono::steady_clock::now() + std::chrono::milliseconds(250));
  for (auto& s : inbound) s->close_async();
  inbound.clear();
  {
    std::lock_guard<std::mutex> lock(closers_mu_);
    for (auto& w : closers_)
      if (auto c = w.lock()) c->close_async();
    closers_.clear();
  }
  pool_.stop();
  // Let closes run and handlers finish; force the rest after a bound.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (std::size_t k = 0; k < pool_.size(); ++k) all = all && pool_.at(k).stopped();
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (std::size_t k = 0; k < pool_.size(); ++k) pool_.at(k).stop();
  pool_.join();
}

void engine::take_events(std::vector<engine_event>& out) {
  event_wake_pending_.store(false, std::memory_order_seq_cst);
  std::lock_guard<std::mutex> lock(events_mu_);
  if (out.empty()) out.swap(events_);
  else {
    for (auto& e : events_) out.push_back(std::move(e));
    events_.clear();
  }
}

// Acceptor's io thread.
void engine::accept_client(asio::ip::tcp::socket socket) {
  std::shared_ptr<client_session> session;
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    if (clients_.size() >= options_.max_client_connections) {
      std::error_code ec;
      auto ep = socket.remote_endpoint(ec);
      count_reject(reject_code::too_many_connections, 0,
                   ec ? std::string("unknown") : ep.address().to_string() + ":" + std::to_string(ep.port()),
                   "client: maxClientConnections reached");
      socket.close(ec);
      return;
    }
    std::uint32_t id = next_client_id_;
    next_client_id_ = (next_client_id_ + 1) & ~client_flag;
    if (next_client_id_ == 0) next_client_id_ = 1;
    session = std::make_shared<client_session>(*this, std::move(socket), id);
    clients_[id] = session;
  }
  clients_accepted_.fetch_add(1, std::memory_order_relaxed);
  session->start_on_own_thread();
}

std::uint64_t engine::client_partial_begin(const std::weak_ptr<client_session>& s) {
  std::lock_guard<std::mutex> lock(partial_mu_);
  const std::uint64_t id = next_partial_++;
  client_partials_.emplace(id, s);
  return id;
}

void engine::client_partial_end(std::uint64_t registration) {
  std::lock_guard<std::mutex> lock(partial_mu_);
  client_partials_.erase(registration);
}

// Scans every request in progress (only when client memory is at its
// bound): the age that counts is the current request's, not the
// connection's, so a client that keeps completing requests is never the
// one refused, and one that sends a first byte and stalls is.
std::chrono::steady_clock::duration engine::evict_oldest_client_partial(const client_session* who,
                                                                        std::chrono::steady_clock::duration min_age) {
  using clock = std::chrono::steady_clock;
  std::shared_ptr<client_session> victim;
  clock::duration wait = clock::duration::max();
  {
    std::lock_guard<std::mutex> lock(partial_mu_);
    const auto now = clock::now();
    clock::time_point oldest = clock::time_point::max();
    std::map<std::uint64_t, std::weak_ptr<client_session>>::iterator pick = client_partials_.end();
    for (auto it = client_partials_.begin(); it != client_partials_.end();) {
      auto s = it->second.lock();
      if (!s) {
        it = client_partials_.erase(it);
        continue;
      }
      // One waiting for memory is held back by us, not stalling.
      const clock::time_point since = s->frame_started();
      if (s.get() != who && !s->waiting_for_memory() && since < oldest) {
        oldest = since;
        pick = it;
      }
      ++it;
    }
    if (pick != client_partials_.end()) {
      if (now - oldest >= min_age) {
        victim = pick->second.lock();
        client_partials_.erase(pick);
      } else {
        wait = min_age - (now - oldest);
      }
    }
  }
  if (!victim) return wait;
  // Unlocked: the session's last reference may drop here.
  victim->evict_async();
  return clock::duration::zero();
}

void engine::forget_client(std::uint32_t id) {
  std::lock_guard<std::mutex> lock(clients_mu_);
  auto it = clients_.find(id);
  if (it != clients_.end() && it->second.expired()) clients_.erase(it);
}

std::string engine::client_address(std::uint32_t id) {
  // The session's last reference may drop here: release it unlocked (its
  // destructor takes clients_mu_).
  std::shared_ptr<client_session> c;
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    auto it = clients_.find(id & ~client_flag);
    if (it != clients_.end()) c = it->second.lock();
  }
  return c ? c->remote() : std::string();
}

bool engine::enqueue(std::uint32_t destination, const segment& seg) {
  if (destination != broadcast_destination && (destination & client_flag) != 0) {
    std::shared_ptr<client_session> c;
    {
      std::lock_guard<std::mutex> lock(clients_mu_);
      auto it = clients_.find(destination & ~client_flag);
      if (it != clients_.end()) c = it->second.lock();
    }
    if (!c) {
      // The client went away before its replies: nothing to deliver them to.
      replies_dropped_.fetch_add(seg.messages, std::memory_order_relaxed);
      return false;
    }
    c->enqueue(seg);
    return true;
  }
  if (destination == broadcast_destination) {
    for (auto& l : links_) l->enqueue(seg);
    return true;
  }
  const int s = slot_of(destination);
  if (s < 0 || !slots_[static_cast<std::size_t>(s)]->link) return false;
  slots_[static_cast<std::size_t>(s)]->link->enqueue(seg);
  return true;
}

std::uint64_t engine::queued_bytes(std::uint32_t peer) const {
  const int s = slot_of(peer);
  if (s < 0 || !slots_[static_cast<std::size_t>(s)]->link) return 0;
  return slots_[static_cast<std::size_t>(s)]->link->queued_bytes();
}

std::uint64_t engine::queued_bytes_total() const {
  std::uint64_t total = 0;
  for (const auto& l : links_) total += l->queued_bytes();
  return total;
}

void engine::want_drain(std::uint32_t peer) {
  const int s = slot_of(peer);
  if (s >= 0 && slots_[static_cast<std::size_t>(s)]->link) slots_[static_cast<std::size_t>(s)]->link->want_drain();
}

int engine::slot_of(std::uint32_t peer) const noexcept {
  for (std::size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i]->id == peer) return static_cast<int>(i);
  return -1;
}

bool engine::push_delivery(delivery& d) {
  return (d.peer & client_flag) != 0 ? client_miq_.try_push(d) : miq_.try_push(d);
}

void engine::wait_for_miq(std::weak_ptr<miq_waiter> w) {
  {
    std::lock_guard<std::mutex> lock(miq_mu_);
    miq_waiters_.push_back(std::move(w));
    miq_waiting_.store(true, std::memory_order_relaxed);
  }
  // Pairs with the fence in pop_delivery() (see there).
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// Consumer thread.
void engine::wake_miq_waiters() {
  std::vector<std::weak_ptr<miq_waiter>> woken;
  {
    std::lock_guard<std::mutex> lock(miq_mu_);
    woken.swap(miq_waiters_);
    miq_waiting_.store(false, std::memory_order_relaxed);
  }
  // Unlocked: a waiter's last reference may drop here.
  for (auto& w : woken)
    if (auto s = w.lock()) s->on_miq_room();
}

// Consumer thread. ACKs follow consumption, not arrival: a receiver that dies
// with messages still queued for its handlers gets them again on restart.
void engine::release(const delivery& d) {
  std::shared_ptr<inbound_session> notify;
  std::shared_ptr<inbound_session> room;
  if (d.slot >= 0) {
    peer_slot& ps = *slots_[static_cast<std::size_t>(d.slot)];
    ps.rx_pending_bytes.fetch_sub(d.length, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(ps.rx_mu);
    if (ps.rx_pending_runs > 0) --ps.rx_pending_runs;
    if (ps.rx_runs_waiting && ps.rx_pending_runs <= max_pending_runs / 2) {
      ps.rx_runs_waiting = false;
      room = ps.rx_session.lock();
    }
    if (d.incarnation == ps.rx_incarnation && d.last_id > ps.rx_consumed_id) {
      ps.rx_consumed_id = d.last_id;
      if (!ps.ack_scheduled) {
        notify = ps.rx_session.lock();
        ps.ack_scheduled = notify != nullptr;
      }
    }
  }
  chunk_pool::unref(d.source);
  if (notify) notify->request_ack();
  if (room) room->on_miq_room();
}

void engine::notify() {
  if (!wake_pending_.exchange(true, std::memory_order_seq_cst) && wake_) wake_();
}

void engine::post_event(engine_event ev) {
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    events_.push_back(std::move(ev));
  }
  if (!event_wake_) {
    notify();
  } else if (!event_wake_pending_.exchange(true, std::memory_order_seq_cst)) {
    event_wake_();
  }
}

void engine::count_reject(reject_code code, std::uint32_t peer, const std::string& remote,
                          const std::string& detail) {
  rejects_total_.fetch_add(1, std::memory_order_relaxed);
  const auto idx = static_cast<std::size_t>(code);
  if (idx < reject_code_count) rejects_by_code_[idx].fetch_add(1, std::memory_order_relaxed);
  const int s = slot_of(peer);
  if (s >= 0) slots_[static_cast<std::size_t>(s)]->rejects.fetch_add(1, std::memory_order_relaxed);
  post_event(engine_event{event_type::reject, peer, static_cast<std::uint16_t>(code), detail, remote});
}

// Acceptor's io thread. SECURITY.md "Connection limits": only pre-handshake
// connections count. At a limit, the oldest pre-handshake connection of the
// group (same address, or all) is refused to make room for the new one: an
// idle attacker's connections are the oldest, an honest peer's handshake
// takes a round trip, so honest peers get in even from the attacker's
// address (all of loopback is 127.0.0.1).
std::uint64_t engine::admit_inbound(const std::shared_ptr<inbound_session>& s, const std::string& address) {
  std::vector<std::pair<std::shared_ptr<inbound_session>, std::string>> victims;
  std::uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    auto& mine = pending_by_address_[address];
    auto evict = [&](std::uint64_t victim, const std::string& why) {
      auto it = pending_.find(victim);
      if (auto v = it->second.session.lock()) victims.emplace_back(std::move(v), why);
      auto& set = pending_by_address_[it->second.address];
      set.erase(victim);
      if (set.empty() && &set != &mine) pending_by_address_.erase(it->second.address);
      pending_.erase(it);
    };
    const std::uint32_t per_address = options_.max_connections_per_address;
    while (per_address > 0 && mine.size() >= per_address)
      evict(*mine.begin(), "maxConnectionsPerAddress (" + std::to_string(per_address) +
                               ") connections from " + address + " in handshake; the oldest is refused");
    const std::uint32_t total = options_.max_replica_connections;
    while (total > 0 && pending_.size() >= total)
      evict(pending_.begin()->first, "maxReplicaConnections (" + std::to_string(total) +
                                         ") connections in handshake; the oldest is refused");
    id = ++next_pending_id_;
    pending_.emplace(id, pending_entry{s, address});
    mine.insert(id);
  }
  // Unlocked: a victim's last reference may drop here (its destructor calls
  // leave_pending).
  for (auto& v : victims) v.first->refuse_async(reject_code::too_many_connections, std::move(v.second));
  return id;
}

void engine::leave_pending(std::uint64_t id) {
  if (id == 0) return;
  std::lock_guard<std::mutex> lock(pending_mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // refused to make room already
  auto by = pending_by_address_.find(it->second.address);
  if (by != pending_by_address_.end()) {
    by->second.erase(id);
    if (by->second.empty()) pending_by_address_.erase(by);
  }
  pending_.erase(it);
}

void engine::linger_close(asio::ip::tcp::socket socket, std::vector<std::uint8_t> last_words) {
  std::shared_ptr<sockets::lingering_close> c;
  {
    std::lock_guard<std::mutex> lock(closers_mu_);
    // Stopping: the frame is still written (it goes out at once unless the
    // socket is full) but nothing lingers.
    const auto deadline = std::chrono::milliseconds(stopping() ? 0 : 1000);
    c = std::make_shared<sockets::lingering_close>(std::move(socket), std::move(last_words), deadline);
    if (closers_.size() >= 64 && closers_.size() % 64 == 0) {
      std::vector<std::weak_ptr<sockets::lingering_close>> live;
      for (auto& w : closers_)
        if (!w.expired()) live.push_back(w);
      closers_.swap(live);
    }
    closers_.push_back(c);
  }
  c->start();
}

void engine::track_session(const std::shared_ptr<inbound_session>& s) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  if (sessions_.size() >= 64 && sessions_.size() % 64 == 0) {
    std::vector<std::weak_ptr<inbound_session>> live;
    for (auto& w : sessions_)
      if (!w.expired()) live.push_back(w);
    sessions_.swap(live);
  }
  sessions_.push_back(s);
}

engine_stats engine::stats() const {
  engine_stats st;
  for (const auto& s : slots_) {
    peer_stats p;
    p.id = s->id;
    if (s->link) s->link->fill_stats(p);
    p.msgs_in = s->msgs_in.load(std::memory_order_relaxed);
    p.bytes_in = s->bytes_in.load(std::memory_order_relaxed);
    p.rejects = s->rejects.load(std::memory_order_relaxed);
    p.duplicates = s->duplicates.load(std::memory_order_relaxed);
    p.receive_pending_bytes = s->rx_pending_bytes.load(std::memory_order_relaxed);
    st.peers.push_back(p);
  }
  st.rejects_total = rejects_total_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < reject_code_count; ++i)
    st.rejects_by_code.push_back(rejects_by_code_[i].load(std::memory_order_relaxed));
  st.miq_depth = miq_.size_approx() + client_miq_.size_approx();
  std::vector<std::shared_ptr<client_session>> open;
  {
    std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(clients_mu_));
    st.clients_open = clients_.size();
    open.reserve(clients_.size());
    for (const auto& kv : clients_)
      if (auto c = kv.second.lock()) open.push_back(std::move(c));
  }
  // Unlocked: a session's last reference may drop here (its destructor
  // takes clients_mu_).
  for (const auto& c : open) {
    st.clients.emplace_back();
    c->fill_stats(st.clients.back());
  }
  open.clear();
  st.clients_accepted = clients_accepted_.load(std::memory_order_relaxed);
  st.reply_bytes = reply_bytes_.load(std::memory_order_relaxed);
  st.replies_dropped = replies_dropped_.load(std::memory_order_relaxed);
  st.receive_bytes_allocated = chunks_.allocated_bytes();
  st.client_receive_bytes_allocated = client_chunks_.allocated_bytes();
  return st;
}

}  // namespace nexres
