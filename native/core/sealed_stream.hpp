// A sealed stream of batches (auth 'mac' and 'seal', PROTOCOL.md §2a). The sender
// (sealed_sender) cuts its queue of segments into batches at frame
// boundaries, each closed by a SEAL frame whose tag covers the batch's
// bytes; the receiver (sealed_receiver) feeds each batch's bytes as its
// frames are parsed, holds what they carry (runs of messages, a PING's
// answer) and releases it only once the SEAL checks. A batch that fails, or
// grows past its bound without a SEAL, refuses the connection. Each side
// runs on one io thread.
//
// Auth 'seal': the sender encrypts each batch and its SEAL header into one
// buffer, after the batch's clear SEALED header, written in place of the
// batch's segments (they stay queued, in clear, as shadows: counted,
// acknowledged, and sealed again under the next connection's keys if this
// one fails). The receiver takes the SEALED header (begin()), which says
// how long the batch is, then decrypts in place in its receive chunk
// everything of the batch that has arrived, one call per read (decrypt()),
// and parses the plaintext; the tag after the SEAL header checks the batch
// before anything it carried is released.
#pragma once

#include "auth.hpp"
#include "protocol.hpp"

#include <cstddef>
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <vector>

namespace nexres {

template <typename Run>
class sealed_receiver {
 public:
  enum class fed { ok, too_big, bad };

  /// key: this direction's session key; peer: the sender every SEAL must
  /// name; max_batch_bytes: the most a batch may carry before its SEAL.
  sealed_receiver(const crypto::key32& key, std::uint32_t peer, std::size_t max_batch_bytes, bool decrypt = false,
                  auth::rekey_policy rekey = {})
      : opener_(key, decrypt, rekey), peer_(peer), max_batch_bytes_(max_batch_bytes) {}

  bool decrypting() const noexcept { return opener_.decrypting(); }

  /// auth 'seal': the clear SEALED header of the next batch (raw bytes).
  /// too_big: it announces more than max_batch_bytes of frames; bad: it is
  /// not the next batch from this peer.
  fed begin(const std::uint8_t* raw) {
    const frame_header h = decode_header(raw);
    if (in_batch_ || h.sender != peer_ || !opener_.begin_sealed(h, raw)) return fed::bad;
    const std::size_t frames = h.length - auth::seal_frame_bytes;
    if (frames > max_batch_bytes_) return fed::too_big;
    cipher_left_ = frames + frame_header_bytes;
    in_batch_ = true;
    return fed::ok;
  }
  /// Why begin() refused (the REJECT's text).
  static const char* refusal(fed r) noexcept {
    return r == fed::too_big ? "too much data without a SEAL (a sealed batch over its bound)"
                             : "a sealed batch out of sequence (forged, altered, replayed or reordered)";
  }
  /// auth 'seal': a batch's SEALED header was taken and its SEAL not yet.
  bool in_batch() const noexcept { return in_batch_; }
  /// auth 'seal': ciphertext of the batch in progress not yet decrypted (its
  /// frames and its SEAL header; the tag follows).
  std::size_t cipher_left() const noexcept { return cipher_left_; }

  /// auth 'seal': n more bytes of the batch in progress (at most
  /// cipher_left()), decrypted in place.
  fed decrypt(std::uint8_t* data, std::size_t n) {
    if (n == 0) return fed::ok;
    if (n > cipher_left_ || !opener_.decrypt(data, n)) return fed::bad;
    cipher_left_ -= n;
    batch_bytes_ += n;
    return fed::ok;
  }

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
    if (opener_.decrypting() && (!in_batch_ || cipher_left_ != 0)) return false;  // not the batch's last bytes
    if (seal.sender != peer_ || !(opener_.decrypting() ? opener_.open_sealed(seal, tag) : opener_.open(seal, tag)))
      return false;
    in_batch_ = false;
    out.insert(out.end(), held_.begin(), held_.end());
    held_.clear();
    batch_bytes_ = 0;
    pong = pong_;
    pong_.reset();
    return true;
  }

  bool holding() const noexcept { return !held_.empty(); }
  /// Bytes fed since the last SEAL.
  std::size_t batch_bytes() const noexcept { return batch_bytes_; }
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
  std::size_t cipher_left_ = 0;
  bool in_batch_ = false;
  std::vector<Run> held_;
  std::optional<std::uint64_t> pong_;
};

/// The send side. Segment is engine.hpp's segment (data, length, messages,
/// last_msg_id, framed, control, owner); a Queue of them (std::deque) holds
/// what a link writes, its first `sealed` segments sealed (writable).
template <typename Segment>
class sealed_sender {
 public:
  sealed_sender(const crypto::key32& key, std::uint32_t self_id, std::size_t batch_bytes = auth::seal_batch_bytes,
                bool encrypt = false, auth::rekey_policy rekey = {})
      : tx_(key, encrypt, rekey), self_(self_id), batch_bytes_(batch_bytes), encrypt_(encrypt) {}

  /// Cuts what follows the first `sealed` segments of `q` into batches of
  /// about batch_bytes at frame boundaries (splitting runs where needed)
  /// and puts each batch's SEAL after it. A tail that ends inside a frame
  /// waits. At most `max_batches` batches are made (the writer seals a
  /// little ahead of the socket, not its whole queue: with auth 'seal' the
  /// ciphertext would double the queue's memory and come in one burst).
  /// Returns the new count of sealed segments; nullopt when sealing failed
  /// (the link must close).
  template <typename Queue>
  std::optional<std::size_t> seal(Queue& q, std::size_t sealed, std::size_t max_batches = SIZE_MAX) {
    std::size_t i = sealed;
    for (std::size_t made = 0; i < q.size() && made < max_batches; ++made) {
      std::size_t bytes = 0, cut = 0;
      bool found = false;
      // Each run's frame headers are walked once: a run too big for the
      // batch only as far as the batch takes (split_run), a smaller one to
      // see whether it ends inside a frame.
      for (std::size_t j = i; j < q.size(); ++j) {
        Segment& sg = q[j];
        const bool run = sg.framed && !sg.control;
        if (run && sg.length == frame_header_bytes && frame_header_bytes + load_u32(sg.data) > sg.length) {
          // The header of a payload sent by reference: the whole frame goes
          // in one batch, on its own when it would not fit with what is before.
          const std::size_t frame = frame_header_bytes + load_u32(sg.data);
          if (bytes > 0 && bytes + frame > batch_bytes_) break;
          bytes += sg.length;
          continue;
        }
        if (run && bytes + sg.length > batch_bytes_) {
          // Too big for what is left of the batch: cut after as many whole
          // frames as fit (at least one when the batch is empty); its first
          // part then ends at a frame boundary.
          const std::size_t off = split_run(q, j, batch_bytes_ - std::min(bytes, batch_bytes_), bytes == 0);
          if (off > 0) {
            bytes += off;
            cut = j;
            found = true;
          }
          break;
        }
        bool complete = true;
        if (run && !boundary_after(sg)) {
          // Ends with the header of a payload sent by reference: that header
          // goes on its own, so the frames before it can close a batch.
          complete = sg.length > frame_header_bytes && split_run(q, j, sg.length - frame_header_bytes, false) > 0;
        }
        bytes += q[j].length;
        if (complete) {
          cut = j;
          found = true;
          if (bytes >= batch_bytes_) break;
        }
      }
      if (!found) return i;
      std::vector<crypto::byte_view> views;
      views.reserve(cut - i + 1);
      for (std::size_t k = i; k <= cut; ++k) views.emplace_back(q[k].data, q[k].length);
      if (encrypt_) {
        // The batch's ciphertext, then its encrypted SEAL header and tag, in
        // one segment written in place of the batch's own (now shadows).
        std::size_t total = auth::sealed_overhead;
        for (const auto& v : views) total += v.size;
        // Not zeroed first: every byte is written by the cipher (a memset of
        // each 256 KiB batch was 14 % of a sender's CPU).
        std::shared_ptr<std::uint8_t[]> buf = buffer(total);
        if (!tx_.encrypt(views.data(), views.size(), self_, buf.get())) return std::nullopt;
        for (std::size_t k = i; k <= cut; ++k) q[k].shadow = true;
        const std::uint8_t* data = buf.get();
        q.insert(q.begin() + static_cast<std::ptrdiff_t>(i), Segment::control_frame(std::move(buf), data, total));
        i = cut + 2;
        continue;
      }
      auto buf = std::make_shared<std::array<std::uint8_t, auth::seal_frame_bytes>>();
      if (!tx_.seal(views.data(), views.size(), self_, buf->data())) return std::nullopt;
      const std::uint8_t* data = buf->data();
      q.insert(q.begin() + static_cast<std::ptrdiff_t>(cut + 1), Segment::control_frame(std::move(buf), data, auth::seal_frame_bytes));
      i = cut + 2;
    }
    return i;
  }

  /// Seals buf[from..] as the next batch outside the queue (a frame written
  /// on its own: a REJECT, a handshake's last word): appends its SEAL, or,
  /// when this sender encrypts and `encrypt` says so (a client connection,
  /// §6b, where everything after the handshake is encrypted), encrypts it in
  /// place with its SEAL header and appends the tag.
  bool seal_buffer(std::vector<std::uint8_t>& buf, std::size_t from, bool encrypt = false) {
    if (encrypt && encrypt_) {
      // The frames move up to make room for the SEALED header before them,
      // then are encrypted in place.
      const std::size_t at = buf.size(), n = at - from;
      buf.resize(at + auth::sealed_overhead);
      std::memmove(buf.data() + from + frame_header_bytes, buf.data() + from, n);
      const crypto::byte_view v(buf.data() + from + frame_header_bytes, n);
      if (tx_.encrypt(&v, 1, self_, buf.data() + from)) return true;
      buf.resize(from);
      return false;
    }
    const std::size_t at = buf.size();
    buf.resize(at + auth::seal_frame_bytes);
    const crypto::byte_view v(buf.data() + from, at - from);
    if (tx_.seal(&v, 1, self_, buf.data() + at)) return true;
    buf.resize(at);
    return false;
  }

 private:
  // The boundary after `s` falls between two frames (a run that ends with
  // the header of a payload sent by reference does not).
  static bool boundary_after(const Segment& s) {
    if (s.control || !s.framed) return true;
    const std::uint8_t* p = s.data;
    std::size_t left = s.length;
    while (left >= frame_header_bytes) {
      const std::size_t total = frame_header_bytes + load_u32(p);
      if (total > left) return false;
      p += total;
      left -= total;
    }
    return left == 0;
  }

  // Splits the framed run q[j] after as many whole frames as fit in `room`
  // bytes (at least one when `at_least_one`); the second part follows it in
  // q with the remaining frames. Returns the first part's length (0:
  // nothing fits, or the run ends inside a frame first).
  template <typename Queue>
  static std::size_t split_run(Queue& q, std::size_t j, std::size_t room, bool at_least_one) {
    Segment& sg = q[j];
    std::size_t off = 0;
    std::uint32_t msgs = 0;
    std::uint64_t last = 0;
    while (off + frame_header_bytes <= sg.length) {
      const frame_header h = decode_header(sg.data + off);
      const std::size_t total = frame_header_bytes + h.length;
      if (off + total > sg.length) break;  // ends with a header sent by reference
      if (off + total > room && !(at_least_one && msgs == 0)) break;
      off += total;
      ++msgs;
      last = h.msg_id;
    }
    if (off == 0 || off >= sg.length) return off;
    Segment rest = sg;
    rest.data = sg.data + off;
    rest.length = static_cast<std::uint32_t>(sg.length - off);
    rest.messages = sg.messages >= msgs ? sg.messages - msgs : 0;
    sg.length = static_cast<std::uint32_t>(off);
    sg.messages = msgs;
    sg.last_msg_id = last;
    q.insert(q.begin() + static_cast<std::ptrdiff_t>(j + 1), std::move(rest));
    return off;
  }

  // A ciphertext buffer of at least `n` bytes. Batches of up to a full
  // batch take one of a few kept buffers no longer in use (the writer drops
  // a ciphertext segment once written, on this sender's io thread): a fresh
  // 256 KiB allocation per batch cost the sender page faults and madvise
  // calls (a fifth of its CPU in W1).
  std::shared_ptr<std::uint8_t[]> buffer(std::size_t n) {
    const std::size_t cap = batch_bytes_ + auth::sealed_overhead;
    if (n > cap || n < cap / 8) return std::shared_ptr<std::uint8_t[]>(new std::uint8_t[n]);
    for (auto& b : spare_)
      if (b.use_count() == 1) return b;
    if (spare_.size() < kept_buffers) return spare_.emplace_back(new std::uint8_t[cap]);
    return std::shared_ptr<std::uint8_t[]>(new std::uint8_t[n]);
  }

 public:
  /// Frees the kept ciphertext buffers not in use (the link is idle).
  void trim() {
    spare_.erase(std::remove_if(spare_.begin(), spare_.end(), [](const auto& b) { return b.use_count() == 1; }),
                 spare_.end());
  }

 private:
  static constexpr std::size_t kept_buffers = 4;
  auth::sealer tx_;
  const std::uint32_t self_;
  const std::size_t batch_bytes_;
  const bool encrypt_;
  std::vector<std::shared_ptr<std::uint8_t[]>> spare_;
};

}  // namespace nexres
