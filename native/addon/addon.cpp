// Node-API glue for the nexres engine, thin by design: policy lives in the
// core (native/core), where its tests, sanitizers and fuzzers reach it.
//   common.hpp      record layouts, staged-byte blocks, calling into JS
//   options.cpp     the one table of engine options JS passes
//   shared_engine   the engine shared by the main thread and its workers
//   producer.cpp    a JS thread's sending side (flush -> core outbound_batch)
//   batch.hpp       handing a batch of deliveries to a JS thread
//   js_engine.cpp   the Engine class (main thread)
//   js_consumer.cpp the Consumer class (a worker thread)
//   stats.cpp       engine statistics as JS objects
// lib/native.ts states this module's exact shape.
#include <napi.h>

#include "js_consumer.hpp"
#include "js_engine.hpp"
#include "options.hpp"
#include "protocol.hpp"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", nexres::addon::define_engine(env));
  exports.Set("Consumer", nexres::addon::define_consumer(env));
  exports.Set("engineOptionKeys", nexres::addon::engine_option_keys(env));
  exports.Set("frameHeaderBytes", Napi::Number::New(env, nexres::frame_header_bytes));
  exports.Set("protocolVersion", Napi::Number::New(env, nexres::protocol_version));
  return exports;
}

}  // namespace

NODE_API_MODULE(nexres, Init)
