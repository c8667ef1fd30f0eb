// libFuzzer target over the INITIATING side of a replica link
// (native/core/peer_link.cpp; PROTOCOL.md §2, §2a, §3, §4).
// The harness is a fake replica 2: a listening socket on 127.0.0.1 that the
// engine's link to replica 2 dials. Two engines live across inputs, each
// replica 1 of a 2-replica cluster ("fuzz-cluster") whose replica 2 address
// is one of the harness's listeners: one in auth mode none, one in auth mode
// mac (fixed test keys, seeds derived from labels as in
// fuzz_replica_session_mac). Reconnect backoff 1..5 ms, heartbeat PINGs every
// 20 ms (no heartbeat timeout).
//
// Per input: a few DATA frames are queued for replica 2 (engine::enqueue),
// the harness accepts the link's connection, reads and checks its HELLO,
// then answers with bytes derived from the input while it reads everything
// the link writes; then it shuts down its write side and waits for the link
// to close the connection.
//
// Input: byte 0 = mode (bits 0-1) and queue options:
//   bit 2  mode 0: the auth mac engine (else auth none)
//   bit 3  also queue a ~300 KiB run (more than one 256 KiB sealed batch)
//   bit 4  also queue a frame whose payload is a separate segment (by reference)
//   bits 5-6  small frames queued (0..3)
//  mode 0 raw:  the rest is written as the answer (garbage WELCOME / REJECT /
//               control frames).
//  mode 1 none: byte 1 = WELCOME variant (wel_* below), then control items.
//  mode 2, 3 mac: byte 1 = WELCOME variant, then control items, each sealed
//               on its own with the R->I key (or not: seal mode per item).
// Control item: op byte: kind = op & 7 (it_* below), bit 3 wrong sender
// (replica 1 itself or 3), bit 4 a bad length, bits 5-7 seal mode (0-3 a
// correct SEAL, 4 corrupted tag, 5 misnumbered, 6 missing, 7 SEAL naming
// another sender), then the kind's parameter bytes.
//
// Checked besides "no crash, no sanitizer report":
//  - the link's HELLO: fields, cluster id, incarnation, auth extension size;
//  - a model of the link's reading (what it reads, where it must fail): the
//    link writes only after a WELCOME that passes §2/§2a (in mac mode a
//    signature by replica 2's key over "R" ‖ T of this connection), and
//    reports peer_up only then (auth none) or once a control frame of ours
//    (ACK or PONG) passes its SEAL (mac: we accepted its AUTH frame); after
//    a complete invalid unit (bad WELCOME, garbage, a control frame whose
//    SEAL fails, a sender other than 2) it closes the connection (FIN)
//    without waiting for ours; it always closes it after our FIN; both
//    within 2 s;
//  - what the link writes: nothing before a valid WELCOME, except, in mac
//    mode for a WELCOME whose signature does not check, one BAD_AUTH REJECT
//    sealed with the I->R key; after a valid one in mac mode the AUTH frame
//    first (signature by replica 1 over "I" ‖ T), then sealed batches whose
//    every SEAL opens with the I->R key; only DATA frames we queued (byte
//    for byte, ids consecutive from the oldest unacknowledged) and PINGs;
//  - the queue: engine::queued_bytes(2) is always the byte count of a suffix
//    of the frames queued, and a frame leaves it only when an ACK the link
//    may act on (auth none: an ACK from replica 2; mac: an ACK whose SEAL and
//    every SEAL before it were correct) covers its id - forged, unsealed or
//    badly sealed ACKs never drop queued bytes; the queue stays bounded.
#include "fuzz_keys.hpp"
#include "fuzz_net.hpp"

#include "auth.hpp"
#include "crypto.hpp"

#include <array>
#include <deque>
#include <set>
#include <string>
#include <thread>

using namespace nexres;
using namespace nexres_fuzz;

namespace {

constexpr std::size_t cid_len = sizeof("fuzz-cluster") - 1;
constexpr std::chrono::milliseconds link_hang_deadline{2000};
constexpr std::uint64_t small_queue_cap = 64u << 10;   // queue more only below this
constexpr std::uint64_t queue_bound = 1u << 20;        // never more queued than this
constexpr std::uint32_t data_route = 0x1234abcdu;

// WELCOME variants (byte 1, low 4 bits; 0-7 valid).
constexpr std::uint8_t wel_bad_sig = 8, wel_impostor_key = 9, wel_engine_key = 10, wel_role_i = 11,
                       wel_stale_nonce = 12, wel_wrong_inc = 13, wel_zero_eph = 14, wel_fields = 15;
// Item kinds.
constexpr std::uint8_t it_ack = 0, it_ack2 = 1, it_pong = 2, it_reject = 3, it_raw = 4, it_ack_abs = 5, it_header = 6,
                       it_keepalive = 7;
constexpr std::uint8_t op_wrong_sender = 0x08, op_bad_length = 0x10;
constexpr std::uint8_t seal_corrupt = 4, seal_misnumbered = 5, seal_missing = 6, seal_other_sender = 7;

// Keys by replica id 1..2; index 0 is an impostor key nobody configured.
test_keys<3>& keys() { return nexres_fuzz::keys<3>(); }

// ---- the fake replica 2 ----------------------------------------------------

struct qframe {
  std::uint64_t id;
  std::vector<std::uint8_t> bytes;  // header and payload, as the link must write them
};

struct fake_peer {
  bool mac = false;
  int listen_fd = -1;
  engine* eng = nullptr;
  std::deque<qframe> queue;  // queued for replica 2, not known acknowledged (ids consecutive)
  std::uint64_t queue_sum = 0;
  std::uint64_t next_id = 1;
  std::uint64_t incarnation = 0;
};

int listen_loopback(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FUZZ_CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  FUZZ_CHECK(::listen(fd, 16) == 0);
  socklen_t len = sizeof a;
  FUZZ_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  port = ntohs(a.sin_port);
  return fd;
}

fake_peer make_peer(bool mac) {
  fake_peer p;
  p.mac = mac;
  std::uint16_t port = 0;
  p.listen_fd = listen_loopback(port);
  engine_options o;
  o.self_id = self_id;
  o.cluster_id = cluster_id;
  o.replicas.push_back({self_id, "127.0.0.1", 0});
  o.replicas.push_back({peer_id, "127.0.0.1", port});
  o.io_threads = 2;
  o.max_frame_bytes = max_frame_bytes;
  o.chunk_bytes = chunk_bytes;
  o.max_chunks_per_connection = 4;
  o.miq_capacity = 8;
  o.handshake_timeout_ms = 1000;
  o.reconnect_min_ms = 1;
  o.reconnect_max_ms = 5;
  o.send_buffer_bytes = 0;
  o.client_port = -1;
  o.heartbeat_interval_ms = 20;  // idle PINGs (sealed in mac mode), answered or not by the input
  o.heartbeat_timeout_ms = 0;    // never a timer-driven close
  o.incarnation = mac ? 0x6c696e6b6d6163ull : 0x6c696e6b6e6f6eull;
  if (mac) {
    o.auth = auth_mode::mac;
    o.private_seed = keys().seed[self_id];
    o.public_keys.push_back({peer_id, keys().pub[peer_id]});
  }
  p.incarnation = o.incarnation;
  p.eng = new engine(std::move(o), [] {});
  const std::error_code ec = p.eng->start();
  if (ec) {
    std::fprintf(stderr, "nexres fuzz: engine start failed: %s\n", ec.message().c_str());
    std::abort();
  }
  return p;
}

fake_peer& peer_none() {
  static fake_peer* p = new fake_peer(make_peer(false));
  return *p;
}
fake_peer& peer_mac() {
  static fake_peer* p = new fake_peer(make_peer(true));
  return *p;
}

// ---- queueing ----------------------------------------------------------------

void put_header(std::uint8_t* p, std::uint32_t length, std::uint64_t id) {
  frame_header h{};
  h.length = length;
  h.route = data_route;
  h.sender = self_id;
  h.kind = frame_kind::data;
  h.msg_id = id;
  encode_header(p, h);
}

void fill_payload(std::uint8_t* p, std::size_t n, std::uint64_t id) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>(id * 131 + i * 7);
}

// One segment holding `count` frames of `payload` bytes each (0: varied sizes).
void queue_run(fake_peer& P, std::size_t count, std::size_t payload) {
  auto block = std::make_shared<std::vector<std::uint8_t>>();
  std::uint64_t last = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint64_t id = P.next_id++;
    const std::size_t n = payload != 0 ? payload : 8 + (id * 37) % 300;
    const std::size_t at = block->size();
    block->resize(at + frame_header_bytes + n);
    put_header(block->data() + at, static_cast<std::uint32_t>(n), id);
    fill_payload(block->data() + at + frame_header_bytes, n, id);
    P.queue.push_back({id, std::vector<std::uint8_t>(block->begin() + static_cast<std::ptrdiff_t>(at), block->end())});
    P.queue_sum += frame_header_bytes + n;
    last = id;
  }
  segment s;
  s.owner = block;
  s.data = block->data();
  s.length = static_cast<std::uint32_t>(block->size());
  s.messages = static_cast<std::uint32_t>(count);
  s.last_msg_id = last;
  FUZZ_CHECK(P.eng->enqueue(peer_id, s));
}

// A header segment, then its payload as a separate unframed segment (as the
// addon queues a large payload by reference).
void queue_by_reference(fake_peer& P, std::size_t payload) {
  const std::uint64_t id = P.next_id++;
  auto hdr = std::make_shared<std::array<std::uint8_t, frame_header_bytes>>();
  auto body = std::make_shared<std::vector<std::uint8_t>>(payload);
  put_header(hdr->data(), static_cast<std::uint32_t>(payload), id);
  fill_payload(body->data(), payload, id);
  qframe q{id, std::vector<std::uint8_t>(hdr->begin(), hdr->end())};
  q.bytes.insert(q.bytes.end(), body->begin(), body->end());
  P.queue.push_back(std::move(q));
  P.queue_sum += frame_header_bytes + payload;
  segment hs;
  hs.owner = hdr;
  hs.data = hdr->data();
  hs.length = frame_header_bytes;
  hs.messages = 0;
  hs.last_msg_id = id;
  FUZZ_CHECK(P.eng->enqueue(peer_id, hs));
  segment ps;
  ps.owner = body;
  ps.data = body->data();
  ps.length = static_cast<std::uint32_t>(payload);
  ps.messages = 1;
  ps.last_msg_id = id;
  ps.framed = false;
  FUZZ_CHECK(P.eng->enqueue(peer_id, ps));
}

void queue_for_input(fake_peer& P, std::uint8_t opts) {
  if (P.eng->queued_bytes(peer_id) >= small_queue_cap) return;
  if (const std::size_t n = (opts >> 5) & 3) queue_run(P, n, 0);
  if (opts & 0x10) queue_by_reference(P, 1000 + (P.next_id * 97) % 3000);
  if (opts & 0x08) queue_run(P, 75, 4096);  // ~309 KiB: more than one 256 KiB batch
  FUZZ_CHECK(P.eng->queued_bytes(peer_id) <= queue_bound);
}

// ---- blocking socket helpers -------------------------------------------------

// False on EOF, error or timeout.
bool read_exact(int fd, std::uint8_t* p, std::size_t n, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::size_t got = 0;
  while (got < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t k = ::recv(fd, p + got, n - got, MSG_DONTWAIT);
    if (k > 0) got += static_cast<std::size_t>(k);
    else if (k == 0) return false;
    else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return false;
  }
  return true;
}

int accept_link(fake_peer& P) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    const int fd = ::accept4(P.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      return fd;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "nexres fuzz: the link (auth %s) did not reconnect within 5 s (backoff 1..5 ms)\n",
                   P.mac ? "mac" : "none");
      std::abort();
    }
    pollfd pf{P.listen_fd, POLLIN, 0};
    ::poll(&pf, 1, 100);
  }
}

// Reads and checks the link's HELLO; false for a connection the link gave up
// on before we got to it (EOF: it hit its handshake deadline meanwhile).
bool read_hello(fake_peer& P, int fd, std::vector<std::uint8_t>& hello) {
  hello.assign(hello_fixed_bytes, 0);
  if (!read_exact(fd, hello.data(), hello_fixed_bytes, 3000)) return false;
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(hello.data(), magic);
  const std::size_t ext = P.mac ? auth::hello_ext_bytes : 0;
  FUZZ_CHECK(magic == hello_magic && m.version == protocol_version && m.type == hello_type::hello);
  FUZZ_CHECK(m.auth == (P.mac ? auth_mode::mac : auth_mode::none));
  FUZZ_CHECK(m.sender == self_id && m.incarnation == P.incarnation);
  FUZZ_CHECK(m.cluster_id_length == cid_len && m.body_length == cid_len + ext);
  FUZZ_CHECK(hello[11] == 0 && load_u32(hello.data() + 28) == 0);
  hello.resize(hello_fixed_bytes + m.body_length);
  if (!read_exact(fd, hello.data() + hello_fixed_bytes, m.body_length, 3000)) return false;
  FUZZ_CHECK(std::memcmp(hello.data() + hello_fixed_bytes, cluster_id, cid_len) == 0);
  // Still open? (A link past its handshake deadline closed it: take the next.)
  std::uint8_t b;
  const ssize_t k = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (k == 0) return false;
  FUZZ_CHECK(k < 0);  // the link writes nothing more before our answer
  return true;
}

const std::uint8_t* hello_nonce(const std::vector<std::uint8_t>& hello) { return hello.data() + hello_fixed_bytes + cid_len; }
const std::uint8_t* hello_eph(const std::vector<std::uint8_t>& hello) { return hello_nonce(hello) + auth::nonce_bytes; }

// The transcript T the link computes for its HELLO and a WELCOME's fields.
std::vector<std::uint8_t> link_transcript(const fake_peer& P, const std::vector<std::uint8_t>& hello,
                                          std::uint64_t inc_r, const std::uint8_t* nonce_r, const std::uint8_t* eph_r) {
  auth::transcript_input ti;
  ti.cluster_id = cluster_id;
  ti.initiator = self_id;
  ti.responder = peer_id;
  ti.initiator_incarnation = P.incarnation;
  ti.responder_incarnation = inc_r;
  ti.nonce_i = hello_nonce(hello);
  ti.eph_i = hello_eph(hello);
  ti.nonce_r = nonce_r;
  ti.eph_r = eph_r;
  ti.replica_link = true;  // the fuzzed engines stay on epoch 0
  ti.responder_cluster_id = cluster_id;
  return auth::transcript(ti);
}

// ---- the model of the link's reading ----------------------------------------

struct verdict {
  bool up = false;          // the WELCOME passes: the link writes
  bool confirmed = false;   // peer_up (auth none: up; mac: an ACK or PONG of ours passed its SEAL)
  bool refused_welcome = false;  // mac: the WELCOME's signature fails, keys derive: a sealed REJECT
  bool must_close = false;  // a complete unit the link must fail on: it closes without our FIN
  bool acked = false;       // an ACK it acts on
  std::uint64_t max_ack = 0;
  std::vector<std::uint8_t> t;  // mac, up: the transcript
};

// What the link does with `a` (everything we write after its HELLO).
// `good`: mac, offsets of control units written with a correct SEAL, every
// unit before them correct too; `derive_ok`: false when X_R gives no secret.
verdict model(const fake_peer& P, const std::vector<std::uint8_t>& hello, const std::vector<std::uint8_t>& a,
              const std::set<std::size_t>& good, bool derive_ok) {
  verdict v;
  const std::size_t n = a.size();
  if (n < frame_header_bytes) return v;
  if (load_u32(a.data()) != hello_magic) {
    const frame_header h = decode_header(a.data());
    if (h.kind != frame_kind::reject || h.length < 2 || h.length > max_reject_body) v.must_close = true;
    else if (n - frame_header_bytes >= h.length) v.must_close = true;  // refused: closes
    return v;
  }
  if (n < hello_fixed_bytes) return v;
  std::uint32_t magic = 0;
  const hello_message w = decode_hello(a.data(), magic);
  const std::size_t ext = P.mac ? auth::welcome_ext_bytes : 0;
  if (w.type != hello_type::welcome || w.version != protocol_version || w.sender != peer_id ||
      w.auth != (P.mac ? auth_mode::mac : auth_mode::none) || w.body_length > hello_max_body_bytes ||
      w.cluster_id_length != cid_len || w.body_length != w.cluster_id_length + ext) {
    v.must_close = true;
    return v;
  }
  if (n - hello_fixed_bytes < w.body_length) return v;
  const std::uint8_t* body = a.data() + hello_fixed_bytes;
  if (std::memcmp(body, cluster_id, cid_len) != 0) {
    v.must_close = true;
    return v;
  }
  // Auth none: a WELCOME of another configuration epoch is refused (the
  // fuzzed engines stay on epoch 0; with mac the epoch is in the signed
  // transcript, which such a WELCOME fails).
  if (!P.mac && w.epoch != 0) {
    v.must_close = true;
    return v;
  }
  if (P.mac) {
    const std::uint8_t* nonce_r = body + cid_len;
    const std::uint8_t* eph_r = nonce_r + auth::nonce_bytes;
    v.t = link_transcript(P, hello, w.incarnation, nonce_r, eph_r);
    const bool signed_ok = auth::verify(*keys().verifier[peer_id], 'R', v.t, eph_r + auth::eph_bytes);
    if (!signed_ok || !derive_ok) {
      v.must_close = true;
      v.refused_welcome = !signed_ok && derive_ok;
      return v;
    }
  }
  v.up = true;
  v.confirmed = !P.mac;
  std::size_t p = hello_fixed_bytes + w.body_length;
  while (n - p >= frame_header_bytes) {
    const frame_header h = decode_header(a.data() + p);
    if (!P.mac) {
      if (h.kind == frame_kind::ack && h.length == 0 && h.sender == peer_id) {
        v.acked = true;
        v.max_ack = std::max(v.max_ack, h.msg_id);
        p += frame_header_bytes;
        continue;
      }
      if (h.kind == frame_kind::pong && h.length == 0 && h.sender == peer_id) {
        p += frame_header_bytes;
        continue;
      }
      if (h.kind == frame_kind::reject && h.length >= 2 && h.length <= max_reject_body) {
        if (n - p - frame_header_bytes >= h.length) v.must_close = true;
        return v;
      }
      v.must_close = true;
      return v;
    }
    std::size_t need = 0;
    if (h.kind == frame_kind::reject && h.length >= 2 && h.length <= max_reject_body) {
      need = h.length + auth::seal_frame_bytes;
    } else if ((h.kind == frame_kind::ack || h.kind == frame_kind::pong) && h.length == 0) {
      need = auth::seal_frame_bytes;
    } else {
      v.must_close = true;  // a SEAL out of place, a DATA frame, a bad length: BAD_FRAME
      return v;
    }
    if (n - p - frame_header_bytes < need) return v;  // waits for the rest
    if (good.count(p) == 0 || h.sender != peer_id) {  // BAD_AUTH / BAD_SENDER
      v.must_close = true;
      return v;
    }
    if (h.kind == frame_kind::reject) {
      v.must_close = true;
      return v;
    }
    v.confirmed = true;  // an ACK or PONG under the session keys
    if (h.kind == frame_kind::ack) {
      v.acked = true;
      v.max_ack = std::max(v.max_ack, h.msg_id);
    }
    p += frame_header_bytes + need;
  }
  return v;
}

// ---- the exchange ---------------------------------------------------------------

struct exchange_out {
  std::vector<std::uint8_t> out;  // what the link wrote after its HELLO
  bool closed_before_fin = false;
};

[[noreturn]] void hang(const fake_peer& P, const char* when, std::size_t written, std::size_t size) {
  std::fprintf(stderr,
               "nexres fuzz: the link (auth %s) still holds the connection %lld ms %s (answer %zu of %zu bytes "
               "written)\n",
               P.mac ? "mac" : "none", static_cast<long long>(link_hang_deadline.count()), when, written, size);
  std::abort();
}

// Writes `a`, reading what the link writes meanwhile. With `must_close`
// the link must close before our FIN; then FIN, and the link must close.
exchange_out exchange_with_link(const fake_peer& P, int fd, const std::vector<std::uint8_t>& a, bool must_close) {
  exchange_out r;
  std::size_t written = 0;
  bool write_dead = false, fin = false, eof = false;
  auto phase_start = std::chrono::steady_clock::now();
  std::vector<std::uint8_t> buf(64 * 1024);
  while (!eof) {
    if (!write_dead && written < a.size()) {
      const ssize_t k = ::send(fd, a.data() + written, a.size() - written, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (k > 0) written += static_cast<std::size_t>(k);
      else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) write_dead = true;
    }
    for (;;) {
      const ssize_t k = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (k > 0) {
        if (r.out.size() < (4u << 20)) r.out.insert(r.out.end(), buf.data(), buf.data() + k);
        continue;
      }
      if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) eof = true;
      break;
    }
    if (eof) break;
    const bool all_written = write_dead || written == a.size();
    const auto now = std::chrono::steady_clock::now();
    if (all_written && !fin) {
      if (!must_close || write_dead) {
        ::shutdown(fd, SHUT_WR);
        fin = true;
        phase_start = now;
      } else if (now - phase_start > link_hang_deadline) {
        hang(P, "after a complete invalid answer (no FIN yet)", written, a.size());
      }
    } else if (fin && now - phase_start > link_hang_deadline) {
      hang(P, "after our FIN", written, a.size());
    } else if (!all_written && now - phase_start > std::chrono::seconds(5)) {
      hang(P, "without reading our answer", written, a.size());
    }
    pollfd pf{fd, static_cast<short>(POLLIN | (all_written ? 0 : POLLOUT)), 0};
    ::poll(&pf, 1, 2);
  }
  r.closed_before_fin = !fin;
  ::close(fd);
  if (std::getenv("NEXRES_FUZZ_DEBUG") != nullptr)
    std::fprintf(stderr, "nexres fuzz: link auth %s: answer %zu of %zu bytes, link wrote %zu bytes, closed %s our FIN\n",
                 P.mac ? "mac" : "none", written, a.size(), r.out.size(), fin ? "after" : "before");
  return r;
}

// ---- checks on what the link wrote ------------------------------------------------

// `rx`: mac, the I->R opener (null: auth none). DATA frames must be the
// queued ones with consecutive ids from the oldest one queued.
void check_link_output(const fake_peer& P, const std::vector<std::uint8_t>& out, const std::vector<std::uint8_t>& t,
                       auth::opener* rx) {
  std::size_t p = 0;
  if (rx != nullptr) {
    if (out.size() < auth::auth_frame_bytes) return;
    const frame_header h = decode_header(out.data());
    FUZZ_CHECK(h.kind == frame_kind::auth && h.length == auth::sig_bytes && h.sender == self_id);
    FUZZ_CHECK(h.flags == 0 && h.reserved == 0 && h.route == 0 && h.msg_id == 0);
    FUZZ_CHECK(auth::verify(*keys().verifier[self_id], 'I', t, out.data() + frame_header_bytes));
    p = auth::auth_frame_bytes;
  }
  std::uint64_t expect = P.queue.empty() ? 0 : P.queue.front().id;
  std::size_t unsealed = 0;
  while (out.size() - p >= frame_header_bytes) {
    const frame_header h = decode_header(out.data() + p);
    const std::size_t total = frame_header_bytes + static_cast<std::size_t>(h.length);
    if (out.size() - p < total) break;  // cut short by the close
    FUZZ_CHECK(h.sender == self_id && h.reserved == 0);
    if (h.kind == frame_kind::seal) {
      FUZZ_CHECK(rx != nullptr);
      FUZZ_CHECK(h.length == auth::tag_bytes);
      FUZZ_CHECK(unsealed > 0);  // no empty batch
      FUZZ_CHECK(rx->open(h, out.data() + p + frame_header_bytes));
      unsealed = 0;
    } else if (h.kind == frame_kind::ping) {
      FUZZ_CHECK(h.length == 0 && h.flags == 0);
    } else {
      FUZZ_CHECK(h.kind == frame_kind::data);
      FUZZ_CHECK(!P.queue.empty() && h.msg_id == expect);
      const qframe& q = P.queue[static_cast<std::size_t>(h.msg_id - P.queue.front().id)];
      FUZZ_CHECK(q.id == h.msg_id && q.bytes.size() == total);
      FUZZ_CHECK(std::memcmp(q.bytes.data(), out.data() + p, total) == 0);
      ++expect;
    }
    if (h.kind != frame_kind::seal) {
      if (rx != nullptr) FUZZ_CHECK(rx->update(out.data() + p, total));
      unsealed += total;
      // A sender seals at least every 256 KiB (one frame may pass it).
      if (rx != nullptr) FUZZ_CHECK(unsealed <= auth::seal_batch_bytes + total);
    }
    p += total;
  }
}

// mac, a WELCOME whose signature fails: the link's only words are a
// BAD_AUTH REJECT followed by its SEAL under the I->R key (batch 0; checked
// when `rx` is given).
void check_welcome_refusal(const std::vector<std::uint8_t>& out, auth::opener* rx) {
  FUZZ_CHECK(out.size() >= frame_header_bytes);
  const frame_header h = decode_header(out.data());
  FUZZ_CHECK(h.kind == frame_kind::reject && h.sender == self_id && h.flags == 0 && h.reserved == 0);
  FUZZ_CHECK(h.length >= 2 && h.length <= 2 + 512);
  const std::size_t frame = frame_header_bytes + h.length;
  if (out.size() < frame + auth::seal_frame_bytes) return;  // cut short
  FUZZ_CHECK(out.size() == frame + auth::seal_frame_bytes);
  FUZZ_CHECK(load_u16(out.data() + frame_header_bytes) == static_cast<std::uint16_t>(reject_code::bad_auth));
  const frame_header sh = decode_header(out.data() + frame);
  FUZZ_CHECK(sh.kind == frame_kind::seal && sh.sender == self_id && sh.length == auth::tag_bytes && sh.msg_id == 0);
  if (rx == nullptr) return;
  FUZZ_CHECK(rx->update(out.data(), frame));
  FUZZ_CHECK(rx->open(sh, out.data() + frame + frame_header_bytes));
}

// queued_bytes(2) is a suffix of what we queued; what left it was acknowledged.
void check_queue(fake_peer& P, const verdict& v) {
  const std::uint64_t q = P.eng->queued_bytes(peer_id);
  while (P.queue_sum > q && !P.queue.empty()) {
    const qframe& f = P.queue.front();
    if (!(v.acked && f.id <= v.max_ack)) {
      std::fprintf(stderr,
                   "nexres fuzz: message %llu left the queue for replica 2 (auth %s) without an ACK the link may act "
                   "on (acted-on ACK %s %llu; queued %llu bytes, expected at least %llu)\n",
                   static_cast<unsigned long long>(f.id), P.mac ? "mac" : "none", v.acked ? "up to" : "none",
                   static_cast<unsigned long long>(v.max_ack), static_cast<unsigned long long>(q),
                   static_cast<unsigned long long>(P.queue_sum));
      std::abort();
    }
    P.queue_sum -= f.bytes.size();
    P.queue.pop_front();
  }
  if (P.queue_sum != q) {
    std::fprintf(stderr, "nexres fuzz: queued_bytes(2) = %llu is no suffix of the frames queued (%llu bytes in %zu frames)\n",
                 static_cast<unsigned long long>(q), static_cast<unsigned long long>(P.queue_sum), P.queue.size());
    std::abort();
  }
  FUZZ_CHECK(q <= queue_bound);
}

std::uint64_t handshake_timeouts(engine& e) {
  const engine_stats s = e.stats();
  const auto i = static_cast<std::size_t>(reject_code::handshake_timeout);
  return i < s.rejects_by_code.size() ? s.rejects_by_code[i] : 0;
}

// ---- building answers --------------------------------------------------------------

std::uint64_t responder_counter = 0x7265737000000000ull;

struct welcome_built {
  std::vector<std::uint8_t> bytes;
  bool derive_ok = true;
  bool valid = false;  // by construction
  std::unique_ptr<crypto::x25519_keypair> eph;
  std::vector<std::uint8_t> t;  // the transcript the link computes (mac)
};

welcome_built build_welcome(const fake_peer& P, const std::vector<std::uint8_t>& hello, std::uint8_t var) {
  welcome_built b;
  const std::uint8_t kind = var & 15;
  b.valid = kind < 8;
  const std::size_t ext = P.mac ? auth::welcome_ext_bytes : 0;
  const std::uint64_t inc_r = ++responder_counter;
  hello_message m{};
  m.type = hello_type::welcome;
  m.auth = P.mac ? auth_mode::mac : auth_mode::none;
  m.sender = peer_id;
  m.incarnation = inc_r;
  m.version = protocol_version;
  m.cluster_id_length = static_cast<std::uint8_t>(cid_len);
  m.body_length = static_cast<std::uint32_t>(cid_len + ext);
  const std::uint8_t sub = (var >> 4) & 3;
  if (kind == wel_fields) {
    if (sub == 0) m.sender = 3;
    if (sub == 2) m.auth = P.mac ? auth_mode::none : auth_mode::mac;
    if (sub == 3) m.type = hello_type::hello;
  } else if (!P.mac && kind >= 8) {
    // auth none has no signature: other variants are field variants too.
    if (kind == wel_bad_sig) m.version = 2;
    else if (kind == wel_impostor_key) m.body_length += 1;
    else if (kind == wel_engine_key) m.cluster_id_length -= 1;
    else if (kind == wel_role_i) m.sender = self_id;
    else b.valid = true;  // 12-14: valid
  }
  b.bytes.assign(hello_fixed_bytes + cid_len + ext, 0);
  encode_hello(b.bytes.data(), m);
  std::uint8_t* body = b.bytes.data() + hello_fixed_bytes;
  std::memcpy(body, cluster_id, cid_len);
  if (kind == wel_fields && sub == 1) body[var >> 6 & 3] ^= 0x40;  // another cluster, same length
  if (!P.mac) return b;

  std::uint8_t* nonce_r = body + cid_len;
  std::uint8_t* eph_r = nonce_r + auth::nonce_bytes;
  std::uint8_t* sig = eph_r + auth::eph_bytes;
  store_u64(nonce_r, inc_r);
  store_u64(nonce_r + 8, 0x6e6f6e6365ull);
  b.eph = std::make_unique<crypto::x25519_keypair>(crypto::x25519_keypair::generate());
  std::memcpy(eph_r, b.eph->public_key().data(), auth::eph_bytes);
  if (kind == wel_zero_eph) {
    std::memset(eph_r, 0, auth::eph_bytes);
    b.derive_ok = false;
  }
  b.t = link_transcript(P, hello, inc_r, nonce_r, eph_r);
  test_keys<3>& k = keys();
  switch (kind) {
    case wel_impostor_key: FUZZ_CHECK(auth::sign(*k.signer[0], 'R', b.t, sig)); break;
    case wel_engine_key: FUZZ_CHECK(auth::sign(*k.signer[self_id], 'R', b.t, sig)); break;
    case wel_role_i: FUZZ_CHECK(auth::sign(*k.signer[peer_id], 'I', b.t, sig)); break;
    case wel_stale_nonce: {
      std::vector<std::uint8_t> h2 = hello;
      h2[hello_fixed_bytes + cid_len + (var >> 4)] ^= 1;  // another nonce_I (an old HELLO's)
      FUZZ_CHECK(auth::sign(*k.signer[peer_id], 'R', link_transcript(P, h2, inc_r, nonce_r, eph_r), sig));
      break;
    }
    case wel_wrong_inc:
      FUZZ_CHECK(auth::sign(*k.signer[peer_id], 'R', link_transcript(P, hello, inc_r + 1, nonce_r, eph_r), sig));
      break;
    default: FUZZ_CHECK(auth::sign(*k.signer[peer_id], 'R', b.t, sig)); break;
  }
  if (kind == wel_bad_sig) sig[(var >> 4) % auth::sig_bytes + (var >> 6) * 16 % auth::sig_bytes] ^= 0x08;
  return b;
}

// The control items after the WELCOME. `sealer` null: auth none.
void build_items(const fake_peer& P, const std::uint8_t* in, std::size_t size, auth::sealer* tx,
                 std::vector<std::uint8_t>& a, std::set<std::size_t>& good) {
  std::size_t at = 0;
  auto next = [&]() -> std::uint8_t { return at < size ? in[at++] : 0; };
  const std::uint64_t front = P.queue.empty() ? P.next_id : P.queue.front().id;
  bool chain_ok = true;
  for (int items = 0; at < size && items < 256; ++items) {
    const std::uint8_t op = next();
    const std::uint8_t kind = op & 7;
    const std::uint8_t seal_mode = op >> 5;
    std::vector<std::uint8_t> f(frame_header_bytes);
    frame_header h{};
    h.sender = peer_id;
    bool sealable = true;
    switch (kind) {
      case it_ack:
      case it_ack2: {
        const std::uint8_t d = next();
        h.kind = frame_kind::ack;
        h.msg_id = front + d >= 8 ? front + d - 8 : 0;
        break;
      }
      case it_ack_abs: {
        h.kind = frame_kind::ack;
        for (int i = 0; i < 8; ++i) h.msg_id |= static_cast<std::uint64_t>(next()) << (8 * i);
        break;
      }
      case it_pong: h.kind = frame_kind::pong; h.msg_id = next(); break;
      case it_keepalive: h.kind = frame_kind::pong; break;
      case it_reject: {
        h.kind = frame_kind::reject;
        const std::uint8_t code = next();
        const std::size_t text = next() % 64;
        f.resize(frame_header_bytes + 2 + text, 'x');
        store_u16(f.data() + frame_header_bytes, static_cast<std::uint16_t>(code % 20));
        h.length = static_cast<std::uint32_t>(2 + text);
        break;
      }
      case it_raw: {
        const std::size_t n = next();
        const std::size_t take = std::min(n, size - at);
        a.insert(a.end(), in + at, in + at + take);
        at += take;
        if (take > 0) chain_ok = false;  // the stream is off its frame boundaries
        continue;
      }
      case it_header: {
        std::uint8_t raw[frame_header_bytes] = {};
        for (auto& c : raw) c = next();
        h = decode_header(raw);
        if (h.kind == frame_kind::reject && h.length >= 2 && h.length <= max_reject_body) {
          f.resize(frame_header_bytes + h.length);
          for (std::size_t i = frame_header_bytes; i < f.size(); ++i) f[i] = next();
        } else if (!((h.kind == frame_kind::ack || h.kind == frame_kind::pong) && h.length == 0)) {
          sealable = false;  // the link fails on the header alone
        }
        break;
      }
    }
    if (op & op_wrong_sender) h.sender = (op & 0x80) ? 3 : self_id;
    if ((op & op_bad_length) && kind != it_header) {
      if (h.kind == frame_kind::reject) {
        h.length = 1;
        f.resize(frame_header_bytes + 1);
      } else {
        h.length = 4;
        f.resize(frame_header_bytes + 4, 0);
      }
      sealable = false;
    }
    encode_header(f.data(), h);
    const std::size_t unit = a.size();
    a.insert(a.end(), f.begin(), f.end());
    if (tx == nullptr) continue;
    if (!sealable) chain_ok = false;
    if (seal_mode == seal_missing) {
      chain_ok = false;
      continue;
    }
    std::uint8_t sf[auth::seal_frame_bytes];
    const crypto::byte_view view(f.data(), f.size());
    FUZZ_CHECK(tx->seal(&view, 1, peer_id, sf));
    bool ok = true;
    if (seal_mode == seal_corrupt) {
      sf[frame_header_bytes + (op & 15)] ^= 0x01;
      ok = false;
    } else if (seal_mode == seal_misnumbered) {
      store_u64(sf + 16, load_u64(sf + 16) + 1);
      ok = false;
    } else if (seal_mode == seal_other_sender) {
      store_u32(sf + 8, (op & 0x08) ? self_id : 3);
      ok = false;
    }
    if (!ok) chain_ok = false;
    if (chain_ok && sealable) good.insert(unit);
    a.insert(a.end(), sf, sf + sizeof sf);
  }
}

// ---- one input ---------------------------------------------------------------

void run(fake_peer& P, std::uint8_t opts, bool raw, const std::uint8_t* in, std::size_t size) {
  queue_for_input(P, opts);
  // Events and rejects before this connection are not this input's.
  std::vector<engine_event> evs;
  P.eng->take_events(evs);
  const std::uint64_t timeouts_before = handshake_timeouts(*P.eng);

  int fd = -1;
  std::vector<std::uint8_t> hello;
  for (int tries = 0;; ++tries) {
    fd = accept_link(P);
    if (read_hello(P, fd, hello)) break;
    ::close(fd);
    FUZZ_CHECK(tries < 20);
  }

  std::vector<std::uint8_t> answer;
  std::set<std::size_t> good;
  welcome_built wb;
  std::unique_ptr<auth::sealer> tx;
  std::unique_ptr<auth::opener> rx;
  if (raw) {
    answer.assign(in, in + size);
  } else {
    const std::uint8_t var = size > 0 ? in[0] : 0;
    wb = build_welcome(P, hello, var);
    answer = wb.bytes;
    if (P.mac) {
      auth::session_keys sk;
      if (auth::derive(*wb.eph, hello_eph(hello), wb.t, sk)) {
        tx = std::make_unique<auth::sealer>(sk.responder_to_initiator);
        rx = std::make_unique<auth::opener>(sk.initiator_to_responder);
      } else {
        FUZZ_CHECK(!wb.derive_ok);
        tx = std::make_unique<auth::sealer>(crypto::key32{});
      }
    }
    if (size > 1) build_items(P, in + 1, size - 1, tx.get(), answer, good);
  }
  const verdict v = model(P, hello, answer, good, wb.derive_ok);
  if (!raw) FUZZ_CHECK(v.up == wb.valid);  // the harness's own construction

  const exchange_out r = exchange_with_link(P, fd, answer, v.must_close);

  P.eng->take_events(evs);
  std::size_t ups = 0;
  for (const engine_event& e : evs)
    if (e.type == event_type::peer_up && e.peer == peer_id) ++ups;
  FUZZ_CHECK(ups <= 1);
  if (ups == 1 && !v.confirmed) {
    std::fprintf(stderr,
                 "nexres fuzz: the link (auth %s) reported replica 2 up for an answer that must not bring it up (WELCOME "
                 "%s; %zu bytes answered)\n",
                 P.mac ? "mac" : "none", v.up ? "valid, but no ACK/PONG passed its SEAL" : "fails", answer.size());
    std::abort();
  }
  if (ups == 0 && v.confirmed && handshake_timeouts(*P.eng) == timeouts_before) {
    std::fprintf(stderr, "nexres fuzz: the link (auth %s) never came up after a valid WELCOME%s\n", P.mac ? "mac" : "none",
                 P.mac ? " and a sealed ACK/PONG" : "");
    std::abort();
  }
  if (!v.up) {
    // Nothing written after the HELLO without a valid WELCOME, but (mac) the
    // reason it was refused: one BAD_AUTH REJECT under the I->R key.
    if (v.refused_welcome && !r.out.empty()) {
      check_welcome_refusal(r.out, raw ? nullptr : rx.get());  // raw: no keys to open it with
    } else {
      FUZZ_CHECK(r.out.empty());
    }
  } else if (ups == 0 && !P.mac) {
    FUZZ_CHECK(r.out.empty());  // it gave up (handshake deadline) before reading the WELCOME
  } else if (P.mac) {
    // Up only on a proper WELCOME: the keys are ours (not in raw mode: there
    // nobody could have signed it).
    FUZZ_CHECK(!raw && rx != nullptr);
    check_link_output(P, r.out, wb.t, rx.get());
  } else {
    check_link_output(P, r.out, {}, nullptr);
  }
  const std::size_t queued_frames = P.queue.size();
  check_queue(P, v);
  if (std::getenv("NEXRES_FUZZ_DEBUG") != nullptr)
    std::fprintf(stderr, "nexres fuzz: model: up %d, must close %d, ACK acted on %d (up to %llu); peer_up %zu; %zu of %zu queued frames acknowledged\n",
                 v.up, v.must_close, v.acked, static_cast<unsigned long long>(v.max_ack), ups,
                 queued_frames - P.queue.size(), queued_frames);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  keys();  // initializes OpenSSL first: its atexit cleanup runs after ours
  peer_none();
  peer_mac();
  // The links reconnect every few ms (RAND_bytes for each mac HELLO): before
  // OpenSSL's exit-time cleanup frees its locks under them, close the
  // listeners (connects are refused from then on: no more handshakes) and let
  // a handshake under way finish. (engine::stop() would end the io threads,
  // whose asio thread_info trips ASan's alloc-dealloc-mismatch check.)
  std::atexit([] {
    ::close(peer_none().listen_fd);
    ::close(peer_mac().listen_fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t b0 = data[0];
  switch (b0 & 3) {
    case 0: run((b0 & 4) ? peer_mac() : peer_none(), b0, true, data + 1, size - 1); break;
    case 1: run(peer_none(), b0, false, data + 1, size - 1); break;
    default: run(peer_mac(), b0, false, data + 1, size - 1); break;
  }
  return 0;
}
