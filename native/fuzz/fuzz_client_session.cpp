// libFuzzer target over the real client session (PROTOCOL.md §6): each input
// is written to a fresh TCP connection to the client port of one long-lived
// engine, the write side shut down, and the engine's answer read until it
// closes the connection. Every delivered request is answered with a REPLY
// through engine::enqueue (the reply write path runs too). Seeds
// (native/fuzz/seeds/fuzz_client_session/) start with a CLIENT_HELLO.
//
// Invariants checked besides "no crash, no sanitizer report":
//  - deliveries come from a client connection and hold only whole REQUEST
//    frames (sender 0, flags and reserved 0, length <= max_request_bytes);
//  - the engine's answer is CLIENT_WELCOME (replica 1, a connection id, our
//    cluster id, then its max_request_bytes and max_client_inflight) exactly when the handshake is acceptable, then only our
//    REPLY frames (intact), or a REJECT frame with a known code, and nothing
//    after a REJECT.
#include "fuzz_net.hpp"

#include <unordered_map>

using namespace nexres;
using namespace nexres_fuzz;

namespace {

constexpr std::uint32_t reply_route_xor = 0x5eed;
constexpr std::uint64_t reply_body_xor = 0x7265706c79ull;  // "reply"

bool hello_acceptable(const std::vector<std::uint8_t>& in) {
  if (in.size() < hello_fixed_bytes) return false;
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(in.data(), magic);
  if (magic != hello_magic || m.version != protocol_version || m.type != hello_type::client_hello ||
      m.auth != auth_mode::none || m.body_length > hello_max_body_bytes || m.cluster_id_length > m.body_length)
    return false;
  if (in.size() < hello_fixed_bytes + m.body_length) return false;
  if (m.cluster_id_length == 0) return true;  // "any cluster"
  return m.cluster_id_length == std::strlen(cluster_id) &&
         std::memcmp(in.data() + hello_fixed_bytes, cluster_id, m.cluster_id_length) == 0;
}

// A keyed or sealed CLIENT_HELLO (PROTOCOL.md §6a, §6b): it may be answered (a keyed
// WELCOME, then sealed frames this harness does not follow: its AUTH would
// have to sign that WELCOME) or refused (an X25519 key with no shared
// secret); a WELCOME must be the keyed one.
bool keyed_hello(const std::vector<std::uint8_t>& in) {
  if (in.size() < hello_fixed_bytes) return false;
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(in.data(), magic);
  return magic == hello_magic && m.type == hello_type::client_hello &&
         (m.auth == auth_mode::mac || m.auth == auth_mode::seal);
}

// The auth mode of a keyed or sealed CLIENT_HELLO (§6a, §6b).
auth_mode hello_auth(const std::vector<std::uint8_t>& in) {
  std::uint32_t magic = 0;
  return decode_hello(in.data(), magic).auth;
}

void check_keyed_response(const std::vector<std::uint8_t>& r, auth_mode mode) {
  if (r.size() < hello_fixed_bytes || load_u32(r.data()) != hello_magic) return;
  std::uint32_t magic = 0;
  const hello_message w = decode_hello(r.data(), magic);
  const std::size_t cid = std::strlen(cluster_id);
  FUZZ_CHECK(w.type == hello_type::client_welcome && w.auth == mode && w.sender == self_id);
  FUZZ_CHECK(w.cluster_id_length == cid && w.body_length == cid + client_welcome_limits_bytes + client_welcome_key_bytes);
}

void check_response(engine& e, const std::vector<std::uint8_t>& r, bool accepted, std::uint64_t replies_sent) {
  std::size_t p = 0;
  if (r.size() >= 4) FUZZ_CHECK((load_u32(r.data()) == hello_magic) == accepted);
  if (r.size() >= 4 && load_u32(r.data()) == hello_magic) {
    if (r.size() < hello_fixed_bytes) return;
    std::uint32_t magic = 0;
    const hello_message w = decode_hello(r.data(), magic);
    FUZZ_CHECK(w.type == hello_type::client_welcome);
    FUZZ_CHECK(w.version == protocol_version);
    FUZZ_CHECK(w.sender == self_id);
    FUZZ_CHECK(w.incarnation != 0 && (w.incarnation & client_flag) == 0);
    const std::size_t cid = std::strlen(cluster_id);
    FUZZ_CHECK(w.cluster_id_length == cid && w.body_length == cid + client_welcome_limits_bytes);
    if (r.size() < hello_fixed_bytes + w.body_length) return;
    FUZZ_CHECK(std::memcmp(r.data() + hello_fixed_bytes, cluster_id, cid) == 0);
    // The limits this engine enforces (§6), after the cluster id.
    FUZZ_CHECK(load_u32(r.data() + hello_fixed_bytes + cid) == max_request_bytes);
    FUZZ_CHECK(load_u32(r.data() + hello_fixed_bytes + cid + 4) == e.options().max_client_inflight);
    p = hello_fixed_bytes + w.body_length;
  }
  std::uint64_t replies = 0;
  while (r.size() - p >= frame_header_bytes) {
    const frame_header h = decode_header(r.data() + p);
    FUZZ_CHECK(h.sender == self_id);
    FUZZ_CHECK(h.flags == 0 && h.reserved == 0);
    if (checked_reject(r, p, h)) return;
    FUZZ_CHECK(accepted);
    FUZZ_CHECK(h.kind == frame_kind::reply);
    FUZZ_CHECK(h.length == 8);
    if (r.size() - p < frame_header_bytes + 8) return;
    // Our reply, intact: its body is derived from the request id and route.
    FUZZ_CHECK(load_u64(r.data() + p + frame_header_bytes) == (h.msg_id ^ reply_body_xor ^ h.route));
    ++replies;
    p += frame_header_bytes + 8;
  }
  FUZZ_CHECK(replies <= replies_sent);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  engine& e = the_engine();
  const std::vector<std::uint8_t> input(data, data + size);
  std::uint64_t replies_sent = 0;

  auto on_delivery = [&](const delivery& d) {
    FUZZ_CHECK((d.peer & client_flag) != 0 && d.peer != broadcast_destination);
    FUZZ_CHECK(d.slot == -1);
    FUZZ_CHECK(d.messages > 0 && d.length >= frame_header_bytes);
    FUZZ_CHECK(d.source != nullptr && d.offset + static_cast<std::size_t>(d.length) <= d.source->capacity);
    const std::uint8_t* p = d.source->data() + d.offset;
    const std::uint8_t* end = p + d.length;
    std::uint32_t n = 0;
    // One block of replies per delivery, like the addon's flush.
    auto block = std::make_shared<std::vector<std::uint8_t>>();
    block->reserve(static_cast<std::size_t>(d.messages) * (frame_header_bytes + 8));
    std::uint32_t answered = 0;
    while (p < end) {
      FUZZ_CHECK(static_cast<std::size_t>(end - p) >= frame_header_bytes);
      const frame_header h = decode_header(p);
      // REQUEST (its sender field is the call's timeout) or CANCEL (no reply).
      FUZZ_CHECK(h.kind == frame_kind::request || h.kind == frame_kind::cancel);
      FUZZ_CHECK(h.flags == 0 && h.reserved == 0);
      if (h.kind == frame_kind::cancel) {
        FUZZ_CHECK(h.length == 0 && h.sender == 0);
        p += frame_header_bytes;
        ++n;
        continue;
      }
      ++answered;
      FUZZ_CHECK(h.length <= max_request_bytes);
      FUZZ_CHECK(static_cast<std::size_t>(end - p) >= frame_header_bytes + h.length);
      const std::size_t at = block->size();
      block->resize(at + frame_header_bytes + 8);
      const std::uint32_t route = h.route ^ reply_route_xor;
      encode_header(block->data() + at, frame_header{8, route, self_id, frame_kind::reply, 0, 0, h.msg_id});
      store_u64(block->data() + at + frame_header_bytes, h.msg_id ^ reply_body_xor ^ route);
      p += frame_header_bytes + h.length;
      ++n;
    }
    FUZZ_CHECK(n == d.messages);
    segment s;
    s.data = block->data();
    s.length = static_cast<std::uint32_t>(block->size());
    s.messages = answered;
    s.owner = block;
    // False once the connection is gone (its replies are dropped): fine.
    if (answered > 0 && e.enqueue(d.peer, s)) replies_sent += answered;
  };

  const exchange_result r = exchange(e.client_port(), input.data(), input.size(), on_delivery);
  check_after_input(r);
  if (keyed_hello(input)) check_keyed_response(r.response, hello_auth(input));
  else check_response(e, r.response, hello_acceptable(input), replies_sent);
  return 0;
}
