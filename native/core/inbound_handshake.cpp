// inbound_session, the handshake: HELLO read and checked, the WELCOME, and
// with auth 'mac' the challenge-response (our WELCOME signed, the
// initiator's AUTH frame checked, a sealed REJECT from an initiator that
// refuses us); then the session takes over from the peer's previous one.
// The rest of the session is in inbound_session.cpp, its control frames in
// inbound_control.cpp.
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
    return refuse(reject_code::bad_auth, std::string("auth mode ") + auth_mode_name(m.auth) +
                                             " offered, this replica requires " + auth_mode_name(engine_.options().auth));
  if (m.body_length > hello_max_body_bytes || m.cluster_id_length > m.body_length ||
      m.body_length != m.cluster_id_length + (mac_ ? auth::hello_ext_bytes : 0))
    return refuse(reject_code::bad_frame, "handshake body length out of range");
  incarnation_ = m.incarnation;
  hello_epoch_ = m.epoch;
  peer_id_ = 0;
  const std::uint32_t claimed = m.sender;
  const std::size_t cid_len = m.cluster_id_length;
  hello_body_.resize(m.body_length);
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(hello_body_),
                   [self, claimed, cid_len](const std::error_code& ec, std::size_t) {
                     // Refused meanwhile (handshake deadline): never finish the handshake.
                     if (ec || !self->open_) return self->close();
                     // This cluster's replicas and those of the remote
                     // clusters configured, each with its own key: a remote
                     // member naming a local id is that cluster's replica.
                     const std::string cluster(reinterpret_cast<const char*>(self->hello_body_.data()), cid_len);
                     const int slot = self->engine_.member_slot(self->hello_body_.data(), cid_len, claimed);
                     if (slot < 0) {
                       if (cluster != self->engine_.options().cluster_id && !self->engine_.knows_cluster(cluster))
                         return self->refuse(reject_code::wrong_cluster, "cluster id does not match");
                       // Not reported as epoch_ahead: nothing proves a non-member's epoch.
                       const std::uint32_t ours = self->engine_.config_epoch();
                       return self->refuse(reject_code::unknown_peer,
                                           "replica id " + std::to_string(claimed) + " is not a peer in cluster " + cluster +
                                               " at epoch " + std::to_string(ours) +
                                               (self->hello_epoch_ > ours ? " (it says it is on epoch " + std::to_string(self->hello_epoch_) + ")" : ""));
                     }
                     self->peer_cluster_ = cluster;
                     if (self->mac_) return self->start_auth(claimed, slot);
                     if (!self->same_epoch(slot)) return;
                     self->peer_id_ = claimed;
                     self->address_ = self->engine_.slot(slot).address;
                     self->slot_ = slot;
                     self->on_hello_body();
                   });
}

// io thread: the HELLO's epoch is ours (a peer of this cluster); else STALE_EPOCH (both sides report
// it; its msg_id carries our epoch) and, from a newer peer, epoch_ahead.
bool inbound_session::same_epoch(int slot) {
  const std::uint32_t ours = engine_.config_epoch();
  // A remote cluster counts its epochs on its own.
  if (hello_epoch_ == ours || engine_.slot(slot).remote) return true;
  const std::uint32_t address = engine_.slot(slot).address;
  engine_.report_epoch_ahead(address, hello_epoch_, remote_);
  address_ = address;  // the refusal is reported as this peer's
  refuse(reject_code::stale_epoch,
         "replica " + std::to_string(engine_.slot(slot).id) + " is on configuration epoch " + std::to_string(hello_epoch_) +
             ", this replica on " + std::to_string(ours),
         ours);
  address_ = 0;
  return false;
}

// io thread, auth mac: WELCOME with our nonce, ephemeral key and signature,
// then the peer's AUTH frame. Nothing of this session touches the peer's
// state (a live session from the real peer stays) until its signature checks.
void inbound_session::start_auth(std::uint32_t claimed, int slot) {
  const auto& opt = engine_.options();
  key_ = engine_.slot(slot).key.load(std::memory_order_acquire);
  if (key_ == nullptr)
    return refuse(reject_code::bad_auth, "no public key for replica " + std::to_string(claimed));
  // The handshake budget, before any public-key operation.
  std::string why;
  if (!engine_.take_handshake(remote_, why)) return refuse(reject_code::rate_limited, why);
  const std::uint8_t* x = hello_body_.data() + peer_cluster_.size();
  std::array<std::uint8_t, auth::nonce_bytes> nonce_r{};
  if (!crypto::random_bytes(nonce_r.data(), nonce_r.size())) return refuse(reject_code::bad_auth, "no randomness");
  eph_ = std::make_unique<crypto::x25519_keypair>(crypto::x25519_keypair::generate());
  auth::transcript_input ti;
  ti.cluster_id = peer_cluster_;
  ti.initiator = claimed;
  ti.responder = opt.self_id;
  ti.initiator_incarnation = incarnation_;
  ti.responder_incarnation = opt.incarnation;
  ti.nonce_i = x;
  ti.eph_i = x + auth::nonce_bytes;
  ti.nonce_r = nonce_r.data();
  ti.eph_r = eph_->public_key().data();
  ti.replica_link = true;
  ti.responder_cluster_id = opt.cluster_id;
  ti.initiator_epoch = hello_epoch_;
  ti.responder_epoch = welcome_epoch_ = engine_.config_epoch();
  transcript_ = auth::transcript(ti);
  std::uint8_t* b = build_welcome(engine_.options().auth, auth::welcome_ext_bytes);
  std::memcpy(b, nonce_r.data(), auth::nonce_bytes);
  std::memcpy(b + auth::nonce_bytes, eph_->public_key().data(), auth::eph_bytes);
  const crypto::ed25519_signer* own = engine_.signer();
  if (own == nullptr || !auth::sign(*own, 'R', transcript_, b + auth::nonce_bytes + auth::eph_bytes))
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
  sealed_rx_ = std::make_unique<sealed_receiver<ready_run>>(keys.initiator_to_responder, claimed, max_batch,
                                                            engine_.options().auth == auth_mode::seal,
                                                            engine_.options().seal_rekey);
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
  const crypto::ed25519_verifier* v = key_;
  if (h.kind != frame_kind::auth || h.length != auth::sig_bytes || h.sender != claimed || h.flags != 0 ||
      h.reserved != 0 || v == nullptr || !auth::verify(*v, 'I', transcript_, auth_in_.data() + frame_header_bytes))
    return refuse(reject_code::bad_auth, "replica " + std::to_string(claimed) + " could not prove its identity");
  transcript_.clear();
  // The initiator's epoch is proven now (both signatures cover both epochs).
  if (!same_epoch(slot)) return;
  peer_id_ = claimed;
  address_ = engine_.slot(slot).address;
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
  w.epoch = mode == auth_mode::none ? engine_.config_epoch() : welcome_epoch_;
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
  if (ps.link.load(std::memory_order_acquire) == nullptr) {
    // Removed from the configuration during its handshake.
    slot_ = -1;
    peer_id_ = address_ = 0;
    return refuse(reject_code::unknown_peer, "replica " + std::to_string(ps.id) + " left the configuration");
  }
  if (mac_ && key_ != ps.key.load(std::memory_order_acquire)) {
    // Its key was replaced (reconfigure) while it proved the old one.
    slot_ = -1;
    peer_id_ = address_ = 0;
    return refuse(reject_code::bad_auth, "the public key of replica " + std::to_string(ps.id) + " changed during the handshake");
  }
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

}  // namespace nexres
