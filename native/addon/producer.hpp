// The sending side of one JS thread (the main thread or a worker).
#pragma once

#include <array>
#include <cstring>

#include "common.hpp"
#include "peer_link.hpp"
#include "peer_slot.hpp"
#include "shared_engine.hpp"

namespace nexres::addon {

// The sending side of one JS thread: staged frames in, queue depths out.
class producer {
 public:
  // depths: one entry per peer slot (maxPeers).
  void bind(std::shared_ptr<shared_engine> se, Napi::Float64Array depths, std::size_t slots) {
    if (depths.ElementLength() < slots) throw Napi::RangeError::New(depths.Env(), "depths array shorter than maxPeers");
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

  // depths[slot] = the bytes queued for the peer of that slot (0 when it
  // is not in the configuration); returns their sum.
  double FillDepths() {
    engine* eng = live();
    if (eng == nullptr) return 0;
    const std::uint32_t n = eng->slot_count();
    double total = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      const peer_link* l = eng->slot(static_cast<int>(i)).link.load(std::memory_order_acquire);
      depths_data_[i] = l != nullptr ? static_cast<double>(l->queued_bytes()) : 0.0;
      total += depths_data_[i];
    }
    return total;
  }

  Napi::Value RefreshDepths(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    trash_->empty(env);
    return Napi::Number::New(env, FillDepths());
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

  // Every slot in use: [index, id, cluster ('' for this cluster), member] each.
  Napi::Value Peers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    engine* eng = live();
    if (eng == nullptr) return out;
    const std::uint32_t n = eng->slot_count();
    for (std::uint32_t i = 0; i < n; ++i) {
      const nexres::peer_slot& ps = eng->slot(static_cast<int>(i));
      Napi::Array e = Napi::Array::New(env, 4);
      e.Set(0u, Napi::Number::New(env, i));
      e.Set(1u, Napi::Number::New(env, ps.id));
      e.Set(2u, Napi::String::New(env, ps.remote ? ps.cluster : std::string()));
      e.Set(3u, Napi::Boolean::New(env, ps.link.load(std::memory_order_acquire) != nullptr));
      out.Set(i, e);
    }
    return out;
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
