// client_session: a connection on the client port. Here: CLIENT_HELLO and
// WELCOME, requests read and parsed into deliveries, in-flight and reply
// backlog bounds, replies written by whichever thread brings them, idle
// timeout and refusals. Its receive memory (waits, eviction) is in
// client_memory.cpp.
#include "client_session.hpp"

#include "gather_writer.hpp"
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
// Unwritten reply bytes past which a client's requests are no longer read.
constexpr std::size_t max_reply_backlog = 8u << 20;
}

client_session::client_session(engine& eng, asio::ip::tcp::socket socket, std::uint32_t id)
    : engine_(eng),
      socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      retry_(socket_.get_executor()),
      id_(id),
      rx_(eng.client_chunks(), eng.options().max_chunks_per_connection, true) {
  std::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  remote_ = ec ? std::string("unknown") : ep.address().to_string() + ":" + std::to_string(ep.port());
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);  // gather_write() calls sendmsg directly
  fd_ = static_cast<int>(socket_.native_handle());
}

client_session::~client_session() {
  if (partial_registration_ != 0) engine_.client_partial_end(partial_registration_);
  if (key_state_) {
    // Its unanswered requests no longer count against the key.
    release_key_inflight(std::max<std::int64_t>(0, inflight_.load(std::memory_order_acquire)));
    engine_.release_client_key(*key_state_, id_);
  }
  for (auto& d : ready_) engine_.chunks().unref(d.source);
  engine_.forget_client(id_);
}

void client_session::start_on_own_thread() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->start(); });
}

void client_session::close_async() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->close(); });
}

void client_session::start() {
  auto self = shared_from_this();
  timer_.expires_after(std::chrono::milliseconds(engine_.options().handshake_timeout_ms));
  timer_.async_wait([self](const std::error_code& ec) {
    if (ec || !self->open_ || self->welcomed_) return;
    self->refuse(reject_code::handshake_timeout, "no handshake within the deadline");
  });
  asio::async_read(socket_, asio::buffer(hello_), [self](const std::error_code& ec, std::size_t) {
    if (ec) return self->close();
    self->on_hello();
  });
}

void client_session::on_hello() {
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(hello_.data(), magic);
  const auto& opt = engine_.options();
  if (magic != hello_magic) return refuse(reject_code::bad_magic, "not a nexres-rpc handshake");
  if (m.version != protocol_version) return refuse(reject_code::bad_version, "unsupported protocol version");
  if (m.type != hello_type::client_hello) return refuse(reject_code::bad_frame, "expected CLIENT_HELLO");
  if (m.auth != auth_mode::none && m.auth != auth_mode::mac && m.auth != auth_mode::seal)
    return refuse(reject_code::bad_auth, "unsupported auth mode");
  const bool keyed = m.auth != auth_mode::none;
  const auth_mode mode = m.auth;
  if (!keyed && opt.require_client_key)
    return refuse(reject_code::bad_auth, "this replica serves only clients with a key (clientAuth 'key'): connect with privateKey");
  if (mode != auth_mode::seal && opt.require_client_seal)
    return refuse(reject_code::bad_auth, "this replica serves only encrypted client connections (clientSeal 'required'): connect with seal: true");
  if (m.body_length > hello_max_body_bytes || m.cluster_id_length > m.body_length ||
      (keyed && m.body_length != m.cluster_id_length + client_hello_key_bytes))
    return refuse(reject_code::bad_frame, "handshake body length out of range");
  const std::size_t cid_len = m.cluster_id_length;
  hello_body_.resize(m.body_length);
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(hello_body_), [self, cid_len, mode](const std::error_code& ec, std::size_t) {
    // Refused meanwhile (handshake deadline): never finish the handshake.
    if (ec || !self->open_) return self->close();
    const auto& o = self->engine_.options();
    // A client may leave the cluster id out; one it names must match.
    if (cid_len != 0 && (cid_len != o.cluster_id.size() ||
                         std::memcmp(self->hello_body_.data(), o.cluster_id.data(), cid_len) != 0))
      return self->refuse(reject_code::wrong_cluster, "cluster id does not match");
    self->welcome(cid_len, mode);
  });
}

// Idle check: a connection that completed no request during a whole period
// and has none in flight is closed, which also bounds a client trickling a
// frame one byte at a time.
void client_session::arm_idle_timer() {
  const auto idle = std::chrono::milliseconds(engine_.options().client_idle_timeout_ms);
  if (idle.count() == 0) return;
  auto self = shared_from_this();
  timer_.expires_after(idle);
  timer_.async_wait([self](const std::error_code& ec) {
    if (ec || !self->open_) return;
    if (self->frames_since_tick_ == 0 && self->inflight_.load(std::memory_order_acquire) == 0)
      return self->refuse(reject_code::idle_timeout, "no complete request within the idle timeout");
    self->frames_since_tick_ = 0;
    self->arm_idle_timer();
  });
}

// io thread.
void client_session::resume() {
  wake_posted_.store(false, std::memory_order_release);
  if (!paused_ || !open_) return;
  if (waiting_chunk_.exchange(false, std::memory_order_seq_cst) && partial_registration_ != 0)
    frame_started_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  paused_ = false;
  if (flush_ready()) do_read();
  else pause_with_retry();
}

void client_session::pause_with_retry() {
  paused_ = true;
  auto self = shared_from_this();
  retry_.expires_after(retry_delay * 5);
  retry_.async_wait([self](const std::error_code& ec) {
    if (!ec) self->resume();
  });
}

void client_session::do_read() {
  if (!open_ || reading_ || paused_) return;
  // While paused (reply backlog, in-flight bound) a connection with no
  // request arriving holds no receive memory either: it may be paused for
  // as long as its handlers take.
  if (reply_backlog_.load(std::memory_order_seq_cst)) {
    paused_ = true;  // the writer resumes us once the client reads its replies
    rx_.release_if_idle();
    return;
  }
  // §6a: the key is at its bound (over all its connections): wait for its
  // replies before the next batch.
  if (key_blocked_) {
    if (key_over_limit() && wait_for_key()) return;
    key_blocked_ = false;
  }
  // Backpressure on a client that pipelines more than it may: stop reading
  // once a request waits for room, until replies bring it back under the
  // bound (enqueue() resumes us). Until one waits, reading goes on: a CANCEL
  // (which frees a slot) must not be stuck behind the bound it would lift.
  if (inflight_full() && request_waiting()) {
    // seq_cst here and in enqueue(): flag-then-count against
    // count-then-flag, so one side always sees the other (no lost resume).
    paused_ = true;
    inflight_paused_.store(true, std::memory_order_seq_cst);
    if (!inflight_full()) {
      inflight_paused_.store(false, std::memory_order_seq_cst);
      paused_ = false;
    } else {
      rx_.release_if_idle();
      return;
    }
  }
  // Requests already read but left unparsed by the in-flight bound go first.
  if (rx_.current != nullptr && rx_.filled - rx_.parsed >= frame_header_bytes &&
      rx_.filled - rx_.parsed >= frame_header_bytes + load_u32(rx_.current->data() + rx_.parsed))
    return on_read(0);
  auto self = shared_from_this();
  // No request arriving: hold no receive memory while waiting for one. Wait
  // for the socket to be readable, then take a chunk and read.
  if (rx_.partial() == 0) {
    std::error_code ec;
    if (rx_.current == nullptr || socket_.available(ec) == 0 || ec) {
      rx_.release_if_idle();
      reading_ = true;
      socket_.async_wait(asio::ip::tcp::socket::wait_read, [self](const std::error_code& e) {
        self->reading_ = false;
        if (e) return self->close();
        self->read_ready();
      });
      return;
    }
  }
  if (!take_receive_memory()) return;
  reading_ = true;
  socket_.async_read_some(asio::buffer(rx_.write_ptr(), rx_.write_room()),
                          [self](const std::error_code& ec, std::size_t n) {
                            self->reading_ = false;
                            if (ec) return self->close();
                            self->on_read(n);
                          });
}

// io thread: the socket is readable and no request is in progress.
void client_session::read_ready() {
  if (!open_ || paused_) return;
  if (!take_receive_memory()) return;
  std::error_code ec;
  const std::size_t n = socket_.read_some(asio::buffer(rx_.write_ptr(), rx_.write_room()), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) return do_read();
  if (ec) return close();
  on_read(n);
}

void client_session::on_read(std::size_t n) {
  if (!open_) return;
  rx_.filled += n;
  if (!parse()) {
    flush_ready();
    track_partial();
    return;
  }
  track_partial();
  if (!flush_ready()) return pause_with_retry();
  do_read();
}

// io thread. At the in-flight bound: requests delivered and unanswered,
// plus (§6a) those read in a batch not yet sealed. With only the latter,
// reading goes on: the batch's SEAL (at most maxClientInFlight requests on)
// must be read to release them.
bool client_session::inflight_full() const {
  const std::int64_t inflight = inflight_.load(std::memory_order_seq_cst);
  const auto max = static_cast<std::int64_t>(engine_.options().max_client_inflight);
  return rx_seal_ ? inflight > 0 && inflight + held_requests_ >= max : inflight >= max;
}

// io thread. A REQUEST's header is read and not parsed (it waits for room
// under the in-flight bound).
bool client_session::request_waiting() const {
  if (rx_.current == nullptr || rx_.filled - rx_.parsed < frame_header_bytes) return false;
  // §6b: a header not decrypted yet is not known to be a REQUEST.
  if (seal_ && rx_.decrypted < rx_.parsed + frame_header_bytes) return false;
  return decode_header(rx_.current->data() + rx_.parsed).kind == frame_kind::request;
}

// io thread. Complete REQUEST (and CANCEL) frames in [parsed, filled) become
// one delivery (peer = client_flag | id); every header is checked before
// its body. §6a: deliveries are held until the SEAL after them checks.
bool client_session::parse() {
  const auto& opt = engine_.options();
  std::uint8_t* base = rx_.current->data();
  std::size_t start = rx_.parsed;
  std::size_t mac_from = rx_.parsed;  // parsed, not yet fed to the MAC
  // §6b: what has arrived of the batch in progress is decrypted in place at
  // once. False: `upto` passes the batch's end (a frame that crosses it).
  auto plain = [&](std::size_t upto) -> bool {
    if (!seal_) return true;
    if (!rx_.decrypt_arrived(rx_seal_->cipher_left(), [this](std::uint8_t* p, std::size_t n) {
          return rx_seal_->decrypt(p, n) == sealed_receiver<delivery>::fed::ok;
        }))
      return false;
    return upto <= rx_.plain_end() || rx_seal_->cipher_left() > 0;
  };
  auto garbled = [&] {
    refuse(reject_code::bad_mac, "a batch that does not decrypt to frames (altered, replayed, reordered or cut ciphertext)");
    return false;
  };
  // §6b: the next batch's SEALED header, in clear (its sequence number and
  // length; the tag covers it). False: refused.
  auto begin_batch = [&]() -> bool {
    const auto r = rx_seal_->begin(base + rx_.parsed);
    if (r != sealed_receiver<delivery>::fed::ok) {
      refuse(reject_code::bad_mac, sealed_receiver<delivery>::refusal(r));
      return false;
    }
    rx_.parsed += frame_header_bytes;
    rx_.decrypted = mac_from = start = rx_.parsed;
    return true;
  };
  // Bytes of the batch in progress before `parsed`.
  auto batch_so_far = [&]() -> std::size_t {
    return seal_ ? rx_seal_->batch_bytes() - (rx_.decrypted - rx_.parsed) : rx_seal_->batch_bytes() + (rx_.parsed - mac_from);
  };
  std::uint32_t count = 0;   // requests in the run being cut
  std::uint32_t frames = 0;  // and cancels
  std::int64_t taken = 0;    // requests taken by this call
  auto cut = [&] {
    if (frames > 0) {
      rx_.current->refs.fetch_add(1, std::memory_order_relaxed);
      const delivery d{rx_.current, static_cast<std::uint32_t>(start), static_cast<std::uint32_t>(rx_.parsed - start),
                       client_flag | id_, frames, -1, 0, 0};
      if (rx_seal_) {
        rx_seal_->hold(d);
        held_requests_ += count;
      } else {
        ready_.push_back(d);
        inflight_.fetch_add(count, std::memory_order_acq_rel);
      }
      frames_read_ += count;
      requests_.fetch_add(count, std::memory_order_relaxed);
      bytes_in_.fetch_add(rx_.parsed - start, std::memory_order_relaxed);
      frames_since_tick_ += frames;
    }
    count = frames = 0;
    start = rx_.parsed;
  };
  // maxClientInFlight bounds what is handed on, not just when reading stops:
  // one read can hold thousands of small requests; the rest wait unparsed.
  const std::int64_t room = static_cast<std::int64_t>(opt.max_client_inflight) -
                            inflight_.load(std::memory_order_acquire) - held_requests_;
  // Every header in the buffer is checked before anything trusts its length
  // (receive_buffer::ensure_space sizes a chunk from it), including the one
  // that waits behind the in-flight bound.
  while (rx_.filled - rx_.parsed >= frame_header_bytes) {
    if (seal_ && !rx_seal_->in_batch()) {
      cut();
      if (!begin_batch()) return false;
      continue;
    }
    if (!plain(rx_.parsed + frame_header_bytes)) {
      cut();
      return garbled();
    }
    const frame_header h = decode_header(base + rx_.parsed);
    if (seal_ && (h.reserved != 0 ||
                  (h.kind != frame_kind::request && h.kind != frame_kind::cancel && h.kind != frame_kind::seal))) {
      cut();
      return garbled();
    }
    if (rx_seal_ && h.kind == frame_kind::seal) {
      if (h.length != auth::tag_bytes) {
        cut();
        refuse(reject_code::bad_frame, "SEAL frame of the wrong length");
        return false;
      }
      if (rx_.filled - rx_.parsed < auth::seal_frame_bytes) break;  // the tag is on its way
      cut();
      std::optional<std::uint64_t> pong;
      // The batch is authentic, or nothing it carried goes on.
      if ((!seal_ && rx_seal_->feed(base + mac_from, rx_.parsed - mac_from) != sealed_receiver<delivery>::fed::ok) ||
          !rx_seal_->open(h, base + rx_.parsed + frame_header_bytes, ready_, pong)) {
        refuse(reject_code::bad_mac, "a batch failed its MAC check (forged, altered, replayed or reordered frames)");
        return false;
      }
      inflight_.fetch_add(held_requests_, std::memory_order_acq_rel);
      if (key_state_) key_state_->inflight.fetch_add(held_requests_, std::memory_order_seq_cst);
      held_requests_ = 0;
      rx_.parsed += auth::seal_frame_bytes;
      rx_.decrypted = rx_.parsed;
      mac_from = start = rx_.parsed;
      // The key's bound is checked at each batch start.
      if (key_over_limit()) {
        key_blocked_ = true;
        // §6b: the next batch's SEALED header is taken now (its length is
        // the batch's, not a frame's: the receive buffer sizes a chunk from
        // the header at `parsed`).
        if (seal_ && rx_.filled - rx_.parsed >= frame_header_bytes && !begin_batch()) return false;
        break;
      }
      continue;
    }
    // §6a: small frames fill at most client_seal_batch_bytes of a batch (one
    // more frame may end it), so a batch fits the connection's receive
    // memory and is never left waiting for memory its own frames hold.
    if (rx_seal_ && batch_so_far() > auth::client_seal_batch_bytes) {
      cut();
      refuse(reject_code::bad_mac, "too much data without a SEAL");
      return false;
    }
    if (h.length > opt.max_request_bytes) {
      cut();
      refuse(reject_code::request_too_large, "request of " + std::to_string(h.length) +
                                                 " bytes exceeds maxRequestBytes " +
                                                 std::to_string(opt.max_request_bytes));
      return false;
    }
    // CANCEL (§6): the client gave up on a request; handed on with the
    // requests, in order, for the consumer to abort its handler.
    if (h.kind == frame_kind::cancel && h.length == 0 && h.reserved == 0 && h.flags == 0 && h.sender == 0) {
      rx_.decrypted = std::max(rx_.decrypted, rx_.parsed + frame_header_bytes);
      rx_.parsed += frame_header_bytes;
      ++frames;
      continue;
    }
    // REQUEST: `sender` carries the call's timeout in ms (0: none).
    if (h.kind != frame_kind::request || h.reserved != 0 || h.flags != 0) {
      cut();
      refuse(reject_code::bad_frame, "expected a REQUEST frame");
      return false;
    }
    if (rx_seal_ && held_requests_ + count >= opt.max_client_inflight) {
      cut();
      refuse(reject_code::bad_frame, "more than maxClientInFlight (" + std::to_string(opt.max_client_inflight) +
                                         ") requests in one sealed batch");
      return false;
    }
    if (taken >= room) break;  // checked; waits for room
    const std::size_t total = frame_header_bytes + h.length;
    if (!plain(rx_.parsed + total)) {
      cut();
      return garbled();
    }
    if (rx_.filled - rx_.parsed < total) break;
    rx_.parsed += total;
    ++count;
    ++frames;
    ++taken;
  }
  cut();
  if (rx_seal_ && !seal_ && rx_seal_->feed(base + mac_from, rx_.parsed - mac_from) != sealed_receiver<delivery>::fed::ok) {
    refuse(reject_code::bad_mac, "too much data without a SEAL");
    return false;
  }
  if (!ready_.empty()) delivered_ = true;
  return true;
}

bool client_session::flush_ready() {
  std::size_t pushed = 0;
  for (; pushed < ready_.size(); ++pushed)
    if (!engine_.push_delivery(ready_[pushed])) break;
  ready_.erase(ready_.begin(), ready_.begin() + static_cast<std::ptrdiff_t>(pushed));
  if (pushed > 0) engine_.notify();
  return ready_.empty();
}

void client_session::fill_stats(client_stats& out) {
  out.id = id_;
  out.remote = remote_;
  out.requests = requests_.load(std::memory_order_relaxed);
  out.bytes_in = bytes_in_.load(std::memory_order_relaxed);
  out.replies = replies_.load(std::memory_order_relaxed);
  out.bytes_out = bytes_out_.load(std::memory_order_relaxed);
  const std::int64_t inflight = inflight_.load(std::memory_order_relaxed);
  out.in_flight = inflight > 0 ? static_cast<std::uint64_t>(inflight) : 0;
  out.paused = inflight_paused_.load(std::memory_order_relaxed) || reply_backlog_.load(std::memory_order_relaxed);
  out.waiting_for_memory = waiting_chunk_.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(write_mu_);
  out.reply_backlog_bytes = pending_bytes_;
}

// Any thread (the JS thread flushing replies).
void client_session::enqueue(const segment& seg) {
  replies_.fetch_add(seg.messages, std::memory_order_relaxed);
  bytes_out_.fetch_add(seg.length, std::memory_order_relaxed);
  const std::int64_t left =
      inflight_.fetch_sub(static_cast<std::int64_t>(seg.messages), std::memory_order_seq_cst) -
      static_cast<std::int64_t>(seg.messages);
  release_key_inflight(seg.messages);
  write_state st = write_state::done;
  bool backlog_cleared = false;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (write_closed_) return;
    pending_.push_back(seg);
    pending_bytes_ += seg.length;
    if (tx_) {
      // §6a: cut into batches, each followed by its SEAL; only sealed
      // segments are written (a payload sent by reference waits for its
      // bytes to close the batch).
      const std::optional<std::size_t> sealed = tx_->seal(pending_, sealed_count_);
      if (sealed) sealed_count_ = *sealed;
      else st = write_state::failed;
    }
    if (!waiting_writable_ && st != write_state::failed) st = drain_locked();
    if (pending_bytes_ > max_reply_backlog) reply_backlog_.store(true, std::memory_order_seq_cst);
    else if (pending_bytes_ <= max_reply_backlog / 2) backlog_cleared = reply_backlog_.exchange(false, std::memory_order_seq_cst);
  }
  // §6a: requests held in an unsealed batch count too (inflight_full);
  // do_read checks again.
  const bool resume_reading =
      backlog_cleared || ((left < static_cast<std::int64_t>(engine_.options().max_client_inflight) || tx_) &&
                          inflight_paused_.exchange(false, std::memory_order_seq_cst));
  if (st == write_state::done && !resume_reading) return;
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self, st, resume_reading] {
    if (st == write_state::failed) return self->close();
    if (st == write_state::wait) self->wait_writable();
    if (resume_reading) self->resume();
  });
}

// Holds write_mu_. Writes what is pending until done or the socket is full.
client_session::write_state client_session::drain_locked() {
  for (;;) {
    const std::size_t writable = tx_ ? sealed_count_ : pending_.size();
    if (writable == 0) break;
    const gather_result r = gather_write(fd_, pending_, front_offset_, writable);
    for (std::size_t i = 0; i < r.segments_done; ++i) pending_.pop_front();
    if (tx_) sealed_count_ -= r.segments_done;
    engine_.count_replies(r.bytes);
    pending_bytes_ -= std::min(pending_bytes_, r.bytes);
    if (r.error) {
      write_closed_ = true;
      pending_.clear();
      pending_bytes_ = 0;
      return write_state::failed;
    }
    if (r.would_block) {
      waiting_writable_ = true;
      return write_state::wait;
    }
  }
  return write_state::done;
}

// io thread.
void client_session::wait_writable() {
  if (!open_) return;
  auto self = shared_from_this();
  socket_.async_wait(asio::ip::tcp::socket::wait_write, [self](const std::error_code& ec) {
    if (ec) return self->close();
    write_state st;
    bool backlog_cleared = false;
    {
      std::lock_guard<std::mutex> lock(self->write_mu_);
      self->waiting_writable_ = false;
      if (self->write_closed_) return;
      st = self->drain_locked();
      if (self->pending_bytes_ <= max_reply_backlog / 2)
        backlog_cleared = self->reply_backlog_.exchange(false, std::memory_order_seq_cst);
    }
    if (st == write_state::failed) return self->close();
    if (st == write_state::wait) self->wait_writable();
    if (backlog_cleared) self->resume();
  });
}

void client_session::refuse(reject_code code, const std::string& detail) {
  if (!open_) return;
  engine_.count_reject(code, 0, remote_, "client: " + detail);
  open_ = false;
  encode_reject(out_, code, engine_.options().self_id, detail);
  retry_.cancel();
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (!pending_.empty() || waiting_writable_) {
      // Replies are stuck: no reason frame; the deadline closes.
      auto self = shared_from_this();
      timer_.expires_after(std::chrono::seconds(1));
      timer_.async_wait([self](const std::error_code& ec) {
        if (!ec) self->close();
      });
      return;
    }
    write_closed_ = true;  // the reason frame is the last thing written
    // §6a: after the WELCOME the reason frame comes sealed like any other.
    if (tx_) tx_->seal_buffer(out_, 0, true);
    // It goes out on its own (engine::linger_close: FIN after it, then what
    // the client still sends is read and dropped until it closes, at most a
    // second). Closing with unread input would send RST, and a RST can
    // destroy the reason frame before the client reads it.
    std::error_code ignored;
    socket_.cancel(ignored);  // no read of ours may run on it any more
    engine_.linger_close(std::move(socket_), std::move(out_));
  }
  flush_ready();  // requests read before the refused frame are still delivered
  close();
}

void client_session::close() {
  std::error_code ignored;
  open_ = false;
  paused_ = false;
  timer_.cancel();
  retry_.cancel();
  {
    // No reply write may be using the descriptor while it closes.
    std::lock_guard<std::mutex> lock(write_mu_);
    write_closed_ = true;
    pending_.clear();
    pending_bytes_ = 0;
    sealed_count_ = 0;
    // No reset for unread input (see inbound_session::close).
    sockets::drain_and_shutdown(socket_);
    socket_.close(ignored);
  }
  for (auto& d : ready_) engine_.chunks().unref(d.source);
  ready_.clear();
  rx_.release();
  track_partial();
  if (delivered_) {
    // The consumer aborts what its handlers still run for this connection.
    delivered_ = false;
    engine_event ev;
    ev.type = event_type::client_closed;
    ev.peer = id_;
    engine_.post_event(std::move(ev));
  }
  // Woken for memory that we will not use now: another waiter gets it.
  if (wake_posted_.exchange(false, std::memory_order_acq_rel)) engine_.client_chunks().wake_waiters(1);
}

}  // namespace nexres
