// An inbound replica connection: handshake, then frames read into receive
// chunks, parsed in place and pushed to the MIQ as runs; ACK frames back.
#pragma once

#include "auth.hpp"
#include "sealed_stream.hpp"
#include "chunk_pool.hpp"
#include "receive_buffer.hpp"
#include "engine.hpp"
#include "protocol.hpp"

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nexres {

/// engine::stop() waits on it (bounded) while inbound sessions write the ACK
/// of everything the consumer has finished. Any thread.
class ack_flush_latch {
 public:
  explicit ack_flush_latch(std::size_t count) : left_(count) {}
  void count_down() {
    std::lock_guard<std::mutex> lock(mu_);
    if (left_ > 0 && --left_ == 0) cv_.notify_all();
  }
  /// False when the deadline passed first.
  bool wait_until(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [this] { return left_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t left_;
};

class inbound_session : public chunk_owner,
                        public miq_waiter,
                        public verify_client,
                        public std::enable_shared_from_this<inbound_session> {
 public:
  inbound_session(engine& eng, asio::ip::tcp::socket socket);
  ~inbound_session() override;

  /// Any thread: starts the handshake on the socket's io thread.
  void start_on_own_thread();
  /// Any thread: closes the socket on its io thread.
  void close_async();
  /// Any thread (engine::stop): writes the ACK of everything the consumer
  /// has finished, then counts `latch` down (also when it cannot: closed).
  void flush_acks_async(std::shared_ptr<ack_flush_latch> latch);
  /// Any thread (pool unref): a chunk of ours was released; resume if paused.
  void on_chunk_released() override;
  /// Consumer thread: the MIQ has room again; resume if paused.
  void on_miq_room() override;
  /// Any thread: send an ACK for what the consumer has finished.
  void request_ack();
  /// Acceptor thread, before start: its id in the engine's pre-handshake
  /// registry (connection limits; 0: not registered).
  void set_pending_id(std::uint64_t id) noexcept { pending_id_ = id; }
  /// Any thread: refuse it on its io thread unless it is established by then
  /// (connection limits).
  void refuse_async(reject_code code, std::string detail);
  /// Verification pool thread: a signed frame of ours was checked.
  void verified(std::uint64_t ticket, bool ok) override;

  /// Signed frames of one connection in the verification pool at most; a
  /// peer with this many waiting is not read until answers come back.
  static constexpr std::uint64_t verify_window = 128;

 private:
  void start();
  void read_hello();
  void on_hello(std::size_t n);
  void on_hello_body();
  std::uint8_t* build_welcome(auth_mode mode, std::size_t ext);
  void established();
  void start_auth(std::uint32_t claimed, int slot);
  void on_auth_header(std::uint32_t claimed, int slot);
  void on_auth_frame(std::uint32_t claimed, int slot);
  void on_peer_reject(std::uint32_t claimed);
  // auth mac: appends the SEAL of the frame(s) in buf[from, end) to buf.
  bool seal_into(std::vector<std::uint8_t>& buf, std::size_t from);
  void do_read();
  void on_read(std::size_t n);
  void resume();
  void wait_for_miq();
  bool parse();
  bool flush_ready();
  void send_ack();
  void write_reject();
  void arm_heartbeat();
  void heartbeat_tick();
  void on_ack_request();
  void check_acks_flushed();
  void refuse(reject_code code, const std::string& detail, std::uint64_t msg_id = 0);
  bool same_epoch(int slot);
  void close();
  void on_verified();
  // Hostile-input limits (SECURITY.md "Connection limits").
  void leave_pre_handshake();
  void note_partial(bool progressed);
  void arm_read_deadline();
  void read_deadline_tick();
  bool ping_allowed();

  engine& engine_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  asio::steady_timer hb_timer_;
  std::chrono::steady_clock::time_point last_read_ = std::chrono::steady_clock::now();
  bool read_since_tick_ = false;
  bool wrote_since_tick_ = false;
  bool pong_pending_ = false;
  bool reject_pending_ = false;  // a REJECT waits for the ACK write in flight
  std::uint64_t pong_id_ = 0;
  std::string remote_;
  std::array<std::uint8_t, hello_fixed_bytes> hello_{};
  std::vector<std::uint8_t> hello_body_;
  std::uint32_t peer_id_ = 0;
  std::uint32_t address_ = 0;  // peer_slot::address of peer_id_ (deliveries, events)
  int slot_ = -1;
  std::uint32_t hello_epoch_ = 0;    // the HELLO's configuration epoch
  std::uint32_t welcome_epoch_ = 0;  // ours, as the WELCOME carried it (auth mac)
  std::string peer_cluster_;         // the HELLO's cluster id
  const crypto::ed25519_verifier* key_ = nullptr;  // the claimed peer's (auth mac), owned by the engine
  std::uint64_t generation_ = 0;
  std::uint64_t incarnation_ = 0;
  bool open_ = true;
  bool reading_ = false;
  bool paused_ = false;
  bool waiting_miq_ = false;  // registered with engine::wait_for_miq
  // Limits (io thread). Read deadline: a frame (or the handshake) begun at
  // partial_since_ must be complete frame_read_timeout_ms later; one timer,
  // armed when a partial frame appears and re-armed only when it fires.
  asio::steady_timer read_timer_;
  std::chrono::steady_clock::time_point partial_since_{};
  bool partial_ = false;
  bool read_timer_armed_ = false;
  bool handshake_done_ = false;  // frames are read (do_read reached)
  std::uint64_t pending_id_ = 0;
  std::chrono::steady_clock::time_point ping_window_{};
  std::uint32_t pings_in_window_ = 0;

  receive_buffer rx_;
  struct ready_run {
    delivery run;
    std::uint64_t last_id;  // msg id of the run's last frame
    std::uint64_t ticket = 0;  // its last signed frame's verification (0: none)
  };
  std::vector<ready_run> ready_;  // parsed runs not yet pushed (MIQ full, or unverified)
  // Signed frames (io thread): tickets handed to the verification pool in
  // parse order; a run goes on only once every ticket up to its own checked.
  std::uint64_t next_ticket_ = 1;
  std::uint64_t verified_upto_ = 0;
  std::vector<std::uint64_t> verified_early_;  // checked, some earlier one not yet
  bool verify_stalled_ = false;  // verify_window full: parsing and reading wait
  bool unparsed_ = false;        // complete frames left in the buffer by a stall
  // Answers from the pool threads, handed over under verify_mu_.
  std::mutex verify_mu_;
  std::vector<std::pair<std::uint64_t, bool>> verify_results_;  // verify_mu_
  bool verify_posted_ = false;                                  // verify_mu_
  std::uint64_t last_seen_id_ = 0;  // io thread copy of the filter state

  // ACK frames: one in flight at a time; the latest id wins.
  std::array<std::uint8_t, frame_header_bytes> ack_buf_{};
  std::vector<std::uint8_t> reject_buf_;
  std::vector<std::uint8_t> welcome_buf_;  // apart from reject_buf_: a refusal may come during its write
  bool ack_writing_ = false;
  std::uint64_t ack_pending_ = 0;
  std::uint64_t ack_sent_ = 0;
  std::uint64_t ack_in_write_ = 0;  // id of the ACK in the write in flight (0: a PONG)
  std::uint64_t ack_written_ = 0;   // highest ACK id whose write completed
  std::shared_ptr<ack_flush_latch> flush_latch_;  // engine stop: ACKs being flushed
  std::vector<std::uint8_t> ack_out_;  // auth mac: the control frame and its SEAL

  // auth mac (io thread): the peer proves its id after our WELCOME; frames
  // then count only once the SEAL after them checks.
  const bool mac_;   // auth mac or seal: sealed batches
  const bool seal_;  // auth seal: batches encrypted, decrypted in place as parsed
  std::unique_ptr<crypto::x25519_keypair> eph_;
  std::vector<std::uint8_t> transcript_;
  std::array<std::uint8_t, auth::auth_frame_bytes> auth_in_{};
  std::vector<std::uint8_t> peer_reject_;  // a REJECT (and its SEAL) in place of the AUTH frame
  std::unique_ptr<auth::sealer> tx_;
  // Parsed runs (and a PING's answer) wait here for their batch's SEAL.
  std::unique_ptr<sealed_receiver<ready_run>> sealed_rx_;
};

}  // namespace nexres
