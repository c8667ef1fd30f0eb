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
    case reject_code::rate_limited: return "RATE_LIMITED";
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
      handshake_budget_(options_.handshakes_per_second_per_address, options_.handshakes_per_second),
      pool_(options_.io_threads) {
  for (const auto& r : options_.replicas) {
    if (r.id == options_.self_id) continue;
    auto s = std::make_unique<peer_slot>();
    s->id = r.id;
    slots_.push_back(std::move(s));
  }
  for (std::size_t i = 0; i < reject_code_count; ++i) rejects_by_code_[i].store(0);
  if (options_.auth != auth_mode::none) {
    // Throws on a key that does not load (the caller validated them).
    identity_.signer = std::make_unique<crypto::ed25519_signer>(options_.private_seed.data());
    for (const auto& pk : options_.public_keys) {
      auto v = crypto::ed25519_verifier::from_public(pk.second.data());
      if (!v) throw std::invalid_argument("bad public key of replica " + std::to_string(pk.first));
      identity_.peers.emplace_back(pk.first, std::make_unique<crypto::ed25519_verifier>(std::move(*v)));
    }
    crypto::cleanse(options_.private_seed.data(), options_.private_seed.size());
    crypto::cleanse(options.private_seed.data(), options.private_seed.size());  // the moved-from copy
    const unsigned cores = std::thread::hardware_concurrency();
    verify_ = std::make_unique<verify_pool>(options_.verify_threads != 0 ? options_.verify_threads : (cores != 0 ? cores : 1));
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
  if (verify_) verify_->stop();
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
