// Node-API glue for the nexres engine. Thin: reads options once into
// engine_options, hands batches of deliveries to JS through one thread-safe
// function call per wake-up, and takes staged frames from JS in one call per
// flush. lib/native.ts states this module's exact shape.
#include <napi.h>

#include "dispatcher.hpp"
#include "outbound_batch.hpp"
#include "engine.hpp"
#include "fair_queue.hpp"
#include "hold_queue.hpp"
#include "frame_builder.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using nexres::delivery;
using nexres::engine;
using nexres::engine_event;
using nexres::engine_options;
using nexres::segment;

// Per-run record of a flush: see lib/outbox.ts (RUN_* constants).
constexpr std::size_t run_fields = 7;
// Run field 6, bit 31: the run holds signed frames (lib/outbox.ts SIGN_RUN).
constexpr std::uint32_t sign_run = 0x80000000u;
// Entries of the shared meta array: chunk id, offset, length, peer.
constexpr std::size_t meta_fields = 4;

struct malloc_block {
  explicit malloc_block(std::size_t n) : data(static_cast<std::uint8_t*>(std::malloc(n == 0 ? 1 : n))) {
    if (data == nullptr) throw std::bad_alloc();
  }
  ~malloc_block() { std::free(data); }
  malloc_block(const malloc_block&) = delete;
  malloc_block& operator=(const malloc_block&) = delete;
  std::uint8_t* data;
};

// Staged bytes of a flush live in blocks; big ones (a full stage) are
// recycled through this pool instead of malloc'd fresh each flush, which
// costs page faults on a hot sender. Blocks come back on io threads.
class block_pool {
 public:
  static constexpr std::size_t block_bytes = 1u << 20;  // lib/outbox.ts STAGE_BYTES
  static constexpr std::size_t max_idle = 32;

  // JS thread. A block holding at least n bytes.
  static std::shared_ptr<malloc_block> take(const std::shared_ptr<block_pool>& pool, std::size_t n) {
    if (n < block_bytes / 4 || n > block_bytes) return std::make_shared<malloc_block>(n);
    std::unique_ptr<malloc_block> b;
    {
      std::lock_guard<std::mutex> lock(pool->mu_);
      if (!pool->idle_.empty()) {
        b = std::move(pool->idle_.back());
        pool->idle_.pop_back();
      }
    }
    if (!b) b = std::make_unique<malloc_block>(std::max(n, block_bytes));
    std::weak_ptr<block_pool> weak = pool;
    return std::shared_ptr<malloc_block>(b.release(), [weak](malloc_block* raw) {
      std::unique_ptr<malloc_block> owned(raw);
      if (auto p = weak.lock()) {
        std::lock_guard<std::mutex> lock(p->mu_);
        if (p->idle_.size() < max_idle) p->idle_.push_back(std::move(owned));
      }
    });
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<malloc_block>> idle_;
};

// References to JS buffers that native code still reads (large payloads sent
// without copying). Dropped on io threads, deleted on the JS thread.
struct trash_bin {
  std::mutex mu;
  std::vector<napi_ref> refs;
  void put(napi_ref r) {
    std::lock_guard<std::mutex> lock(mu);
    refs.push_back(r);
  }
  // JS thread.
  void empty(napi_env env) {
    std::vector<napi_ref> local;
    {
      std::lock_guard<std::mutex> lock(mu);
      local.swap(refs);
    }
    for (napi_ref r : local) napi_delete_reference(env, r);
  }
};

std::uint32_t get_u32(const Napi::Object& o, const char* key, std::uint32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

double get_f64(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}


// One engine and, with worker consumers, its dispatcher: owned jointly by the
// main thread's Engine object and every worker's Consumer object, so
// whichever goes last frees it. Found by workers through the registry.
struct shared_engine {
  std::shared_ptr<engine> eng;
  std::unique_ptr<nexres::dispatcher> disp;  // only with consumers
  std::vector<std::uint32_t> peer_ids;
  // Several producers (threads) share the links: message ids are given at
  // flush time, under this lock, in queue order.
  nexres::id_sequence ids;

  explicit shared_engine(bool stamp_ids) : ids(stamp_ids) {}
  ~shared_engine() {
    if (eng) eng->stop();  // joins io threads: nothing calls into disp after
    disp.reset();
    eng.reset();
  }
};

std::mutex registry_mu;
std::unordered_map<std::uint32_t, std::weak_ptr<shared_engine>> registry;
std::uint32_t registry_next = 1;

std::uint32_t register_engine(const std::shared_ptr<shared_engine>& se) {
  std::lock_guard<std::mutex> lock(registry_mu);
  for (auto it = registry.begin(); it != registry.end();) it = it->second.expired() ? registry.erase(it) : std::next(it);
  const std::uint32_t key = registry_next++;
  registry[key] = se;
  return key;
}

std::shared_ptr<shared_engine> find_engine(std::uint32_t key) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry.find(key);
  return it == registry.end() ? nullptr : it->second.lock();
}

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
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    trash_->empty(env);
    engine* eng = live();
    if (eng == nullptr) return env.Undefined();
    Napi::Uint8Array staging = info[0].As<Napi::Uint8Array>();
    const std::size_t length = info[1].As<Napi::Number>().Uint32Value();
    Napi::Uint32Array runs = info[2].As<Napi::Uint32Array>();
    const std::size_t run_count = info[3].As<Napi::Number>().Uint32Value();
    if (length > staging.ByteLength() || run_count * run_fields > runs.ElementLength())
      throw Napi::RangeError::New(env, "flush: lengths out of range");
    std::shared_ptr<malloc_block> block;
    if (length > 0) {
      block = block_pool::take(blocks_, length);
      std::memcpy(block->data, staging.Data(), length);
    }
    Napi::Array externals;
    const bool has_ext = info.Length() > 4 && info[4].IsArray();
    if (has_ext) externals = info[4].As<Napi::Array>();
    // External payloads: one owner per payload, made on first use.
    std::vector<nexres::external_payload> ext_payloads;
    nexres::outbound_batch batch(block, block ? block->data : nullptr, length,
                                 eng->identity().signer.get(), eng->options().cluster_id);
    const std::uint32_t* r = runs.Data();
    for (std::size_t i = 0; i < run_count; ++i, r += run_fields) {
      nexres::staged_run run;
      run.dest = r[0];
      run.start = r[1];
      run.end = r[2];
      run.messages = r[3];
      run.last_msg_id = (static_cast<std::uint64_t>(r[5]) << 32) | r[4];
      run.sign = (r[6] & sign_run) != 0;
      run.external = r[6] & ~sign_run;
      const nexres::external_payload* ext = nullptr;
      if (run.external != 0 && has_ext && run.external <= externals.Length()) {
        if (ext_payloads.size() < run.external) ext_payloads.resize(run.external);
        nexres::external_payload& e = ext_payloads[run.external - 1];
        if (!e.owner) {
          Napi::Value v = externals.Get(run.external - 1);
          if (!v.IsTypedArray()) throw Napi::RangeError::New(env, nexres::describe(nexres::outbound_error::bad_external));
          Napi::Uint8Array payload = v.As<Napi::Uint8Array>();
          napi_ref ref = nullptr;
          napi_create_reference(env, payload, 1, &ref);
          std::shared_ptr<trash_bin> bin = trash_;
          // The deleter runs wherever the last segment is dropped (an io
          // thread after the ack): it only hands the reference to the trash.
          e.owner = std::shared_ptr<const void>(static_cast<const void*>(payload.Data()),
                                                [bin, ref](const void*) { bin->put(ref); });
          e.data = payload.Data();
          e.length = payload.ByteLength();
        }
        ext = &e;
      }
      const nexres::outbound_error err = batch.add(run, ext);
      if (err == nexres::outbound_error::signed_without_key || err == nexres::outbound_error::signing_failed)
        throw Napi::Error::New(env, nexres::describe(err));
      if (err != nexres::outbound_error::none) throw Napi::RangeError::New(env, nexres::describe(err));
    }
    se_->ids.stamp_and_enqueue(batch.segments(), [eng](std::uint32_t dest, const segment& seg) { eng->enqueue(dest, seg); });
    FillDepths();
    return env.Undefined();
  }

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

// Wraps a receive chunk's memory in an external ArrayBuffer for one JS
// thread (the buffer keeps the memory alive on its own).
Napi::ArrayBuffer wrap_chunk(Napi::Env env, nexres::chunk* c) {
  auto hint = std::make_unique<std::shared_ptr<std::uint8_t>>(c->memory);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, c->data(), c->capacity,
      [](Napi::Env, void*, std::shared_ptr<std::uint8_t>* h) { std::unique_ptr<std::shared_ptr<std::uint8_t>> drop(h); },
      hint.get());
  hint.release();
  return ab;
}

// Writes the meta entries of batch[0..n) and wraps, once per thread, the
// chunks that thread has not seen (`first_time(c)` says so and marks it).
// Returns the [id, ArrayBuffer, pooled] triples of those, or undefined.
template <typename FirstTime>
napi_value fill_batch(Napi::Env env, const std::vector<delivery>& batch, std::size_t n, std::uint32_t* meta,
                      FirstTime&& first_time) {
  Napi::Array fresh;
  std::uint32_t fresh_count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const delivery& d = batch[i];
    nexres::chunk* c = d.source;
    if (first_time(c)) {
      if (fresh_count == 0) fresh = Napi::Array::New(env);
      fresh.Set(fresh_count++, Napi::Number::New(env, c->id));
      fresh.Set(fresh_count++, wrap_chunk(env, c));
      fresh.Set(fresh_count++, Napi::Boolean::New(env, c->pooled));
    }
    std::uint32_t* m = meta + i * meta_fields;
    m[0] = c->id;
    m[1] = d.offset;
    m[2] = d.length;
    m[3] = d.peer;
  }
  return fresh_count > 0 ? static_cast<napi_value>(fresh) : static_cast<napi_value>(env.Undefined());
}

// Calls a JS function without node-addon-api's error wrapping: while an
// environment is going away (a worker thread being terminated) the call
// fails, and building a Napi::Error for it aborts the process. False when
// the call did not complete; any exception stays pending for JS.
bool call_js(Napi::Env env, const Napi::FunctionReference& fn, std::initializer_list<napi_value> args,
             napi_value* result = nullptr) {
  napi_value f = nullptr, recv = nullptr, out = nullptr;
  if (napi_get_reference_value(env, static_cast<napi_ref>(fn), &f) != napi_ok || f == nullptr) return false;
  if (napi_get_undefined(env, &recv) != napi_ok) return false;
  if (napi_call_function(env, recv, f, args.size(), args.begin(), &out) != napi_ok) return false;
  if (result != nullptr) *result = out;
  return true;
}

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
                           InstanceMethod<&JsEngine::JsStop>("stop"),
                           InstanceMethod<&JsEngine::JsClientPort>("clientPort"),
                           InstanceMethod<&JsEngine::JsClientAddress>("clientAddress"),
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
    std::vector<std::uint32_t> peer_ids;
    Napi::Object o = info[0].As<Napi::Object>();
    options_.self_id = get_u32(o, "selfId", 0);
    options_.cluster_id = o.Get("clusterId").ToString().Utf8Value();
    Napi::Array reps = o.Get("replicas").As<Napi::Array>();
    for (std::uint32_t i = 0; i < reps.Length(); ++i) {
      Napi::Object r = reps.Get(i).As<Napi::Object>();
      nexres::replica_address a;
      a.id = get_u32(r, "id", 0);
      a.host = r.Get("host").ToString().Utf8Value();
      a.port = static_cast<std::uint16_t>(get_u32(r, "port", 0));
      options_.replicas.push_back(std::move(a));
      if (options_.replicas.back().id != options_.self_id) peer_ids.push_back(options_.replicas.back().id);
    }
    if (o.Get("listenHost").IsString()) options_.listen_host = o.Get("listenHost").ToString().Utf8Value();
    options_.io_threads = get_u32(o, "ioThreads", 2);
    options_.max_frame_bytes = get_u32(o, "maxFrameBytes", options_.max_frame_bytes);
    options_.chunk_bytes = static_cast<std::size_t>(get_f64(o, "chunkBytes", static_cast<double>(options_.chunk_bytes)));
    options_.max_chunks_per_connection = get_u32(o, "maxChunksPerConnection", 8);
    options_.max_receive_bytes =
        static_cast<std::size_t>(get_f64(o, "maxReceiveBytes", static_cast<double>(options_.max_receive_bytes)));
    options_.max_client_receive_bytes = static_cast<std::size_t>(
        get_f64(o, "maxClientReceiveBytes", static_cast<double>(options_.max_client_receive_bytes)));
    options_.high_water_bytes =
        static_cast<std::uint64_t>(get_f64(o, "highWaterBytes", static_cast<double>(options_.high_water_bytes)));
    options_.handshake_timeout_ms = get_u32(o, "handshakeTimeoutMs", options_.handshake_timeout_ms);
    options_.reconnect_min_ms = get_u32(o, "reconnectMinMs", options_.reconnect_min_ms);
    options_.reconnect_max_ms = get_u32(o, "reconnectMaxMs", options_.reconnect_max_ms);
    options_.send_buffer_bytes = get_u32(o, "sendBufferBytes", static_cast<std::uint32_t>(options_.send_buffer_bytes));
    options_.receive_buffer_bytes = get_u32(o, "receiveBufferBytes", 0);
    if (o.Get("clientPort").IsNumber()) options_.client_port = o.Get("clientPort").As<Napi::Number>().Int32Value();
    if (o.Get("clientHost").IsString()) options_.client_host = o.Get("clientHost").ToString().Utf8Value();
    options_.max_request_bytes = get_u32(o, "maxRequestBytes", options_.max_request_bytes);
    options_.max_client_inflight = get_u32(o, "maxClientInFlight", options_.max_client_inflight);
    options_.client_idle_timeout_ms = get_u32(o, "clientIdleTimeoutMs", options_.client_idle_timeout_ms);
    options_.max_client_connections = get_u32(o, "maxClientConnections", options_.max_client_connections);
    options_.heartbeat_interval_ms = get_u32(o, "heartbeatIntervalMs", options_.heartbeat_interval_ms);
    options_.heartbeat_timeout_ms = get_u32(o, "heartbeatTimeoutMs", options_.heartbeat_timeout_ms);
    options_.peer_down_deadline_ms = get_u32(o, "peerDownDeadlineMs", 0);
    options_.max_replica_connections = get_u32(o, "maxReplicaConnections", options_.max_replica_connections);
    options_.max_connections_per_address = get_u32(o, "maxConnectionsPerAddress", options_.max_connections_per_address);
    options_.frame_read_timeout_ms = get_u32(o, "frameReadTimeoutMs", options_.frame_read_timeout_ms);
    options_.max_pings_per_second = get_u32(o, "maxPingsPerSecond", options_.max_pings_per_second);
    options_.incarnation = (static_cast<std::uint64_t>(get_u32(o, "incarnationHi", 0)) << 32) |
                           get_u32(o, "incarnationLo", 0);

    if (o.Get("auth").IsString() && o.Get("auth").ToString().Utf8Value() == "mac") {
      options_.auth = nexres::auth_mode::mac;
      Napi::Value pk = o.Get("privateKey");
      if (!pk.IsTypedArray() || pk.As<Napi::Uint8Array>().ByteLength() != 32)
        throw Napi::TypeError::New(env, "privateKey: 32 bytes");
      std::memcpy(options_.private_seed.data(), pk.As<Napi::Uint8Array>().Data(), 32);
      Napi::Array keys = o.Get("publicKeys").As<Napi::Array>();
      for (std::uint32_t i = 0; i < keys.Length(); ++i) {
        Napi::Object k = keys.Get(i).As<Napi::Object>();
        Napi::Value kv = k.Get("key");
        if (!kv.IsTypedArray() || kv.As<Napi::Uint8Array>().ByteLength() != 32)
          throw Napi::TypeError::New(env, "publicKeys: 32 bytes each");
        std::array<std::uint8_t, 32> key{};
        std::memcpy(key.data(), kv.As<Napi::Uint8Array>().Data(), 32);
        options_.public_keys.emplace_back(get_u32(k, "id", 0), key);
      }
    }
    consumers_ = get_u32(o, "consumers", 0);
    max_pending_ = get_u32(o, "maxPendingHandlers", max_pending_);
    ordered_ = !o.Get("ordered").IsBoolean() || o.Get("ordered").As<Napi::Boolean>().Value();

    Napi::Uint32Array meta = info[1].As<Napi::Uint32Array>();
    meta_capacity_ = meta.ElementLength() / meta_fields;
    meta_ = Napi::Persistent(meta);
    meta_data_ = meta.Data();
    auto se = std::make_shared<shared_engine>(consumers_ > 0);
    se->peer_ids = std::move(peer_ids);
    out_.bind(se, info[2].As<Napi::Float64Array>());
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
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    engine* eng = out_.live();
    if (eng == nullptr) return out;
    nexres::engine_stats st = eng->stats();
    Napi::Array peers = Napi::Array::New(env, st.peers.size());
    for (std::size_t i = 0; i < st.peers.size(); ++i) {
      const auto& p = st.peers[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", p.id);
      o.Set("connected", p.connected);
      o.Set("msgsIn", static_cast<double>(p.msgs_in));
      o.Set("bytesIn", static_cast<double>(p.bytes_in));
      o.Set("msgsOut", static_cast<double>(p.msgs_out));
      o.Set("bytesOut", static_cast<double>(p.bytes_out));
      o.Set("queuedBytes", static_cast<double>(p.queued_bytes));
      o.Set("queuedMsgs", static_cast<double>(p.queued_msgs));
      o.Set("unackedBytes", static_cast<double>(p.unacked_bytes));
      o.Set("reconnects", static_cast<double>(p.reconnects));
      o.Set("rejects", static_cast<double>(p.rejects));
      o.Set("duplicates", static_cast<double>(p.duplicates));
      o.Set("heartbeatRttUs", static_cast<double>(p.heartbeat_rtt_us));
      o.Set("receivePendingBytes", static_cast<double>(p.receive_pending_bytes));
      peers.Set(static_cast<std::uint32_t>(i), o);
    }
    out.Set("peers", peers);
    Napi::Object by = Napi::Object::New(env);
    for (std::size_t c = 1; c < st.rejects_by_code.size(); ++c) {
      if (st.rejects_by_code[c] == 0) continue;
      by.Set(nexres::reject_code_name(static_cast<nexres::reject_code>(c)),
             static_cast<double>(st.rejects_by_code[c]));
    }
    out.Set("rejects", static_cast<double>(st.rejects_total));
    out.Set("rejectsByReason", by);
    out.Set("miqDepth", static_cast<double>(st.miq_depth));
    out.Set("receiveBytesAllocated", static_cast<double>(st.receive_bytes_allocated));
    out.Set("clientReceiveBytesAllocated", static_cast<double>(st.client_receive_bytes_allocated));
    out.Set("clientsOpen", static_cast<double>(st.clients_open));
    out.Set("clientsAccepted", static_cast<double>(st.clients_accepted));
    out.Set("replyBytes", static_cast<double>(st.reply_bytes));
    out.Set("repliesDropped", static_cast<double>(st.replies_dropped));
    Napi::Array clients = Napi::Array::New(env, st.clients.size());
    for (std::size_t i = 0; i < st.clients.size(); ++i) {
      const auto& c = st.clients[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("connectionId", c.id);
      o.Set("address", c.remote);
      o.Set("requests", static_cast<double>(c.requests));
      o.Set("bytesIn", static_cast<double>(c.bytes_in));
      o.Set("replies", static_cast<double>(c.replies));
      o.Set("bytesOut", static_cast<double>(c.bytes_out));
      o.Set("inFlight", static_cast<double>(c.in_flight));
      o.Set("replyBacklogBytes", static_cast<double>(c.reply_backlog_bytes));
      o.Set("paused", c.paused);
      clients.Set(static_cast<std::uint32_t>(i), o);
    }
    out.Set("clients", clients);
    return out;
  }

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
      if ((peer & nexres::client_flag) != 0) return static_cast<std::size_t>(-1);
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
        if (se && se->eng && (d.peer & nexres::client_flag) == 0) {
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

// JS thread, through the thread-safe function: one call drains events and
// up to a meta array's worth of deliveries, then hands them to JS at once.
// Thread-safe-function callbacks run outside any N-API call frame: a C++
// exception must not leave them (std::terminate). A JS exception from a
// handler batch becomes the thread's uncaught exception, as from any
// callback; while the thread's environment is going away (a worker being
// terminated) calling into JS fails, and that is ignored.
template <typename F>
void guarded(F&& f) {
  try {
    f();
  } catch (const Napi::Error& e) {
    try {
      e.ThrowAsJavaScriptException();
    } catch (...) {
    }
  } catch (...) {
  }
}

void CallJs(Napi::Env env, Napi::Function, JsEngine* self, void*) {
  if (env == nullptr || self == nullptr) return;
  guarded([&] { self->Drain(env); });
}

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
                           InstanceMethod<&JsConsumer::JsLastId>("lastId"),
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
    out_.bind(std::move(se), info[3].As<Napi::Float64Array>());
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
  Napi::Value JsWantDrain(const Napi::CallbackInfo& info) { return out_.WantDrain(info); }
  Napi::Value JsLastId(const Napi::CallbackInfo& info) { return out_.LastId(info); }

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", JsEngine::Define(env));
  exports.Set("Consumer", JsConsumer::Define(env));
  exports.Set("frameHeaderBytes", Napi::Number::New(env, nexres::frame_header_bytes));
  exports.Set("protocolVersion", Napi::Number::New(env, nexres::protocol_version));
  return exports;
}

}  // namespace

NODE_API_MODULE(nexres, Init)
