// Engine options from JS: one table of fields (options.cpp). Every field is
// named in the table once; a key JS passes that the table lacks, or a
// required one it leaves out, is refused (no silent native default).
// lib/config.ts resolves and checks user options; this reads the result.
#pragma once

#include <napi.h>

#include "engine.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nexres::addon {

/// What new Engine(options, ...) configures: the core's options and the
/// glue's own.
struct engine_setup {
  engine_options options;
  std::uint32_t consumers = 0;          // worker consumers (0: the main thread handles)
  bool ordered = true;                  // with consumers: one at a time per source
  std::size_t max_pending = 1024;       // handler promises pending, in all
};

/// Throws Napi::TypeError naming the key for a missing, unknown or
/// ill-typed field.
engine_setup read_engine_options(Napi::Env env, const Napi::Object& o);
/// The keys the table knows (exported as engineOptionKeys, for a test that
/// holds lib/'s resolved options against it).
Napi::Array engine_option_keys(Napi::Env env);
/// reconfigure({ epoch, peers: [{ cluster?, id, host, port, key? }] }).
nexres::membership read_membership(Napi::Env env, const Napi::Value& v);

}  // namespace nexres::addon
