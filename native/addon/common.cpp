#include "common.hpp"

namespace nexres::addon {

bool call_js(Napi::Env env, const Napi::FunctionReference& fn, std::initializer_list<napi_value> args,
             napi_value* result) {
  napi_value f = nullptr, recv = nullptr, out = nullptr;
  if (napi_get_reference_value(env, static_cast<napi_ref>(fn), &f) != napi_ok || f == nullptr) return false;
  if (napi_get_undefined(env, &recv) != napi_ok) return false;
  if (napi_call_function(env, recv, f, args.size(), args.begin(), &out) != napi_ok) return false;
  if (result != nullptr) *result = out;
  return true;
}

}  // namespace nexres::addon
