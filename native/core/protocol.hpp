// Wire format of nexres-rpc replica connections. Every constant here names
// its section of docs/PROTOCOL.md; change both together.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace nexres {

// PROTOCOL.md §2 "Handshake": "NXRP" read as a little-endian u32.
constexpr std::uint32_t hello_magic = 0x5052584eu;
constexpr std::uint16_t protocol_version = 1;
// PROTOCOL.md §2: fixed part of HELLO / WELCOME.
constexpr std::size_t hello_fixed_bytes = 32;
// PROTOCOL.md §2: upper bound of the variable part (cluster id + auth data).
constexpr std::size_t hello_max_body_bytes = 4096;
constexpr std::size_t max_cluster_id_bytes = 255;
// PROTOCOL.md §6: the CLIENT_WELCOME body is the cluster id followed by the
// replica's client limits, u32 max_request_bytes | u32 max_client_inflight.
// Clients read the fields the body length covers and ignore any after them.
constexpr std::size_t client_welcome_limits_bytes = 8;
// PROTOCOL.md §6a: a client with a key (CLIENT_HELLO auth 1) sends, after
// the cluster id, nonce (32) | X25519 key (32) | Ed25519 public key (32); the
// CLIENT_WELCOME adds, after the limits, nonce (32) | X25519 key (32) |
// the replica's signature (64, zero when the replica has no key).
constexpr std::size_t client_hello_key_bytes = 96;
constexpr std::size_t client_welcome_key_bytes = 128;

// PROTOCOL.md §2: auth modes carried in the handshake.
enum class auth_mode : std::uint16_t { none = 0, mac = 1, seal = 2 };
inline const char* auth_mode_name(auth_mode m) {
  return m == auth_mode::none ? "none" : m == auth_mode::mac ? "mac" : m == auth_mode::seal ? "seal" : "unknown";
}

// PROTOCOL.md §2: handshake message types (field `type`).
enum class hello_type : std::uint16_t { hello = 1, welcome = 2, client_hello = 3, client_welcome = 4 };

// PROTOCOL.md §3 "Frames": fixed little-endian header before every body.
constexpr std::size_t frame_header_bytes = 24;
// Where each header field starts (lib/wire.ts holds the same, checked at load).
namespace frame_offset {
constexpr std::size_t length = 0;    // u32 body bytes
constexpr std::size_t route = 4;     // u32
constexpr std::size_t sender = 8;    // u32
constexpr std::size_t kind = 12;     // u8 frame_kind
constexpr std::size_t flags = 13;    // u8
constexpr std::size_t reserved = 14; // u16
constexpr std::size_t msg_id = 16;   // u64
}  // namespace frame_offset

// PROTOCOL.md §3: frame kinds.
enum class frame_kind : std::uint8_t {
  data = 1,    // application message (delivered to handlers)
  ack = 2,     // receiver -> sender: cumulative message id accepted
  reject = 3,  // reason frame sent before closing a connection
  ping = 4,    // reserved for heartbeats
  pong = 5,    // reserved for heartbeats
  request = 6, // client -> replica (PROTOCOL.md §6), msg_id = request id
  reply = 7,   // replica -> client, msg_id = the request's id
  error = 8,   // replica -> client: the request failed (body: code, message)
  seal = 9,    // auth mac: tag over the frames since the previous seal (PROTOCOL.md §2a)
  auth = 10,   // auth mac: the initiator's handshake signature
  cancel = 11, // client -> replica: the client gave up on request msg_id (PROTOCOL.md §6)
  push = 12,   // replica -> client: a message the client did not ask for (PROTOCOL.md §6)
  sealed = 13, // auth seal: the clear header of an encrypted batch (PROTOCOL.md §2b)
};

// PROTOCOL.md §4 "Reject reasons": stable numeric codes of reject frames.
enum class reject_code : std::uint16_t {
  bad_magic = 1,
  bad_version = 2,
  wrong_cluster = 3,
  unknown_peer = 4,
  frame_too_large = 5,
  bad_frame = 6,
  bad_sender = 7,
  handshake_timeout = 8,
  shutting_down = 9,
  bad_auth = 10,
  request_too_large = 11,
  idle_timeout = 12,
  too_many_connections = 13,
  heartbeat_timeout = 14,
  read_timeout = 15,       // a frame or handshake begun was not completed in time
  too_many_pings = 16,     // more than max_pings_per_second PINGs
  bad_signature = 17,      // a signed broadcast whose signature does not check
  bad_mac = 18,            // auth mac: a batch failed its MAC check
  rate_limited = 19,       // the handshake budget (SECURITY.md) refused a key exchange
  stale_epoch = 20,        // the two replicas are on different configuration epochs (msg_id: the refuser's)
};

const char* reject_code_name(reject_code c) noexcept;

// A REJECT's body: u16 code, then at most 512 bytes of text (we write); a
// body read from a peer is accepted up to this size.
constexpr std::size_t max_reject_body = 4096;

// PROTOCOL.md §3: route id = FNV-1a 32 of the route name's UTF-8 bytes.
inline std::uint32_t route_id(const char* name, std::size_t length) noexcept {
  std::uint32_t h = 0x811c9dc5u;
  for (std::size_t i = 0; i < length; ++i) {
    h ^= static_cast<std::uint8_t>(name[i]);
    h *= 0x01000193u;
  }
  return h;
}

struct frame_header {
  std::uint32_t length;      // body bytes after the header
  std::uint32_t route;       // route id (FNV-1a 32 of the route name)
  std::uint32_t sender;      // sender replica id; must equal the handshake id
  frame_kind kind;
  std::uint8_t flags;
  std::uint16_t reserved;    // zero; room for auth (PROTOCOL.md §3)
  std::uint64_t msg_id;      // per-sender increasing message id
};

struct hello_message {
  hello_type type;
  auth_mode auth;
  std::uint32_t sender;       // replica id of the side that writes it
  std::uint64_t incarnation;  // random per process start; resets dedup state
  std::uint32_t body_length;  // cluster id + auth extension bytes
  std::uint16_t version;
  std::uint8_t cluster_id_length;
  /// PROTOCOL.md §2: the writer's configuration epoch (replica links; 0 in
  /// client handshakes).
  std::uint32_t epoch = 0;
};

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
// Little-endian host: one unaligned load each (the parser's hot path).
inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline std::uint64_t load_u64(const std::uint8_t* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
#else
inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t load_u64(const std::uint8_t* p) noexcept {
  return static_cast<std::uint64_t>(load_u32(p)) | (static_cast<std::uint64_t>(load_u32(p + 4)) << 32);
}
#endif
inline void store_u16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}
inline void store_u32(std::uint8_t* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline void store_u64(std::uint8_t* p, std::uint64_t v) noexcept {
  store_u32(p, static_cast<std::uint32_t>(v));
  store_u32(p + 4, static_cast<std::uint32_t>(v >> 32));
}

// Layout (PROTOCOL.md §3): u32 length | u32 route | u32 sender | u8 kind |
// u8 flags | u16 reserved | u64 msg_id.
inline frame_header decode_header(const std::uint8_t* p) noexcept {
  frame_header h;
  h.length = load_u32(p + frame_offset::length);
  h.route = load_u32(p + frame_offset::route);
  h.sender = load_u32(p + frame_offset::sender);
  h.kind = static_cast<frame_kind>(p[frame_offset::kind]);
  h.flags = p[frame_offset::flags];
  h.reserved = load_u16(p + frame_offset::reserved);
  h.msg_id = load_u64(p + frame_offset::msg_id);
  return h;
}

/// A REJECT frame's header as peers may send it: a code and at most
/// max_reject_body bytes.
inline bool is_reject_header(const frame_header& h) noexcept {
  return h.kind == frame_kind::reject && h.length >= 2 && h.length <= max_reject_body;
}

/// A REJECT's body (n >= 2 bytes, checked by is_reject_header): its code and text.
struct reject_body {
  reject_code code;
  std::string text;
};
inline reject_body decode_reject_body(const std::uint8_t* p, std::size_t n) {
  return {static_cast<reject_code>(load_u16(p)), std::string(reinterpret_cast<const char*>(p) + 2, n - 2)};
}

inline void encode_header(std::uint8_t* p, const frame_header& h) noexcept {
  store_u32(p + frame_offset::length, h.length);
  store_u32(p + frame_offset::route, h.route);
  store_u32(p + frame_offset::sender, h.sender);
  p[frame_offset::kind] = static_cast<std::uint8_t>(h.kind);
  p[frame_offset::flags] = h.flags;
  store_u16(p + frame_offset::reserved, h.reserved);
  store_u64(p + frame_offset::msg_id, h.msg_id);
}

// Layout (PROTOCOL.md §2): u32 magic | u16 version | u16 type | u16 auth |
// u8 cluster_id_length | u8 zero | u32 sender | u64 incarnation |
// u32 body_length | u32 epoch.
inline void encode_hello(std::uint8_t* p, const hello_message& m) noexcept {
  std::memset(p, 0, hello_fixed_bytes);
  store_u32(p, hello_magic);
  store_u16(p + 4, m.version);
  store_u16(p + 6, static_cast<std::uint16_t>(m.type));
  store_u16(p + 8, static_cast<std::uint16_t>(m.auth));
  p[10] = m.cluster_id_length;
  store_u32(p + 12, m.sender);
  store_u64(p + 16, m.incarnation);
  store_u32(p + 24, m.body_length);
  store_u32(p + 28, m.epoch);
}

// Decodes the fixed part; the magic is returned separately so callers can
// tell garbage (bad magic) from an old/new peer (bad version).
inline hello_message decode_hello(const std::uint8_t* p, std::uint32_t& magic) noexcept {
  hello_message m;
  magic = load_u32(p);
  m.version = load_u16(p + 4);
  m.type = static_cast<hello_type>(load_u16(p + 6));
  m.auth = static_cast<auth_mode>(load_u16(p + 8));
  m.cluster_id_length = p[10];
  m.sender = load_u32(p + 12);
  m.incarnation = load_u64(p + 16);
  m.body_length = load_u32(p + 24);
  m.epoch = load_u32(p + 28);
  return m;
}

/// Writes a REJECT frame (PROTOCOL.md §4) into `out`, resized to the frame
/// plus `tail` spare bytes after it (room for a SEAL): the reason code and
/// the first 512 bytes of `detail`; `msg_id` in its header (STALE_EPOCH: the
/// refusing replica's epoch, PROTOCOL.md §4).
inline void encode_reject(std::vector<std::uint8_t>& out, reject_code code, std::uint32_t sender,
                          const std::string& detail, std::size_t tail = 0, std::uint64_t msg_id = 0) {
  const std::size_t text = detail.size() < 512 ? detail.size() : 512;
  out.assign(frame_header_bytes + 2 + text + tail, 0);
  frame_header h{};
  h.kind = frame_kind::reject;
  h.sender = sender;
  h.length = static_cast<std::uint32_t>(2 + text);
  h.msg_id = msg_id;
  encode_header(out.data(), h);
  store_u16(out.data() + frame_header_bytes, static_cast<std::uint16_t>(code));
  std::memcpy(out.data() + frame_header_bytes + 2, detail.data(), text);
}

}  // namespace nexres
