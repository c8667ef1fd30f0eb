// client_session, PROTOCOL.md §6 and §6a: the CLIENT_WELCOME and, for a
// client that names an Ed25519 key, the key exchange that proves it (the
// replica signs too when it has a key), the consumer's say (allowClient),
// the per-key bounds, and the sealed streams both ways.
#include "client_session.hpp"

#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <cstring>

namespace nexres {

namespace {
std::string hex(const std::array<std::uint8_t, 32>& k) {
  static const char digits[] = "0123456789abcdef";
  std::string s(64, '0');
  for (std::size_t i = 0; i < k.size(); ++i) {
    s[2 * i] = digits[k[i] >> 4];
    s[2 * i + 1] = digits[k[i] & 15];
  }
  return s;
}
}  // namespace

// io thread: the CLIENT_HELLO's body is read and its cluster id checked.
void client_session::welcome(std::size_t cid_len, auth_mode mode) {
  const auto& opt = engine_.options();
  const bool keyed = mode != auth_mode::none;
  seal_ = mode == auth_mode::seal;
  const std::size_t cid = opt.cluster_id.size();
  const std::size_t ext = keyed ? client_welcome_key_bytes : 0;
  hello_message w{};
  w.type = hello_type::client_welcome;
  w.auth = mode;
  w.sender = opt.self_id;
  w.incarnation = id_;  // the connection id, for the client's logs
  w.version = protocol_version;
  w.cluster_id_length = static_cast<std::uint8_t>(cid);
  // Body: the cluster id, then the limits the client must respect (§6), so
  // it can fail an oversized call alone instead of losing the connection;
  // then (§6a) nonce_R | X_R | sig_R.
  w.body_length = static_cast<std::uint32_t>(cid + client_welcome_limits_bytes + ext);
  out_.assign(hello_fixed_bytes + cid + client_welcome_limits_bytes + ext, 0);
  encode_hello(out_.data(), w);
  std::memcpy(out_.data() + hello_fixed_bytes, opt.cluster_id.data(), cid);
  store_u32(out_.data() + hello_fixed_bytes + cid, opt.max_request_bytes);
  store_u32(out_.data() + hello_fixed_bytes + cid + 4, static_cast<std::uint32_t>(opt.max_client_inflight));
  if (keyed) {
    // The handshake budget, before any public-key operation.
    std::string why;
    if (!engine_.take_handshake(remote_, why)) return refuse(reject_code::rate_limited, why);
    const std::uint8_t* in = hello_body_.data() + cid_len;  // nonce_C | X_C | P_C
    std::uint8_t* x = out_.data() + hello_fixed_bytes + cid + client_welcome_limits_bytes;
    try {
      eph_ = std::make_unique<crypto::x25519_keypair>(crypto::x25519_keypair::generate());
    } catch (const std::exception&) {
      return refuse(reject_code::bad_auth, "could not make an ephemeral key");
    }
    if (!crypto::random_bytes(x, auth::nonce_bytes)) return refuse(reject_code::bad_auth, "no randomness");
    std::memcpy(x + auth::nonce_bytes, eph_->public_key().data(), auth::eph_bytes);
    auth::transcript_input t;  // §6a: no responder cluster or epochs
    t.cluster_id = opt.cluster_id;
    t.responder = opt.self_id;
    t.responder_incarnation = id_;
    t.nonce_i = in;
    t.eph_i = in + auth::nonce_bytes;
    t.nonce_r = x;
    t.eph_r = x + auth::nonce_bytes;
    transcript_ = auth::transcript(t);
    auth::session_keys keys;
    if (!auth::derive(*eph_, in + auth::nonce_bytes, transcript_, keys))
      return refuse(reject_code::bad_auth, "the client's X25519 key gives no shared secret");
    std::memcpy(client_key_.data(), in + 2 * auth::nonce_bytes, client_key_.size());
    // §6b: a sealed connection without a key names the all-zero key.
    anonymous_ = seal_ && std::all_of(client_key_.begin(), client_key_.end(), [](std::uint8_t b) { return b == 0; });
    if (anonymous_ && opt.require_client_key)
      return refuse(reject_code::bad_auth, "this replica serves only clients with a key (clientAuth 'key'): connect with privateKey");
    // Both signatures cover the transcript and the client's key.
    transcript_.insert(transcript_.end(), client_key_.begin(), client_key_.end());
    const crypto::ed25519_signer* signer = engine_.signer();
    if (signer && !auth::sign(*signer, 'S', transcript_, x + auth::nonce_bytes + auth::eph_bytes))
      return refuse(reject_code::bad_auth, "could not sign the handshake");
    {
      std::lock_guard<std::mutex> lock(write_mu_);
      tx_ = std::make_unique<sealed_sender<segment>>(keys.responder_to_initiator, opt.self_id, auth::seal_batch_bytes,
                                                     seal_, opt.seal_rekey);
    }
    // A batch holds at most one request over seal_batch_bytes (§6a).
    rx_seal_ = std::make_unique<sealed_receiver<delivery>>(
        keys.initiator_to_responder, 0, opt.max_request_bytes + auth::seal_batch_bytes + 2 * frame_header_bytes, seal_,
        opt.seal_rekey);
  } else {
    timer_.cancel();
    welcomed_ = true;
  }
  auto self = shared_from_this();
  // Written before any reply: replies only exist once requests are read.
  asio::async_write(socket_, asio::buffer(out_), [self, keyed](const std::error_code& e, std::size_t) {
    if (e || !self->open_) return self->close();
    if (keyed) return self->read_auth();
    self->arm_idle_timer();
    self->do_read();
  });
}

void client_session::read_auth() {
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(auth_frame_), [self](const std::error_code& ec, std::size_t) {
    if (ec || !self->open_) return self->close();
    self->on_auth();
  });
}

// io thread: the client's AUTH frame (§6a step 3).
void client_session::on_auth() {
  const auto& opt = engine_.options();
  const frame_header h = decode_header(auth_frame_.data());
  if (h.kind != frame_kind::auth || h.length != auth::sig_bytes || h.sender != 0 || h.flags != 0 || h.reserved != 0 ||
      h.route != 0 || h.msg_id != 0)
    return refuse(reject_code::bad_frame, "expected the client's AUTH frame");
  if (anonymous_) {
    // §6b without a key: nothing to prove, the signature must be all zero.
    const std::uint8_t* sig = auth_frame_.data() + frame_header_bytes;
    if (!std::all_of(sig, sig + auth::sig_bytes, [](std::uint8_t b) { return b == 0; }))
      return refuse(reject_code::bad_auth, "an AUTH signature for no key");
    transcript_.clear();
    eph_.reset();
    return serve();
  }
  auto v = crypto::ed25519_verifier::from_public(client_key_.data());
  if (!v || !auth::verify(*v, 'C', transcript_, auth_frame_.data() + frame_header_bytes))
    return refuse(reject_code::bad_auth,
                  "the client's handshake signature does not check: it does not hold the private key of the key it named");
  transcript_.clear();
  eph_.reset();
  key_state_ = engine_.claim_client_key(client_key_, id_);
  if (!key_state_)
    return refuse(reject_code::too_many_connections, "maxClientKeyConnections (" +
                                                         std::to_string(opt.max_client_key_connections) +
                                                         ") connections of this client key are open");
  keyed_.store(true, std::memory_order_release);
  if (opt.client_allow_hook) {
    // The consumer decides (allowClient); nothing is read until it has.
    awaiting_allow_ = true;
    engine_event ev;
    ev.type = event_type::client_auth;
    ev.peer = id_;
    ev.reason = hex(client_key_);
    ev.remote = remote_;
    engine_.post_event(std::move(ev));
    return;
  }
  serve();
}

void client_session::on_allowed(bool allow, const std::string& reason) {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self, allow, reason] {
    if (!self->open_ || !self->awaiting_allow_) return;
    self->awaiting_allow_ = false;
    if (!allow) return self->refuse(reject_code::bad_auth, reason.empty() ? "allowClient refused this client key" : reason);
    self->serve();
  });
}

// io thread: a keyed client is accepted. A sealed PONG (msg_id 0) tells it
// so; then its requests are read.
void client_session::serve() {
  timer_.cancel();
  welcomed_ = true;
  served_.store(true, std::memory_order_release);
  key_blocked_ = key_over_limit();
  out_.assign(frame_header_bytes, 0);
  frame_header h{};
  h.kind = frame_kind::pong;
  h.sender = engine_.options().self_id;
  encode_header(out_.data(), h);
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (!tx_->seal_buffer(out_, 0, true)) return refuse(reject_code::bad_auth, "could not seal");
  }
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(out_), [self](const std::error_code& e, std::size_t) {
    if (e || !self->open_) return self->close();
    self->arm_idle_timer();
    self->do_read();
  });
}

bool client_session::key(std::array<std::uint8_t, 32>& out) const {
  if (!keyed_.load(std::memory_order_acquire)) return false;
  out = client_key_;
  return true;
}

bool client_session::key_over_limit() const noexcept {
  return key_state_ && key_state_->inflight.load(std::memory_order_seq_cst) >=
                           static_cast<std::int64_t>(engine_.options().max_client_key_inflight);
}

// io thread: the key is at its in-flight bound at a batch start. Waits
// (true) until a reply of any of its connections brings it under; false
// when it is under already.
bool client_session::wait_for_key() {
  paused_ = true;
  {
    std::lock_guard<std::mutex> lock(key_state_->mu);
    key_state_->waiters.push_back(weak_from_this());
  }
  // seq_cst, flag then count against release_key_inflight's count then flag.
  key_state_->has_waiters.store(true, std::memory_order_seq_cst);
  if (!key_over_limit()) {
    paused_ = false;
    return false;
  }
  rx_.release_if_idle();
  return true;
}

// Any thread: n requests of this key were answered (or dropped with it).
void client_session::release_key_inflight(std::int64_t n) {
  if (!key_state_ || n <= 0) return;
  const std::int64_t left = key_state_->inflight.fetch_sub(n, std::memory_order_seq_cst) - n;
  if (left >= static_cast<std::int64_t>(engine_.options().max_client_key_inflight) ||
      !key_state_->has_waiters.load(std::memory_order_seq_cst))
    return;
  std::vector<std::weak_ptr<client_session>> w;
  {
    std::lock_guard<std::mutex> lock(key_state_->mu);
    w.swap(key_state_->waiters);
    key_state_->has_waiters.store(false, std::memory_order_seq_cst);
  }
  for (auto& x : w)
    if (auto s = x.lock()) s->resume_async();
}

void client_session::resume_async() {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self] { self->resume(); });
}

}  // namespace nexres
