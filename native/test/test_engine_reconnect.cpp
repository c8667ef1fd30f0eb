// Messages queued while the peer is down are delivered in order once it is
// up; the peer restarts (new incarnation) and delivery resumes exactly once.
#include "check.hpp"
#include "frame_builder.hpp"
#include "harness.hpp"

#include <cstring>

using namespace nexres;
using namespace std::chrono_literals;

int main() {
  const std::vector<std::uint16_t> ports = {nexres_test::free_port(), nexres_test::free_port()};
  nexres_test::node a(nexres_test::options_for(1, ports, 1));
  CHECK(!a.eng().start());
  std::uint64_t id = 0;
  auto send_some = [&](int n) {
    frame_builder fb(1);
    for (int i = 0; i < n; ++i) {
      ++id;
      fb.add(3, id, &id, 8);
    }
    a.eng().enqueue(2, fb.take());
  };
  send_some(5000);  // peer 2 is not up yet
  std::this_thread::sleep_for(100ms);
  CHECK(a.eng().queued_bytes(2) > 0);

  std::uint64_t expect = 1, bad = 0;
  auto check = [&](std::uint32_t, const frame_header& h, const std::uint8_t* body) {
    std::uint64_t v;
    std::memcpy(&v, body, 8);
    if (v != expect || h.msg_id != expect) ++bad;
    ++expect;
  };
  for (int round = 0; round < 3; ++round) {
    auto b = nexres_test::start_on_dialled_port<nexres_test::node>(
        [&] { return std::make_unique<nexres_test::node>(nexres_test::options_for(2, ports, 2)); }, ports[1]);
    CHECK(b != nullptr);
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (expect <= id && std::chrono::steady_clock::now() < deadline) b->poll(check, 20ms);
    CHECK(bad == 0);
    CHECK(expect == id + 1);
    const auto acked = std::chrono::steady_clock::now() + 5s;
    while (a.eng().queued_bytes(2) > 0 && std::chrono::steady_clock::now() < acked) std::this_thread::sleep_for(1ms);
    CHECK(a.eng().queued_bytes(2) == 0);
    b.reset();  // peer goes away; queue more while it is down
    send_some(3000);
  }
  std::puts("engine reconnect ok");
  return 0;
}
