// Engine statistics as the JS object lib/ reads (lib/native.ts NativeStats).
#pragma once

#include <napi.h>

#include "engine.hpp"

namespace nexres::addon {

Napi::Object stats_to_js(Napi::Env env, const nexres::engine_stats& st);

}  // namespace nexres::addon
