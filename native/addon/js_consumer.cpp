// The Consumer class a worker thread creates (lib/worker.ts): its share of
// an engine's deliveries, taken from the dispatcher, and its own sending side.
#include "js_consumer.hpp"

#include "batch.hpp"
#include "common.hpp"
#include "producer.hpp"
#include "shared_engine.hpp"

namespace nexres::addon {

namespace {

class JsConsumer;
void ConsumerCallJs(Napi::Env env, Napi::Function, JsConsumer* self, void*);

// A worker thread's share of an engine: takes deliveries from the
// dispatcher (its own wake-up), sends through the same links.
//   new Consumer(key, index, meta: Uint32Array, depths: Float64Array, onBatch)
class JsConsumer : public Napi::ObjectWrap<JsConsumer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Consumer",
                       {
                           InstanceMethod<&JsConsumer::JsStart>("start"),
                           InstanceMethod<&JsConsumer::JsFlush>("flush"),
                           InstanceMethod<&JsConsumer::JsRefreshDepths>("refreshDepths"),
                           InstanceMethod<&JsConsumer::JsWantDrain>("wantDrain"),
                           InstanceMethod<&JsConsumer::JsClientAddress>("clientAddress"),
                           InstanceMethod<&JsConsumer::JsClientKey>("clientKey"),
                           InstanceMethod<&JsConsumer::JsAllowClient>("allowClient"),
                           InstanceMethod<&JsConsumer::JsClientConnection>("clientConnection"),
                           InstanceMethod<&JsConsumer::JsLastId>("lastId"),
                           InstanceMethod<&JsConsumer::JsPeers>("peers"),
                           InstanceMethod<&JsConsumer::JsSettle>("settle"),
                           InstanceMethod<&JsConsumer::JsStop>("stop"),
                       });
  }

  explicit JsConsumer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsConsumer>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsTypedArray() ||
        !info[3].IsTypedArray() || !info[4].IsFunction())
      throw Napi::TypeError::New(env, "Consumer(key, index, meta, depths, onBatch)");
    std::shared_ptr<shared_engine> se = find_engine(info[0].As<Napi::Number>().Uint32Value());
    if (!se || !se->disp) throw Napi::Error::New(env, "no running engine under this key");
    index_ = info[1].As<Napi::Number>().Uint32Value();
    if (index_ >= se->disp->consumers()) throw Napi::RangeError::New(env, "consumer index out of range");
    Napi::Uint32Array meta = info[2].As<Napi::Uint32Array>();
    meta_capacity_ = meta.ElementLength() / meta_fields;
    meta_ = Napi::Persistent(meta);
    meta_data_ = meta.Data();
    const std::size_t slots = se->eng ? se->eng->options().max_peers : 0;
    out_.bind(std::move(se), info[3].As<Napi::Float64Array>(), slots);
    out_.set_running(true);
    on_batch_ = Napi::Persistent(info[4].As<Napi::Function>());
    napi_add_env_cleanup_hook(env, &JsConsumer::CleanupHook, this);
    hook_added_ = true;
  }

  ~JsConsumer() override {
    if (hook_added_) napi_remove_env_cleanup_hook(Env(), &JsConsumer::CleanupHook, this);
    Shutdown();
  }

 private:
  friend void ConsumerCallJs(Napi::Env env, Napi::Function, JsConsumer* self, void*);
  using Tsfn = Napi::TypedThreadSafeFunction<JsConsumer, void, &ConsumerCallJs>;

  static void CleanupHook(void* arg) {
    auto* self = static_cast<JsConsumer*>(arg);
    self->hook_added_ = false;
    self->Shutdown();
  }

  // JS thread. Detaches (what it held goes to the other consumers), then
  // releases the wake-up: the dispatcher no longer calls it after detach.
  void Shutdown() {
    if (attached_) {
      attached_ = false;
      out_.shared()->disp->detach(index_);
    }
    if (tsfn_active_) {
      tsfn_active_ = false;
      tsfn_.Release();
    }
    out_.reset();
  }

  // Starts taking deliveries (call once the handlers are registered).
  Napi::Value JsStart(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (tsfn_active_ || !out_.shared()) throw Napi::Error::New(env, "consumer already started or stopped");
    tsfn_ = Tsfn::New(env, Napi::Function(), "nexres-worker-delivery", 0, 1, this);
    tsfn_active_ = true;
    attached_ = true;
    Tsfn* fn = &tsfn_;
    out_.shared()->disp->attach(index_, [fn] { fn->NonBlockingCall(); });
    return env.Undefined();
  }

  Napi::Value JsFlush(const Napi::CallbackInfo& info) { return out_.Flush(info); }
  Napi::Value JsRefreshDepths(const Napi::CallbackInfo& info) { return out_.RefreshDepths(info); }
  Napi::Value JsClientAddress(const Napi::CallbackInfo& info) { return out_.ClientAddress(info); }
  Napi::Value JsClientKey(const Napi::CallbackInfo& info) { return out_.ClientKey(info); }
  Napi::Value JsAllowClient(const Napi::CallbackInfo& info) { return out_.AllowClient(info); }
  Napi::Value JsClientConnection(const Napi::CallbackInfo& info) { return out_.ClientConnection(info); }
  Napi::Value JsWantDrain(const Napi::CallbackInfo& info) { return out_.WantDrain(info); }
  Napi::Value JsLastId(const Napi::CallbackInfo& info) { return out_.LastId(info); }
  Napi::Value JsPeers(const Napi::CallbackInfo& info) { return out_.Peers(info); }

  Napi::Value JsStop(const Napi::CallbackInfo& info) {
    out_.trash().empty(info.Env());
    Shutdown();
    return info.Env().Undefined();
  }

  // settle(token): the promises of a held run settled. The batch is done
  // once every held run of it is.
  Napi::Value JsSettle(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "settle(token)");
    if (unsettled_ == 0 || --unsettled_ > 0) return env.Undefined();
    if (attached_) {
      out_.shared()->disp->done(index_);
      // Wake-ups that came while the batch was held were passed over.
      if (tsfn_active_) tsfn_.NonBlockingCall();
    }
    return env.Undefined();
  }

  void Drain(Napi::Env env) {
    if (!attached_) return;
    // A batch whose handlers' promises have not all settled is not done:
    // its messages stay unacknowledged and this worker takes no more.
    if (unsettled_ > 0) return;
    nexres::dispatcher& disp = *out_.shared()->disp;
    out_.trash().empty(env);
    const std::size_t n = disp.take(index_, batch_, meta_capacity_);
    if (n == 0) return;
    // Each thread wraps a chunk once (per-thread buffers, shared memory).
    const napi_value fresh_value = fill_batch(env, batch_, n, meta_data_, [this](nexres::chunk* c) {
      if (c->id >= bound_.size()) bound_.resize(c->id + 1u, 0);
      if (bound_[c->id]) return false;
      bound_[c->id] = c->pooled ? 1 : 0;
      return true;
    });
    napi_value result = nullptr;
    if (!call_js(env, on_batch_, {Napi::Number::New(env, static_cast<double>(n)), fresh_value}, &result)) {
      // The batch did not run to its end (handlers catch their own errors,
      // so this is the thread going away): it is not done. Detached, this
      // consumer's batch goes to the other workers, in order.
      if (attached_) {
        attached_ = false;
        disp.detach(index_);
      }
      return;
    }
    Napi::Value held(env, result);
    // [handled, entry, token, messages, ...]: one triple per held run.
    if (!held.IsEmpty() && held.IsArray()) unsettled_ = (held.As<Napi::Array>().Length() - 1) / 3;
    if (unsettled_ > 0) return;  // done at the last settle()
    // stop() from a handler detached us: what we held went to the others.
    if (attached_) disp.done(index_);
  }

  producer out_;
  std::uint32_t index_ = 0;
  Tsfn tsfn_;
  bool tsfn_active_ = false;
  bool attached_ = false;
  bool hook_added_ = false;
  Napi::Reference<Napi::Uint32Array> meta_;
  std::uint32_t* meta_data_ = nullptr;
  std::size_t meta_capacity_ = 0;
  Napi::FunctionReference on_batch_;
  std::vector<delivery> batch_;
  std::vector<std::uint8_t> bound_;  // by chunk id: this thread holds its buffer
  std::size_t unsettled_ = 0;         // held runs of the last batch not settled
};

void ConsumerCallJs(Napi::Env env, Napi::Function, JsConsumer* self, void*) {
  if (env == nullptr || self == nullptr) return;
  guarded([&] { self->Drain(env); });
}

}  // namespace

Napi::Function define_consumer(Napi::Env env) { return JsConsumer::Define(env); }

}  // namespace nexres::addon
