// The handshake budget's buckets on a simulated clock: a burst of one
// second's worth, then the rate; per address and in all (a token is spent
// from both or from neither); 0 means no bound; idle addresses are dropped
// when many are tracked.
#include "check.hpp"

#include "handshake_budget.hpp"

#include <cstdio>
#include <string>

using namespace nexres;
using namespace std::chrono_literals;

int main() {
  const auto t0 = handshake_budget::clock::now();
  {
    handshake_budget b(10, 0);
    int ok = 0;
    for (int i = 0; i < 100; ++i) ok += b.take("10.0.0.1", t0) ? 1 : 0;
    CHECK(ok == 10);                    // the burst: one second's worth
    CHECK(b.take("10.0.0.2", t0));      // another address has its own
    CHECK(!b.take("10.0.0.1", t0 + 50ms));
    CHECK(b.take("10.0.0.1", t0 + 100ms));  // 10/s: one more after 100 ms
    CHECK(!b.take("10.0.0.1", t0 + 100ms));
    ok = 0;
    for (int i = 0; i < 1000; ++i) ok += b.take("10.0.0.1", t0 + 10s + i * 1ms) ? 1 : 0;
    CHECK(ok >= 19 && ok <= 21);  // refilled to 10, then 10/s over 1 s
  }
  {
    handshake_budget b(5, 8);  // in all 8/s: two addresses cannot take 10
    int ok = 0;
    for (int i = 0; i < 10; ++i) ok += b.take("a", t0) ? 1 : 0;
    for (int i = 0; i < 10; ++i) ok += b.take("b", t0) ? 1 : 0;
    CHECK(ok == 8);
    // A refusal by the address does not spend the total's token.
    handshake_budget c(1, 3);
    CHECK(c.take("x", t0));
    CHECK(!c.take("x", t0));
    CHECK(!c.take("x", t0));
    CHECK(c.take("y", t0));
    CHECK(c.take("z", t0));
  }
  {
    handshake_budget b(0, 0);
    for (int i = 0; i < 10000; ++i) CHECK(b.take("a", t0));
    CHECK(b.tracked() == 0);
  }
  {
    handshake_budget b(2, 0);
    for (int i = 0; i < 70000; ++i) b.take("10." + std::to_string(i), t0 + std::chrono::milliseconds(i));
    CHECK(b.tracked() <= 65536);  // idle buckets dropped
  }
  std::puts("handshake_budget: ok");
  return 0;
}
