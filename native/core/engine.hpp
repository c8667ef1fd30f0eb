// The replica engine: io pool, acceptor, inbound sessions, one replica
// client link per peer, the MIQ towards the consumer and the events queue.
// Plain C++17; the Node addon is one consumer, native/bench another.
#pragma once

#include "auth.hpp"
#include "bounded_queue.hpp"
#include "chunk_pool.hpp"
#include "handshake_budget.hpp"
#include "io_pool.hpp"
#include "peer_slot.hpp"
#include "verify_pool.hpp"
#include "protocol.hpp"

#include <asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

namespace nexres {

struct replica_address {
  std::uint32_t id = 0;
  std::string host;
  std::uint16_t port = 0;
};

/// One peer of a configuration (engine::reconfigure): a replica of this
/// cluster, or of a remote cluster it links to.
struct peer_config {
  std::string cluster;  // empty: this replica's cluster
  std::uint32_t id = 0;
  std::string host;
  std::uint16_t port = 0;
  bool has_key = false;  // auth mac/seal: every peer has one
  std::array<std::uint8_t, 32> key{};
};

/// Who the replica links to (PROTOCOL.md §2 "Configuration epochs").
struct membership {
  std::uint32_t epoch = 0;
  /// A new private key for this replica (auth mac/seal): its sessions start
  /// again, and signed frames queued under the old key are given up.
  bool has_private_key = false;
  std::array<std::uint8_t, 32> private_seed{};
  /// Every peer, of this cluster and of remote clusters; not this replica.
  std::vector<peer_config> peers;
};

struct engine_options {
  std::uint32_t self_id = 0;
  std::string cluster_id;
  /// Every replica of the cluster, self included.
  std::vector<replica_address> replicas;
  /// The configuration epoch at start (PROTOCOL.md §2).
  std::uint32_t epoch = 0;
  /// Replicas of other clusters linked to at start (cluster set), with their
  /// keys (auth mac/seal).
  std::vector<peer_config> remote_peers;
  /// Distinct peers (local and remote) the engine can know over its life:
  /// the slot table is this big (a removed peer keeps its slot).
  std::uint32_t max_peers = 256;
  /// Address to listen on; defaults to self's host.
  std::string listen_host;
  std::size_t io_threads = 2;
  /// Microseconds an io thread polls after its last event before it sleeps.
  std::uint32_t io_spin_us = 0;
  std::uint32_t max_frame_bytes = 16u << 20;
  std::size_t chunk_bytes = 1u << 20;
  std::size_t max_chunks_per_connection = 8;
  /// Receive memory of the replica port (every replica session's chunks).
  std::size_t max_receive_bytes = 512u << 20;
  std::size_t miq_capacity = 8192;
  /// Client port receive memory, apart from the replica port's so no client
  /// can take what replica links need: pooled chunks of client_chunk_bytes
  /// taken only while a request is arriving (an idle connection holds none),
  /// and a request bigger than a chunk grown with the bytes that arrive, by
  /// doubling, to at most half of max_client_receive_bytes in all.
  std::size_t max_client_receive_bytes = 64u << 20;
  std::size_t client_chunk_bytes = 64u << 10;
  /// Queue slots for client-port deliveries (the replica port has miq_capacity).
  std::size_t client_miq_capacity = 8192;
  /// send() reports false at this queue depth; the drain event fires once the
  /// queue is back to half of it.
  std::uint64_t high_water_bytes = 16u << 20;
  std::uint32_t handshake_timeout_ms = 5000;
  std::uint32_t reconnect_min_ms = 50;
  std::uint32_t reconnect_max_ms = 2000;
  /// SO_SNDBUF of outbound links (0: the OS default and its autotuning).
  std::size_t send_buffer_bytes = 4u << 20;
  /// SO_RCVBUF of inbound connections (0: the OS default and its autotuning).
  std::size_t receive_buffer_bytes = 0;
  /// Client port (PROTOCOL.md §6): -1 for none, 0 for any free port.
  std::int32_t client_port = -1;
  /// Address the client port binds to (default: the replica's host).
  std::string client_host;
  std::uint32_t max_request_bytes = 4u << 20;
  /// Requests one client connection may have unanswered before its socket
  /// is no longer read.
  std::uint32_t max_client_inflight = 1024;
  /// A client connection with no complete request in this long and none in
  /// flight is closed (0: never).
  std::uint32_t client_idle_timeout_ms = 60000;
  std::uint32_t max_client_connections = 10000;
  /// Client identities (PROTOCOL.md §6a): refuse clients without a key;
  /// ask the consumer (client_auth event, allow_client) before serving a key.
  bool require_client_key = false;
  bool client_allow_hook = false;
  /// PROTOCOL.md §6b: refuse client connections that are not sealed
  /// (encrypted) (clientSeal 'required').
  bool require_client_seal = false;
  /// Per client key, over all its connections: connections open at once, and
  /// requests unanswered (checked at each sealed batch) before its
  /// connections are no longer read.
  std::uint32_t max_client_key_connections = 64;
  /// The handshake budget (SECURITY.md): key exchanges per second (and
  /// burst) per remote address and in all, taken before any public-key
  /// operation; past it a handshake is refused RATE_LIMITED. 0 = no bound.
  std::uint32_t handshakes_per_second_per_address = 100;
  std::uint32_t handshakes_per_second = 2000;
  std::uint32_t max_client_key_inflight = 4096;
  /// Heartbeats (PROTOCOL.md §3 PING/PONG), answered on io threads: a link
  /// pings when idle, a receiver sends keepalives; a peer not heard from in
  /// heartbeat_timeout_ms is reported down (0 disables the check).
  std::uint32_t heartbeat_interval_ms = 1000;
  std::uint32_t heartbeat_timeout_ms = 5000;
  /// A peer down (or never up) this long has its queue given up on and
  /// reported in an undelivered event, checked at each reconnection attempt
  /// (0: keep queuing up to the caller's cap).
  std::uint32_t peer_down_deadline_ms = 0;
  /// Replica-port connection limits (SECURITY.md "Connection limits"). Both
  /// count pre-handshake connections only (accepted, WELCOME not yet sent):
  /// at most max_replica_connections in all and max_connections_per_address
  /// from one remote IP. When a new connection would pass either, the oldest
  /// pre-handshake connection of that group is refused (TOO_MANY_CONNECTIONS)
  /// to make room. Established sessions are not counted here: one per peer
  /// id is kept, a newer one replaces it.
  std::uint32_t max_replica_connections = 1024;
  std::uint32_t max_connections_per_address = 64;
  /// A frame (or handshake) partly read must be complete within this long,
  /// else READ_TIMEOUT (0: no deadline; the handshake deadline still holds).
  std::uint32_t frame_read_timeout_ms = 10000;
  /// PINGs one connection may send per second before TOO_MANY_PINGS (0: any).
  std::uint32_t max_pings_per_second = 100;
  /// Random per process; peers reset their duplicate filter when it changes.
  std::uint64_t incarnation = 0;
  /// Replica connections: `mac` authenticates both ids in the handshake and
  /// every batch of frames (PROTOCOL.md §2a); `seal` also encrypts the
  /// batches; both need the keys below.
  auth_mode auth = auth_mode::none;
  /// auth seal: when a direction's key is ratcheted forward. A protocol
  /// constant (both sides must agree); changed only by tests.
  auth::rekey_policy seal_rekey{};
  /// auth mac/seal: threads verifying signed frames (0: one per core).
  std::uint32_t verify_threads = 0;
  /// Ed25519 private key (32-byte seed) of this replica.
  std::array<std::uint8_t, 32> private_seed{};
  /// Ed25519 public key of every other replica.
  std::vector<std::pair<std::uint32_t, std::array<std::uint8_t, 32>>> public_keys;
};

/// A run of complete data frames from one peer inside a receive chunk.
struct delivery {
  chunk* source = nullptr;
  std::uint32_t offset = 0;
  std::uint32_t length = 0;
  std::uint32_t peer = 0;
  std::uint32_t messages = 0;
  std::int32_t slot = -1;           // peer slot index
  std::uint64_t incarnation = 0;    // sender incarnation it was read under
  std::uint64_t last_id = 0;        // msg id of the run's last frame
};

enum class event_type : std::uint8_t {
  peer_up = 1,
  peer_down = 2,
  drain = 3,
  reject = 4,
  undelivered = 5,
  client_auth = 6,    // a client proved its key: peer = connection id, reason = key (hex); answer allow_client()
  client_closed = 7,  // a client connection with cancellable requests closed: peer = connection id
  epoch_ahead = 8,    // a peer proved a newer configuration epoch: first_id = that epoch
};

struct engine_event {
  event_type type = event_type::peer_up;
  std::uint32_t peer = 0;        // replica id (0 when unknown)
  std::uint16_t code = 0;        // reject_code for reject / peer_down
  std::string reason;            // human-readable detail
  std::string remote;            // remote address for rejects
  // undelivered: messages, bytes, first and last message id given up on.
  std::uint64_t messages = 0, bytes = 0, first_id = 0, last_id = 0;
};

/// Frames queued for one peer: a slice of a shared block (see PROTOCOL.md §3).
struct segment {
  std::shared_ptr<const void> owner;  // keeps data alive until acknowledged
  const std::uint8_t* data = nullptr;
  std::uint32_t length = 0;
  std::uint32_t messages = 0;
  std::uint64_t last_msg_id = 0;
  /// True when data starts at a frame header (false for a payload sent by
  /// reference after its header): lets a partial ACK trim whole frames.
  bool framed = true;
  /// A control frame (PING): not counted in queue depth, not kept for resend.
  bool control = false;
  /// Holds signed frames to sign once their message ids are final
  /// (id_sequence::stamp_and_enqueue).
  bool sign = false;
  /// auth 'seal': sent as part of the ciphertext segment before it; kept in
  /// the queue (counted, resent in clear to be sealed again on the next
  /// connection) but not written itself.
  bool shadow = false;
  /// Signed frames: engine::own_key::generation of the key that signed them
  /// (a link gives up signed frames of a replaced key, peer_link::pull_queue).
  std::uint32_t key_generation = 0;

  /// A control frame of `length` bytes at `data`, kept alive by `owner`.
  static segment control_frame(std::shared_ptr<const void> owner, const std::uint8_t* data, std::size_t length) {
    segment s;
    s.owner = std::move(owner);
    s.data = data;
    s.length = static_cast<std::uint32_t>(length);
    s.framed = false;
    s.control = true;
    return s;
  }
};

constexpr std::uint32_t broadcast_destination = 0xffffffffu;
/// A peer named by its slot (remote peers: a remote id may equal a local
/// one): slot_address | slot index, in delivery::peer, events and as an
/// enqueue() destination.
constexpr std::uint32_t slot_address = 0xc0000000u;
/// An enqueue() destination: every member of the cluster of slot (value &
/// 0xffff), a remote cluster's broadcast.
constexpr std::uint32_t cluster_broadcast = 0xe0000000u;
/// Highest slot index a slot address can carry.
constexpr std::uint32_t max_slot_index = 0xffffu;
/// Data frames in one delivery from a replica connection, at most.
constexpr std::uint32_t max_run_messages = 256;
/// Deliveries from one peer handed to the consumer and not yet released, at
/// most (peer_slot::rx_pending_runs).
constexpr std::uint32_t max_pending_runs = 1024;
/// Marks a client connection id where a replica id could stand: in
/// delivery::peer and as an enqueue() destination. Client ids stay below
/// 2^30 (bit 30 set with this flag is a slot_address).
constexpr std::uint32_t client_flag = 0x80000000u;
constexpr std::uint32_t client_id_mask = 0x3fffffffu;
inline bool is_client_address(std::uint32_t a) noexcept { return (a & slot_address) == client_flag; }
inline bool is_slot_address(std::uint32_t a) noexcept { return (a & slot_address) == slot_address; }

struct peer_stats {
  std::uint32_t id = 0;
  std::uint32_t address = 0;  // peer_slot::address
  std::string cluster;        // "" for this replica's cluster
  bool connected = false;
  std::uint64_t msgs_in = 0, bytes_in = 0, msgs_out = 0, bytes_out = 0;
  std::uint64_t queued_bytes = 0, queued_msgs = 0, unacked_bytes = 0;
  std::uint64_t reconnects = 0, rejects = 0, duplicates = 0;
  std::uint64_t heartbeat_rtt_us = 0;  // last PING round trip, 0 before the first
  std::uint64_t receive_pending_bytes = 0;  // read, handed to the consumer, not yet consumed
};

/// One open client connection (PROTOCOL.md §6).
struct client_stats {
  std::uint32_t id = 0;
  std::string remote;
  std::uint64_t requests = 0, bytes_in = 0;    // complete requests read
  std::uint64_t replies = 0, bytes_out = 0;    // replies queued to it
  std::uint64_t in_flight = 0;                 // requests not answered yet
  std::uint64_t reply_backlog_bytes = 0;       // replies not yet written to its socket
  bool waiting_for_memory = false;             // a request arriving, no receive memory for it yet
  bool paused = false;  // its socket is not read (in-flight cap or reply backlog)
};

struct engine_stats {
  std::uint32_t epoch = 0;
  std::vector<peer_stats> peers;  // the current configuration's
  std::uint64_t rejects_total = 0;
  std::vector<std::uint64_t> rejects_by_code;  // index = reject_code
  std::uint64_t miq_depth = 0;
  std::uint64_t receive_bytes_allocated = 0;         // replica port
  std::uint64_t client_receive_bytes_allocated = 0;  // client port
  std::uint64_t clients_open = 0;
  std::uint64_t clients_accepted = 0;
  std::uint64_t reply_bytes = 0;
  std::uint64_t replies_dropped = 0;
  std::vector<client_stats> clients;
};

/// A connection whose deliveries wait for room in the MIQ.
class miq_waiter {
 public:
  virtual ~miq_waiter() = default;
  /// Consumer thread (engine::pop_delivery); must not block.
  virtual void on_miq_room() = 0;
};

namespace sockets {
class lingering_close;
}
class acceptor;
class client_session;
class inbound_session;
class peer_link;
struct client_key_state;

class engine {
 public:
  /// wake: called from any thread when deliveries or events are ready and the
  /// consumer was not already woken (at most once until begin_drain()).
  engine(engine_options options, std::function<void()> wake);
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;
  ~engine();

  /// Binds the replica port (and the client port), starts io threads and
  /// connects to every peer. On failure nothing is left bound or running
  /// (listen_failure() says which port).
  std::error_code start();
  /// After start() failed to bind: which port ("replica" or "client") and
  /// the address it was to listen on.
  struct listen_failure_info {
    std::string which;
    std::string host;
    std::uint16_t port = 0;
  };
  const listen_failure_info& listen_failure() const noexcept { return listen_failure_; }
  /// Closes every connection and joins the io threads. Idempotent. Not from
  /// an io thread.
  void stop();

  // ---- consumer side (one thread: the JS thread in the addon) ----
  /// Re-arms the wake-up; call before popping.
  void begin_drain() { wake_pending_.store(false, std::memory_order_seq_cst); }
  /// Replica-port and client-port deliveries come from two queues, taken in
  /// turn so neither port can fill the other's slots.
  bool pop_delivery(delivery& out) {
    const bool client_first = (pop_turn_.fetch_add(1, std::memory_order_relaxed) & 1u) != 0;
    if (client_first && client_miq_.try_pop(out)) return true;
    if (miq_.try_pop(out)) {
      // Pairs with the fence in wait_for_miq(): either the waiter's retry sees
      // the room made here, or this sees the waiter.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (miq_waiting_.load(std::memory_order_relaxed) && miq_.size_approx() <= miq_.capacity() / 2) wake_miq_waiters();
      return true;
    }
    return !client_first && client_miq_.try_pop(out);
  }
  /// The consumer is done with a delivery: its frames count as consumed (the
  /// peer gets an ACK for them) and its chunk may be read into again.
  void release(const delivery& d);
  /// True when the MIQ holds deliveries (approximate).
  bool has_deliveries() const { return miq_.size_approx() > 0 || client_miq_.size_approx() > 0; }
  /// Deliveries waiting in the MIQ (approximate).
  std::size_t pending_deliveries() const { return miq_.size_approx() + client_miq_.size_approx(); }
  void take_events(std::vector<engine_event>& out);
  /// Before start(): events wake this function instead of the delivery
  /// wake-up (used when deliveries go to several consumers; see
  /// dispatcher.hpp). Called at most once until the next take_events().
  void set_event_wake(std::function<void()> wake) { event_wake_ = std::move(wake); }

  // ---- producer side ----
  /// Queues frames for one peer id or broadcast_destination. Any thread.
  /// Returns false for an unknown peer id.
  bool enqueue(std::uint32_t destination, const segment& seg);
  /// Bytes queued for a peer (accepted, not yet acknowledged by it).
  std::uint64_t queued_bytes(std::uint32_t peer) const;
  /// Sum over every peer.
  std::uint64_t queued_bytes_total() const;
  /// Ask for a drain event once the peer's queue is below the high-water mark.
  void want_drain(std::uint32_t peer);

  engine_stats stats() const;
  const engine_options& options() const noexcept { return options_; }
  /// Keys for auth mode mac (empty signer otherwise).
  /// This replica's key (auth mac/seal; null with auth none), and which one
  /// it is (0, then 1, 2, ... as reconfigure replaces it). Any thread; the
  /// signer lives as long as the engine.
  struct own_key {
    std::unique_ptr<crypto::ed25519_signer> signer;
    std::uint32_t generation = 0;
  };
  const own_key* key() const noexcept { return key_.load(std::memory_order_acquire); }
  const crypto::ed25519_signer* signer() const noexcept {
    const own_key* k = key();
    return k != nullptr ? k->signer.get() : nullptr;
  }
  /// auth mac/seal: where signed frames are verified (null with auth none).
  verify_pool* verifier_pool() noexcept { return verify_.get(); }
  /// Bound local port (after start); useful with port 0.
  std::uint16_t local_port() const noexcept { return local_port_; }
  /// Bound client port (0 when there is none).
  std::uint16_t client_port() const noexcept { return client_port_; }
  /// Remote address of a client connection ("" once it is gone). Any thread.
  std::string client_address(std::uint32_t id);
  /// The Ed25519 key a client connection proved (PROTOCOL.md §6a); false
  /// when it has none or is gone. Any thread.
  bool client_key(std::uint32_t id, std::array<std::uint8_t, 32>& out);
  /// The newest served connection of a client key (replyTo, push): its id;
  /// 0 when none is open, -1 when its unread replies are over the bound.
  std::int64_t client_connection_of(const std::array<std::uint8_t, 32>& key);
  /// Any thread: may a handshake from `remote` ("ip:port") do key exchange
  /// now (the budget)? False: `why` says so; the caller refuses it RATE_LIMITED.
  bool take_handshake(const std::string& remote, std::string& why);
  /// Any thread: the consumer's answer to a client_auth event.
  void allow_client(std::uint32_t id, bool allow, const std::string& reason);

  // ---- internal: used by sessions, links, acceptor (io threads) ----
  chunk_pool& chunks() { return chunks_; }
  chunk_pool& client_chunks() { return client_chunks_; }
  io_pool& pool() { return pool_; }
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }
  /// The slot an address names (an id of this cluster, or a slot_address),
  /// member or not, or -1.
  int slot_of(std::uint32_t address) const noexcept;
  /// The slot of `id`, a current member of cluster `cluster` (this one or a
  /// remote one), or -1.
  int member_slot(const std::uint8_t* cluster, std::size_t length, std::uint32_t id) const noexcept;
  peer_slot& slot(int index) { return slots_[static_cast<std::size_t>(index)]; }
  /// A remote cluster of the configuration (it has a member now).
  bool knows_cluster(const std::string& cluster) const noexcept;
  /// Slots in use (a slot, once published, stays).
  std::uint32_t slot_count() const noexcept { return slot_count_.load(std::memory_order_acquire); }
  /// The configuration epoch (PROTOCOL.md §2), sent in every handshake.
  std::uint32_t config_epoch() const noexcept { return epoch_.load(std::memory_order_acquire); }
  /// Any thread: a peer (by address) proved it is on `epoch`, newer than
  /// ours: one epoch_ahead event per newer epoch seen.
  void report_epoch_ahead(std::uint32_t address, std::uint32_t epoch, const std::string& remote);
  /// Consumer thread: applies a configuration (PROTOCOL.md §2, API
  /// reconfigure). New peers get a slot and a link; removed peers' links
  /// close and report what was queued for them (undelivered); a peer whose
  /// address or key changed, and every peer when the epoch changes, is
  /// connected again (its queue kept, in order). `slots` gets each peer's
  /// slot index, in m.peers order. False (nothing changed) with `error`:
  /// an epoch lower than the current one, a duplicate peer, no room in the
  /// slot table, a key that does not load.
  bool reconfigure(const membership& m, std::vector<std::int32_t>& slots, std::string& error);
  /// Pushes to the MIQ; false when full (the caller waits: wait_for_miq).
  bool push_delivery(delivery& d);
  /// A session's io thread, after push_delivery() found the MIQ full: `w` is
  /// told (on_miq_room) once the consumer has emptied it to half. The caller
  /// then tries to push once more (room made before this call returned may
  /// not be announced).
  void wait_for_miq(std::weak_ptr<miq_waiter> w);
  void post_event(engine_event ev);
  void count_reject(reject_code code, std::uint32_t peer, const std::string& remote,
                    const std::string& detail);
  void track_session(const std::shared_ptr<inbound_session>& s);
  /// Acceptor's io thread: registers a new replica-port connection as
  /// pre-handshake under the connection limits, refusing the oldest
  /// pre-handshake ones it pushes over them; returns its registration id.
  std::uint64_t admit_inbound(const std::shared_ptr<inbound_session>& s, const std::string& address);
  /// Any thread: a registered connection finished its handshake or is gone.
  void leave_pending(std::uint64_t id);
  void notify();
  /// Any thread: a refused connection's last words. Its socket (with no
  /// operation of the caller's left on it) writes `last_words` (a REJECT
  /// frame), sends FIN and drops what the peer still sends until it closes,
  /// for at most a second (sockets::lingering_close); stop() cuts it short.
  void linger_close(asio::ip::tcp::socket socket, std::vector<std::uint8_t> last_words);
  void forget_client(std::uint32_t id);
  /// A client proved `key`: its shared per-key state, or null when the key
  /// has max_client_key_connections open. release_client_key undoes it.
  std::shared_ptr<client_key_state> claim_client_key(const std::array<std::uint8_t, 32>& key, std::uint32_t session);
  void release_client_key(client_key_state& k, std::uint32_t session);
  std::shared_ptr<client_session> find_client(std::uint32_t id);
  void accept_client(asio::ip::tcp::socket socket);
  void count_replies(std::uint64_t bytes) { reply_bytes_.fetch_add(bytes, std::memory_order_relaxed); }
  /// Client connections holding receive memory for a request in progress
  /// (any thread). begin returns a registration id (never 0).
  std::uint64_t client_partial_begin(const std::weak_ptr<client_session>& s);
  void client_partial_end(std::uint64_t registration);
  /// The client port's receive memory is at its bound and `who` needs some:
  /// the connection whose current request has been arriving longest (its
  /// first byte at least min_age ago; client_session::frame_started) is
  /// refused (TOO_MANY_CONNECTIONS) so its memory comes back. Returns zero
  /// when one was refused, else how long until the oldest other request
  /// reaches min_age (duration::max() when there is none).
  std::chrono::steady_clock::duration evict_oldest_client_partial(const client_session* who,
                                                                  std::chrono::steady_clock::duration min_age);

 private:
  engine_options options_;
  std::atomic<const own_key*> key_{nullptr};
  std::vector<std::unique_ptr<own_key>> keys_owned_;  // config_mu_ (after construction), append-only
  std::function<void()> wake_;
  std::atomic<bool> wake_pending_{false};
  std::function<void()> event_wake_;
  std::atomic<bool> event_wake_pending_{false};
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  bool stopped_ = false;
  std::uint16_t local_port_ = 0;
  std::uint16_t client_port_ = 0;
  listen_failure_info listen_failure_;

  chunk_pool chunks_;         // replica port: even chunk ids
  chunk_pool client_chunks_;  // client port: odd chunk ids
  bounded_queue<delivery> miq_;
  bounded_queue<delivery> client_miq_;
  std::atomic<unsigned> pop_turn_{0};
  // Connections waiting for MIQ room (wait_for_miq), woken by pop_delivery.
  void wake_miq_waiters();
  std::atomic<bool> miq_waiting_{false};
  std::mutex miq_mu_;
  std::vector<std::weak_ptr<miq_waiter>> miq_waiters_;  // miq_mu_
  // The slot table (peer_slot.hpp): slot_capacity_ slots, the first
  // slot_count_ in use; read without a lock by every thread.
  std::uint32_t slot_capacity_ = 0;
  std::unique_ptr<peer_slot[]> slots_;
  std::atomic<std::uint32_t> slot_count_{0};
  std::atomic<std::uint32_t> epoch_{0};
  std::atomic<std::uint32_t> epoch_reported_{0};  // highest epoch_ahead posted
  // reconfigure() and stop(): the links and keys the slots point to.
  std::mutex config_mu_;
  std::vector<std::unique_ptr<crypto::ed25519_verifier>> keys_;  // append-only
  // Closes the slot's inbound session (its peer must handshake again).
  void close_inbound(peer_slot& ps);

  mutable std::mutex events_mu_;
  std::vector<engine_event> events_;
  std::atomic<std::uint64_t> rejects_total_{0};
  std::unique_ptr<std::atomic<std::uint64_t>[]> rejects_by_code_;

  std::mutex sessions_mu_;
  std::vector<std::weak_ptr<inbound_session>> sessions_;
  std::mutex closers_mu_;
  std::vector<std::weak_ptr<sockets::lingering_close>> closers_;  // closers_mu_

  // Pre-handshake replica-port connections (connection limits), by
  // registration id (= accept order) and by remote address.
  struct pending_entry {
    std::weak_ptr<inbound_session> session;
    std::string address;
  };
  std::mutex pending_mu_;
  std::map<std::uint64_t, pending_entry> pending_;
  std::unordered_map<std::string, std::set<std::uint64_t>> pending_by_address_;
  std::uint64_t next_pending_id_ = 0;

  std::mutex clients_mu_;
  std::unordered_map<std::uint32_t, std::weak_ptr<client_session>> clients_;
  std::uint32_t next_client_id_ = 1;  // clients_mu_
  std::map<std::array<std::uint8_t, 32>, std::weak_ptr<client_key_state>> client_keys_;  // clients_mu_
  std::atomic<std::uint64_t> clients_accepted_{0}, reply_bytes_{0}, replies_dropped_{0};

  handshake_budget handshake_budget_;
  // auth mac/seal: signed frames are verified here, off the io threads.
  // Stopped by stop() before the io threads go; destroyed before the chunk
  // pools its queued jobs hold references into.
  std::unique_ptr<verify_pool> verify_;

  std::mutex partial_mu_;
  std::map<std::uint64_t, std::weak_ptr<client_session>> client_partials_;
  std::uint64_t next_partial_ = 1;

  // Destroyed first (declared last): pending handlers may still touch the
  // members above while the io_contexts are torn down.
  io_pool pool_;
  std::shared_ptr<acceptor> acceptor_;
  std::shared_ptr<acceptor> client_acceptor_;
  // config_mu_: the link of each slot (by index; null: not a member), and
  // links replaced or retired by reconfigure(), kept for the engine's life
  // (a sender may have loaded one just before it was replaced).
  std::vector<std::shared_ptr<peer_link>> links_;
  std::vector<std::shared_ptr<peer_link>> retired_links_;
};

}  // namespace nexres
