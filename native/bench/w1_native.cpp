// W1 one-way stream with C++ on both ends over the same core: the ceiling
// the TypeScript layer is measured against. Run as two processes:
//   w1_native recv <recvPort> <sendPort> <count> <size>   (replica 2)
//   w1_native send <recvPort> <sendPort> <count> <size>   (replica 1)
// The receiver prints one JSON line: messages, bytes and seconds from the
// first to the last message.
#include "frame_builder.hpp"
#include "../test/harness.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

using namespace nexres;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: w1_native recv|send <recvPort> <sendPort> <count> <size> [ioThreads]\n");
    return 2;
  }
  const std::string role = argv[1];
  const std::vector<std::uint16_t> ports = {static_cast<std::uint16_t>(std::atoi(argv[3])),
                                            static_cast<std::uint16_t>(std::atoi(argv[2]))};
  const std::uint64_t count = std::strtoull(argv[4], nullptr, 10);
  const std::uint32_t size = static_cast<std::uint32_t>(std::atoi(argv[5]));
  const std::size_t io_threads = argc > 6 ? static_cast<std::size_t>(std::atoi(argv[6])) : 2;
  // Untimed messages first (same rule as the JS contenders).
  const std::uint64_t warmup = argc > 7 ? std::strtoull(argv[7], nullptr, 10) : 0;
  const std::uint64_t total = count + warmup;

  if (role == "recv") {
    auto opts = nexres_test::options_for(2, ports, io_threads);
    opts.reconnect_max_ms = 50;
    opts.cluster_id = "bench";
    if (const char* v = std::getenv("NEXRES_CHUNK_BYTES")) opts.chunk_bytes = std::strtoull(v, nullptr, 10);
    if (const char* v = std::getenv("NEXRES_CHUNKS")) opts.max_chunks_per_connection = std::strtoull(v, nullptr, 10);
    nexres_test::node n(opts);
    if (n.eng().start()) return 1;
    std::printf("ready\n");
    std::fflush(stdout);
    std::uint64_t got = 0, bytes = 0, sum = 0;
    std::chrono::steady_clock::time_point first{}, last{};
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (got < total && std::chrono::steady_clock::now() < deadline) {
      n.poll([&](std::uint32_t, const frame_header& h, const std::uint8_t* body) {
        if (got == warmup) first = std::chrono::steady_clock::now();
        sum += h.length > 0 ? body[0] : 0;  // touch the payload
        if (got >= warmup) bytes += h.length;
        ++got;
      }, 100ms);
    }
    last = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(last - first).count();
    std::printf("{\"messages\":%llu,\"bytes\":%llu,\"seconds\":%.6f,\"checksum\":%llu}\n",
                static_cast<unsigned long long>(got - warmup), static_cast<unsigned long long>(bytes), secs,
                static_cast<unsigned long long>(sum));
    return got == total ? 0 : 1;
  }

  auto opts = nexres_test::options_for(1, ports, io_threads);
  opts.reconnect_max_ms = 50;
  opts.cluster_id = "bench";
  nexres_test::node n(opts);
  if (n.eng().start()) return 1;
  std::vector<std::uint8_t> payload(size, 0x5a);
  const std::size_t per_block = std::max<std::size_t>(1, (1024u * 1024) / (frame_header_bytes + size));
  std::uint64_t id = 0;
  const std::uint32_t route = route_id("w1", 2);  // the route bench/w1-nexres.mjs listens on
  const std::uint64_t high_water = 64u << 20;
  if (size >= 16 * 1024) {
    // Large payloads by reference, as the TypeScript sender does: headers in
    // small blocks, payload bytes never copied.
    auto shared_payload = std::make_shared<std::vector<std::uint8_t>>(payload);
    while (id < total) {
      while (n.eng().queued_bytes(2) > high_water) std::this_thread::sleep_for(20us);
      for (std::size_t i = 0; i < 16 && id < total; ++i) {
        ++id;
        frame_builder fb(1, frame_header_bytes);
        fb.add(route, id, nullptr, 0);
        segment h = fb.take();
        store_u32(const_cast<std::uint8_t*>(h.data), size);  // the header announces the payload
        h.messages = 0;
        n.eng().enqueue(2, h);
        segment p;
        p.owner = shared_payload;
        p.data = shared_payload->data();
        p.length = size;
        p.messages = 1;
        p.last_msg_id = id;
        p.framed = false;
        n.eng().enqueue(2, p);
      }
    }
  }
  while (id < total) {
    while (n.eng().queued_bytes(2) > high_water) std::this_thread::sleep_for(20us);
    frame_builder fb(1, per_block * (frame_header_bytes + size));
    for (std::size_t i = 0; i < per_block && id < total; ++i) {
      ++id;
      fb.add(route, id, payload.data(), size);
    }
    n.eng().enqueue(2, fb.take());
  }
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (n.eng().queued_bytes(2) > 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  return 0;
}
