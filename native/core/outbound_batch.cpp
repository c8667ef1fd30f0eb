#include "outbound_batch.hpp"

#include "frame_builder.hpp"
#include "protocol.hpp"

namespace nexres {

const char* describe(outbound_error e) noexcept {
  switch (e) {
    case outbound_error::none: return "ok";
    case outbound_error::run_out_of_range: return "flush: run out of range";
    case outbound_error::bad_external: return "flush: bad external payload";
    case outbound_error::signed_without_key: return "flush: signed run without a key";
    case outbound_error::signing_failed: return "flush: signing failed";
  }
  return "flush: error";
}

outbound_batch::outbound_batch(std::shared_ptr<const void> owner, std::uint8_t* staged, std::size_t length,
                               const crypto::ed25519_signer* signer, const std::string& cluster_id)
    : owner_(std::move(owner)), staged_(staged), length_(length), signer_(signer), cluster_id_(cluster_id) {}

// Every frame of [start, end) must lie inside it before any is signed: a
// length read from JavaScript's bytes is not trusted to stay in range.
outbound_error outbound_batch::check_frames(std::uint32_t start, std::uint32_t end) const {
  for (std::size_t p = start; p + frame_header_bytes <= end;) {
    const frame_header fh = decode_header(staged_ + p);
    if (p + frame_header_bytes + fh.length > end) return outbound_error::run_out_of_range;
    p += frame_header_bytes + fh.length;
  }
  return outbound_error::none;
}

bool sign_segment(const segment& seg, const crypto::ed25519_signer& key, const std::string& cluster_id,
                  std::uint64_t incarnation) {
  auto* p = const_cast<std::uint8_t*>(seg.data);  // the flush's own staged bytes
  for (std::size_t off = 0; off + frame_header_bytes <= seg.length;) {
    const frame_header fh = decode_header(p + off);
    if ((fh.flags & auth::flag_signed) != 0 && !auth::sign_frame(key, cluster_id, incarnation, p + off)) return false;
    off += frame_header_bytes + fh.length;
  }
  return true;
}

outbound_error outbound_batch::add(const staged_run& run, const external_payload* ext) {
  if (run.end < run.start) return outbound_error::run_out_of_range;
  segment seg;
  seg.messages = run.messages;
  seg.last_msg_id = run.last_msg_id;
  if (run.external == 0) {
    if (run.end > length_) return outbound_error::run_out_of_range;
    if (run.sign) {
      if (signer_ == nullptr) return outbound_error::signed_without_key;
      // Signed once the ids are final (the signature covers the id).
      const outbound_error e = check_frames(run.start, run.end);
      if (e != outbound_error::none) return e;
      seg.sign = true;
    }
    seg.owner = owner_;
    seg.data = staged_ != nullptr ? staged_ + run.start : nullptr;
  } else {
    // Signing covers staged frames only (a signed frame carries its payload).
    if (run.sign) return outbound_error::signed_without_key;
    if (ext == nullptr || ext->data == nullptr || run.end > ext->length) return outbound_error::bad_external;
    seg.owner = ext->owner;
    seg.framed = false;  // payload bytes only; its header is in the staged run
    seg.data = ext->data + run.start;
  }
  seg.length = run.end - run.start;
  if (seg.length == 0) return outbound_error::none;
  segs_.emplace_back(run.dest, std::move(seg));
  return outbound_error::none;
}

void id_sequence::stamp(std::uint32_t dest, segment& seg) {
  // Replies keep the client's request id; replica frames get the next ids.
  const bool to_client = is_client_address(dest);
  if (to_client) return;
  if (seg.framed)
    seg.last_msg_id = stamp_ids(const_cast<std::uint8_t*>(seg.data), seg.length, last_);
  else
    seg.last_msg_id = last_;  // its header was stamped just before
}

}  // namespace nexres
