// The Engine class JS creates (lib/native.ts): starts and stops the engine,
// hands deliveries to the main thread's handlers in fair batches (or leaves
// them to worker consumers), reports events and statistics.
#include "js_engine.hpp"

#include "batch.hpp"
#include "common.hpp"
#include "fair_queue.hpp"
#include "hold_queue.hpp"
#include "options.hpp"
#include "producer.hpp"
#include "shared_engine.hpp"
#include "stats.hpp"

#include <string>

namespace nexres::addon {

namespace {

class JsEngine;
void CallJs(Napi::Env env, Napi::Function, JsEngine* self, void*);

class JsEngine : public Napi::ObjectWrap<JsEngine> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod<&JsEngine::JsStart>("start"),
                           InstanceMethod<&JsEngine::JsFlush>("flush"),
                           InstanceMethod<&JsEngine::JsRefreshDepths>("refreshDepths"),
                           InstanceMethod<&JsEngine::JsWantDrain>("wantDrain"),
                           InstanceMethod<&JsEngine::JsStats>("stats"),
                           InstanceMethod<&JsEngine::JsReconfigure>("reconfigure"),
                           InstanceMethod<&JsEngine::JsPeers>("peers"),
                           InstanceMethod<&JsEngine::JsStop>("stop"),
                           InstanceMethod<&JsEngine::JsClientPort>("clientPort"),
                           InstanceMethod<&JsEngine::JsClientAddress>("clientAddress"),
                           InstanceMethod<&JsEngine::JsClientKey>("clientKey"),
                           InstanceMethod<&JsEngine::JsAllowClient>("allowClient"),
                           InstanceMethod<&JsEngine::JsClientConnection>("clientConnection"),
                           InstanceMethod<&JsEngine::JsShareKey>("shareKey"),
                           InstanceMethod<&JsEngine::JsLastId>("lastId"),
                           InstanceMethod<&JsEngine::JsSettle>("settle"),
                       });
  }

  // new Engine(options, meta: Uint32Array, depths: Float64Array, onBatch, onEvents)
  // options.consumers > 0: deliveries go to that many Consumer objects
  // (worker threads) instead of onBatch; events still come here.
  explicit JsEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsEngine>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 5 || !info[0].IsObject() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
        !info[3].IsFunction() || !info[4].IsFunction())
      throw Napi::TypeError::New(env, "Engine(options, meta, depths, onBatch, onEvents)");
    engine_setup setup = read_engine_options(env, info[0].As<Napi::Object>());
    options_ = std::move(setup.options);
    consumers_ = setup.consumers;
    ordered_ = setup.ordered;
    max_pending_ = setup.max_pending;
    Napi::Uint32Array meta = info[1].As<Napi::Uint32Array>();
    meta_capacity_ = meta.ElementLength() / meta_fields;
    meta_ = Napi::Persistent(meta);
    meta_data_ = meta.Data();
    auto se = std::make_shared<shared_engine>(consumers_ > 0);
    out_.bind(se, info[2].As<Napi::Float64Array>(), options_.max_peers);
    on_batch_ = Napi::Persistent(info[3].As<Napi::Function>());
    on_events_ = Napi::Persistent(info[4].As<Napi::Function>());
    napi_add_env_cleanup_hook(env, &JsEngine::CleanupHook, this);
    hook_added_ = true;
  }

  ~JsEngine() override {
    if (hook_added_) napi_remove_env_cleanup_hook(Env(), &JsEngine::CleanupHook, this);
    Shutdown();
  }

 private:
  friend void CallJs(Napi::Env env, Napi::Function, JsEngine* self, void*);
  using Tsfn = Napi::TypedThreadSafeFunction<JsEngine, void, &CallJs>;

  static void CleanupHook(void* arg) {
    auto* self = static_cast<JsEngine*>(arg);
    self->hook_added_ = false;
    self->Shutdown();
  }

  // JS thread. Stops io threads (joined), releases the wake-up function.
  // Worker consumers may still hold the engine (stopped) until they go.
  void Shutdown() {
    if (out_.live() != nullptr) out_.shared()->eng->stop();
    // Stopped: releasing returns the chunks, no ACK can go out any more.
    if (const auto& se = out_.shared(); se && se->eng) {
      fair_.drain_all([&](const delivery& d) { se->eng->release(d); });
      held_.drain_all([&](const delivery& d) { se->eng->release(d); });
      for (const delivery& d : unhandled_) se->eng->release(d);
    }
    unhandled_.clear();
    out_.reset();
    if (tsfn_active_) {
      tsfn_active_ = false;
      tsfn_.Release();
    }
  }

  Napi::Value JsStart(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (started_) throw Napi::Error::New(env, "engine already started");
    started_ = true;
    tsfn_ = Tsfn::New(env, Napi::Function(), "nexres-delivery", 0, 1, this);
    tsfn_active_ = true;
    Tsfn* fn = &tsfn_;
    shared_engine* se = out_.shared().get();
    if (se == nullptr) throw Napi::Error::New(env, "engine already stopped");
    try {
      if (consumers_ == 0) se->eng = std::make_shared<engine>(options_, [fn] { fn->NonBlockingCall(); });
      else se->eng = std::make_shared<engine>(options_, [se] { se->disp->kick(); });
    } catch (const std::exception& e) {
      tsfn_active_ = false;
      tsfn_.Release();
      throw Napi::Error::New(env, std::string("cannot start the engine: ") + e.what());
    }
    nexres::crypto::cleanse(options_.private_seed.data(), options_.private_seed.size());
    if (consumers_ > 0) {
      // Deliveries wake worker consumers through the dispatcher; events wake
      // this thread. The engine stops (io threads joined) before the
      // dispatcher is destroyed (~shared_engine).
      se->disp = std::make_unique<nexres::dispatcher>(*se->eng, consumers_, ordered_);
      se->eng->set_event_wake([fn] { fn->NonBlockingCall(); });
    }
    if (std::error_code ec = se->eng->start()) {
      se->eng->stop();
      tsfn_active_ = false;
      tsfn_.Release();
      // Which port could not be bound, and where.
      const engine::listen_failure_info& lf = se->eng->listen_failure();
      const std::string which = lf.which.empty() ? std::string("replica") : lf.which;
      const std::string address =
          (lf.host.find(':') != std::string::npos ? "[" + lf.host + "]" : lf.host) + ":" + std::to_string(lf.port);
      Napi::Error err = Napi::Error::New(env, "cannot listen on the " + which + " port " + address + ": " + ec.message());
      err.Set("code", Napi::String::New(env, "LISTEN_FAILED"));
      err.Set("errno", Napi::Number::New(env, ec.value()));
      err.Set("which", Napi::String::New(env, which));
      err.Set("host", Napi::String::New(env, lf.host));
      err.Set("port", Napi::Number::New(env, lf.port));
      err.Set("address", Napi::String::New(env, address));
      throw err;
    }
    out_.set_running(true);
    return Napi::Number::New(env, se->eng->local_port());
  }

  Napi::Value JsFlush(const Napi::CallbackInfo& info) { return out_.Flush(info); }
  Napi::Value JsRefreshDepths(const Napi::CallbackInfo& info) { return out_.RefreshDepths(info); }
  Napi::Value JsClientAddress(const Napi::CallbackInfo& info) { return out_.ClientAddress(info); }
  Napi::Value JsClientKey(const Napi::CallbackInfo& info) { return out_.ClientKey(info); }
  Napi::Value JsAllowClient(const Napi::CallbackInfo& info) { return out_.AllowClient(info); }
  Napi::Value JsClientConnection(const Napi::CallbackInfo& info) { return out_.ClientConnection(info); }
  Napi::Value JsWantDrain(const Napi::CallbackInfo& info) { return out_.WantDrain(info); }
  Napi::Value JsLastId(const Napi::CallbackInfo& info) { return out_.LastId(info); }

  Napi::Value JsClientPort(const Napi::CallbackInfo& info) {
    engine* eng = out_.live();
    return Napi::Number::New(info.Env(), eng ? eng->client_port() : 0);
  }

  // Key under which worker threads find this engine (new Consumer(key, ...)).
  Napi::Value JsShareKey(const Napi::CallbackInfo& info) {
    if (consumers_ == 0 || !out_.live()) throw Napi::Error::New(info.Env(), "engine has no consumers or is not running");
    if (share_key_ == 0) share_key_ = register_engine(out_.shared());
    return Napi::Number::New(info.Env(), share_key_);
  }

  Napi::Value JsStats(const Napi::CallbackInfo& info) {
    engine* eng = out_.live();
    if (eng == nullptr) return Napi::Object::New(info.Env());
    return stats_to_js(info.Env(), eng->stats());
  }

  // reconfigure({ epoch, peers }): engine::reconfigure; throws its refusal.
  Napi::Value JsReconfigure(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    engine* eng = out_.live();
    if (eng == nullptr) throw Napi::Error::New(env, "engine not running");
    nexres::membership m = read_membership(env, info[0]);
    std::vector<std::int32_t> slots;
    std::string error;
    const bool ok = eng->reconfigure(m, slots, error);
    nexres::crypto::cleanse(m.private_seed.data(), m.private_seed.size());
    if (!ok) throw Napi::Error::New(env, error);
    return env.Undefined();
  }

  Napi::Value JsPeers(const Napi::CallbackInfo& info) { return out_.Peers(info); }

  Napi::Value JsStop(const Napi::CallbackInfo& info) {
    Shutdown();
    out_.trash().empty(info.Env());
    return info.Env().Undefined();
  }

  void Drain(Napi::Env env) {
    engine* eng = out_.live();
    if (eng == nullptr) return;
    if (consumers_ == 0) eng->begin_drain();
    out_.trash().empty(env);
    events_.clear();
    eng->take_events(events_);
    if (!events_.empty()) DeliverEvents(env);
    if (consumers_ > 0) return;  // deliveries are the workers'
    eng = out_.live();
    if (eng == nullptr) return;  // a handler closed the replica
    if (!unhandled_.empty()) return;  // closing: JS takes no more (see ReleaseBatch)

    // Everything the MIQ holds goes into the fair queue (bounded: every run
    // holds a receive chunk); a batch is one round over its sources.
    delivery d;
    while (fair_.size() < nexres::max_fair_held_runs && eng->pop_delivery(d)) fair_.push(d);
    batch_.clear();
    // A peer is taken from up to its share of handler promises pending (plus
    // at most one run, max_run_messages); past it, it is passed over: its runs
    // stay queued, holding its receive chunks, and TCP slows it down.
    const std::size_t active = std::max<std::size_t>(1, held_.sources() + fair_.active_sources());
    const std::size_t share = std::max<std::size_t>(1, max_pending_ / active);
    const std::size_t n = fair_.take(meta_capacity_, nexres::fair_quantum_bytes, batch_, [&](std::uint32_t peer) {
      if (nexres::is_client_address(peer)) return static_cast<std::size_t>(-1);
      const std::size_t pending = held_.pending(peer);
      return pending >= share ? 0 : share - pending;
    });
    // First time JS sees a chunk: wrap its memory once (pooled chunks stay bound).
    const napi_value fresh_value = fill_batch(env, batch_, n, meta_data_, [](nexres::chunk* c) {
      if (c->consumer_bound) return false;
      c->consumer_bound = c->pooled;
      return true;
    });
    if (n > 0) {
      napi_value result = nullptr;
      if (!call_js(env, on_batch_, {Napi::Number::New(env, static_cast<double>(n)), fresh_value}, &result)) {
        ReleaseBatch(Napi::Value());
        return;  // the exception, if any, is JS's
      }
      ReleaseBatch(Napi::Value(env, result));
    }
    // More waiting: come back through the event loop rather than hog it
    // (not while every waiting source is held back by pending handlers:
    // a settle() brings us back).
    eng = out_.live();
    // Not when nothing was taken: producers wake us on new deliveries.
    if (eng != nullptr && n > 0 && (!fair_.empty() || eng->has_deliveries())) eng->notify();
  }

  // onBatch returns how many runs it handled (from the first), or
  // [handled, entry, token, messages, ...] when handlers returned promises:
  // those runs stay held (chunk and ACK) until settle(token); later runs of
  // the same source wait behind them. Runs past `handled` were not handled
  // (close() began): they must not be acknowledged (their senders keep them
  // for this replica's next process, or report them), nothing more is taken,
  // and Shutdown releases them once the engine is stopped.
  void ReleaseBatch(Napi::Value result) {
    const auto& se = out_.shared();
    // After stop the engine object is still alive (shared): releasing
    // returns chunks and is harmless.
    auto release = [&](const delivery& d) {
      if (se && se->eng) se->eng->release(d);
    };
    std::size_t handled = batch_.size();
    std::size_t next_held = static_cast<std::size_t>(-1);
    std::uint32_t k = 1, len = 0;
    Napi::Array arr;
    if (!result.IsEmpty() && result.IsNumber()) {
      handled = std::min<std::size_t>(handled, result.As<Napi::Number>().Uint32Value());
    } else if (!result.IsEmpty() && result.IsArray()) {
      arr = result.As<Napi::Array>();
      len = arr.Length();
      if (len >= 1) handled = std::min<std::size_t>(handled, arr.Get(0u).As<Napi::Number>().Uint32Value());
      if (len >= 4) next_held = arr.Get(1u).As<Napi::Number>().Uint32Value();
    }
    for (std::size_t i = 0; i < batch_.size(); ++i) {
      const delivery& d = batch_[i];
      if (i >= handled) {
        if (se && se->eng) unhandled_.push_back(d);
        continue;
      }
      if (i == next_held && k + 2 < len) {
        const auto token = static_cast<std::uint64_t>(arr.Get(k + 1).As<Napi::Number>().DoubleValue());
        const std::uint32_t messages = arr.Get(k + 2).As<Napi::Number>().Uint32Value();
        k += 3;
        next_held = k + 2 < len ? arr.Get(k).As<Napi::Number>().Uint32Value() : static_cast<std::size_t>(-1);
        if (se && se->eng && !nexres::is_client_address(d.peer)) {
          held_.hold(d, token, messages);
          continue;
        }
      }
      held_.done(d, release);
    }
    batch_.clear();
  }

  // settle(token): the promises of a held run settled.
  Napi::Value JsSettle(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "settle(token)");
    const auto token = static_cast<std::uint64_t>(info[0].As<Napi::Number>().DoubleValue());
    const auto& se = out_.shared();
    if (!se || !se->eng) return env.Undefined();
    held_.settle(token, [&](const delivery& d) { se->eng->release(d); });
    // Sources passed over for pending handlers may have room again.
    if (engine* eng = out_.live(); eng != nullptr && !fair_.empty()) eng->notify();
    return env.Undefined();
  }

  void DeliverEvents(Napi::Env env) {
    Napi::Array arr = Napi::Array::New(env, events_.size());
    for (std::size_t i = 0; i < events_.size(); ++i) {
      const engine_event& e = events_[i];
      Napi::Array item = Napi::Array::New(env, 9);
      item.Set(0u, static_cast<double>(e.type));
      item.Set(1u, static_cast<double>(e.peer));
      item.Set(2u, e.code == 0 ? std::string() : std::string(nexres::reject_code_name(static_cast<nexres::reject_code>(e.code))));
      item.Set(3u, e.reason);
      item.Set(4u, e.remote);
      item.Set(5u, static_cast<double>(e.messages));
      item.Set(6u, static_cast<double>(e.bytes));
      item.Set(7u, static_cast<double>(e.first_id));
      item.Set(8u, static_cast<double>(e.last_id));
      arr.Set(static_cast<std::uint32_t>(i), item);
    }
    events_.clear();
    call_js(env, on_events_, {arr});
  }

  engine_options options_;
  producer out_;
  std::uint32_t consumers_ = 0;
  bool ordered_ = true;
  std::uint32_t share_key_ = 0;
  Tsfn tsfn_;
  bool tsfn_active_ = false;
  bool started_ = false;
  bool hook_added_ = false;
  Napi::Reference<Napi::Uint32Array> meta_;
  std::uint32_t* meta_data_ = nullptr;
  std::size_t meta_capacity_ = 0;
  Napi::FunctionReference on_batch_;
  Napi::FunctionReference on_events_;
  std::vector<engine_event> events_;
  std::vector<delivery> batch_;
  // Runs JS did not handle (close() began): never released before stop.
  std::vector<delivery> unhandled_;
  // Runs pulled from the MIQ, served round robin by source (see fair_queue.hpp).
  nexres::fair_queue fair_;
  // Runs whose handlers' promises have not settled (see hold_queue.hpp).
  nexres::hold_queue held_;
  std::size_t max_pending_ = 1024;
};

void CallJs(Napi::Env env, Napi::Function, JsEngine* self, void*) {
  if (env == nullptr || self == nullptr) return;
  guarded([&] { self->Drain(env); });
}

}  // namespace

Napi::Function define_engine(Napi::Env env) { return JsEngine::Define(env); }

}  // namespace nexres::addon
