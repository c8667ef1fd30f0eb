// The sending side of one JS thread (the main thread or a worker).
#pragma once

#include <array>
#include <cstring>

#include "common.hpp"
#include "shared_engine.hpp"

namespace nexres::addon {

// The sending side of one JS thread: staged frames in, queue depths out.
class producer {
 public:
  void bind(std::shared_ptr<shared_engine> se, Napi::Float64Array depths) {
    if (depths.ElementLength() < se->peer_ids.size())
      throw Napi::RangeError::New(depths.Env(), "depths array shorter than the peer list");
    se_ = std::move(se);
    depths_ = Napi::Persistent(depths);
    depths_data_ = depths.Data();
  }
  const std::shared_ptr<shared_engine>& shared() const { return se_; }
  engine* live() const { return se_ && running_ ? se_->eng.get() : nullptr; }
  void set_running(bool r) { running_ = r; }
  /// Drops this thread's share of the engine (the last share frees it).
  void reset() {
    running_ = false;
    se_.reset();
  }
  trash_bin& trash() { return *trash_; }

  // flush(staging: Uint8Array, length, runs: Uint32Array, runCount, externals?: Uint8Array[])
  // One call per staged batch: copies the staged bytes once into a shared
  // block and queues one segment per run; large payloads are referenced.
  Napi::Value Flush(const Napi::CallbackInfo& info);

  void FillDepths() {
    engine* eng = live();
    if (eng == nullptr) return;
    const auto& ids = se_->peer_ids;
    for (std::size_t i = 0; i < ids.size(); ++i) depths_data_[i] = static_cast<double>(eng->queued_bytes(ids[i]));
  }

  Napi::Value RefreshDepths(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    trash_->empty(env);
    double total = 0;
    if (live() != nullptr) {
      FillDepths();
      for (std::size_t i = 0; i < se_->peer_ids.size(); ++i) total += depths_data_[i];
    }
    return Napi::Number::New(env, total);
  }

  Napi::Value ClientAddress(const Napi::CallbackInfo& info) {
    engine* eng = live();
    std::string a = eng ? eng->client_address(info[0].As<Napi::Number>().Uint32Value()) : std::string();
    return Napi::String::New(info.Env(), a);
  }

  // The key a client connection proved (§6a), a copy; undefined without one.
  Napi::Value ClientKey(const Napi::CallbackInfo& info) {
    engine* eng = live();
    std::array<std::uint8_t, 32> k{};
    if (eng == nullptr || !eng->client_key(info[0].As<Napi::Number>().Uint32Value(), k)) return info.Env().Undefined();
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), k.size());
    std::memcpy(out.Data(), k.data(), k.size());
    return out;
  }

  // The connection a client key is reached on (replyTo, push): its id, 0
  // when none, -1 when its unread replies are over the bound.
  Napi::Value ClientConnection(const Napi::CallbackInfo& info) {
    engine* eng = live();
    Napi::Uint8Array k = info[0].As<Napi::Uint8Array>();
    std::array<std::uint8_t, 32> key{};
    if (eng == nullptr || k.ElementLength() != key.size()) return Napi::Number::New(info.Env(), 0);
    std::memcpy(key.data(), k.Data(), key.size());
    return Napi::Number::New(info.Env(), static_cast<double>(eng->client_connection_of(key)));
  }

  // allowClient's answer for a connection waiting in its handshake.
  Napi::Value AllowClient(const Napi::CallbackInfo& info) {
    if (engine* eng = live())
      eng->allow_client(info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Boolean>().Value(),
                        info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : std::string());
    return info.Env().Undefined();
  }

  Napi::Value WantDrain(const Napi::CallbackInfo& info) {
    if (engine* eng = live()) eng->want_drain(info[0].As<Napi::Number>().Uint32Value());
    return info.Env().Undefined();
  }

  // The last message id given at flush (ids given natively); 0 before any.
  Napi::Value LastId(const Napi::CallbackInfo& info) {
    const std::uint64_t v = se_ ? se_->ids.last() : 0;
    return Napi::Number::New(info.Env(), static_cast<double>(v));
  }

 private:
  std::shared_ptr<shared_engine> se_;
  bool running_ = false;
  Napi::Reference<Napi::Float64Array> depths_;
  double* depths_data_ = nullptr;
  std::shared_ptr<trash_bin> trash_ = std::make_shared<trash_bin>();
  std::shared_ptr<block_pool> blocks_ = std::make_shared<block_pool>();
};

}  // namespace nexres::addon
