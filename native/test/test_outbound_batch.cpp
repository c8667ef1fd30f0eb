// outbound_batch: runs from JavaScript are checked before they are trusted
// (out of range, lying frame lengths, missing external payloads: an error
// and nothing added), signed runs are marked and signed in place once their
// ids are final (the signature covers id and incarnation), and
// id_sequence gives frames to replicas increasing ids per destination from
// several producer threads at once while replies keep their request's id.
#include "check.hpp"
#include "outbound_batch.hpp"
#include "protocol.hpp"

#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

namespace {
using nexres::outbound_error;

// Frames of `payload` bytes each; `signed_` adds room for the signature.
std::vector<std::uint8_t> frames(std::size_t n, std::uint32_t payload, bool signed_) {
  const std::uint32_t body = payload + (signed_ ? static_cast<std::uint32_t>(nexres::auth::signed_trailer_bytes) : 0);
  std::vector<std::uint8_t> b(n * (nexres::frame_header_bytes + body), 0);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t* f = b.data() + i * (nexres::frame_header_bytes + body);
    nexres::frame_header h{};
    h.length = body;
    h.route = 77;
    h.kind = nexres::frame_kind::data;
    h.sender = 1;
    h.flags = signed_ ? nexres::auth::flag_signed : 0;
    nexres::encode_header(f, h);
    std::memset(f + nexres::frame_header_bytes, static_cast<int>(i + 1), payload);
  }
  return b;
}

void checks_runs() {
  const auto kp = nexres::crypto::ed25519_keypair::generate();
  nexres::crypto::ed25519_signer signer(kp);
  auto verifier = nexres::crypto::ed25519_verifier::from_public(kp.public_key.data());
  CHECK(verifier.has_value());
  const std::string cluster = "c1";

  auto bytes = frames(3, 10, true);
  auto owner = std::make_shared<std::vector<std::uint8_t>>(bytes);
  std::uint8_t* data = owner->data();
  const std::size_t len = owner->size();
  {
    nexres::outbound_batch b(owner, data, len, &signer, cluster);
    nexres::staged_run r;
    r.dest = 2;
    r.start = 0;
    r.end = static_cast<std::uint32_t>(len);
    r.messages = 3;
    r.sign = true;
    CHECK(b.add(r, nullptr) == outbound_error::none);
    CHECK(b.segments().size() == 1 && b.segments()[0].second.length == len && b.segments()[0].second.sign);
    CHECK(nexres::sign_segment(b.segments()[0].second, signer, cluster, 7));
    const std::size_t frame = len / 3;
    for (std::size_t i = 0; i < 3; ++i) CHECK(nexres::auth::verify_frame(*verifier, cluster, 7, data + i * frame));
    CHECK(!nexres::auth::verify_frame(*verifier, cluster, 8, data));  // another incarnation
    nexres::store_u64(data + 16, 99);  // another message id: the copy does not verify
    CHECK(!nexres::auth::verify_frame(*verifier, cluster, 7, data));
    data[frame + nexres::frame_header_bytes] ^= 1;  // altered payload: its signature no longer holds
    CHECK(!nexres::auth::verify_frame(*verifier, cluster, 7, data + frame));
  }
  {
    nexres::outbound_batch b(owner, data, len, nullptr, cluster);
    nexres::staged_run r;
    r.end = static_cast<std::uint32_t>(len);
    r.sign = true;
    CHECK(b.add(r, nullptr) == outbound_error::signed_without_key);
    r.sign = false;
    r.end = static_cast<std::uint32_t>(len + 1);
    CHECK(b.add(r, nullptr) == outbound_error::run_out_of_range);
    r.start = 10;
    r.end = 5;
    CHECK(b.add(r, nullptr) == outbound_error::run_out_of_range);
    r.start = 0;
    r.end = 0;
    CHECK(b.add(r, nullptr) == outbound_error::none);  // empty: nothing to send
    CHECK(b.segments().empty());
  }
  {
    // A frame whose header claims more than the run holds: nothing signed.
    auto lying = frames(2, 10, true);
    nexres::store_u32(lying.data() + (lying.size() / 2), 1000000);
    const auto before = lying;
    nexres::outbound_batch b(nullptr, lying.data(), lying.size(), &signer, cluster);
    nexres::staged_run r;
    r.end = static_cast<std::uint32_t>(lying.size());
    r.sign = true;
    CHECK(b.add(r, nullptr) == outbound_error::run_out_of_range);
    CHECK(lying == before && b.segments().empty());
  }
  {
    // External payloads: by reference, unframed, range-checked.
    std::vector<std::uint8_t> payload(100, 9);
    nexres::external_payload ext;
    ext.owner = std::make_shared<int>(1);
    ext.data = payload.data();
    ext.length = payload.size();
    nexres::outbound_batch b(nullptr, nullptr, 0, nullptr, cluster);
    nexres::staged_run r;
    r.external = 1;
    r.end = 100;
    CHECK(b.add(r, nullptr) == outbound_error::bad_external);
    r.end = 101;
    CHECK(b.add(r, &ext) == outbound_error::bad_external);
    r.end = 100;
    r.sign = true;
    CHECK(b.add(r, &ext) == outbound_error::signed_without_key);
    r.sign = false;
    CHECK(b.add(r, &ext) == outbound_error::none);
    CHECK(b.segments().size() == 1 && !b.segments()[0].second.framed && b.segments()[0].second.data == payload.data());
  }
}

void checks_ids() {
  nexres::id_sequence ids(true);
  std::mutex mu;
  std::map<std::uint32_t, std::vector<std::uint64_t>> seen;  // dest -> ids in enqueue order
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int k = 0; k < 2000; ++k) {
        auto bytes = std::make_shared<std::vector<std::uint8_t>>(frames(2, 4, false));
        std::vector<std::pair<std::uint32_t, nexres::segment>> segs(2);
        for (auto& ds : segs) {
          ds.second.owner = bytes;
          ds.second.data = bytes->data();
          ds.second.length = static_cast<std::uint32_t>(bytes->size());
          ds.second.messages = 2;
        }
        segs[0].first = static_cast<std::uint32_t>(2 + (k % 3));
        // A reply to a client keeps its request's id.
        segs[1].first = nexres::client_flag | static_cast<std::uint32_t>(t + 1);
        segs[1].second.last_msg_id = 4242;
        ids.stamp_and_enqueue(segs, [&](std::uint32_t dest, const nexres::segment& seg) {
          std::lock_guard<std::mutex> lock(mu);
          if ((dest & nexres::client_flag) != 0) {
            CHECK(seg.last_msg_id == 4242);
            return;
          }
          // Both frames of the segment carry consecutive ids, the last one reported.
          const std::uint64_t first = nexres::load_u64(seg.data + 16);
          const std::uint64_t second = nexres::load_u64(seg.data + nexres::frame_header_bytes + 4 + 16);
          CHECK(second == first + 1 && seg.last_msg_id == second);
          seen[dest].push_back(second);
        });
      }
    });
  for (auto& t : ts) t.join();
  std::size_t total = 0;
  for (auto& [dest, v] : seen) {
    for (std::size_t i = 1; i < v.size(); ++i) CHECK(v[i] > v[i - 1]);
    total += v.size();
  }
  CHECK(total == 4 * 2000);
  CHECK(ids.last() == 2 * 4 * 2000);
}
}  // namespace

int main() {
  checks_runs();
  checks_ids();
  std::puts("outbound_batch ok");
  return 0;
}
