#pragma once

#include <napi.h>

namespace nexres::addon {

/// The Engine class (new Engine(options, meta, depths, onBatch, onEvents)).
Napi::Function define_engine(Napi::Env env);

}  // namespace nexres::addon
