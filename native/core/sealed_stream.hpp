// The receive side of a sealed stream of batches (auth 'mac', PROTOCOL.md
// §2a; the confidentiality issue adds decryption here). The sender cuts its
// stream into batches, each closed by a SEAL frame whose tag covers the
// batch's bytes; the receiver feeds each batch's bytes as its frames are
// parsed, holds what they carry (runs of messages, a PING's answer) and
// releases it only once the SEAL checks. A batch that fails, or grows past
// its bound without a SEAL, refuses the connection. One io thread.
#pragma once

#include "auth.hpp"
#include "protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace nexres {

template <typename Run>
class sealed_receiver {
 public:
  enum class fed { ok, too_big };

  /// key: this direction's session key; peer: the sender every SEAL must
  /// name; max_batch_bytes: the most a batch may carry before its SEAL.
  sealed_receiver(const crypto::key32& key, std::uint32_t peer, std::size_t max_batch_bytes)
      : opener_(key), peer_(peer), max_batch_bytes_(max_batch_bytes) {}

  /// Bytes of the batch in progress, as they are parsed.
  fed feed(const std::uint8_t* data, std::size_t n) {
    if (n == 0) return fed::ok;
    batch_bytes_ += n;
    opener_.update(data, n);
    return batch_bytes_ > max_batch_bytes_ ? fed::too_big : fed::ok;
  }
  /// Holds a run until its batch's SEAL checks.
  void hold(const Run& r) { held_.push_back(r); }
  /// Defers the answer to a PING (its id) until its batch checks.
  void defer_pong(std::uint64_t id) { pong_ = id; }

  /// The SEAL closing the batch (its header and tag). True when it checks:
  /// the held runs are appended to `out` in order, and a deferred PING's id
  /// comes back in `pong`. False: the batch was forged, altered, replayed,
  /// reordered or truncated (nothing is released).
  bool open(const frame_header& seal, const std::uint8_t tag[auth::tag_bytes], std::vector<Run>& out,
            std::optional<std::uint64_t>& pong) {
    if (seal.sender != peer_ || !opener_.open(seal, tag)) return false;
    out.insert(out.end(), held_.begin(), held_.end());
    held_.clear();
    batch_bytes_ = 0;
    pong = pong_;
    pong_.reset();
    return true;
  }

  bool holding() const noexcept { return !held_.empty(); }
  /// Drops what is held (the connection closes): f(run) for each.
  template <typename F>
  void drop(F&& f) {
    for (const Run& r : held_) f(r);
    held_.clear();
  }
  /// The opener itself, for a sealed frame outside the stream of batches
  /// (a sealed REJECT during the handshake).
  auth::opener& opener() noexcept { return opener_; }

 private:
  auth::opener opener_;
  const std::uint32_t peer_;
  const std::size_t max_batch_bytes_;
  std::size_t batch_bytes_ = 0;
  std::vector<Run> held_;
  std::optional<std::uint64_t> pong_;
};

}  // namespace nexres
