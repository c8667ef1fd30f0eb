// inbound_session: a replica connection accepted on the replica port. Here:
// its lifecycle, frames read into receive chunks and parsed in place, runs
// pushed to the MIQ, refusals and the hostile-input limits. The handshake is
// in inbound_handshake.cpp, ACK/PONG/heartbeats in inbound_control.cpp.
#include "inbound_session.hpp"

#include "engine.hpp"
#include "peer_slot.hpp"
#include "sockets.hpp"

#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace nexres {

namespace {
constexpr std::chrono::milliseconds retry_delay{2};
}  // namespace

inbound_session::inbound_session(engine& eng, asio::ip::tcp::socket socket)
    : engine_(eng),
      socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      hb_timer_(socket_.get_executor()),
      read_timer_(socket_.get_executor()),
      rx_(eng.chunks(), eng.options().max_chunks_per_connection),
      mac_(eng.options().auth != auth_mode::none),
      seal_(eng.options().auth == auth_mode::seal) {
  std::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  remote_ = ec ? std::string("unknown") : ep.address().to_string() + ":" + std::to_string(ep.port());
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  if (eng.options().receive_buffer_bytes > 0)
    socket_.set_option(asio::socket_base::receive_buffer_size(static_cast<int>(eng.options().receive_buffer_bytes)), ec);
}

inbound_session::~inbound_session() {
  engine_.leave_pending(pending_id_);
  for (auto& r : ready_) engine_.chunks().unref(r.run.source);
  ready_.clear();
  if (sealed_rx_) sealed_rx_->drop([&](const ready_run& r) { engine_.chunks().unref(r.run.source); });
  rx_.release();
}

void inbound_session::start_on_own_thread() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->start(); });
}

// io thread of the socket: handshake deadline, then read the HELLO.
void inbound_session::start() {
  auto self = shared_from_this();
  timer_.expires_after(std::chrono::milliseconds(engine_.options().handshake_timeout_ms));
  timer_.async_wait([self](const std::error_code& ec) {
    if (ec || !self->open_ || self->peer_id_ != 0) return;
    self->refuse(reject_code::handshake_timeout, "no handshake within the deadline");
  });
  if (engine_.options().frame_read_timeout_ms == 0) return read_hello();
  // Read deadline (slowloris): the handshake's clock starts at its first byte.
  socket_.async_wait(asio::socket_base::wait_read, [self](const std::error_code& ec) {
    if (ec == asio::error::operation_aborted || !self->open_) return;
    if (ec) return self->close();
    self->partial_ = true;
    self->partial_since_ = std::chrono::steady_clock::now();
    self->arm_read_deadline();
    self->read_hello();
  });
}

void inbound_session::close_async() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->close(); });
}

// Engine stop, before the sockets close: an ACK the consumer has earned but
// that is not on the wire yet (queued behind a write in flight, or not
// requested yet) would be lost with the connection, and its sender would
// report those messages as unacknowledged although they were handled.
void inbound_session::flush_acks_async(std::shared_ptr<ack_flush_latch> latch) {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self, latch = std::move(latch)]() mutable {
    self->flush_latch_ = std::move(latch);
    self->on_ack_request();
    self->check_acks_flushed();
  });
}

// io thread: counts the stop latch down once the latest ACK is written (or
// can no longer be).
void inbound_session::check_acks_flushed() {
  if (!flush_latch_) return;
  if (open_ && slot_ >= 0 && ack_written_ < ack_pending_) return;
  flush_latch_->count_down();
  flush_latch_.reset();
}

void inbound_session::on_chunk_released() {
  rx_.on_chunk_released();
  std::weak_ptr<inbound_session> weak = weak_from_this();
  asio::post(socket_.get_executor(), [weak] {
    if (auto self = weak.lock()) self->resume();
  });
}

void inbound_session::do_read() {
  if (!open_ || reading_ || verify_stalled_) return;
  if (unparsed_) {
    // Frames a verification stall left in the buffer go first: the peer may
    // have sent nothing since.
    unparsed_ = false;
    return on_read(0);
  }
  if (!handshake_done_) leave_pre_handshake();
  if (!rx_.ensure_space(weak_from_this())) {
    // auth mac: our receive buffers full of runs waiting for their SEAL while
    // the consumer holds nothing of this peer's: no chunk will come back, the
    // SEAL can never be read. A sender that batches more than we can hold
    // (or is Byzantine) is refused rather than left stalled.
    if (mac_ && sealed_rx_ && sealed_rx_->holding() && slot_ >= 0 &&
        engine_.slot(slot_).rx_pending_bytes.load(std::memory_order_acquire) == 0 && ready_.empty()) {
      refuse(reject_code::bad_mac, "a batch bigger than this replica's receive buffers (maxChunksPerConnection x receiveChunkBytes)");
      return;
    }
    // Wait for a chunk of ours to come back; also retry on a timer in case the
    // pool-wide bound (not ours) is what stopped us.
    paused_ = true;
    auto self = shared_from_this();
    timer_.expires_after(retry_delay * 5);
    timer_.async_wait([self](const std::error_code& ec) {
      if (!ec) self->resume();
    });
    return;
  }
  reading_ = true;
  auto self = shared_from_this();
  socket_.async_read_some(
      asio::buffer(rx_.current->data() + rx_.filled, rx_.current->capacity - rx_.filled),
      [self](const std::error_code& ec, std::size_t n) {
        self->reading_ = false;
        if (ec) return self->close();
        self->on_read(n);
      });
}

void inbound_session::on_read(std::size_t n) {
  if (!open_) return;
  read_since_tick_ = true;
  const std::size_t parsed_before = rx_.parsed;
  rx_.filled += n;
  if (!parse()) {
    // The peer was refused; frames it sent before the bad one still count.
    flush_ready();
    return;
  }
  note_partial(rx_.parsed != parsed_before);
  if (!flush_ready()) return wait_for_miq();
  do_read();
}

// io thread, paused: what is parsed goes to the MIQ first, then reading
// resumes (or waits again for MIQ room, or for a chunk).
void inbound_session::resume() {
  if (!paused_ || !open_) return;
  paused_ = false;
  if (flush_ready()) do_read();
  else wait_for_miq();
}

// io thread, flush_ready() found the MIQ full: stop reading this socket until
// the consumer makes room. The consumer wakes us (engine::pop_delivery); a
// chunk release or a timer does not have to come: with every delivery of
// ours consumed and our last chunk still the one we read into, none will.
void inbound_session::wait_for_miq() {
  if (!open_) return;  // superseded or refused meanwhile
  paused_ = true;
  if (waiting_miq_) return;
  waiting_miq_ = true;
  engine_.wait_for_miq(weak_from_this());
  // Room made before we were registered is not announced: look once more.
  resume();
}

void inbound_session::on_miq_room() {
  std::weak_ptr<inbound_session> weak = weak_from_this();
  asio::post(socket_.get_executor(), [weak] {
    if (auto self = weak.lock()) {
      self->waiting_miq_ = false;
      self->resume();
    }
  });
}

// io thread. Walks complete frames in [rx_.parsed, rx_.filled), checking each
// header before its body is trusted; runs of new data frames become
// deliveries. False when the peer was refused.
bool inbound_session::parse() {
  const auto& opt = engine_.options();
  std::uint8_t* base = rx_.current->data();
  std::size_t run_start = rx_.parsed;
  std::uint32_t run_msgs = 0;
  std::uint64_t run_last = 0;
  // auth mac: bytes [mac_from, parsed) are parsed and not yet fed to the MAC.
  std::size_t mac_from = rx_.parsed;
  // auth seal: what has arrived of the batch in progress is decrypted in
  // place at once (one call per read, not one per frame). False: `upto`
  // passes the batch's end (a frame that crosses it).
  auto plain = [&](std::size_t upto) -> bool {
    if (!seal_) return true;
    if (!rx_.decrypt_arrived(sealed_rx_->cipher_left(), [this](std::uint8_t* p, std::size_t n) {
          return sealed_rx_->decrypt(p, n) == sealed_receiver<ready_run>::fed::ok;
        }))
      return false;
    return upto <= rx_.plain_end() || sealed_rx_->cipher_left() > 0;
  };
  std::uint64_t run_ticket = 0;
  auto cut = [&](std::size_t end) {
    if (run_msgs > 0) {
      rx_.current->refs.fetch_add(1, std::memory_order_relaxed);
      delivery d{rx_.current, static_cast<std::uint32_t>(run_start), static_cast<std::uint32_t>(end - run_start),
                 address_, run_msgs, slot_, incarnation_, run_last};
      // auth mac: held until the SEAL after them checks.
      if (mac_) sealed_rx_->hold(ready_run{d, run_last, run_ticket});
      else ready_.push_back(ready_run{d, run_last, run_ticket});
    }
    run_msgs = 0;
    run_ticket = 0;
  };
  auto garbled = [&] {
    cut(rx_.parsed);
    refuse(reject_code::bad_mac, "a batch that does not decrypt to frames (altered, replayed, reordered or cut ciphertext)");
    return false;
  };
  while (rx_.filled - rx_.parsed >= frame_header_bytes) {
    if (seal_ && !sealed_rx_->in_batch()) {
      // The next batch's SEALED header, in clear: its sequence number and
      // length (the tag covers it).
      const auto r = sealed_rx_->begin(base + rx_.parsed);
      if (r != sealed_receiver<ready_run>::fed::ok) {
        cut(rx_.parsed);
        refuse(reject_code::bad_mac, sealed_receiver<ready_run>::refusal(r));
        return false;
      }
      rx_.parsed += frame_header_bytes;
      rx_.decrypted = run_start = mac_from = rx_.parsed;
      continue;
    }
    if (!plain(rx_.parsed + frame_header_bytes)) return garbled();
    const frame_header h = decode_header(base + rx_.parsed);
    // Every frame an honest peer encrypts names it: this one did not
    // decrypt to a frame (altered, replayed, reordered or cut ciphertext).
    if (seal_ && (h.sender != peer_id_ || h.reserved != 0 ||
                  (h.kind != frame_kind::data && h.kind != frame_kind::ping && h.kind != frame_kind::seal)))
      return garbled();
    if (h.length > opt.max_frame_bytes) {
      cut(rx_.parsed);
      refuse(reject_code::frame_too_large, "frame of " + std::to_string(h.length) +
                                               " bytes exceeds maxFrameBytes " +
                                               std::to_string(opt.max_frame_bytes));
      return false;
    }
    if (h.kind == frame_kind::ping && h.length == 0 && h.reserved == 0 && h.sender == peer_id_) {
      if (!ping_allowed()) {
        cut(rx_.parsed);
        refuse(reject_code::too_many_pings, "more than maxPingsPerSecond (" +
                                                std::to_string(opt.max_pings_per_second) + ") PINGs in one second");
        return false;
      }
      // Answered here on the io thread, whatever the application is doing.
      cut(rx_.parsed);
      rx_.parsed += frame_header_bytes;
      run_start = rx_.parsed;
      if (mac_) {
        sealed_rx_->defer_pong(h.msg_id);  // answered once its batch checks
        continue;
      }
      pong_id_ = h.msg_id;
      pong_pending_ = true;
      send_ack();
      continue;
    }
    if (mac_ && h.kind == frame_kind::seal) {
      if (h.length != auth::tag_bytes) {
        cut(rx_.parsed);
        refuse(reject_code::bad_frame, "SEAL frame of the wrong length");
        return false;
      }
      if (rx_.filled - rx_.parsed < auth::seal_frame_bytes) break;  // the tag is on its way
      cut(rx_.parsed);
      std::optional<std::uint64_t> pong;
      // The batch is authentic, or nothing it carried goes on.
      if ((!seal_ && sealed_rx_->feed(base + mac_from, rx_.parsed - mac_from) != sealed_receiver<ready_run>::fed::ok) ||
          !sealed_rx_->open(h, base + rx_.parsed + frame_header_bytes, ready_, pong)) {
        refuse(reject_code::bad_mac, "a batch failed its MAC check (forged, altered, replayed or reordered frames)");
        return false;
      }
      rx_.parsed += auth::seal_frame_bytes;
      rx_.decrypted = rx_.parsed;
      mac_from = rx_.parsed;
      run_start = rx_.parsed;
      if (pong) {
        pong_id_ = *pong;
        pong_pending_ = true;
        send_ack();
      }
      continue;
    }
    if (h.kind != frame_kind::data || h.reserved != 0) {
      cut(rx_.parsed);
      refuse(reject_code::bad_frame, "unexpected frame kind " + std::to_string(static_cast<int>(h.kind)));
      return false;
    }
    if (h.sender != peer_id_) {
      cut(rx_.parsed);
      refuse(reject_code::bad_sender, "frame names sender " + std::to_string(h.sender) +
                                          " on the connection of replica " + std::to_string(peer_id_));
      return false;
    }
    const std::size_t total = frame_header_bytes + h.length;
    if (!plain(rx_.parsed + total)) return garbled();
    if (rx_.filled - rx_.parsed < total) break;
    if ((h.flags & auth::flag_signed) != 0 && h.msg_id > last_seen_id_) {
      // Handlers only see verified signatures. What costs nothing is checked
      // here (a key, the trailer, the connection's incarnation); the
      // signature itself in the verification pool, off this io thread, and
      // the frame's run waits for the answer. A peer with verify_window
      // frames there is not parsed (nor read) further until answers come.
      const crypto::ed25519_verifier* v = key_;
      verify_pool* pool = engine_.verifier_pool();
      if (v == nullptr || pool == nullptr || h.length < auth::signed_trailer_bytes ||
          load_u64(base + rx_.parsed + frame_header_bytes + h.length - auth::signed_trailer_bytes) != incarnation_) {
        cut(rx_.parsed);
        refuse(reject_code::bad_signature, v == nullptr ? "a signed frame, but no key to check it (auth none)"
                                                        : "a signed frame whose signature does not check");
        return false;
      }
      if (next_ticket_ - 1 - verified_upto_ >= verify_window) {
        verify_stalled_ = true;
        break;
      }
      rx_.current->refs.fetch_add(1, std::memory_order_relaxed);
      verify_pool::job j;
      j.client = weak_from_this();
      j.ticket = next_ticket_++;
      j.key = v;
      j.cluster_id = &engine_.slot(slot_).cluster;  // the sender's cluster signed it
      j.incarnation = incarnation_;
      j.frame = base + rx_.parsed;
      j.source = rx_.current;
      run_ticket = j.ticket;
      pool->submit(address_, std::move(j));
    }
    if (h.msg_id <= last_seen_id_) {
      // A resend after reconnect of something already delivered.
      cut(rx_.parsed);
      rx_.parsed += total;
      run_start = rx_.parsed;
      engine_.slot(slot_).duplicates.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    last_seen_id_ = h.msg_id;
    run_last = h.msg_id;
    ++run_msgs;
    rx_.parsed += total;
    // Runs are cut at max_run_messages so a consumer can take a peer's
    // messages in bounded steps (maxPendingHandlers).
    if (run_msgs >= max_run_messages) {
      cut(rx_.parsed);
      run_start = rx_.parsed;
    }
  }
  cut(rx_.parsed);
  if (mac_ && !seal_ && sealed_rx_->feed(base + mac_from, rx_.parsed - mac_from) != sealed_receiver<ready_run>::fed::ok) {
    refuse(reject_code::bad_mac, "too much data without a SEAL");
    return false;
  }
  return true;
}

// io thread. Pushes parsed runs to the MIQ under the peer's rx lock; false
// when the MIQ is full (what remains is kept, nothing is dropped).
bool inbound_session::flush_ready() {
  if (ready_.empty()) return true;
  peer_slot& ps = engine_.slot(slot_);
  std::size_t pushed = 0;
  bool unverified = false;
  std::uint64_t msgs = 0, bytes = 0;
  bool superseded = false;
  {
    std::lock_guard<std::mutex> lock(ps.rx_mu);
    if (ps.rx_generation != generation_) {
      superseded = true;
    } else {
      for (; pushed < ready_.size(); ++pushed) {
        ready_run& r = ready_[pushed];
        const std::uint32_t m = r.run.messages, len = r.run.length;
        if (r.ticket > verified_upto_) {
          unverified = true;  // on_verified() flushes again
          break;
        }
        if (ps.rx_pending_runs >= max_pending_runs) {
          ps.rx_runs_waiting = true;  // engine::release wakes us (on_miq_room)
          break;
        }
        if (!engine_.push_delivery(r.run)) break;
        ++ps.rx_pending_runs;
        msgs += m;
        bytes += len;
        ps.rx_last_id = r.last_id;
      }
    }
  }
  if (superseded) {
    // A newer connection from this peer took over; the sender resends
    // whatever it has not seen acknowledged on it.
    close();
    return false;
  }
  ps.msgs_in.fetch_add(msgs, std::memory_order_relaxed);
  ps.bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  ps.rx_pending_bytes.fetch_add(bytes, std::memory_order_relaxed);
  ready_.erase(ready_.begin(), ready_.begin() + static_cast<std::ptrdiff_t>(pushed));
  if (pushed > 0) engine_.notify();
  // Held back by a verification, not by the MIQ: reading goes on.
  return ready_.empty() || unverified;
}

// Verification pool thread: answers are collected and handed to the io
// thread with one post while it has not taken the last ones.
void inbound_session::verified(std::uint64_t ticket, bool ok) {
  {
    std::lock_guard<std::mutex> lock(verify_mu_);
    verify_results_.emplace_back(ticket, ok);
    if (verify_posted_) return;
    verify_posted_ = true;
  }
  std::weak_ptr<inbound_session> weak = weak_from_this();
  asio::post(socket_.get_executor(), [weak] {
    if (auto self = weak.lock()) self->on_verified();
  });
}

// io thread: signatures checked. A bad one refuses the peer (frames before
// it still count); good ones release the runs waiting for them, and a
// parser stalled on a full window goes on.
void inbound_session::on_verified() {
  std::vector<std::pair<std::uint64_t, bool>> results;
  {
    std::lock_guard<std::mutex> lock(verify_mu_);
    results.swap(verify_results_);
    verify_posted_ = false;
  }
  if (!open_) return;
  for (const auto& r : results) {
    if (!r.second) {
      refuse(reject_code::bad_signature, "a signed frame whose signature does not check");
      return;
    }
    verified_early_.push_back(r.first);
  }
  std::sort(verified_early_.begin(), verified_early_.end());
  std::size_t k = 0;
  while (k < verified_early_.size() && verified_early_[k] == verified_upto_ + 1) {
    ++verified_upto_;
    ++k;
  }
  verified_early_.erase(verified_early_.begin(), verified_early_.begin() + static_cast<std::ptrdiff_t>(k));
  if (verify_stalled_ && next_ticket_ - 1 - verified_upto_ < verify_window) {
    verify_stalled_ = false;
    unparsed_ = true;
    if (!paused_ && !reading_) return do_read();  // parses what waits, flushes, reads on
  }
  if (!flush_ready()) wait_for_miq();
}

void inbound_session::refuse(reject_code code, const std::string& detail, std::uint64_t msg_id) {
  if (!open_) return;
  engine_.count_reject(code, address_, remote_, detail);  // 0 before the peer is known
  open_ = false;  // stop reading; close once the reason frame is out
  std::vector<std::uint8_t> buf;
  encode_reject(buf, code, engine_.options().self_id, detail, 0, msg_id);
  // After the handshake (auth mac) the reason frame comes sealed like any other.
  if (tx_ && !seal_into(buf, 0)) buf.resize(buf.size() - auth::seal_frame_bytes);
  reject_buf_ = std::move(buf);
  auto self = shared_from_this();
  timer_.expires_after(std::chrono::seconds(1));
  timer_.async_wait([self](const std::error_code& ec) {
    if (!ec) self->close();
  });
  if (ack_writing_) {
    // An ACK write is in flight: the reason frame follows it (send_ack).
    reject_pending_ = true;
    return;
  }
  write_reject();
}

// io thread, no write of ours in flight: the reason frame goes out on its
// own (engine::linger_close: FIN after it, then what the peer still sends is
// read and dropped until it closes, at most a second). Closing with unread
// input would send RST, and a RST can destroy the reason frame before the
// peer reads it.
void inbound_session::write_reject() {
  std::error_code ignored;
  socket_.cancel(ignored);  // no read of ours may run on it any more
  engine_.linger_close(std::move(socket_), std::move(reject_buf_));
  // Frames parsed before the one refused still count.
  if (slot_ >= 0) flush_ready();
  close();
}

void inbound_session::close() {
  std::error_code ignored;
  open_ = false;
  check_acks_flushed();
  paused_ = false;
  timer_.cancel();
  hb_timer_.cancel();
  read_timer_.cancel();
  // Closing a socket with unread input makes the kernel reset the
  // connection and drop what is still in our send buffer, such as the last
  // ACK (its sender would then report those messages as unacknowledged).
  sockets::drain_and_shutdown(socket_);
  socket_.close(ignored);
  for (auto& r : ready_) engine_.chunks().unref(r.run.source);
  ready_.clear();
  if (sealed_rx_) sealed_rx_->drop([&](const ready_run& r) { engine_.chunks().unref(r.run.source); });
  rx_.release();
}

// ---- hostile-input limits (SECURITY.md "Connection limits") ----

void inbound_session::refuse_async(reject_code code, std::string detail) {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self, code, detail = std::move(detail)] {
    // Finished its handshake meanwhile: it no longer counts against the limit.
    if (self->handshake_done_) return;
    self->refuse(code, detail);
  });
}

// io thread, first do_read(): the handshake is over (WELCOME written, peer
// proven with auth mac); the connection leaves the pre-handshake limits.
void inbound_session::leave_pre_handshake() {
  handshake_done_ = true;
  partial_ = false;  // nothing of a frame is buffered yet
  engine_.leave_pending(pending_id_);
  pending_id_ = 0;
}

// io thread, after each parse: starts the clock of a frame in progress. Reads
// that complete no frame cost nothing here; one that completes a frame and
// leaves part of the next restarts the clock for that next frame.
void inbound_session::note_partial(bool progressed) {
  if (rx_.filled == rx_.parsed) {
    partial_ = false;
    return;
  }
  if (engine_.options().frame_read_timeout_ms == 0 || (partial_ && !progressed)) return;
  partial_ = true;
  partial_since_ = std::chrono::steady_clock::now();
  arm_read_deadline();
}

void inbound_session::arm_read_deadline() {
  if (read_timer_armed_ || !open_) return;
  read_timer_armed_ = true;
  auto self = shared_from_this();
  read_timer_.expires_at(partial_since_ + std::chrono::milliseconds(engine_.options().frame_read_timeout_ms));
  read_timer_.async_wait([self](const std::error_code& ec) {
    self->read_timer_armed_ = false;
    if (!ec) self->read_deadline_tick();
  });
}

void inbound_session::read_deadline_tick() {
  if (!open_ || !partial_) return;
  const auto timeout = std::chrono::milliseconds(engine_.options().frame_read_timeout_ms);
  const auto now = std::chrono::steady_clock::now();
  // Not reading (backpressure: MIQ or receive buffers full): the peer cannot
  // finish the frame, so its clock restarts.
  if (handshake_done_ && (paused_ || !reading_)) partial_since_ = now;
  if (now - partial_since_ >= timeout)
    return refuse(reject_code::read_timeout,
                  std::string(handshake_done_ ? "a frame" : "the handshake") + " begun was not complete within " +
                      "frameReadTimeoutMs (" + std::to_string(engine_.options().frame_read_timeout_ms) + " ms)");
  arm_read_deadline();
}

// io thread, for each PING: fixed one-second windows (no clock read on the
// data path; one per PING).
bool inbound_session::ping_allowed() {
  const std::uint32_t max = engine_.options().max_pings_per_second;
  if (max == 0) return true;
  const auto now = std::chrono::steady_clock::now();
  if (pings_in_window_ == 0 || now - ping_window_ >= std::chrono::seconds(1)) {
    ping_window_ = now;
    pings_in_window_ = 0;
  }
  return ++pings_in_window_ <= max;
}

}  // namespace nexres
