// libFuzzer target over the pure wire-format functions: decode_header /
// encode_header, decode_hello / encode_hello (protocol.hpp) and stamp_ids
// (frame_builder.hpp), on arbitrary bytes. In process, no sockets: fast.
// Built by tools/fuzz.sh (cmake -DNEXRES_FUZZ=ON with clang).
#include "frame_builder.hpp"
#include "protocol.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace nexres;

#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "fuzz_decoders: invariant failed: %s (%s:%d)\n", #cond,   \
                   __FILE__, __LINE__);                                               \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace {

void check_header(const std::uint8_t* p) {
  const frame_header h = decode_header(p);
  std::uint8_t again[frame_header_bytes];
  encode_header(again, h);
  // Every byte of the header is a field: the round trip is exact.
  FUZZ_CHECK(std::memcmp(again, p, frame_header_bytes) == 0);
  FUZZ_CHECK(h.length == (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                          static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24));
  FUZZ_CHECK(static_cast<std::uint8_t>(h.kind) == p[12]);
}

void check_hello(const std::uint8_t* p) {
  std::uint32_t magic = 0;
  const hello_message m = decode_hello(p, magic);
  FUZZ_CHECK(magic == load_u32(p));
  std::uint8_t again[hello_fixed_bytes];
  encode_hello(again, m);
  // The reserved byte 11 is written as zero; the magic is always ours;
  // everything else (the epoch at 28..31 included) round-trips.
  std::uint8_t want[hello_fixed_bytes];
  std::memcpy(want, p, hello_fixed_bytes);
  store_u32(want, hello_magic);
  want[11] = 0;
  FUZZ_CHECK(std::memcmp(again, want, hello_fixed_bytes) == 0);
  // The handshake checks of the sessions, applied in their order, on what
  // was decoded: a body length accepted there is bounded.
  if (magic == hello_magic && m.version == protocol_version && m.auth == auth_mode::none &&
      m.body_length <= hello_max_body_bytes && m.cluster_id_length <= m.body_length) {
    FUZZ_CHECK(m.cluster_id_length <= max_cluster_id_bytes);
    FUZZ_CHECK(m.body_length <= hello_max_body_bytes);
  }
}

void check_stamp(const std::uint8_t* data, std::size_t size, std::uint64_t start) {
  // Exact-size heap copy: ASan catches a write past the end.
  std::vector<std::uint8_t> copy(data, data + size);
  std::uint64_t last = start;
  const std::uint64_t returned = stamp_ids(copy.data(), copy.size(), last);
  FUZZ_CHECK(returned == last);
  // Walk the frames the way stamp_ids documents it and count the headers.
  std::size_t p = 0;
  std::uint64_t expect = start;
  while (p + frame_header_bytes <= size) {
    ++expect;
    FUZZ_CHECK(load_u64(copy.data() + p + 16) == expect);
    // Only the id field changes.
    FUZZ_CHECK(std::memcmp(copy.data() + p, data + p, 16) == 0);
    const std::size_t body = load_u32(data + p);
    const bool whole = p + frame_header_bytes + body <= size;
    if (whole && body > 0) FUZZ_CHECK(std::memcmp(copy.data() + p + frame_header_bytes, data + p + frame_header_bytes, body) == 0);
    p += frame_header_bytes + (whole ? body : 0);
  }
  FUZZ_CHECK(last == expect);
  // Bytes after the last header (a short tail) are untouched.
  if (p < size) FUZZ_CHECK(std::memcmp(copy.data() + p, data + p, size - p) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Headers at every offset a parser could land on (bounded, to stay fast).
  for (std::size_t off = 0; off + frame_header_bytes <= size && off < 256; off += 8) {
    std::vector<std::uint8_t> h(data + off, data + off + frame_header_bytes);
    check_header(h.data());
  }
  if (size >= hello_fixed_bytes) {
    std::vector<std::uint8_t> h(data, data + hello_fixed_bytes);
    check_hello(h.data());
  }
  std::uint64_t start = 0;
  if (size >= 1) start = data[0] == 0xff ? ~std::uint64_t{0} - 2 : data[0];  // also near the wrap
  check_stamp(data, size, start);
  (void)route_id(reinterpret_cast<const char*>(data), size);
  if (size >= 2) FUZZ_CHECK(reject_code_name(static_cast<reject_code>(load_u16(data))) != nullptr);
  return 0;
}
