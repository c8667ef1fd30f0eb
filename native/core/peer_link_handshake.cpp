// peer_link, the handshake: dialling the peer (its address resolved each
// attempt), the HELLO, the WELCOME or REJECT that answers it, and with auth
// 'mac' the WELCOME's signature checked, our AUTH frame and the session
// keys; the link is reported up once the peer accepted us. The rest of the
// link (writing, control frames, ACKs, failure and backoff) is in
// peer_link.cpp.
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

void peer_link::do_connect() {
  if (state_ == state::closed || engine_.stopping()) return;
  state_ = state::connecting;
  auto self = shared_from_this();
  std::error_code ec;
  auto addr = asio::ip::make_address(peer_.host, ec);
  auto on_connect = [self](const std::error_code& err) {
    if (self->state_ != state::connecting) return;
    if (err) return self->fail(reject_code::shutting_down, "connect failed: " + err.message());
    self->on_connected();
  };
  if (!ec) {
    const asio::ip::tcp::endpoint ep(addr, peer_.port);
    // Opened here, close-on-exec (async_connect would open it without).
    if (auto err = sockets::open(socket_, ep.protocol())) return fail(reject_code::shutting_down, "socket: " + err.message());
    socket_.async_connect(ep, on_connect);
    return;
  }
  resolver_.async_resolve(peer_.host, std::to_string(peer_.port),
                          [self, on_connect](const std::error_code& err,
                                             asio::ip::tcp::resolver::results_type results) {
                            if (self->state_ != state::connecting) return;
                            if (err || results.empty())
                              return self->fail(reject_code::shutting_down,
                                                "cannot resolve " + self->peer_.host);
                            const asio::ip::tcp::endpoint ep = *results.begin();
                            if (auto e = sockets::open(self->socket_, ep.protocol()))
                              return self->fail(reject_code::shutting_down, "socket: " + e.message());
                            self->socket_.async_connect(ep, on_connect);
                          });
}

void peer_link::on_connected() {
  std::error_code ignored;
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  socket_.non_blocking(true, ignored);  // gather_write() calls sendmsg directly
  // A large send buffer from the start: Linux grows it slowly on its own,
  // and a writer that waits for room every 64 KiB caps big-message throughput.
  if (engine_.options().send_buffer_bytes > 0)
    socket_.set_option(asio::socket_base::send_buffer_size(static_cast<int>(engine_.options().send_buffer_bytes)),
                       ignored);
  state_ = state::handshaking;
  const auto& opt = engine_.options();
  hello_message m{};
  m.type = hello_type::hello;
  m.auth = opt.auth;
  m.sender = opt.self_id;
  m.incarnation = opt.incarnation;
  m.version = protocol_version;
  m.epoch = engine_.config_epoch();
  hello_epoch_ = m.epoch;
  m.cluster_id_length = static_cast<std::uint8_t>(opt.cluster_id.size());
  const std::size_t ext = mac_ ? auth::hello_ext_bytes : 0;
  m.body_length = static_cast<std::uint32_t>(opt.cluster_id.size() + ext);
  hello_out_.assign(hello_fixed_bytes + opt.cluster_id.size() + ext, 0);
  encode_hello(hello_out_.data(), m);
  std::memcpy(hello_out_.data() + hello_fixed_bytes, opt.cluster_id.data(), opt.cluster_id.size());
  if (mac_) {
    // A fresh challenge and ephemeral key per connection.
    eph_ = std::make_unique<crypto::x25519_keypair>(crypto::x25519_keypair::generate());
    if (!crypto::random_bytes(nonce_.data(), nonce_.size()))
      return fail(reject_code::bad_auth, "no randomness for the handshake");
    std::uint8_t* x = hello_out_.data() + hello_fixed_bytes + opt.cluster_id.size();
    std::memcpy(x, nonce_.data(), auth::nonce_bytes);
    std::memcpy(x + auth::nonce_bytes, eph_->public_key().data(), auth::eph_bytes);
  }

  auto self = shared_from_this();
  timer_.expires_after(std::chrono::milliseconds(opt.handshake_timeout_ms));
  timer_.async_wait([self](const std::error_code& ec) {
    if (ec) return;
    if (self->state_ == state::handshaking)
      self->fail(reject_code::handshake_timeout, "no WELCOME within the handshake deadline");
    else if (self->state_ == state::up && !self->confirmed_)
      self->fail(reject_code::handshake_timeout, "the peer did not accept our AUTH frame within the handshake deadline");
  });
  asio::async_write(socket_, asio::buffer(hello_out_), [self](const std::error_code& ec, std::size_t) {
    if (self->state_ != state::handshaking) return;
    if (ec) return self->fail(reject_code::shutting_down, "handshake write failed: " + ec.message());
    self->read_welcome();
  });
}

// The answer is either a WELCOME (starts with the magic) or a REJECT frame.
void peer_link::read_welcome() {
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(hello_in_.data(), frame_header_bytes),
                   [self](const std::error_code& ec, std::size_t) {
                     if (self->state_ != state::handshaking) return;
                     if (ec) return self->fail(reject_code::shutting_down, "connection closed during handshake");
                     self->on_welcome_header();
                   });
}

void peer_link::on_welcome_header() {
  auto self = shared_from_this();
  if (load_u32(hello_in_.data()) != hello_magic) {
    const frame_header h = decode_header(hello_in_.data());
    if (!is_reject_header(h)) return fail(reject_code::bad_frame, "peer answered the handshake with garbage");
    body_in_.resize(h.length);
    asio::async_read(socket_, asio::buffer(body_in_), [self](const std::error_code& ec, std::size_t) {
      if (self->state_ != state::handshaking) return;
      if (ec) return self->fail(reject_code::shutting_down, "connection closed during handshake");
      const reject_body r = decode_reject_body(self->body_in_.data(), self->body_in_.size());
      self->on_refused(decode_header(self->hello_in_.data()), r);
    });
    return;
  }
  asio::async_read(
      socket_, asio::buffer(hello_in_.data() + frame_header_bytes, hello_fixed_bytes - frame_header_bytes),
      [self](const std::error_code& ec, std::size_t) {
        if (self->state_ != state::handshaking) return;
        if (ec) return self->fail(reject_code::shutting_down, "connection closed during handshake");
        std::uint32_t magic = 0;
        hello_message w = decode_hello(self->hello_in_.data(), magic);
        const auto& opt = self->engine_.options();
        if (w.type != hello_type::welcome || w.version != protocol_version)
          return self->fail(reject_code::bad_version, "unexpected WELCOME");
        if (w.sender != self->peer_.id)
          return self->fail(reject_code::unknown_peer, "replica " + std::to_string(w.sender) +
                                                           " answered at the address of replica " +
                                                           std::to_string(self->peer_.id));
        if (w.auth != opt.auth)
          return self->fail(reject_code::bad_auth, std::string("peer answered in auth mode ") +
                                                       auth_mode_name(w.auth) + ", this replica uses " +
                                                       auth_mode_name(opt.auth));
        const std::size_t ext = self->mac_ ? auth::welcome_ext_bytes : 0;
        // The WELCOME names the peer's cluster (another one for a remote link).
        if (w.body_length > hello_max_body_bytes || w.cluster_id_length != self->cluster_.size() ||
            w.body_length != w.cluster_id_length + ext)
          return self->fail(reject_code::wrong_cluster, "peer is not of cluster " + self->cluster_);
        self->body_in_.resize(w.body_length);
        asio::async_read(self->socket_, asio::buffer(self->body_in_),
                         [self, w](const std::error_code& ec2, std::size_t) {
                           if (self->state_ != state::handshaking) return;
                           if (ec2) return self->fail(reject_code::shutting_down, "connection closed during handshake");
                           if (std::memcmp(self->body_in_.data(), self->cluster_.data(), self->cluster_.size()) != 0)
                             return self->fail(reject_code::wrong_cluster, "peer is not of cluster " + self->cluster_);
                           if (self->mac_ && !self->on_welcome_auth(w)) return;
                           // Auth none: the peer refuses another epoch before its
                           // WELCOME (with mac, after our AUTH frame proves ours).
                           if (!self->mac_ && w.epoch != self->hello_epoch_ && !self->engine_.slot(self->slot_).remote) {
                             self->engine_.report_epoch_ahead(self->address_, w.epoch, self->peer_.host);
                             return self->fail(reject_code::stale_epoch,
                                               "peer is on configuration epoch " + std::to_string(w.epoch) +
                                                   ", this replica on " + std::to_string(self->hello_epoch_));
                           }
                           self->on_up();
                         });
      });
}

// io thread: the WELCOME checks. Writing starts now (auth mac: the AUTH
// frame first, then sealed batches); the link is reported up once the peer
// has accepted us (confirm()): with auth mac, a peer that refuses our AUTH
// frame (it holds another public key for us) answers with a sealed REJECT
// instead, and the link never was up: no peer_up, and the backoff keeps
// growing, so a one-sided key mismatch retries slowly instead of flapping.
void peer_link::on_up() {
  state_ = state::up;
  confirmed_ = false;
  last_heard_ = std::chrono::steady_clock::now();
  if (!mac_) confirm();
  heartbeat_tick();
  read_control();
  pull_queue();
  do_write();
}

void peer_link::confirm() {
  timer_.cancel();  // the handshake deadline
  confirmed_ = true;
  ever_up_ = true;
  backoff_ms_ = engine_.options().reconnect_min_ms;
  connected_.store(true, std::memory_order_release);
  engine_.post_event(engine_event{event_type::peer_up, peer_.id, 0, {}, {}});
}

// io thread, auth mac: checks the WELCOME's signature (the peer proves it is
// the replica we dialed), answers with our own (the AUTH frame, first on the
// wire) and derives the session keys. False when it failed the link.
bool peer_link::on_welcome_auth(const hello_message& w) {
  const auto& o = engine_.options();
  const std::uint8_t* x = body_in_.data() + cluster_.size();
  const std::uint8_t* nonce_r = x;
  const std::uint8_t* eph_r = x + auth::nonce_bytes;
  const std::uint8_t* sig_r = eph_r + auth::eph_bytes;
  auth::transcript_input ti;
  ti.cluster_id = o.cluster_id;
  ti.initiator = o.self_id;
  ti.responder = peer_.id;
  ti.initiator_incarnation = o.incarnation;
  ti.responder_incarnation = w.incarnation;
  ti.nonce_i = nonce_.data();
  ti.eph_i = eph_->public_key().data();
  ti.nonce_r = nonce_r;
  ti.eph_r = eph_r;
  ti.replica_link = true;
  ti.responder_cluster_id = cluster_;
  ti.initiator_epoch = hello_epoch_;
  ti.responder_epoch = w.epoch;
  const std::vector<std::uint8_t> t = auth::transcript(ti);
  const crypto::ed25519_verifier* v = engine_.slot(slot_).key.load(std::memory_order_acquire);
  if (v == nullptr || !auth::verify(*v, 'R', t, sig_r)) {
    refuse_welcome(reject_code::bad_auth,
                   "replica " + std::to_string(peer_.id) + " could not prove its identity (its WELCOME does not " +
                       "check with the public key replica " + std::to_string(o.self_id) + " holds for it)",
                   t, eph_r);
    return false;
  }
  auth::session_keys keys;
  if (!auth::derive(*eph_, eph_r, t, keys)) {
    fail(reject_code::bad_auth, "bad ephemeral key from replica " + std::to_string(peer_.id));
    return false;
  }
  eph_.reset();
  auto frame = std::make_shared<std::array<std::uint8_t, auth::auth_frame_bytes>>();
  frame_header h{};
  h.length = static_cast<std::uint32_t>(auth::sig_bytes);
  h.sender = o.self_id;
  h.kind = frame_kind::auth;
  encode_header(frame->data(), h);
  const crypto::ed25519_signer* own = engine_.signer();
  if (own == nullptr || !auth::sign(*own, 'I', t, frame->data() + frame_header_bytes)) {
    fail(reject_code::bad_auth, "signing failed");
    return false;
  }
  tx_ = std::make_unique<sealed_sender<segment>>(keys.initiator_to_responder, o.self_id, auth::seal_batch_bytes,
                                                 o.auth == auth_mode::seal, o.seal_rekey);
  rx_ = std::make_unique<auth::opener>(keys.responder_to_initiator);
  pending_.push_front(segment::control_frame(frame, frame->data(), frame->size()));
  sealed_count_ = 1;  // the AUTH frame goes first, outside any batch
  unsealed_bytes_ = 0;
  return true;
}

// io thread, auth mac: the WELCOME does not check. The peer learns why: a
// REJECT sealed with this connection's I->R key (the ephemeral exchange does
// not depend on the signatures) goes out on the socket's own lingering close
// (engine::linger_close), then the link fails and backs off.
void peer_link::refuse_welcome(reject_code code, const std::string& reason, const std::vector<std::uint8_t>& t,
                               const std::uint8_t* eph_r) {
  auth::session_keys keys;
  if (auth::derive(*eph_, eph_r, t, keys)) {
    std::vector<std::uint8_t> buf;
    encode_reject(buf, code, engine_.options().self_id, reason, auth::seal_frame_bytes);
    auth::sealer tx(keys.initiator_to_responder);
    const std::size_t framed = buf.size() - auth::seal_frame_bytes;
    const crypto::byte_view v(buf.data(), framed);
    if (tx.seal(&v, 1, engine_.options().self_id, buf.data() + framed)) {
      std::error_code ignored;
      socket_.cancel(ignored);  // nothing of ours may run on it any more
      engine_.linger_close(std::move(socket_), std::move(buf));
    }
  }
  fail(code, reason);
}

}  // namespace nexres
