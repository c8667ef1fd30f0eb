// A user client's connection on the client port (PROTOCOL.md §6): a short
// handshake, then pipelined REQUEST frames read into receive chunks and
// delivered through the MIQ like replica messages; REPLY/ERROR frames come
// back through this session's queue and the same gather writer.
#pragma once

#include "engine.hpp"
#include "protocol.hpp"
#include "receive_buffer.hpp"
#include "sealed_stream.hpp"

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace nexres {

class client_session;

/// What the connections of one client key share (PROTOCOL.md §6a): how many
/// are open (engine clients_mu_), the requests they have unanswered, and who
/// waits for that count to fall under max_client_key_inflight.
struct client_key_state {
  std::array<std::uint8_t, 32> key{};
  std::uint32_t connections = 0;  // engine clients_mu_
  std::vector<std::uint32_t> sessions;  // engine clients_mu_: its connection ids, oldest first
  std::atomic<std::int64_t> inflight{0};
  std::atomic<bool> has_waiters{false};
  std::mutex mu;
  std::vector<std::weak_ptr<client_session>> waiters;  // mu
};

class client_session : public chunk_owner, public std::enable_shared_from_this<client_session> {
 public:
  client_session(engine& eng, asio::ip::tcp::socket socket, std::uint32_t id);
  ~client_session() override;

  /// Any thread: starts the handshake on the socket's io thread.
  void start_on_own_thread();
  /// Any thread: closes the connection.
  void close_async();
  /// Any thread: refuses the connection (TOO_MANY_CONNECTIONS) to give its
  /// receive memory to others (engine::evict_oldest_client_partial).
  void evict_async();
  /// Any thread (pool unref): a chunk came back; resume reading if paused.
  void on_chunk_released() override;
  /// Any thread: the client pool has memory again after refusing us.
  bool on_pool_memory() override;
  /// Any thread: paused until receive memory comes back.
  bool waiting_for_memory() const noexcept { return waiting_chunk_.load(std::memory_order_relaxed); }
  /// Any thread: when the request now arriving began to arrive (time spent
  /// waiting for receive memory does not count).
  std::chrono::steady_clock::time_point frame_started() const noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(frame_started_.load(std::memory_order_relaxed)));
  }
  /// Any thread: queues reply frames; `seg.messages` replies answer as many
  /// requests.
  void enqueue(const segment& seg);

  /// Any thread: the consumer allowed (or refused) this client's key.
  void on_allowed(bool allow, const std::string& reason);
  /// Any thread: the key this connection proved; false without one.
  bool key(std::array<std::uint8_t, 32>& out) const;
  /// Any thread: the key's in-flight count fell under its bound.
  void resume_async();
  /// Any thread: replies the client is not reading pile up (replyTo/push refused).
  bool backlogged() const noexcept { return reply_backlog_.load(std::memory_order_relaxed); }
  /// Any thread: a keyed client past its handshake (and allowClient).
  bool served() const noexcept { return served_.load(std::memory_order_acquire); }

  std::uint32_t id() const noexcept { return id_; }
  /// Any thread.
  void fill_stats(client_stats& out);
  const std::string& remote() const noexcept { return remote_; }

 private:
  void start();
  void on_hello();
  void arm_idle_timer();
  void do_read();
  void read_ready();
  void on_read(std::size_t n);
  bool parse();
  bool inflight_full() const;
  bool request_waiting() const;
  bool flush_ready();
  void resume();
  void pause_with_retry();
  bool take_receive_memory();
  bool wake_if_waiting();
  void track_partial();
  enum class write_state { done, wait, failed };
  write_state drain_locked();  // holds write_mu_
  void wait_writable();        // io thread
  void refuse(reject_code code, const std::string& detail);
  void close();
  // PROTOCOL.md §6: the CLIENT_WELCOME, with the §6a key exchange when the
  // client named a key (client_auth.cpp).
  void welcome(std::size_t cid_len, auth_mode mode);
  void read_auth();
  void on_auth();
  void serve();
  bool key_over_limit() const noexcept;
  bool wait_for_key();
  void release_key_inflight(std::int64_t n);

  engine& engine_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;       // handshake deadline, then idle checks
  asio::steady_timer retry_;       // MIQ full / pool bound
  std::string remote_;
  const std::uint32_t id_;
  bool open_ = true;
  bool welcomed_ = false;
  bool reading_ = false;
  bool paused_ = false;
  std::uint64_t frames_since_tick_ = 0;

  std::array<std::uint8_t, hello_fixed_bytes> hello_{};
  std::vector<std::uint8_t> hello_body_;
  std::vector<std::uint8_t> out_;  // WELCOME / REJECT bytes

  // §6a, a client with a key: the handshake's state, then the sealed streams.
  std::unique_ptr<crypto::x25519_keypair> eph_;
  std::vector<std::uint8_t> transcript_;
  std::array<std::uint8_t, auth::auth_frame_bytes> auth_frame_{};
  std::array<std::uint8_t, 32> client_key_{};
  std::atomic<bool> keyed_{false};  // client_key_ is set
  bool seal_ = false;       // §6b: batches both ways encrypted
  bool anonymous_ = false;  // §6b without a key: no AUTH signature, no key
  std::atomic<bool> served_{false};  // keyed and accepted
  bool awaiting_allow_ = false;
  std::unique_ptr<sealed_receiver<delivery>> rx_seal_;  // io thread
  std::int64_t held_requests_ = 0;  // requests in batches not yet sealed (io thread)
  std::shared_ptr<client_key_state> key_state_;
  bool key_blocked_ = false;  // paused at a batch start: the key is at its bound
  bool delivered_ = false;    // a request went to the consumer (client_closed event)

  receive_buffer rx_;
  // Registered with the engine while a request is arriving (0: not).
  std::uint64_t partial_registration_ = 0;
  std::uint64_t frames_read_ = 0;     // complete requests parsed, ever
  std::uint64_t frames_at_start_ = 0;  // frames_read_ when the current one began
  std::atomic<std::chrono::steady_clock::rep> frame_started_{0};
  std::vector<delivery> ready_;
  // Requests delivered and not yet answered (replies arrive on any thread).
  std::atomic<std::int64_t> inflight_{0};
  std::atomic<bool> inflight_paused_{false};
  // Paused for receive memory: only then do releases wake us (a post per
  // release would cost every request an io-thread wake-up).
  std::atomic<bool> waiting_chunk_{false};
  std::atomic<bool> wake_posted_{false};  // a resume for it is on its way
  std::atomic<std::uint64_t> requests_{0}, bytes_in_{0}, replies_{0}, bytes_out_{0};

  // Writer. Replies are written by whichever thread brings them when the
  // writer is idle (the JS thread, saving an io-thread wake-up on the request
  // path); the io thread takes over once the socket is full. write_mu_ also
  // keeps the descriptor from being closed during such a write.
  std::mutex write_mu_;
  std::deque<segment> pending_;    // write_mu_
  std::size_t front_offset_ = 0;   // write_mu_
  bool waiting_writable_ = false;  // write_mu_
  bool write_closed_ = false;      // write_mu_
  std::size_t pending_bytes_ = 0;  // write_mu_: reply bytes not yet written
  // Replies the client is not reading pile up: stop reading its requests
  // until they drain (a client must read what it asked for).
  std::atomic<bool> reply_backlog_{false};
  int fd_ = -1;
  std::unique_ptr<sealed_sender<segment>> tx_;  // write_mu_: §6a replies sealed
  std::size_t sealed_count_ = 0;                 // write_mu_: sealed segments of pending_
};

}  // namespace nexres
