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
      mac_(eng.options().auth == auth_mode::mac) {
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
  if (m.auth != engine_.options().auth)
    return refuse(reject_code::bad_auth, std::string("auth mode ") + (m.auth == auth_mode::mac ? "mac" : m.auth == auth_mode::none ? "none" : "unknown") +
                                             " offered, this replica requires " + (mac_ ? "mac" : "none"));
  if (m.body_length > hello_max_body_bytes || m.cluster_id_length > m.body_length ||
      m.body_length != m.cluster_id_length + (mac_ ? auth::hello_ext_bytes : 0))
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
                     if (self->mac_) return self->start_auth(claimed, slot);
                     self->peer_id_ = claimed;
                     self->slot_ = slot;
                     self->on_hello_body();
                   });
}

// io thread, auth mac: WELCOME with our nonce, ephemeral key and signature,
// then the peer's AUTH frame. Nothing of this session touches the peer's
// state (a live session from the real peer stays) until its signature checks.
void inbound_session::start_auth(std::uint32_t claimed, int slot) {
  const auto& opt = engine_.options();
  if (engine_.identity().verifier(claimed) == nullptr)
    return refuse(reject_code::bad_auth, "no public key for replica " + std::to_string(claimed));
  const std::uint8_t* x = hello_body_.data() + opt.cluster_id.size();
  std::array<std::uint8_t, auth::nonce_bytes> nonce_r{};
  if (!crypto::random_bytes(nonce_r.data(), nonce_r.size())) return refuse(reject_code::bad_auth, "no randomness");
  eph_ = std::make_unique<crypto::x25519_keypair>(crypto::x25519_keypair::generate());
  auth::transcript_input ti;
  ti.cluster_id = opt.cluster_id;
  ti.initiator = claimed;
  ti.responder = opt.self_id;
  ti.initiator_incarnation = incarnation_;
  ti.responder_incarnation = opt.incarnation;
  ti.nonce_i = x;
  ti.eph_i = x + auth::nonce_bytes;
  ti.nonce_r = nonce_r.data();
  ti.eph_r = eph_->public_key().data();
  transcript_ = auth::transcript(ti);
  std::uint8_t* b = build_welcome(auth_mode::mac, auth::welcome_ext_bytes);
  std::memcpy(b, nonce_r.data(), auth::nonce_bytes);
  std::memcpy(b + auth::nonce_bytes, eph_->public_key().data(), auth::eph_bytes);
  if (!auth::sign(*engine_.identity().signer, 'R', transcript_, b + auth::nonce_bytes + auth::eph_bytes))
    return refuse(reject_code::bad_auth, "signing failed");
  // The session keys now: everything we write after the WELCOME is sealed
  // (a REJECT too), and the initiator may answer with a sealed REJECT
  // instead of its AUTH frame (it could not verify our WELCOME).
  auth::session_keys keys;
  if (!auth::derive(*eph_, x + auth::nonce_bytes, transcript_, keys))
    return refuse(reject_code::bad_auth, "bad ephemeral key");
  eph_.reset();
  tx_ = std::make_unique<auth::sealer>(keys.responder_to_initiator);
  // An honest sender seals every auth::seal_batch_bytes at a frame boundary.
  const std::size_t max_batch = static_cast<std::size_t>(engine_.options().max_frame_bytes) + 2 * auth::seal_batch_bytes + (1u << 20);
  sealed_rx_ = std::make_unique<sealed_receiver<ready_run>>(keys.initiator_to_responder, claimed, max_batch);
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(welcome_buf_), [self, claimed, slot](const std::error_code& ec, std::size_t) {
    if (ec || !self->open_) return self->close();
    asio::async_read(self->socket_, asio::buffer(self->auth_in_.data(), frame_header_bytes),
                     [self, claimed, slot](const std::error_code& ec2, std::size_t) {
                       if (ec2 || !self->open_) return self->close();
                       self->on_auth_header(claimed, slot);
                     });
  });
}

// io thread, auth mac: the frame after our WELCOME is the AUTH frame, or a
// sealed REJECT from an initiator that refuses us.
void inbound_session::on_auth_header(std::uint32_t claimed, int slot) {
  const frame_header h = decode_header(auth_in_.data());
  auto self = shared_from_this();
  if (h.kind == frame_kind::auth && h.length == auth::sig_bytes) {
    asio::async_read(socket_, asio::buffer(auth_in_.data() + frame_header_bytes, auth::sig_bytes),
                     [self, claimed, slot](const std::error_code& ec, std::size_t) {
                       if (ec || !self->open_) return self->close();
                       self->on_auth_frame(claimed, slot);
                     });
    return;
  }
  if (is_reject_header(h) && h.sender == claimed && h.flags == 0 && h.reserved == 0) {
    peer_reject_.resize(h.length + auth::seal_frame_bytes);
    asio::async_read(socket_, asio::buffer(peer_reject_), [self, claimed](const std::error_code& ec, std::size_t) {
      if (ec || !self->open_) return self->close();
      self->on_peer_reject(claimed);
    });
    return;
  }
  refuse(reject_code::bad_auth, "replica " + std::to_string(claimed) + " could not prove its identity");
}

void inbound_session::on_auth_frame(std::uint32_t claimed, int slot) {
  const frame_header h = decode_header(auth_in_.data());
  const crypto::ed25519_verifier* v = engine_.identity().verifier(claimed);
  if (h.kind != frame_kind::auth || h.length != auth::sig_bytes || h.sender != claimed || h.flags != 0 ||
      h.reserved != 0 || v == nullptr || !auth::verify(*v, 'I', transcript_, auth_in_.data() + frame_header_bytes))
    return refuse(reject_code::bad_auth, "replica " + std::to_string(claimed) + " could not prove its identity");
  transcript_.clear();
  peer_id_ = claimed;
  slot_ = slot;
  established();
}

// io thread, auth mac: the initiator refused our WELCOME (typically: it holds
// another public key for us). Its reason counts, and is reported, only when
// its SEAL checks with this connection's initiator key; then the connection
// closes (the initiator backs off before it dials again).
void inbound_session::on_peer_reject(std::uint32_t claimed) {
  const std::size_t body = peer_reject_.size() - auth::seal_frame_bytes;
  const std::uint8_t* seal = peer_reject_.data() + body;
  const frame_header sh = decode_header(seal);
  if (sh.kind != frame_kind::seal || sh.length != auth::tag_bytes || sh.sender != claimed ||
      !sealed_rx_->opener().update(auth_in_.data(), frame_header_bytes) ||
      !sealed_rx_->opener().update(peer_reject_.data(), body) || !sealed_rx_->opener().open(sh, seal + frame_header_bytes))
    return refuse(reject_code::bad_auth, "replica " + std::to_string(claimed) + " could not prove its identity");
  const reject_body r = decode_reject_body(peer_reject_.data(), body);
  engine_.count_reject(r.code, claimed, remote_, "refused by replica " + std::to_string(claimed) + ": " + r.text);
  close();
}

bool inbound_session::seal_into(std::vector<std::uint8_t>& buf, std::size_t from) {
  const std::size_t at = buf.size();
  buf.resize(at + auth::seal_frame_bytes);
  const crypto::byte_view v(buf.data() + from, at - from);
  return tx_->seal(&v, 1, engine_.options().self_id, buf.data() + at);
}

// Writes the WELCOME (fixed part, cluster id, `ext` bytes of auth data left
// for the caller) into welcome_buf_; returns where the auth data goes.
std::uint8_t* inbound_session::build_welcome(auth_mode mode, std::size_t ext) {
  const auto& opt = engine_.options();
  hello_message w{};
  w.type = hello_type::welcome;
  w.auth = mode;
  w.sender = opt.self_id;
  w.incarnation = opt.incarnation;
  w.version = protocol_version;
  w.cluster_id_length = static_cast<std::uint8_t>(opt.cluster_id.size());
  w.body_length = static_cast<std::uint32_t>(opt.cluster_id.size() + ext);
  welcome_buf_.assign(hello_fixed_bytes + w.body_length, 0);
  encode_hello(welcome_buf_.data(), w);
  std::memcpy(welcome_buf_.data() + hello_fixed_bytes, opt.cluster_id.data(), opt.cluster_id.size());
  return welcome_buf_.data() + hello_fixed_bytes + opt.cluster_id.size();
}

// io thread, auth none: WELCOME, then the session is live.
void inbound_session::on_hello_body() {
  build_welcome(auth_mode::none, 0);
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(welcome_buf_), [self](const std::error_code& ec, std::size_t) {
    if (ec || !self->open_) return self->close();
    self->established();
  });
}

// io thread: the peer is who it says (auth mac: proven). This session takes
// over from the peer's previous one.
void inbound_session::established() {
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
  // auth mac: the initiator reports its link up only once it hears from us
  // under the session keys (its AUTH checked): a keepalive PONG at once, or
  // the ACK sent just before it.
  if (mac_) {
    pong_id_ = 0;
    pong_pending_ = true;
  }
  // A resending peer needs the ACK of what was consumed before it reconnected.
  on_ack_request();
  arm_heartbeat();
  do_read();
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
    if (auto self = weak.lock()) self->resume();
  });
}

void inbound_session::do_read() {
  if (!open_ || reading_) return;
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
  auto cut = [&](std::size_t end) {
    if (run_msgs > 0) {
      rx_.current->refs.fetch_add(1, std::memory_order_relaxed);
      delivery d{rx_.current, static_cast<std::uint32_t>(run_start), static_cast<std::uint32_t>(end - run_start),
                 peer_id_, run_msgs, slot_, incarnation_, run_last};
      // auth mac: held until the SEAL after them checks.
      if (mac_) sealed_rx_->hold(ready_run{d, run_last});
      else ready_.push_back(ready_run{d, run_last});
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
      if (sealed_rx_->feed(base + mac_from, rx_.parsed - mac_from) != sealed_receiver<ready_run>::fed::ok ||
          !sealed_rx_->open(h, base + rx_.parsed + frame_header_bytes, ready_, pong)) {
        refuse(reject_code::bad_mac, "a batch failed its MAC check (forged, altered, replayed or reordered frames)");
        return false;
      }
      rx_.parsed += auth::seal_frame_bytes;
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
    if (rx_.filled - rx_.parsed < total) break;
    if ((h.flags & auth::flag_signed) != 0 && h.msg_id > last_seen_id_) {
      // Checked here, on the io thread: handlers only see verified signatures.
      const crypto::ed25519_verifier* v = engine_.identity().verifier(peer_id_);
      if (v == nullptr || !auth::verify_frame(*v, opt.cluster_id, base + rx_.parsed)) {
        cut(rx_.parsed);
        refuse(reject_code::bad_signature, v == nullptr ? "a signed frame, but no key to check it (auth none)"
                                                        : "a signed frame whose signature does not check");
        return false;
      }
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
  if (mac_ && sealed_rx_->feed(base + mac_from, rx_.parsed - mac_from) != sealed_receiver<ready_run>::fed::ok) {
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

void inbound_session::refuse(reject_code code, const std::string& detail) {
  if (!open_) return;
  engine_.count_reject(code, peer_id_ != 0 ? peer_id_ : 0, remote_, detail);
  open_ = false;  // stop reading; close once the reason frame is out
  std::vector<std::uint8_t> buf;
  encode_reject(buf, code, engine_.options().self_id, detail);
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
