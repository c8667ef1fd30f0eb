#include "producer.hpp"

#include "outbound_batch.hpp"

#include <cstring>

namespace nexres::addon {

Napi::Value producer::Flush(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  trash_->empty(env);
  engine* eng = live();
  if (eng == nullptr) return env.Undefined();
  Napi::Uint8Array staging = info[0].As<Napi::Uint8Array>();
  const std::size_t length = info[1].As<Napi::Number>().Uint32Value();
  Napi::Uint32Array runs = info[2].As<Napi::Uint32Array>();
  const std::size_t run_count = info[3].As<Napi::Number>().Uint32Value();
  if (length > staging.ByteLength() || run_count * run_fields > runs.ElementLength())
    throw Napi::RangeError::New(env, "flush: lengths out of range");
  std::shared_ptr<malloc_block> block;
  if (length > 0) {
    block = block_pool::take(blocks_, length);
    std::memcpy(block->data, staging.Data(), length);
  }
  Napi::Array externals;
  const bool has_ext = info.Length() > 4 && info[4].IsArray();
  if (has_ext) externals = info[4].As<Napi::Array>();
  // External payloads: one owner per payload, made on first use.
  std::vector<nexres::external_payload> ext_payloads;
  // The key signed frames of this flush are signed with (reconfigure may
  // replace it meanwhile: the frames then carry the generation that tells).
  const engine::own_key* own = eng->key();
  nexres::outbound_batch batch(block, block ? block->data : nullptr, length,
                               own != nullptr ? own->signer.get() : nullptr, eng->options().cluster_id);
  const std::uint32_t* r = runs.Data();
  for (std::size_t i = 0; i < run_count; ++i, r += run_fields) {
    nexres::staged_run run;
    run.dest = r[0];
    run.start = r[1];
    run.end = r[2];
    run.messages = r[3];
    run.last_msg_id = (static_cast<std::uint64_t>(r[5]) << 32) | r[4];
    run.sign = (r[6] & sign_run) != 0;
    run.external = r[6] & ~sign_run;
    const nexres::external_payload* ext = nullptr;
    if (run.external != 0 && has_ext && run.external <= externals.Length()) {
      if (ext_payloads.size() < run.external) ext_payloads.resize(run.external);
      nexres::external_payload& e = ext_payloads[run.external - 1];
      if (!e.owner) {
        Napi::Value v = externals.Get(run.external - 1);
        if (!v.IsTypedArray()) throw Napi::RangeError::New(env, nexres::describe(nexres::outbound_error::bad_external));
        Napi::Uint8Array payload = v.As<Napi::Uint8Array>();
        napi_ref ref = nullptr;
        napi_create_reference(env, payload, 1, &ref);
        std::shared_ptr<trash_bin> bin = trash_;
        // The deleter runs wherever the last segment is dropped (an io
        // thread after the ack): it only hands the reference to the trash.
        e.owner = std::shared_ptr<const void>(static_cast<const void*>(payload.Data()),
                                              [bin, ref](const void*) { bin->put(ref); });
        e.data = payload.Data();
        e.length = payload.ByteLength();
      }
      ext = &e;
    }
    const nexres::outbound_error err = batch.add(run, ext);
    if (err == nexres::outbound_error::signed_without_key || err == nexres::outbound_error::signing_failed)
      throw Napi::Error::New(env, nexres::describe(err));
    if (err != nexres::outbound_error::none) throw Napi::RangeError::New(env, nexres::describe(err));
  }
  bool signed_ok = true;
  se_->ids.stamp_and_enqueue(
      batch.segments(), [eng](std::uint32_t dest, const segment& seg) { eng->enqueue(dest, seg); },
      [eng, own, &signed_ok](segment& seg) {
        const auto& o = eng->options();
        // add() refused signed runs without a key.
        seg.key_generation = own->generation;
        signed_ok = nexres::sign_segment(seg, *own->signer, o.cluster_id, o.incarnation) && signed_ok;
      });
  if (!signed_ok) throw Napi::Error::New(env, nexres::describe(nexres::outbound_error::signing_failed));
  FillDepths();
  return env.Undefined();
}

}  // namespace nexres::addon
