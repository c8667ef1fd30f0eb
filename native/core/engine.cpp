// engine: options, start and stop, the queues between io threads and
// consumers (MIQ, per-peer MOQs), ACK on release, events and stats. Its
// connections (admission, client registry, eviction, lingering close) are
// in engine_connections.cpp.
#include "engine.hpp"

#include "acceptor.hpp"
#include "client_session.hpp"
#include "inbound_session.hpp"
#include "peer_slot.hpp"
#include "peer_link.hpp"
#include "sockets.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
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
    case reject_code::rate_limited: return "RATE_LIMITED";
    case reject_code::read_timeout: return "READ_TIMEOUT";
    case reject_code::too_many_pings: return "TOO_MANY_PINGS";
    case reject_code::stale_epoch: return "STALE_EPOCH";
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
      handshake_budget_(options_.handshakes_per_second_per_address, options_.handshakes_per_second),
      pool_(options_.io_threads, std::chrono::microseconds(options_.io_spin_us)) {
  slot_capacity_ = std::min<std::uint32_t>(std::max<std::uint32_t>(options_.max_peers, 1), max_slot_index + 1);
  slots_ = std::make_unique<peer_slot[]>(slot_capacity_);
  for (std::size_t i = 0; i < reject_code_count; ++i) rejects_by_code_[i].store(0);
  if (options_.auth != auth_mode::none) {
    // Throws on a key that does not load (the caller validated them).
    auto k = std::make_unique<own_key>();
    k->signer = std::make_unique<crypto::ed25519_signer>(options_.private_seed.data());
    key_.store(k.get(), std::memory_order_release);
    keys_owned_.push_back(std::move(k));
    crypto::cleanse(options_.private_seed.data(), options_.private_seed.size());
    crypto::cleanse(options.private_seed.data(), options.private_seed.size());  // the moved-from copy
    const unsigned cores = std::thread::hardware_concurrency();
    verify_ = std::make_unique<verify_pool>(options_.verify_threads != 0 ? options_.verify_threads : (cores != 0 ? cores : 1));
  }
  // The configuration at start: this cluster's replicas, then the remote ones.
  membership m;
  m.epoch = options_.epoch;
  for (const auto& r : options_.replicas) {
    if (r.id == options_.self_id) continue;
    peer_config p;
    p.id = r.id;
    p.host = r.host;
    p.port = r.port;
    for (const auto& pk : options_.public_keys)
      if (pk.first == r.id) {
        p.has_key = true;
        p.key = pk.second;
      }
    m.peers.push_back(std::move(p));
  }
  for (const auto& p : options_.remote_peers) m.peers.push_back(p);
  std::vector<std::int32_t> ignored;
  std::string error;
  if (!reconfigure(m, ignored, error)) throw std::invalid_argument(error);
}

engine::~engine() {
  stop();
  // I/O objects must die before their io_context (pool_ is destroyed after
  // the slots): drop every reference held outside the handlers now.
  for (std::uint32_t i = 0; i < slot_capacity_; ++i) slots_[i].link.store(nullptr);
  links_.clear();
  retired_links_.clear();
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
  pool_.run();
  acceptor_->start();
  if (client_acceptor_) client_acceptor_->start();
  std::lock_guard<std::mutex> lock(config_mu_);
  for (auto& l : links_)
    if (l) l->start();
  return {};
}

void engine::stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true, std::memory_order_release);
  if (verify_) verify_->stop();
  if (!started_) return;
  if (acceptor_) acceptor_->close_async();
  if (client_acceptor_) client_acceptor_->close_async();
  {
    std::lock_guard<std::mutex> lock(config_mu_);
    for (auto& l : links_)
      if (l) l->close_async();
  }
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

bool engine::enqueue(std::uint32_t destination, const segment& seg) {
  if (destination == broadcast_destination) {
    // Every member of this cluster.
    const std::uint32_t n = slot_count();
    for (std::uint32_t i = 0; i < n; ++i) {
      peer_slot& ps = slots_[i];
      if (ps.remote) continue;
      if (peer_link* l = ps.link.load(std::memory_order_acquire)) l->enqueue(seg);
    }
    return true;
  }
  if (is_client_address(destination)) {
    std::shared_ptr<client_session> c;
    {
      std::lock_guard<std::mutex> lock(clients_mu_);
      auto it = clients_.find(destination & client_id_mask);
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
  if ((destination & cluster_broadcast) == cluster_broadcast) {
    // Every member of a remote cluster, named by one of its slots.
    const std::uint32_t k = destination & max_slot_index;
    const std::uint32_t n = slot_count();
    if (k >= n) return false;
    const std::string& cluster = slots_[k].cluster;
    for (std::uint32_t i = 0; i < n; ++i) {
      peer_slot& ps = slots_[i];
      if (!ps.remote || ps.cluster != cluster) continue;
      if (peer_link* l = ps.link.load(std::memory_order_acquire)) l->enqueue(seg);
    }
    return true;
  }
  const int s = slot_of(destination);
  if (s < 0) return false;
  peer_slot& ps = slots_[static_cast<std::size_t>(s)];
  if (peer_link* l = ps.link.load(std::memory_order_acquire)) {
    l->enqueue(seg);
    return true;
  }
  // Removed from the configuration between the caller's check and now:
  // reported, not dropped silently.
  if (seg.messages > 0 && !seg.control) {
    engine_event ev{event_type::undelivered, ps.address, 0, "not in the configuration (removed by reconfigure)", {}};
    ev.messages = seg.messages;
    ev.bytes = seg.length;
    ev.first_id = seg.framed && seg.length >= frame_header_bytes ? decode_header(seg.data).msg_id : seg.last_msg_id;
    ev.last_id = seg.last_msg_id;
    post_event(std::move(ev));
  }
  return false;
}

std::uint64_t engine::queued_bytes(std::uint32_t peer) const {
  const int s = slot_of(peer);
  if (s < 0) return 0;
  const peer_link* l = slots_[static_cast<std::size_t>(s)].link.load(std::memory_order_acquire);
  return l != nullptr ? l->queued_bytes() : 0;
}

std::uint64_t engine::queued_bytes_total() const {
  std::uint64_t total = 0;
  const std::uint32_t n = slot_count();
  for (std::uint32_t i = 0; i < n; ++i)
    if (const peer_link* l = slots_[i].link.load(std::memory_order_acquire)) total += l->queued_bytes();
  return total;
}

void engine::want_drain(std::uint32_t peer) {
  const int s = slot_of(peer);
  if (s < 0) return;
  if (peer_link* l = slots_[static_cast<std::size_t>(s)].link.load(std::memory_order_acquire)) l->want_drain();
}

int engine::slot_of(std::uint32_t address) const noexcept {
  const std::uint32_t n = slot_count();
  if (is_slot_address(address)) {
    const std::uint32_t i = address & ~slot_address;
    return i < n ? static_cast<int>(i) : -1;
  }
  for (std::uint32_t i = 0; i < n; ++i)
    if (!slots_[i].remote && slots_[i].id == address) return static_cast<int>(i);
  return -1;
}

int engine::member_slot(const std::uint8_t* cluster, std::size_t length, std::uint32_t id) const noexcept {
  const std::uint32_t n = slot_count();
  for (std::uint32_t i = 0; i < n; ++i) {
    const peer_slot& ps = slots_[i];
    if (ps.id != id || ps.cluster.size() != length || std::memcmp(ps.cluster.data(), cluster, length) != 0) continue;
    return ps.link.load(std::memory_order_acquire) != nullptr ? static_cast<int>(i) : -1;
  }
  return -1;
}

bool engine::knows_cluster(const std::string& cluster) const noexcept {
  const std::uint32_t n = slot_count();
  for (std::uint32_t i = 0; i < n; ++i)
    if (slots_[i].remote && slots_[i].cluster == cluster && slots_[i].link.load(std::memory_order_acquire) != nullptr)
      return true;
  return false;
}

void engine::report_epoch_ahead(std::uint32_t address, std::uint32_t epoch, const std::string& remote) {
  std::uint32_t seen = epoch_reported_.load(std::memory_order_relaxed);
  for (;;) {
    if (epoch <= seen || epoch <= config_epoch()) return;
    if (epoch_reported_.compare_exchange_weak(seen, epoch, std::memory_order_relaxed)) break;
  }
  engine_event ev{event_type::epoch_ahead, address, 0,
                  "a peer is on configuration epoch " + std::to_string(epoch) + ", this replica on " +
                      std::to_string(config_epoch()),
                  remote};
  ev.first_id = epoch;
  post_event(std::move(ev));
}

// Consumer thread (or the constructor). Checks everything first: on a
// refusal nothing has changed.
bool engine::reconfigure(const membership& m, std::vector<std::int32_t>& slots, std::string& error) {
  std::lock_guard<std::mutex> lock(config_mu_);
  const std::uint32_t old_epoch = epoch_.load(std::memory_order_relaxed);
  if (m.epoch < old_epoch) {
    error = "epoch " + std::to_string(m.epoch) + " is older than the current " + std::to_string(old_epoch);
    return false;
  }
  const bool mac = options_.auth != auth_mode::none;
  std::uint32_t count = slot_count_.load(std::memory_order_relaxed);
  // Where each peer goes: its own slot, or a new one.
  std::vector<std::int32_t> where(m.peers.size(), -1);
  std::uint32_t fresh = 0;
  for (std::size_t k = 0; k < m.peers.size(); ++k) {
    const peer_config& p = m.peers[k];
    const std::string& cluster = p.cluster.empty() ? options_.cluster_id : p.cluster;
    if (cluster == options_.cluster_id && p.id == options_.self_id) {
      error = "the configuration names this replica (" + std::to_string(p.id) + ") as a peer";
      return false;
    }
    if (mac && !p.has_key) {
      error = "no public key for replica " + std::to_string(p.id) + " of cluster " + cluster;
      return false;
    }
    for (std::size_t j = 0; j < k; ++j) {
      const std::string& other = m.peers[j].cluster.empty() ? options_.cluster_id : m.peers[j].cluster;
      if (m.peers[j].id == p.id && other == cluster) {
        error = "replica " + std::to_string(p.id) + " of cluster " + cluster + " appears twice";
        return false;
      }
    }
    for (std::uint32_t i = 0; i < count; ++i)
      if (slots_[i].id == p.id && slots_[i].cluster == cluster) where[k] = static_cast<std::int32_t>(i);
    if (where[k] < 0) where[k] = static_cast<std::int32_t>(count + fresh++);
  }
  if (count + fresh > slot_capacity_) {
    error = "the configuration needs " + std::to_string(count + fresh) + " peer slots (peers ever configured), " +
            "more than maxPeers (" + std::to_string(slot_capacity_) + ")";
    return false;
  }
  // Keys first (the one step that can fail).
  std::vector<std::unique_ptr<crypto::ed25519_verifier>> new_keys(m.peers.size());
  for (std::size_t k = 0; k < m.peers.size(); ++k) {
    const peer_config& p = m.peers[k];
    if (!p.has_key) continue;
    auto v = crypto::ed25519_verifier::from_public(p.key.data());
    if (!v) {
      error = "bad public key of replica " + std::to_string(p.id);
      return false;
    }
    new_keys[k] = std::make_unique<crypto::ed25519_verifier>(std::move(*v));
  }
  std::unique_ptr<own_key> new_own;
  if (m.has_private_key) {
    if (!mac) {
      error = "a private key, but auth is 'none'";
      return false;
    }
    new_own = std::make_unique<own_key>();
    try {
      new_own->signer = std::make_unique<crypto::ed25519_signer>(m.private_seed.data());
    } catch (const std::exception&) {
      error = "the private key does not load";
      return false;
    }
    const own_key* cur = key_.load(std::memory_order_relaxed);
    if (cur != nullptr && cur->signer->public_key() == new_own->signer->public_key()) new_own.reset();  // the same key
  }
  const bool own_key_changed = new_own != nullptr;
  if (own_key_changed) {
    new_own->generation = key_.load(std::memory_order_relaxed)->generation + 1;
    key_.store(new_own.get(), std::memory_order_release);
    keys_owned_.push_back(std::move(new_own));
  }
  // A new epoch or a new own key: every session of this cluster starts again.
  const bool epoch_changed = m.epoch != old_epoch;
  epoch_.store(m.epoch, std::memory_order_release);
  if (links_.size() < slot_capacity_) links_.resize(slot_capacity_);
  std::vector<bool> keep(slot_capacity_, false);
  for (std::size_t k = 0; k < m.peers.size(); ++k) {
    const peer_config& p = m.peers[k];
    const auto i = static_cast<std::uint32_t>(where[k]);
    peer_slot& ps = slots_[i];
    keep[i] = true;
    if (i >= count) {
      ps.id = p.id;
      ps.cluster = p.cluster.empty() ? options_.cluster_id : p.cluster;
      ps.remote = ps.cluster != options_.cluster_id;
      ps.address = ps.remote ? (slot_address | i) : p.id;
    }
    bool key_changed = false;
    if (new_keys[k]) {
      const crypto::ed25519_verifier* old = ps.key.load(std::memory_order_relaxed);
      key_changed = old == nullptr || !old->same_key(*new_keys[k]);
      if (key_changed) {
        ps.key.store(new_keys[k].get(), std::memory_order_release);
        keys_.push_back(std::move(new_keys[k]));
      }
    }
    const replica_address addr{p.id, p.host, p.port};
    std::shared_ptr<peer_link>& link = links_[i];
    if (!link) {
      // Spread outbound links over the pool, starting after the acceptor's.
      link = std::make_shared<peer_link>(*this, pool_.at(1 + i % (pool_.size() > 1 ? pool_.size() - 1 : 1)), addr,
                                         static_cast<int>(i));
      if (i >= count) slot_count_.store(i + 1, std::memory_order_release);
      ps.link.store(link.get(), std::memory_order_release);
      if (started_ && !stopped_) link->start();
    } else if ((epoch_changed && !ps.remote) || own_key_changed || key_changed || link->address_differs(addr)) {
      // Its sessions both ways start again (a new epoch, a key, an address).
      link->restart(addr, own_key_changed ? std::string("reconfigured: this replica's key replaced")
                          : epoch_changed  ? "reconfigured: epoch " + std::to_string(m.epoch)
                                           : std::string("reconfigured: new address or key"));
      close_inbound(ps);
    }
    slots.push_back(static_cast<std::int32_t>(i));
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    if (keep[i] || !links_[i]) continue;
    peer_slot& ps = slots_[i];
    ps.link.store(nullptr, std::memory_order_release);
    links_[i]->retire("removed from the configuration (epoch " + std::to_string(m.epoch) + ")");
    retired_links_.push_back(std::move(links_[i]));
    close_inbound(ps);
  }
  return true;
}

void engine::close_inbound(peer_slot& ps) {
  std::shared_ptr<inbound_session> s;
  {
    std::lock_guard<std::mutex> lock(ps.rx_mu);
    s = ps.rx_session.lock();
  }
  if (s) s->close_async();
}

bool engine::push_delivery(delivery& d) {
  return is_client_address(d.peer) ? client_miq_.try_push(d) : miq_.try_push(d);
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
    peer_slot& ps = slots_[static_cast<std::size_t>(d.slot)];
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
  if (s >= 0) slots_[static_cast<std::size_t>(s)].rejects.fetch_add(1, std::memory_order_relaxed);
  post_event(engine_event{event_type::reject, peer, static_cast<std::uint16_t>(code), detail, remote});
}

engine_stats engine::stats() const {
  engine_stats st;
  st.epoch = config_epoch();
  const std::uint32_t n = slot_count();
  for (std::uint32_t i = 0; i < n; ++i) {
    const peer_slot& s = slots_[i];
    const peer_link* l = s.link.load(std::memory_order_acquire);
    if (l == nullptr) continue;  // not in the configuration
    peer_stats p;
    p.id = s.id;
    p.address = s.address;
    if (s.remote) p.cluster = s.cluster;
    l->fill_stats(p);
    p.msgs_in = s.msgs_in.load(std::memory_order_relaxed);
    p.bytes_in = s.bytes_in.load(std::memory_order_relaxed);
    p.rejects = s.rejects.load(std::memory_order_relaxed);
    p.duplicates = s.duplicates.load(std::memory_order_relaxed);
    p.receive_pending_bytes = s.rx_pending_bytes.load(std::memory_order_relaxed);
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
