// engine, its connections: client connections accepted and registered,
// the client port's memory eviction (the request arriving longest gives
// way), replica connections admitted under the pre-handshake limits, the
// one lingering close for refused sockets, and inbound sessions tracked for
// stop. The rest of the engine is in engine.cpp.
#include "engine.hpp"

#include "client_session.hpp"
#include "inbound_session.hpp"
#include "sockets.hpp"

#include <algorithm>
#include <chrono>

namespace nexres {

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
    next_client_id_ = (next_client_id_ + 1) & client_id_mask;
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
    auto it = clients_.find(id & client_id_mask);
    if (it != clients_.end()) c = it->second.lock();
  }
  return c ? c->remote() : std::string();
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

std::shared_ptr<client_session> engine::find_client(std::uint32_t id) {
  std::lock_guard<std::mutex> lock(clients_mu_);
  auto it = clients_.find(id & client_id_mask);
  return it != clients_.end() ? it->second.lock() : nullptr;
}

bool engine::client_key(std::uint32_t id, std::array<std::uint8_t, 32>& out) {
  // The session's last reference may drop here: outside clients_mu_.
  std::shared_ptr<client_session> c = find_client(id);
  return c && c->key(out);
}

bool engine::take_handshake(const std::string& remote, std::string& why) {
  const std::string ip = remote.substr(0, remote.rfind(':'));
  if (handshake_budget_.take(ip)) return true;
  why = "handshake budget: too many key exchanges from " + ip + " (handshakesPerSecondPerAddress " +
        std::to_string(options_.handshakes_per_second_per_address) + ", handshakesPerSecond " +
        std::to_string(options_.handshakes_per_second) + ")";
  return false;
}

std::int64_t engine::client_connection_of(const std::array<std::uint8_t, 32>& key) {
  std::shared_ptr<client_session> c;
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    auto it = client_keys_.find(key);
    std::shared_ptr<client_key_state> k = it != client_keys_.end() ? it->second.lock() : nullptr;
    // Newest first: a client that reconnected is reached on its new connection.
    if (k) {
      for (auto s = k->sessions.rbegin(); s != k->sessions.rend(); ++s) {
        auto found = clients_.find(*s);
        if (found != clients_.end() && (c = found->second.lock())) break;
      }
    }
  }
  if (!c || !c->served()) return 0;
  return c->backlogged() ? -1 : static_cast<std::int64_t>(c->id());
}

void engine::allow_client(std::uint32_t id, bool allow, const std::string& reason) {
  if (auto c = find_client(id)) c->on_allowed(allow, reason);
}

std::shared_ptr<client_key_state> engine::claim_client_key(const std::array<std::uint8_t, 32>& key, std::uint32_t session) {
  std::lock_guard<std::mutex> lock(clients_mu_);
  auto& slot = client_keys_[key];
  std::shared_ptr<client_key_state> k = slot.lock();
  if (!k) {
    k = std::make_shared<client_key_state>();
    k->key = key;
    slot = k;
  }
  if (k->connections >= options_.max_client_key_connections) return nullptr;
  ++k->connections;
  k->sessions.push_back(session);
  return k;
}

void engine::release_client_key(client_key_state& k, std::uint32_t session) {
  std::lock_guard<std::mutex> lock(clients_mu_);
  if (k.connections > 0) --k.connections;
  k.sessions.erase(std::remove(k.sessions.begin(), k.sessions.end(), session), k.sessions.end());
  if (k.connections == 0) {
    auto it = client_keys_.find(k.key);
    // Its last connection is going: the entry goes with it (the state dies
    // with the session's reference).
    if (it != client_keys_.end()) client_keys_.erase(it);
  }
}

}  // namespace nexres
