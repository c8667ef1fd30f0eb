#pragma once

#include <napi.h>

namespace nexres::addon {

/// The Consumer class (new Consumer(key, index, meta, depths, onBatch)).
Napi::Function define_consumer(Napi::Env env);

}  // namespace nexres::addon
