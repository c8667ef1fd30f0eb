// peer_link: the outbound link to one peer. Here: its queue (MOQ) and
// writes, control frames (ACK, PING/PONG, heartbeats), failure, reconnect
// backoff and stats; the handshake is in peer_link_handshake.cpp.
#include "peer_link.hpp"

#include "gather_writer.hpp"
#include "sockets.hpp"

#include <asio/connect.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <chrono>
#include <cstring>

namespace nexres {

peer_link::peer_link(engine& eng, asio::io_context& io, replica_address peer, int slot)
    : engine_(eng),
      io_(io),
      peer_(peer),
      configured_(std::move(peer)),
      slot_(slot),
      address_(eng.slot(slot).address),
      cluster_(eng.slot(slot).cluster),
      socket_(io),
      timer_(io),
      hb_timer_(io),
      ping_buf_(std::make_shared<std::array<std::uint8_t, frame_header_bytes>>()),
      resolver_(io),
      backoff_ms_(eng.options().reconnect_min_ms),
      rng_(static_cast<unsigned>(eng.options().incarnation ^ peer_.id)),
      mac_(eng.options().auth != auth_mode::none) {}

void peer_link::start() {
  auto self = shared_from_this();
  asio::post(io_, [self] {
    if (self->state_ == state::idle) self->do_connect();
  });
}

void peer_link::close_async() {
  auto self = shared_from_this();
  asio::post(io_, [self] { self->close(); });
}

void peer_link::retire(std::string reason) {
  auto self = shared_from_this();
  asio::post(io_, [self, reason = std::move(reason)] {
    if (self->state_ == state::closed) return;
    const bool was_up = self->state_ == state::up && self->confirmed_;
    self->retired_ = true;
    self->close();
    // What was written and not acknowledged counts as not delivered too
    // (the peer may have some of it).
    self->requeue_unacked();
    self->give_up_queue("removed from the configuration");
    // A retired link stays allocated as long as the engine (a sender may
    // still hold it): it keeps no buffers.
    self->tx_.reset();
    self->rx_.reset();
    self->eph_.reset();
    std::vector<std::uint8_t>().swap(self->hello_out_);
    std::vector<std::uint8_t>().swap(self->body_in_);
    std::deque<segment>().swap(self->pending_);
    std::deque<segment>().swap(self->unacked_);
    if (was_up)
      self->engine_.post_event(engine_event{event_type::peer_down, self->address_,
                                            static_cast<std::uint16_t>(reject_code::shutting_down), reason, {}});
  });
}

void peer_link::restart(replica_address peer, std::string reason) {
  {
    std::lock_guard<std::mutex> lock(peer_mu_);
    configured_ = peer;
  }
  auto self = shared_from_this();
  asio::post(io_, [self, peer = std::move(peer), reason = std::move(reason)] {
    if (self->state_ == state::closed || self->engine_.stopping()) return;
    self->peer_ = peer;
    self->backoff_ms_ = self->engine_.options().reconnect_min_ms;
    if (self->state_ == state::idle) return;  // not started yet: start() dials the new address
    if (self->state_ == state::backoff) {
      self->timer_.cancel();
      self->pull_queue();
      self->drop_stale_signed();
      self->do_connect();
      return;
    }
    self->fail(reject_code::shutting_down, reason);  // what was written goes back to pending_
    self->pull_queue();
    self->drop_stale_signed();
  });
}

bool peer_link::address_differs(const replica_address& peer) const {
  std::lock_guard<std::mutex> lock(peer_mu_);
  return configured_.host != peer.host || configured_.port != peer.port;
}

void peer_link::close() {
  state_ = state::closed;
  connected_.store(false, std::memory_order_release);
  std::error_code ignored;
  timer_.cancel();
  hb_timer_.cancel();
  resolver_.cancel();
  socket_.close(ignored);
}

// Any thread (JS thread through the addon). The MOQ push is lock-free; the
// io thread is woken at most once until it has pulled the queue.
void peer_link::enqueue(const segment& seg) {
  queued_bytes_.fetch_add(seg.length, std::memory_order_acq_rel);
  queued_msgs_.fetch_add(seg.messages, std::memory_order_relaxed);
  moq_.push(seg);
  if (!wake_scheduled_.exchange(true, std::memory_order_acq_rel)) {
    auto self = shared_from_this();
    asio::post(io_, [self] { self->on_wakeup(); });
  }
}

// seq_cst on both sides (here and in on_acked): flag-then-depth against
// depth-then-flag, so one of the two always sees the other.
void peer_link::want_drain() {
  drain_wanted_.store(true, std::memory_order_seq_cst);
  if (queued_bytes_.load(std::memory_order_seq_cst) <= engine_.options().high_water_bytes / 2 &&
      drain_wanted_.exchange(false, std::memory_order_seq_cst))
    engine_.post_event(engine_event{event_type::drain, address_, 0, {}, {}});
}

void peer_link::pull_queue() {
  segment s;
  const engine::own_key* key = nullptr;
  while (moq_.pop(s)) {
    if (s.sign) {
      // Signed under a key reconfigure replaced: the peer would refuse it.
      if (key == nullptr) key = engine_.key();
      if (key != nullptr && s.key_generation != key->generation) {
        stale_signed_.push_back(std::move(s));
        continue;
      }
    }
    pending_.push_back(std::move(s));
  }
  if (!stale_signed_.empty()) give_up(stale_signed_, "signed with this replica's key that reconfigure replaced");
}

// io thread: drops the signed segments of pending_ signed under a replaced key.
void peer_link::drop_stale_signed() {
  const engine::own_key* key = engine_.key();
  if (key == nullptr) return;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->sign && it->key_generation != key->generation) {
      stale_signed_.push_back(std::move(*it));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  if (!stale_signed_.empty()) give_up(stale_signed_, "signed with this replica's key that reconfigure replaced");
}

void peer_link::on_wakeup() {
  wake_scheduled_.store(false, std::memory_order_release);
  // A sender that loaded this link before it was retired: reported, not lost.
  if (retired_) return give_up_queue("removed from the configuration");
  pull_queue();
  if (state_ == state::up && !writing_) do_write();
}

// io thread, state up, no wait for writability pending. Writes everything
// queued in gather writes as large as the kernel takes (never waits to fill
// a batch); when the socket is full, waits for it to drain and goes on.
void peer_link::do_write() {
  if (writing_ || state_ != state::up) return;
  for (;;) {
    // With auth mac only sealed batches (each followed by its SEAL) go out,
    // sealed a few at a time as the socket takes them.
    if (mac_ && sealed_count_ == 0) seal_pending();
    const std::size_t writable = mac_ ? sealed_count_ : pending_.size();
    if (writable == 0) break;
    const gather_result r = gather_write(socket_.native_handle(), pending_, front_offset_, writable);
    if (mac_) sealed_count_ -= r.segments_done;
    std::uint64_t msgs = 0, bytes = 0;
    for (std::size_t i = 0; i < r.segments_done; ++i) {
      segment& s = pending_.front();
      if (s.control) {  // a PING: nothing to keep or count
        pending_.pop_front();
        continue;
      }
      msgs += s.messages;
      bytes += s.length;
      unacked_.push_back(std::move(s));
      pending_.pop_front();
    }
    unacked_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    msgs_out_.fetch_add(msgs, std::memory_order_relaxed);
    bytes_out_.fetch_add(bytes, std::memory_order_relaxed);
    if (r.error) return fail(reject_code::shutting_down, "write failed: " + r.error.message());
    if (r.would_block) {
      writing_ = true;
      auto self = shared_from_this();
      const std::uint64_t epoch = epoch_;
      socket_.async_wait(asio::ip::tcp::socket::wait_write, [self, epoch](const std::error_code& ec) {
        if (epoch != self->epoch_) return;  // a failed connection's wait
        self->writing_ = false;
        if (self->state_ != state::up) return;
        if (ec) return self->fail(reject_code::shutting_down, "write failed: " + ec.message());
        self->pull_queue();
        self->do_write();
      });
      return;
    }
    pull_queue();
  }
}

void peer_link::read_control() {
  auto self = shared_from_this();
  const std::uint64_t epoch = epoch_;
  asio::async_read(socket_, asio::buffer(ctrl_), [self, epoch](const std::error_code& ec, std::size_t) {
    if (epoch != self->epoch_ || self->state_ != state::up) return;
    if (ec) return self->fail(reject_code::shutting_down, "connection lost: " + ec.message());
    self->on_control();
  });
}

// io thread, every heartbeat interval while up: a peer not heard from (no
// ACK, PONG or keepalive) within the timeout is down; an idle writer pings,
// so the round trip is measured and the receiver hears from us.
void peer_link::heartbeat_tick() {
  const auto& opt = engine_.options();
  if (opt.heartbeat_interval_ms == 0 || state_ != state::up) return;
  const auto now = std::chrono::steady_clock::now();
  if (opt.heartbeat_timeout_ms > 0 &&
      now - last_heard_ > std::chrono::milliseconds(opt.heartbeat_timeout_ms))
    return fail(reject_code::heartbeat_timeout,
                "nothing heard from the peer in " + std::to_string(opt.heartbeat_timeout_ms) + " ms");
  if (!writing_ && pending_.empty()) {
    // Idle for a heartbeat: the kept ciphertext buffers go (trimmed here, not
    // each time the queue drains, where bursts would allocate them again).
    if (tx_) tx_->trim();
    frame_header h{};
    h.kind = frame_kind::ping;
    h.sender = opt.self_id;
    h.msg_id = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count());
    encode_header(ping_buf_->data(), h);
    pending_.push_back(segment::control_frame(ping_buf_, ping_buf_->data(), frame_header_bytes));
    do_write();
  }
  auto self = shared_from_this();
  const std::uint64_t epoch = epoch_;
  hb_timer_.expires_after(std::chrono::milliseconds(opt.heartbeat_interval_ms));
  hb_timer_.async_wait([self, epoch](const std::error_code& ec) {
    if (!ec && epoch == self->epoch_) self->heartbeat_tick();
  });
}

void peer_link::on_control() {
  const frame_header h = decode_header(ctrl_.data());
  if (mac_ && h.kind != frame_kind::seal) {
    // Every control frame comes sealed: nothing is acted on before its tag checks.
    if (is_reject_header(h)) {
      body_in_.resize(h.length + auth::seal_frame_bytes);
    } else if ((h.kind == frame_kind::ack || h.kind == frame_kind::pong) && h.length == 0) {
      body_in_.resize(auth::seal_frame_bytes);
    } else {
      return fail(reject_code::bad_frame, "unexpected control frame from peer");
    }
    auto self = shared_from_this();
    const std::uint64_t epoch = epoch_;
    asio::async_read(socket_, asio::buffer(body_in_), [self, epoch, h](const std::error_code& ec, std::size_t) {
      if (epoch != self->epoch_ || self->state_ != state::up) return;
      if (ec) return self->fail(reject_code::shutting_down, "connection lost: " + ec.message());
      self->on_sealed_control(h);
    });
    return;
  }
  last_heard_ = std::chrono::steady_clock::now();
  if (h.kind == frame_kind::ack && h.length == 0 && h.sender == peer_.id) {
    on_acked(h.msg_id);
    return read_control();
  }
  if (h.kind == frame_kind::pong && h.length == 0 && h.sender == peer_.id) {
    on_pong(h.msg_id);
    return read_control();
  }
  if (is_reject_header(h)) {
    body_in_.resize(h.length);
    auto self = shared_from_this();
    const std::uint64_t epoch = epoch_;
    asio::async_read(socket_, asio::buffer(body_in_), [self, epoch](const std::error_code& ec, std::size_t) {
      if (epoch != self->epoch_ || self->state_ != state::up) return;
      if (ec) return self->fail(reject_code::shutting_down, "connection lost");
      const reject_body r = decode_reject_body(self->body_in_.data(), self->body_in_.size());
      self->on_refused(decode_header(self->ctrl_.data()), r);
    });
    return;
  }
  fail(reject_code::bad_frame, "unexpected control frame from peer");
}

// io thread, auth mac: a control frame (in ctrl_) and what follows it (in
// body_in_: its body, then its SEAL). Acted on only once the tag checks.
void peer_link::on_sealed_control(const frame_header& h) {
  const std::size_t body = body_in_.size() - auth::seal_frame_bytes;
  const std::uint8_t* seal = body_in_.data() + body;
  const frame_header sh = decode_header(seal);
  if (!rx_ || sh.sender != peer_.id || !rx_->update(ctrl_.data(), ctrl_.size()) ||
      (body > 0 && !rx_->update(body_in_.data(), body)) || !rx_->open(sh, seal + frame_header_bytes))
    return fail(reject_code::bad_auth, "a frame from the peer failed its MAC check");
  last_heard_ = std::chrono::steady_clock::now();
  if (h.sender != peer_.id) return fail(reject_code::bad_sender, "control frame names another sender");
  // The first ACK or PONG under the session keys: the peer accepted our AUTH.
  if (!confirmed_ && (h.kind == frame_kind::ack || h.kind == frame_kind::pong)) confirm();
  if (h.kind == frame_kind::ack) {
    on_acked(h.msg_id);
    return read_control();
  }
  if (h.kind == frame_kind::pong) {
    on_pong(h.msg_id);
    return read_control();
  }
  const reject_body r = decode_reject_body(body_in_.data(), body);
  on_refused(h, r);
}

void peer_link::on_refused(const frame_header& h, const reject_body& r) {
  if (r.code == reject_code::stale_epoch && h.msg_id <= 0xffffffffu)
    engine_.report_epoch_ahead(address_, static_cast<std::uint32_t>(h.msg_id), peer_.host + ":" + std::to_string(peer_.port));
  fail(r.code, "refused by peer: " + r.text);
}

// io thread: a PONG answered our PING; its id is the PING's send time in
// µs on the steady clock (0 marks a keepalive).
void peer_link::on_pong(std::uint64_t sent_us) {
  if (sent_us == 0) return;
  const auto now_us = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(last_heard_.time_since_epoch()).count());
  if (now_us >= sent_us) rtt_us_.store(now_us - sent_us, std::memory_order_relaxed);
}

// io thread, auth mac: what follows the sealed prefix of pending_ is cut
// into batches, each followed by its SEAL (sealed_stream.hpp).
void peer_link::seal_pending() {
  if (!tx_) return;
  const std::optional<std::size_t> sealed = tx_->seal(pending_, sealed_count_, seal_ahead_batches);
  if (!sealed) return fail(reject_code::bad_auth, "sealing failed");
  sealed_count_ = *sealed;
}

void peer_link::on_acked(std::uint64_t id) {
  std::uint64_t bytes = 0, msgs = 0;
  while (!unacked_.empty() && unacked_.front().last_msg_id <= id) {
    bytes += unacked_.front().length;
    msgs += unacked_.front().messages;
    unacked_.pop_front();
  }
  // A partly acknowledged batch: drop its acknowledged frames so the queue
  // depth is exact and a reconnect resends only what the peer lacks.
  if (!unacked_.empty() && unacked_.front().framed) {
    segment& s = unacked_.front();
    const std::uint8_t* p = s.data;
    std::size_t left = s.length;
    std::uint32_t m = 0;
    while (left >= frame_header_bytes) {
      const frame_header h = decode_header(p);
      const std::size_t total = frame_header_bytes + h.length;
      if (h.msg_id > id || total > left) break;
      p += total;
      left -= total;
      ++m;
    }
    if (p != s.data) {
      bytes += static_cast<std::uint64_t>(p - s.data);
      msgs += m;
      s.data = p;
      s.length = static_cast<std::uint32_t>(left);
      s.messages -= std::min(s.messages, m);
    }
  }
  if (bytes == 0) return;
  unacked_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
  queued_msgs_.fetch_sub(msgs, std::memory_order_relaxed);
  const std::uint64_t left = queued_bytes_.fetch_sub(bytes, std::memory_order_seq_cst) - bytes;
  // Hysteresis: drain at half the mark, so a waiting sender resumes with room
  // for a real batch instead of one message per wake-up.
  if (left <= engine_.options().high_water_bytes / 2 && drain_wanted_.load(std::memory_order_seq_cst) &&
      drain_wanted_.exchange(false, std::memory_order_seq_cst))
    engine_.post_event(engine_event{event_type::drain, address_, 0, {}, {}});
}

// io thread. Drops the connection; what was written but not acknowledged
// goes back to the front of the queue, in order, for the next connection.
void peer_link::fail(reject_code code, const std::string& reason) {
  if (state_ == state::closed) return;
  const bool was_up = state_ == state::up && confirmed_;
  confirmed_ = false;
  ++epoch_;
  writing_ = false;
  front_offset_ = 0;  // a partly written segment is resent whole
  hb_timer_.cancel();
  // PINGs are not resent on the next connection.
  for (auto it = pending_.begin(); it != pending_.end();) it = it->control ? pending_.erase(it) : it + 1;
  // Seals (and the AUTH frame) belong to the failed connection's keys.
  sealed_count_ = 0;
  unsealed_bytes_ = 0;
  tx_.reset();
  rx_.reset();
  eph_.reset();
  std::error_code ignored;
  socket_.close(ignored);
  timer_.cancel();
  connected_.store(false, std::memory_order_release);
  requeue_unacked();
  // auth seal: the ciphertext went with the connection; the frames go out
  // again in clear, to be sealed under the next connection's keys.
  for (segment& s : pending_) s.shadow = false;
  if (was_up) {
    down_since_ = std::chrono::steady_clock::now();
    engine_.post_event(engine_event{event_type::peer_down, address_, static_cast<std::uint16_t>(code), reason, {}});
  }
  if (code != reject_code::shutting_down && !was_up)
    engine_.count_reject(code, address_, peer_.host + ":" + std::to_string(peer_.port), reason);
  schedule_reconnect();
}

// io thread: what was written and not acknowledged goes back to the front of
// pending_, in order.
void peer_link::requeue_unacked() {
  if (unacked_.empty()) return;
  unacked_bytes_.store(0, std::memory_order_relaxed);
  pending_.insert(pending_.begin(), std::make_move_iterator(unacked_.begin()), std::make_move_iterator(unacked_.end()));
  unacked_.clear();
}

void peer_link::schedule_reconnect() {
  if (engine_.stopping()) return;
  state_ = state::backoff;
  socket_ = asio::ip::tcp::socket(io_);
  // Full jitter in [d/2, d], then double up to the bound.
  const std::uint32_t d = backoff_ms_;
  std::uniform_int_distribution<std::uint32_t> pick(d / 2, d);
  const std::uint32_t wait = pick(rng_);
  backoff_ms_ = std::min<std::uint32_t>(d * 2, engine_.options().reconnect_max_ms);
  auto self = shared_from_this();
  timer_.expires_after(std::chrono::milliseconds(wait));
  const auto deadline = engine_.options().peer_down_deadline_ms;
  if (deadline > 0 && std::chrono::steady_clock::now() - down_since_ > std::chrono::milliseconds(deadline))
    give_up_queue("peer down past peerDownDeadlineMs");
  timer_.async_wait([self](const std::error_code& ec) {
    if (ec || self->state_ != state::backoff) return;
    // Retries before the first successful connection are not reconnects.
    if (self->ever_up_) self->reconnects_.fetch_add(1, std::memory_order_relaxed);
    self->do_connect();
  });
}

// io thread, link down past the deadline (or the peer removed): everything
// queued for the peer is dropped and reported (count, bytes, message id
// range), never silently.
void peer_link::give_up_queue(const char* reason) {
  pull_queue();
  front_offset_ = 0;
  give_up(pending_, reason);
}

// io thread: drops `q` (not written, or written and given back) and reports
// its messages in one undelivered event.
void peer_link::give_up(std::deque<segment>& q, const char* reason) {
  if (q.empty()) return;
  std::uint64_t msgs = 0, bytes = 0, first = 0, last = 0;
  for (const segment& s : q) {
    if (s.control) continue;
    msgs += s.messages;
    bytes += s.length;
    if (first == 0 && s.framed && s.length >= frame_header_bytes) first = decode_header(s.data).msg_id;
    if (s.last_msg_id > last) last = s.last_msg_id;
  }
  q.clear();
  queued_msgs_.fetch_sub(std::min(msgs, queued_msgs_.load(std::memory_order_relaxed)), std::memory_order_relaxed);
  queued_bytes_.fetch_sub(std::min(bytes, queued_bytes_.load(std::memory_order_relaxed)), std::memory_order_seq_cst);
  if (msgs == 0) return;
  engine_event ev{event_type::undelivered, address_, 0, reason, {}};
  ev.messages = msgs;
  ev.bytes = bytes;
  ev.first_id = first;
  ev.last_id = last;
  engine_.post_event(std::move(ev));
  if (drain_wanted_.exchange(false, std::memory_order_seq_cst))
    engine_.post_event(engine_event{event_type::drain, address_, 0, {}, {}});
}

void peer_link::fill_stats(peer_stats& s) const {
  s.connected = connected_.load(std::memory_order_acquire);
  s.msgs_out = msgs_out_.load(std::memory_order_relaxed);
  s.bytes_out = bytes_out_.load(std::memory_order_relaxed);
  s.queued_bytes = queued_bytes_.load(std::memory_order_relaxed);
  s.queued_msgs = queued_msgs_.load(std::memory_order_relaxed);
  s.unacked_bytes = unacked_bytes_.load(std::memory_order_relaxed);
  s.reconnects = reconnects_.load(std::memory_order_relaxed);
  s.heartbeat_rtt_us = rtt_us_.load(std::memory_order_relaxed);
}

}  // namespace nexres
