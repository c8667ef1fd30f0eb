// inbound_session, its control frames: the ACK of what the consumer
// released, PONGs (answers to PINGs, keepalives) and the heartbeat that
// closes a connection whose sender went silent. One control frame in
// flight at a time, written by the session's io thread.
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

// io thread, every heartbeat interval: a keepalive PONG if nothing else was
// written (the sender hears from us even when its own socket is full); the
// connection closes when the sender went silent while we were reading.
void inbound_session::arm_heartbeat() {
  const auto& opt = engine_.options();
  if (opt.heartbeat_interval_ms == 0 || !open_) return;
  auto self = shared_from_this();
  hb_timer_.expires_after(std::chrono::milliseconds(opt.heartbeat_interval_ms));
  hb_timer_.async_wait([self](const std::error_code& ec) {
    if (!ec) self->heartbeat_tick();
  });
}

void inbound_session::heartbeat_tick() {
  const auto& opt = engine_.options();
  if (!open_) return;
  if (!wrote_since_tick_) {
    pong_id_ = 0;
    pong_pending_ = true;
    send_ack();
  }
  wrote_since_tick_ = false;
  const auto now = std::chrono::steady_clock::now();
  if (read_since_tick_ || paused_ || reading_ == false) last_read_ = now;
  read_since_tick_ = false;
  if (opt.heartbeat_timeout_ms > 0 && now - last_read_ > std::chrono::milliseconds(opt.heartbeat_timeout_ms)) {
    engine_.count_reject(reject_code::heartbeat_timeout, address_, remote_, "nothing read from the peer in time");
    return close();
  }
  arm_heartbeat();
}

void inbound_session::request_ack() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->on_ack_request(); });
}

// io thread.
void inbound_session::on_ack_request() {
  if (slot_ < 0) return;
  peer_slot& ps = engine_.slot(slot_);
  std::uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(ps.rx_mu);
    ps.ack_scheduled = false;
    if (ps.rx_generation == generation_) id = ps.rx_consumed_id;
  }
  if (id > ack_pending_) ack_pending_ = id;
  send_ack();
}

// io thread. One control frame in flight at a time: the latest ACK first,
// then a PONG (an answer to a PING, or a keepalive).
void inbound_session::send_ack() {
  if (ack_writing_ || !open_) return;
  frame_header h{};
  h.sender = engine_.options().self_id;
  if (ack_pending_ > ack_sent_) {
    h.kind = frame_kind::ack;
    h.msg_id = ack_pending_;
    ack_sent_ = ack_pending_;
    ack_in_write_ = ack_pending_;
  } else if (pong_pending_) {
    h.kind = frame_kind::pong;
    h.msg_id = pong_id_;
    pong_pending_ = false;
    ack_in_write_ = 0;
  } else {
    return;
  }
  encode_header(ack_buf_.data(), h);
  wrote_since_tick_ = true;
  ack_writing_ = true;
  auto self = shared_from_this();
  asio::const_buffer out = asio::buffer(ack_buf_);
  if (mac_) {
    ack_out_.assign(ack_buf_.begin(), ack_buf_.end());
    if (!seal_into(ack_out_, 0)) {
      ack_writing_ = false;
      return close();
    }
    out = asio::buffer(ack_out_);
  }
  asio::async_write(socket_, out, [self](const std::error_code& ec, std::size_t) {
    self->ack_writing_ = false;
    if (ec) return self->close();
    if (self->ack_in_write_ > self->ack_written_) self->ack_written_ = self->ack_in_write_;
    self->check_acks_flushed();
    if (self->reject_pending_) {
      self->reject_pending_ = false;
      return self->write_reject();
    }
    self->send_ack();
  });
}

}  // namespace nexres
