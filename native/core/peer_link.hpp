// peer_link: the outbound link to one peer. It owns the peer's MOQ,
// connects (and reconnects with backoff), performs the handshake and runs a
// writer that drains everything queued into one gather write. Frames stay
// queued until the peer acknowledges them, so nothing is lost across a
// reconnect (the receiver drops resent duplicates by message id).
#pragma once

#include "auth.hpp"
#include "engine.hpp"
#include "mpsc_queue.hpp"
#include "protocol.hpp"
#include "sealed_stream.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace nexres {

class peer_link : public std::enable_shared_from_this<peer_link> {
 public:
  /// `slot`: the peer's slot in the engine (its cluster, key, address).
  peer_link(engine& eng, asio::io_context& io, replica_address peer, int slot);

  /// Any thread: begin connecting.
  void start();
  /// Any thread: close for good.
  void close_async();
  /// Config thread (engine::reconfigure): the peer left the configuration.
  /// The link closes for good and what was queued (and what is enqueued
  /// after, by a sender that still held the link) is reported undelivered.
  void retire(std::string reason);
  /// Config thread: connect again (to `peer`, its address possibly new),
  /// at once, with a new handshake (new epoch or key); the queue is kept.
  void restart(replica_address peer, std::string reason);
  /// Config thread: `peer` is not the address this link dials.
  bool address_differs(const replica_address& peer) const;
  /// Any thread: queue a slice of frames.
  void enqueue(const segment& seg);
  /// Any thread: emit a drain event once the queue is below the high-water mark.
  void want_drain();

  std::uint64_t queued_bytes() const noexcept { return queued_bytes_.load(std::memory_order_acquire); }
  void fill_stats(peer_stats& s) const;

 private:
  enum class state { idle, connecting, handshaking, up, backoff, closed };

  void on_wakeup();
  void do_connect();
  void on_connected();
  void read_welcome();
  void on_welcome_header();
  void on_up();
  void confirm();
  // auth mac: refuses the peer's WELCOME with a sealed REJECT, then fails.
  void refuse_welcome(reject_code code, const std::string& reason, const std::vector<std::uint8_t>& t,
                      const std::uint8_t* eph_r);
  void do_write();
  void read_control();
  void on_control();
  void on_acked(std::uint64_t id);
  void fail(reject_code code, const std::string& reason);
  void heartbeat_tick();
  void schedule_reconnect();
  void close();
  void pull_queue();
  // auth mac
  bool on_welcome_auth(const hello_message& w);
  void seal_pending();
  void on_sealed_control(const frame_header& h);
  void on_pong(std::uint64_t sent_us);

  engine& engine_;
  asio::io_context& io_;
  replica_address peer_;  // io thread (restart() changes it there)
  mutable std::mutex peer_mu_;
  replica_address configured_;  // peer_mu_: what reconfigure() last gave
  const int slot_;
  const std::uint32_t address_;  // peer_slot::address: events name the peer by it
  const std::string cluster_;    // the peer's cluster
  bool retired_ = false;         // io thread
  std::uint32_t hello_epoch_ = 0;  // the epoch our last HELLO carried
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  asio::steady_timer hb_timer_;
  std::chrono::steady_clock::time_point last_heard_{};
  std::shared_ptr<std::array<std::uint8_t, frame_header_bytes>> ping_buf_;
  asio::ip::tcp::resolver resolver_;
  state state_ = state::idle;
  std::uint32_t backoff_ms_;
  std::minstd_rand rng_;

  mpsc_queue<segment> moq_;
  std::atomic<bool> wake_scheduled_{false};
  std::atomic<bool> drain_wanted_{false};
  // io thread only: popped from the MOQ, not yet written / written, not acked.
  std::deque<segment> pending_;
  std::deque<segment> unacked_;
  std::size_t front_offset_ = 0;  // bytes of pending_.front() already written
  bool writing_ = false;          // waiting for the socket to be writable
  std::uint64_t epoch_ = 0;  // bumped when a connection fails
  bool ever_up_ = false;
  // State up and the peer has accepted us (auth mac: it sent something sealed
  // after our AUTH frame; auth none: at once). Only then is the link reported
  // up, and the reconnect backoff reset.
  bool confirmed_ = false;
  std::chrono::steady_clock::time_point down_since_ = std::chrono::steady_clock::now();
  void give_up_queue(const char* reason);
  void give_up(std::deque<segment>& q, const char* reason);
  void requeue_unacked();
  void drop_stale_signed();
  std::deque<segment> stale_signed_;  // io thread: scratch of pull_queue
  // A STALE_EPOCH refusal: the refuser's epoch (the REJECT's msg_id); a
  // newer one than ours is reported (engine::report_epoch_ahead).
  void on_refused(const frame_header& h, const reject_body& r);

  std::vector<std::uint8_t> hello_out_;
  std::array<std::uint8_t, hello_fixed_bytes> hello_in_{};
  std::vector<std::uint8_t> body_in_;
  std::array<std::uint8_t, frame_header_bytes> ctrl_{};

  // auth mac (io thread): handshake state, then one sealer per direction.
  bool mac_ = false;
  std::array<std::uint8_t, auth::nonce_bytes> nonce_{};
  std::unique_ptr<crypto::x25519_keypair> eph_;
  std::unique_ptr<sealed_sender<segment>> tx_;  // auth mac: batches and their SEALs
  std::unique_ptr<auth::opener> rx_;
  // auth mac/seal: batches sealed ahead of the socket at a time (each about
  // auth::seal_batch_bytes).
  static constexpr std::size_t seal_ahead_batches = 2;
  std::size_t sealed_count_ = 0;  // segments at the front of pending_ sealed (writable)
  std::size_t unsealed_bytes_ = 0;
  std::array<std::uint8_t, auth::seal_frame_bytes> seal_in_{};

  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> queued_bytes_{0}, queued_msgs_{0}, unacked_bytes_{0};
  std::atomic<std::uint64_t> msgs_out_{0}, bytes_out_{0}, reconnects_{0}, rtt_us_{0};
};

}  // namespace nexres
