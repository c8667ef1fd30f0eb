// Handing deliveries to a JS thread: the meta entries of a batch and the
// chunks that thread has not wrapped yet.
#pragma once

#include "common.hpp"

namespace nexres::addon {

// Wraps a receive chunk's memory in an external ArrayBuffer for one JS
// thread (the buffer keeps the memory alive on its own).
inline Napi::ArrayBuffer wrap_chunk(Napi::Env env, nexres::chunk* c) {
  auto hint = std::make_unique<std::shared_ptr<std::uint8_t>>(c->memory);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, c->data(), c->capacity,
      [](Napi::Env, void*, std::shared_ptr<std::uint8_t>* h) { std::unique_ptr<std::shared_ptr<std::uint8_t>> drop(h); },
      hint.get());
  hint.release();
  return ab;
}

// Writes the meta entries of batch[0..n) and wraps, once per thread, the
// chunks that thread has not seen (`first_time(c)` says so and marks it).
// Returns the [id, ArrayBuffer, pooled] triples of those, or undefined.
template <typename FirstTime>
napi_value fill_batch(Napi::Env env, const std::vector<delivery>& batch, std::size_t n, std::uint32_t* meta,
                      FirstTime&& first_time) {
  Napi::Array fresh;
  std::uint32_t fresh_count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const delivery& d = batch[i];
    nexres::chunk* c = d.source;
    if (first_time(c)) {
      if (fresh_count == 0) fresh = Napi::Array::New(env);
      fresh.Set(fresh_count++, Napi::Number::New(env, c->id));
      fresh.Set(fresh_count++, wrap_chunk(env, c));
      fresh.Set(fresh_count++, Napi::Boolean::New(env, c->pooled));
    }
    std::uint32_t* m = meta + i * meta_fields;
    m[0] = c->id;
    m[1] = d.offset;
    m[2] = d.length;
    m[3] = d.peer;
  }
  return fresh_count > 0 ? static_cast<napi_value>(fresh) : static_cast<napi_value>(env.Undefined());
}

}  // namespace nexres::addon
