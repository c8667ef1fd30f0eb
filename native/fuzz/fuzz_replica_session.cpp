// libFuzzer target over the real inbound replica session: each input is
// written to a fresh TCP connection to the replica port of one long-lived
// engine (replica 1 of a 2-replica cluster, "fuzz-cluster", auth none), then
// the write side is shut down and the engine's answer read until it closes
// the connection. Seeds (native/fuzz/seeds/fuzz_replica_session/) start with a
// valid HELLO from replica 2.
//
// An input whose HELLO carries incarnation 0 gets a fresh incarnation per run
// (so every run starts with an empty duplicate filter); any other value is
// sent as is (the fuzzer may then exercise the filter across runs).
//
// Invariants checked besides "no crash, no sanitizer report":
//  - deliveries hold only whole DATA frames from sender 2 with length <=
//    max_frame_bytes and nothing else; their count and last id are right;
//  - delivered ids rise strictly per incarnation;
//  - the engine's answer is WELCOME (replica 1, our cluster) then ACK/PONG
//    frames, or a REJECT frame with a known code, and nothing after a REJECT.
#include "fuzz_net.hpp"

using namespace nexres;
using namespace nexres_fuzz;

namespace {

struct id_floor {
  bool known = false;
  std::uint64_t incarnation = 0;
  std::uint64_t max_id = 0;
} floor_state;
bool previous_clean = false;

void check_response(const std::vector<std::uint8_t>& r, bool& welcomed) {
  std::size_t p = 0;
  welcomed = false;
  if (r.size() >= 4 && load_u32(r.data()) == hello_magic) {
    if (r.size() < hello_fixed_bytes) return;
    std::uint32_t magic = 0;
    const hello_message w = decode_hello(r.data(), magic);
    FUZZ_CHECK(w.type == hello_type::welcome);
    FUZZ_CHECK(w.version == protocol_version);
    FUZZ_CHECK(w.sender == self_id);
    FUZZ_CHECK(w.body_length == std::strlen(cluster_id) && w.cluster_id_length == w.body_length);
    if (r.size() < hello_fixed_bytes + w.body_length) return;
    FUZZ_CHECK(std::memcmp(r.data() + hello_fixed_bytes, cluster_id, w.body_length) == 0);
    p = hello_fixed_bytes + w.body_length;
    welcomed = true;
  }
  while (r.size() - p >= frame_header_bytes) {
    const frame_header h = decode_header(r.data() + p);
    FUZZ_CHECK(h.sender == self_id);
    FUZZ_CHECK(h.flags == 0 && h.reserved == 0);
    if (checked_reject(r, p, h)) return;
    FUZZ_CHECK(welcomed);
    FUZZ_CHECK(h.kind == frame_kind::ack || h.kind == frame_kind::pong);
    FUZZ_CHECK(h.length == 0);
    p += frame_header_bytes;
  }
}

// Whether the engine may accept this input's handshake (PROTOCOL.md §2, auth
// none), judged from the bytes alone. Lenient on purpose: the exact rules for
// the auth data after the cluster id belong to the auth modes; what must hold
// is that nothing failing these checks is ever welcomed.
bool hello_may_pass(const std::vector<std::uint8_t>& in) {
  if (in.size() < hello_fixed_bytes) return false;
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(in.data(), magic);
  if (magic != hello_magic || m.version != protocol_version || m.type != hello_type::hello ||
      m.auth != auth_mode::none || m.body_length > hello_max_body_bytes || m.cluster_id_length > m.body_length)
    return false;
  if (in.size() < hello_fixed_bytes + m.body_length) return false;
  if (m.cluster_id_length != std::strlen(cluster_id) ||
      std::memcmp(in.data() + hello_fixed_bytes, cluster_id, m.cluster_id_length) != 0)
    return false;
  return m.sender == peer_id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  engine& e = the_engine();
  std::vector<std::uint8_t> input(data, data + size);
  static std::uint64_t fresh = 0x1000;
  if (input.size() >= hello_fixed_bytes && load_u64(input.data() + 16) == 0) store_u64(input.data() + 16, ++fresh);
  // What the engine will take from this input if its HELLO passes.
  const std::uint64_t inc = input.size() >= hello_fixed_bytes ? load_u64(input.data() + 16) : 0;
  const std::uint64_t floor = (previous_clean && floor_state.known && floor_state.incarnation == inc) ? floor_state.max_id : 0;
  const bool floor_valid = previous_clean;
  std::uint64_t last_this_input = floor;
  std::uint64_t max_this_input = 0;

  auto on_delivery = [&](const delivery& d) {
    FUZZ_CHECK(d.peer == peer_id);
    FUZZ_CHECK(d.slot == e.slot_of(peer_id));
    FUZZ_CHECK(d.messages > 0 && d.length >= frame_header_bytes);
    FUZZ_CHECK(d.source != nullptr && d.offset + static_cast<std::size_t>(d.length) <= d.source->capacity);
    const std::uint8_t* p = d.source->data() + d.offset;
    const std::uint8_t* end = p + d.length;
    std::uint32_t n = 0;
    std::uint64_t prev = 0, last = 0;
    while (p < end) {
      FUZZ_CHECK(static_cast<std::size_t>(end - p) >= frame_header_bytes);
      const frame_header h = decode_header(p);
      FUZZ_CHECK(h.kind == frame_kind::data);
      FUZZ_CHECK(h.sender == peer_id);
      FUZZ_CHECK(h.reserved == 0);
      FUZZ_CHECK(h.length <= max_frame_bytes);
      FUZZ_CHECK(static_cast<std::size_t>(end - p) >= frame_header_bytes + h.length);
      if (n > 0) FUZZ_CHECK(h.msg_id > prev);
      prev = last = h.msg_id;
      p += frame_header_bytes + h.length;
      ++n;
    }
    FUZZ_CHECK(n == d.messages);
    FUZZ_CHECK(last == d.last_id);
    if (floor_valid && d.incarnation == inc) {
      // This connection's frames: above what was delivered before under the
      // same incarnation, and rising.
      const std::uint8_t* first = d.source->data() + d.offset;
      FUZZ_CHECK(decode_header(first).msg_id > last_this_input);
      last_this_input = last;
      if (last > max_this_input) max_this_input = last;
    }
  };

  const exchange_result r = exchange(e.local_port(), input.data(), input.size(), on_delivery);
  check_after_input(r);
  bool welcomed = false;
  check_response(r.response, welcomed);
  // Never a WELCOME for a handshake that fails the checks of §2.
  if (welcomed) FUZZ_CHECK(hello_may_pass(input));
  // Whether the engine took the handshake (and so reset or kept its duplicate
  // filter for this incarnation); unknown when nothing was read.
  const bool known = r.response.size() >= 4;
  const bool accepted = known && load_u32(r.response.data()) == hello_magic;
  if (!known) floor_state.known = false;
  if (accepted) {
    if (!floor_state.known || floor_state.incarnation != inc) {
      floor_state.known = true;
      floor_state.incarnation = inc;
      floor_state.max_id = max_this_input;
    } else if (max_this_input > floor_state.max_id) {
      floor_state.max_id = max_this_input;
    }
  }
  if (!floor_valid) floor_state.known = false;  // ids seen without attribution: start over
  previous_clean = r.closed_by_engine;
  return 0;
}
