// One flush of staged frames from a producer thread (the JS thread of a
// replica or a worker), turned into segments for the engine's outbound
// queues. The staged bytes come from JavaScript, so every run is checked
// against what it points into before anything trusts it; frames flagged
// signed get their Ed25519 signature here; frames to replicas get the next
// message ids of the engine's one sequence (docs/PROTOCOL.md §3), shared by
// every producer thread so a peer sees ids in the order it is sent frames.
#pragma once

#include "auth.hpp"
#include "engine.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace nexres {

/// One run of staged frames to one destination.
struct staged_run {
  std::uint32_t dest = 0;
  std::uint32_t start = 0;  // [start, end) of the staged bytes, or of the external payload
  std::uint32_t end = 0;
  std::uint32_t messages = 0;
  std::uint64_t last_msg_id = 0;  // replies: the request's id
  /// 0: the run is staged bytes; k > 0: it is bytes of external payload k
  /// (sent by reference; its frame header is in the staged bytes before it).
  std::uint32_t external = 0;
  /// Frames of the run that carry the signed flag are signed.
  bool sign = false;
};

/// A payload sent by reference: kept alive by `owner` until acknowledged.
struct external_payload {
  std::shared_ptr<const void> owner;
  const std::uint8_t* data = nullptr;
  std::size_t length = 0;
};

enum class outbound_error { none, run_out_of_range, bad_external, signed_without_key, signing_failed };
/// A sentence for the error a producer raises.
const char* describe(outbound_error e) noexcept;

class outbound_batch {
 public:
  /// staged: the flush's bytes, kept alive by `owner` (may be empty).
  /// signer: this replica's key (null without one).
  outbound_batch(std::shared_ptr<const void> owner, std::uint8_t* staged, std::size_t length,
                 const crypto::ed25519_signer* signer, const std::string& cluster_id);

  /// Checks, signs and adds one run. `ext` is the run's external payload
  /// (null for a staged run). Nothing is added on error.
  outbound_error add(const staged_run& run, const external_payload* ext);

  std::vector<std::pair<std::uint32_t, segment>>& segments() noexcept { return segs_; }

 private:
  outbound_error check_frames(std::uint32_t start, std::uint32_t end) const;

  std::shared_ptr<const void> owner_;
  std::uint8_t* staged_;
  std::size_t length_;
  const crypto::ed25519_signer* signer_;
  const std::string& cluster_id_;
  std::vector<std::pair<std::uint32_t, segment>> segs_;
};

/// The message ids of one engine. Frames to replicas get the next ids at
/// enqueue time, under one lock with the enqueue itself, so that ids reach
/// every outbound queue in increasing order whichever thread flushes.
/// Replies to clients keep their request's id.
/// Signs the signed frames of a staged segment (its ids final) with the
/// sender's incarnation; false when signing failed.
bool sign_segment(const segment& seg, const crypto::ed25519_signer& key, const std::string& cluster_id,
                  std::uint64_t incarnation);

class id_sequence {
 public:
  /// enabled == false: ids were given by the producer itself (one thread).
  explicit id_sequence(bool enabled) : enabled_(enabled) {}

  /// Gives ids, then `sign(seg)` for segments holding signed frames (their
  /// signature covers the id), then `enqueue(dest, seg)`, in order.
  template <typename Enqueue, typename Sign>
  void stamp_and_enqueue(std::vector<std::pair<std::uint32_t, segment>>& segs, Enqueue&& enqueue, Sign&& sign) {
    if (!enabled_) {
      for (auto& ds : segs) {
        if (ds.second.sign) sign(ds.second);
        enqueue(ds.first, ds.second);
      }
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& ds : segs) {
      stamp(ds.first, ds.second);
      if (ds.second.sign) sign(ds.second);
      enqueue(ds.first, ds.second);
    }
  }

  template <typename Enqueue>
  void stamp_and_enqueue(std::vector<std::pair<std::uint32_t, segment>>& segs, Enqueue&& enqueue) {
    stamp_and_enqueue(segs, std::forward<Enqueue>(enqueue), [](segment&) {});
  }

  /// The last id given (0 before any).
  std::uint64_t last() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }

 private:
  void stamp(std::uint32_t dest, segment& seg);  // holds mu_

  const bool enabled_;
  mutable std::mutex mu_;
  std::uint64_t last_ = 0;
};

}  // namespace nexres
