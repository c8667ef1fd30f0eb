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
#include "auth.hpp"
#include "protocol.hpp"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", nexres::addon::define_engine(env));
  exports.Set("Consumer", nexres::addon::define_consumer(env));
  exports.Set("engineOptionKeys", nexres::addon::engine_option_keys(env));
  exports.Set("frameHeaderBytes", Napi::Number::New(env, nexres::frame_header_bytes));
  exports.Set("protocolVersion", Napi::Number::New(env, nexres::protocol_version));
  // The wire as the core knows it: lib/wire.ts is checked against it at load.
  Napi::Object wire = Napi::Object::New(env);
  namespace off = nexres::frame_offset;
  using kind = nexres::frame_kind;
  const std::pair<const char*, double> fields[] = {
      {"HEADER_BYTES", nexres::frame_header_bytes},
      {"OFFSET_LENGTH", off::length},
      {"OFFSET_ROUTE", off::route},
      {"OFFSET_SENDER", off::sender},
      {"OFFSET_KIND", off::kind},
      {"OFFSET_FLAGS", off::flags},
      {"OFFSET_MSG_ID", off::msg_id},
      {"HELLO_FIXED_BYTES", nexres::hello_fixed_bytes},
      {"HELLO_MAGIC", nexres::hello_magic},
      {"PROTOCOL_VERSION", nexres::protocol_version},
      {"HELLO_CLIENT", static_cast<double>(nexres::hello_type::client_hello)},
      {"WELCOME_CLIENT", static_cast<double>(nexres::hello_type::client_welcome)},
      {"KIND_DATA", static_cast<double>(kind::data)},
      {"KIND_REJECT", static_cast<double>(kind::reject)},
      {"KIND_REQUEST", static_cast<double>(kind::request)},
      {"KIND_REPLY", static_cast<double>(kind::reply)},
      {"KIND_ERROR", static_cast<double>(kind::error)},
      {"KIND_PONG", static_cast<double>(kind::pong)},
      {"KIND_CANCEL", static_cast<double>(kind::cancel)},
      {"KIND_PUSH", static_cast<double>(kind::push)},
      {"KIND_SEAL", static_cast<double>(kind::seal)},
      {"KIND_AUTH", static_cast<double>(kind::auth)},
      {"FLAG_SIGNED", nexres::auth::flag_signed},
      {"SIGNATURE_BYTES", nexres::auth::sig_bytes},
      {"SIGNED_TRAILER_BYTES", nexres::auth::signed_trailer_bytes},
  };
  for (const auto& f : fields) wire.Set(f.first, Napi::Number::New(env, f.second));
  exports.Set("wire", wire);
  return exports;
}

}  // namespace

NODE_API_MODULE(nexres, Init)
