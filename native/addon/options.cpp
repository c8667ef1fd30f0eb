#include "options.hpp"

#include "crypto.hpp"

#include <cmath>
#include <cstring>
#include <string>
#include <unordered_set>

namespace nexres::addon {

namespace {

[[noreturn]] void refuse(Napi::Env env, const std::string& key, const std::string& what) {
  throw Napi::TypeError::New(env, "engine option " + key + ": " + what);
}

std::uint32_t u32(Napi::Env env, const char* key, const Napi::Value& v) {
  if (!v.IsNumber()) refuse(env, key, "expected a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || std::floor(d) != d) refuse(env, key, "expected an integer in [0, 2^32)");
  return static_cast<std::uint32_t>(d);
}

std::size_t bytes(Napi::Env env, const char* key, const Napi::Value& v) {
  if (!v.IsNumber()) refuse(env, key, "expected a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || std::floor(d) != d) refuse(env, key, "expected a safe integer >= 0");
  return static_cast<std::size_t>(d);
}

std::string text(Napi::Env env, const char* key, const Napi::Value& v) {
  if (!v.IsString()) refuse(env, key, "expected a string");
  return v.As<Napi::String>().Utf8Value();
}

bool flag(Napi::Env env, const char* key, const Napi::Value& v) {
  if (!v.IsBoolean()) refuse(env, key, "expected a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::array<std::uint8_t, 32> key32(Napi::Env env, const char* key, const Napi::Value& v) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      v.As<Napi::Uint8Array>().ByteLength() != 32)
    refuse(env, key, "expected 32 bytes (Uint8Array)");
  std::array<std::uint8_t, 32> out{};
  std::memcpy(out.data(), v.As<Napi::Uint8Array>().Data(), 32);
  return out;
}

// { cluster?, id, host, port, key? }: one peer of a configuration.
nexres::peer_config peer_of(Napi::Env env, const char* key, const Napi::Value& v) {
  if (!v.IsObject()) refuse(env, key, "expected objects {cluster?, id, host, port, key?}");
  Napi::Object o = v.As<Napi::Object>();
  nexres::peer_config p;
  if (o.Has("cluster") && !o.Get("cluster").IsUndefined()) p.cluster = text(env, key, o.Get("cluster"));
  p.id = u32(env, key, o.Get("id"));
  p.host = text(env, key, o.Get("host"));
  const std::uint32_t port = u32(env, key, o.Get("port"));
  if (port > 65535) refuse(env, key, "expected a port number");
  p.port = static_cast<std::uint16_t>(port);
  if (o.Has("key") && !o.Get("key").IsUndefined()) {
    p.has_key = true;
    p.key = key32(env, key, o.Get("key"));
  }
  return p;
}

std::vector<nexres::peer_config> peers_of(Napi::Env env, const char* key, const Napi::Value& v) {
  if (!v.IsArray()) refuse(env, key, "expected an array");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<nexres::peer_config> out;
  for (std::uint32_t i = 0; i < a.Length(); ++i) out.push_back(peer_of(env, key, a.Get(i)));
  return out;
}

struct field {
  const char* key;
  bool required;
  void (*read)(Napi::Env, const Napi::Value&, engine_setup&);
};

#define U32(k, member) \
  {k, true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.member = u32(e, k, v); }}
#define BYTES(k, member) \
  {k, true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.member = bytes(e, k, v); }}

// The one list of engine options JS passes (lib/native.ts EngineOptions).
const field fields[] = {
    U32("selfId", self_id),
    {"clusterId", true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.cluster_id = text(e, "clusterId", v); }},
    {"replicas", true,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) {
       if (!v.IsArray()) refuse(e, "replicas", "expected an array");
       Napi::Array reps = v.As<Napi::Array>();
       for (std::uint32_t i = 0; i < reps.Length(); ++i) {
         Napi::Value r = reps.Get(i);
         if (!r.IsObject()) refuse(e, "replicas", "expected objects {id, host, port}");
         Napi::Object o = r.As<Napi::Object>();
         nexres::replica_address a;
         a.id = u32(e, "replicas[].id", o.Get("id"));
         a.host = text(e, "replicas[].host", o.Get("host"));
         const std::uint32_t port = u32(e, "replicas[].port", o.Get("port"));
         if (port > 65535) refuse(e, "replicas[].port", "expected a port number");
         a.port = static_cast<std::uint16_t>(port);
         s.options.replicas.push_back(std::move(a));
       }
     }},
    {"epoch", true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.epoch = u32(e, "epoch", v); }},
    U32("maxPeers", max_peers),
    {"remotePeers", true,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.remote_peers = peers_of(e, "remotePeers", v); }},
    {"listenHost", false, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.listen_host = text(e, "listenHost", v); }},
    U32("ioThreads", io_threads),
    U32("ioSpinMicros", io_spin_us),
    U32("maxFrameBytes", max_frame_bytes),
    BYTES("chunkBytes", chunk_bytes),
    BYTES("maxChunksPerConnection", max_chunks_per_connection),
    BYTES("maxReceiveBytes", max_receive_bytes),
    BYTES("maxClientReceiveBytes", max_client_receive_bytes),
    {"highWaterBytes", true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.high_water_bytes = bytes(e, "highWaterBytes", v); }},
    U32("handshakeTimeoutMs", handshake_timeout_ms),
    U32("reconnectMinMs", reconnect_min_ms),
    U32("reconnectMaxMs", reconnect_max_ms),
    BYTES("sendBufferBytes", send_buffer_bytes),
    BYTES("receiveBufferBytes", receive_buffer_bytes),
    {"clientPort", false,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) {
       const std::uint32_t port = u32(e, "clientPort", v);
       if (port > 65535) refuse(e, "clientPort", "expected a port number");
       s.options.client_port = static_cast<int>(port);
     }},
    {"clientHost", false, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.client_host = text(e, "clientHost", v); }},
    U32("maxRequestBytes", max_request_bytes),
    U32("maxClientInFlight", max_client_inflight),
    U32("clientIdleTimeoutMs", client_idle_timeout_ms),
    U32("maxClientConnections", max_client_connections),
    U32("maxClientKeyConnections", max_client_key_connections),
    U32("maxClientKeyInFlight", max_client_key_inflight),
    U32("handshakesPerSecondPerAddress", handshakes_per_second_per_address),
    U32("handshakesPerSecond", handshakes_per_second),
    {"clientAuth", false,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) {
       const std::string a = text(e, "clientAuth", v);
       if (a != "key" && a != "none") refuse(e, "clientAuth", "expected 'key' or 'none'");
       s.options.require_client_key = a == "key";
     }},
    {"clientSeal", false,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) {
       const std::string a = text(e, "clientSeal", v);
       if (a != "required" && a != "optional") refuse(e, "clientSeal", "expected 'required' or 'optional'");
       s.options.require_client_seal = a == "required";
     }},
    {"allowClientHook", false, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.client_allow_hook = flag(e, "allowClientHook", v); }},
    U32("heartbeatIntervalMs", heartbeat_interval_ms),
    U32("heartbeatTimeoutMs", heartbeat_timeout_ms),
    U32("peerDownDeadlineMs", peer_down_deadline_ms),
    U32("maxReplicaConnections", max_replica_connections),
    U32("maxConnectionsPerAddress", max_connections_per_address),
    U32("frameReadTimeoutMs", frame_read_timeout_ms),
    U32("maxPingsPerSecond", max_pings_per_second),
    {"incarnationLo", true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.incarnation |= u32(e, "incarnationLo", v); }},
    {"incarnationHi", true,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) {
       s.options.incarnation |= static_cast<std::uint64_t>(u32(e, "incarnationHi", v)) << 32;
     }},
    {"auth", true,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) {
       const std::string a = text(e, "auth", v);
       if (a != "mac" && a != "seal" && a != "none") refuse(e, "auth", "expected 'seal', 'mac' or 'none'");
       s.options.auth = a == "mac" ? nexres::auth_mode::mac : a == "seal" ? nexres::auth_mode::seal : nexres::auth_mode::none;
     }},
    {"privateKey", false, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.options.private_seed = key32(e, "privateKey", v); }},
    {"publicKeys", false,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) {
       if (!v.IsArray()) refuse(e, "publicKeys", "expected an array");
       Napi::Array keys = v.As<Napi::Array>();
       for (std::uint32_t i = 0; i < keys.Length(); ++i) {
         Napi::Value k = keys.Get(i);
         if (!k.IsObject()) refuse(e, "publicKeys", "expected objects {id, key}");
         Napi::Object o = k.As<Napi::Object>();
         s.options.public_keys.emplace_back(u32(e, "publicKeys[].id", o.Get("id")), key32(e, "publicKeys[].key", o.Get("key")));
       }
     }},
    {"consumers", true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.consumers = u32(e, "consumers", v); }},
    {"ordered", true, [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.ordered = flag(e, "ordered", v); }},
    {"maxPendingHandlers", true,
     [](Napi::Env e, const Napi::Value& v, engine_setup& s) { s.max_pending = bytes(e, "maxPendingHandlers", v); }},
};

#undef U32
#undef BYTES

}  // namespace

engine_setup read_engine_options(Napi::Env env, const Napi::Object& o) {
  engine_setup s;
  std::unordered_set<std::string> known;
  for (const field& f : fields) {
    known.insert(f.key);
    Napi::Value v = o.Get(f.key);
    if (v.IsUndefined()) {
      if (f.required) refuse(env, f.key, "missing");
      continue;
    }
    f.read(env, v, s);
  }
  Napi::Array names = o.GetPropertyNames();
  for (std::uint32_t i = 0; i < names.Length(); ++i) {
    const std::string k = names.Get(i).ToString().Utf8Value();
    if (known.count(k) == 0) refuse(env, k, "unknown");
  }
  const bool mac = s.options.auth != nexres::auth_mode::none;
  if (mac != o.Has("privateKey") || mac != o.Has("publicKeys"))
    refuse(env, "privateKey", "privateKey and publicKeys go with auth 'mac' or 'seal' only, and they need both");
  return s;
}

Napi::Array engine_option_keys(Napi::Env env) {
  Napi::Array a = Napi::Array::New(env);
  std::uint32_t i = 0;
  for (const field& f : fields) a.Set(i++, Napi::String::New(env, f.key));
  return a;
}

nexres::membership read_membership(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) refuse(env, "reconfigure", "expected {epoch, peers}");
  Napi::Object o = v.As<Napi::Object>();
  nexres::membership m;
  m.epoch = u32(env, "epoch", o.Get("epoch"));
  m.peers = peers_of(env, "peers", o.Get("peers"));
  if (o.Has("privateKey") && !o.Get("privateKey").IsUndefined()) {
    m.has_private_key = true;
    m.private_seed = key32(env, "privateKey", o.Get("privateKey"));
  }
  return m;
}

}  // namespace nexres::addon
