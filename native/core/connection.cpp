#include "connection.hpp"

#include "engine.hpp"
#include "peer_slot.hpp"

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
      rx_(eng.chunks(), eng.options().max_chunks_per_connection) {
  std::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  remote_ = ec ? std::string("unknown") : ep.address().to_string() + ":" + std::to_string(ep.port());
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  if (eng.options().receive_buffer_bytes > 0)
    socket_.set_option(asio::socket_base::receive_buffer_size(static_cast<int>(eng.options().receive_buffer_bytes)), ec);
}

inbound_session::~inbound_session() {
  for (auto& r : ready_) engine_.chunks().unref(r.run.source);
  ready_.clear();
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
  read_hello();
}

void inbound_session::close_async() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->close(); });
}

void inbound_session::read_hello() {
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(hello_), [self](const std::error_code& ec, std::size_t n) {
    if (ec) return self->close();
    self->on_hello(n);
  });
}

void inbound_session::on_hello(std::size_t) {
  std::uint32_t magic = 0;
  hello_message m = decode_hello(hello_.data(), magic);
  if (magic != hello_magic) return refuse(reject_code::bad_magic, "not a nexres-rpc handshake");
  if (m.version != protocol_version)
    return refuse(reject_code::bad_version, "protocol version " + std::to_string(m.version) +
                                                " is not supported (want " +
                                                std::to_string(protocol_version) + ")");
  if (m.type != hello_type::hello) return refuse(reject_code::bad_frame, "expected HELLO");
  if (m.auth != auth_mode::none) return refuse(reject_code::bad_auth, "unsupported auth mode");
  if (m.body_length > hello_max_body_bytes || m.cluster_id_length > m.body_length)
    return refuse(reject_code::bad_frame, "handshake body length out of range");
  incarnation_ = m.incarnation;
  peer_id_ = 0;
  const std::uint32_t claimed = m.sender;
  const std::size_t cid_len = m.cluster_id_length;
  hello_body_.resize(m.body_length);
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(hello_body_),
                   [self, claimed, cid_len](const std::error_code& ec, std::size_t) {
                     // Refused meanwhile (handshake deadline): never finish the handshake.
                     if (ec || !self->open_) return self->close();
                     const std::string& want = self->engine_.options().cluster_id;
                     if (cid_len != want.size() ||
                         std::memcmp(self->hello_body_.data(), want.data(), cid_len) != 0)
                       return self->refuse(reject_code::wrong_cluster, "cluster id does not match");
                     const int slot = self->engine_.slot_of(claimed);
                     if (slot < 0)
                       return self->refuse(reject_code::unknown_peer,
                                           "replica id " + std::to_string(claimed) +
                                               " is not a peer in this cluster");
                     self->peer_id_ = claimed;
                     self->slot_ = slot;
                     self->on_hello_body();
                   });
}

void inbound_session::on_hello_body() {
  timer_.cancel();
  peer_slot& ps = engine_.slot(slot_);
  std::shared_ptr<inbound_session> previous;
  {
    std::lock_guard<std::mutex> lock(ps.rx_mu);
    generation_ = ++ps.rx_generation;
    if (ps.rx_incarnation != incarnation_) {
      ps.rx_incarnation = incarnation_;
      ps.rx_last_id = 0;
      ps.rx_consumed_id = 0;
    }
    last_seen_id_ = ps.rx_last_id;
    ack_sent_ = 0;
    previous = ps.rx_session.lock();
    ps.rx_session = shared_from_this();
  }
  if (previous) previous->close_async();

  const auto& opt = engine_.options();
  hello_message w{};
  w.type = hello_type::welcome;
  w.auth = auth_mode::none;
  w.sender = opt.self_id;
  w.incarnation = opt.incarnation;
  w.version = protocol_version;
  w.cluster_id_length = static_cast<std::uint8_t>(opt.cluster_id.size());
  w.body_length = static_cast<std::uint32_t>(opt.cluster_id.size());
  reject_buf_.assign(hello_fixed_bytes + opt.cluster_id.size(), 0);
  encode_hello(reject_buf_.data(), w);
  std::memcpy(reject_buf_.data() + hello_fixed_bytes, opt.cluster_id.data(), opt.cluster_id.size());
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(reject_buf_), [self](const std::error_code& ec, std::size_t) {
    if (ec) return self->close();
    // A resending peer needs the ACK of what was consumed before it reconnected.
    self->on_ack_request();
    self->arm_heartbeat();
    self->do_read();
  });
}

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
    engine_.count_reject(reject_code::heartbeat_timeout, peer_id_, remote_, "nothing read from the peer in time");
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

void inbound_session::on_chunk_released() {
  rx_.on_chunk_released();
  std::weak_ptr<inbound_session> weak = weak_from_this();
  asio::post(socket_.get_executor(), [weak] {
    if (auto self = weak.lock()) {
      if (self->paused_ && self->open_) {
        self->paused_ = false;
        if (self->flush_ready()) self->do_read();
        else self->paused_ = true;
      }
    }
  });
}

void inbound_session::do_read() {
  if (!open_ || reading_) return;
  if (!rx_.ensure_space(weak_from_this())) {
    // Wait for a chunk of ours to come back; also retry on a timer in case the
    // pool-wide bound (not ours) is what stopped us.
    paused_ = true;
    auto self = shared_from_this();
    timer_.expires_after(retry_delay * 5);
    timer_.async_wait([self](const std::error_code& ec) {
      if (ec || !self->open_ || !self->paused_) return;
      self->paused_ = false;
      if (self->flush_ready()) self->do_read();
      else self->paused_ = true;
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
  rx_.filled += n;
  if (!parse()) {
    // The peer was refused; frames it sent before the bad one still count.
    flush_ready();
    return;
  }
  if (!flush_ready()) {
    // MIQ full: stop reading this socket until the consumer catches up.
    paused_ = true;
    auto self = shared_from_this();
    timer_.expires_after(retry_delay);
    timer_.async_wait([self](const std::error_code& ec) {
      if (ec || !self->open_ || !self->paused_) return;
      self->paused_ = false;
      if (self->flush_ready()) self->do_read();
      else self->paused_ = true;
    });
    return;
  }
  do_read();
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
  auto cut = [&](std::size_t end) {
    if (run_msgs > 0) {
      rx_.current->refs.fetch_add(1, std::memory_order_relaxed);
      delivery d{rx_.current, static_cast<std::uint32_t>(run_start), static_cast<std::uint32_t>(end - run_start),
                 peer_id_, run_msgs, slot_, incarnation_, run_last};
      ready_.push_back(ready_run{d, run_last});
    }
    run_msgs = 0;
  };
  while (rx_.filled - rx_.parsed >= frame_header_bytes) {
    const frame_header h = decode_header(base + rx_.parsed);
    if (h.length > opt.max_frame_bytes) {
      cut(rx_.parsed);
      refuse(reject_code::frame_too_large, "frame of " + std::to_string(h.length) +
                                               " bytes exceeds maxFrameBytes " +
                                               std::to_string(opt.max_frame_bytes));
      return false;
    }
    if (h.kind == frame_kind::ping && h.length == 0 && h.reserved == 0 && h.sender == peer_id_) {
      // Answered here on the io thread, whatever the application is doing.
      cut(rx_.parsed);
      rx_.parsed += frame_header_bytes;
      run_start = rx_.parsed;
      pong_id_ = h.msg_id;
      pong_pending_ = true;
      send_ack();
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
    if (rx_.filled - rx_.parsed < total) break;
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
  }
  cut(rx_.parsed);
  return true;
}

// io thread. Pushes parsed runs to the MIQ under the peer's rx lock; false
// when the MIQ is full (what remains is kept, nothing is dropped).
bool inbound_session::flush_ready() {
  if (ready_.empty()) return true;
  peer_slot& ps = engine_.slot(slot_);
  std::size_t pushed = 0;
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
        if (!engine_.push_delivery(r.run)) break;
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
  return ready_.empty();
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
  } else if (pong_pending_) {
    h.kind = frame_kind::pong;
    h.msg_id = pong_id_;
    pong_pending_ = false;
  } else {
    return;
  }
  encode_header(ack_buf_.data(), h);
  wrote_since_tick_ = true;
  ack_writing_ = true;
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(ack_buf_), [self](const std::error_code& ec, std::size_t) {
    self->ack_writing_ = false;
    if (ec) return self->close();
    if (self->reject_pending_) {
      self->reject_pending_ = false;
      return self->write_reject();
    }
    self->send_ack();
  });
}

void inbound_session::refuse(reject_code code, const std::string& detail) {
  if (!open_) return;
  engine_.count_reject(code, peer_id_ != 0 ? peer_id_ : 0, remote_, detail);
  open_ = false;  // stop reading; close once the reason frame is out
  const std::string text = detail.substr(0, 512);
  std::vector<std::uint8_t> buf(frame_header_bytes + 2 + text.size());
  frame_header h{};
  h.kind = frame_kind::reject;
  h.sender = engine_.options().self_id;
  h.length = static_cast<std::uint32_t>(2 + text.size());
  encode_header(buf.data(), h);
  store_u16(buf.data() + frame_header_bytes, static_cast<std::uint16_t>(code));
  std::memcpy(buf.data() + frame_header_bytes + 2, text.data(), text.size());
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

void inbound_session::write_reject() {
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(reject_buf_), [self](const std::error_code&, std::size_t) {
    std::error_code ignored;
    self->socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    self->socket_.close(ignored);
    self->timer_.cancel();
  });
}

void inbound_session::close() {
  std::error_code ignored;
  open_ = false;
  paused_ = false;
  timer_.cancel();
  hb_timer_.cancel();
  socket_.close(ignored);
  for (auto& r : ready_) engine_.chunks().unref(r.run.source);
  ready_.clear();
  rx_.release();
}

}  // namespace nexres
