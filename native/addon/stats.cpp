#include "stats.hpp"

#include <cstdint>

namespace nexres::addon {

namespace {

// Each statistic is named once: its JS key and where the core keeps it
// (lib/stats.ts and lib/native.ts NativeStats give the same keys).
template <typename S>
struct counter {
  const char* key;
  std::uint64_t S::*member;
};

const counter<nexres::peer_stats> peer_counters[] = {
    {"msgsIn", &nexres::peer_stats::msgs_in},
    {"bytesIn", &nexres::peer_stats::bytes_in},
    {"msgsOut", &nexres::peer_stats::msgs_out},
    {"bytesOut", &nexres::peer_stats::bytes_out},
    {"queuedBytes", &nexres::peer_stats::queued_bytes},
    {"queuedMsgs", &nexres::peer_stats::queued_msgs},
    {"unackedBytes", &nexres::peer_stats::unacked_bytes},
    {"reconnects", &nexres::peer_stats::reconnects},
    {"rejects", &nexres::peer_stats::rejects},
    {"duplicates", &nexres::peer_stats::duplicates},
    {"heartbeatRttUs", &nexres::peer_stats::heartbeat_rtt_us},
    {"receivePendingBytes", &nexres::peer_stats::receive_pending_bytes},
};

const counter<nexres::client_stats> client_counters[] = {
    {"requests", &nexres::client_stats::requests},
    {"bytesIn", &nexres::client_stats::bytes_in},
    {"replies", &nexres::client_stats::replies},
    {"bytesOut", &nexres::client_stats::bytes_out},
    {"inFlight", &nexres::client_stats::in_flight},
    {"replyBacklogBytes", &nexres::client_stats::reply_backlog_bytes},
};

const counter<nexres::engine_stats> engine_counters[] = {
    {"rejects", &nexres::engine_stats::rejects_total},
    {"miqDepth", &nexres::engine_stats::miq_depth},
    {"receiveBytesAllocated", &nexres::engine_stats::receive_bytes_allocated},
    {"clientReceiveBytesAllocated", &nexres::engine_stats::client_receive_bytes_allocated},
    {"clientsOpen", &nexres::engine_stats::clients_open},
    {"clientsAccepted", &nexres::engine_stats::clients_accepted},
    {"replyBytes", &nexres::engine_stats::reply_bytes},
    {"repliesDropped", &nexres::engine_stats::replies_dropped},
};

template <typename S, std::size_t N>
void set_counters(Napi::Object o, const S& s, const counter<S> (&table)[N]) {
  for (const auto& c : table) o.Set(c.key, static_cast<double>(s.*(c.member)));
}

}  // namespace

Napi::Object stats_to_js(Napi::Env env, const nexres::engine_stats& st) {
  Napi::Object out = Napi::Object::New(env);
  Napi::Array peers = Napi::Array::New(env, st.peers.size());
  for (std::size_t i = 0; i < st.peers.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", st.peers[i].id);
    if (!st.peers[i].cluster.empty()) o.Set("cluster", st.peers[i].cluster);
    o.Set("connected", st.peers[i].connected);
    set_counters(o, st.peers[i], peer_counters);
    peers.Set(static_cast<std::uint32_t>(i), o);
  }
  out.Set("peers", peers);
  out.Set("epoch", st.epoch);
  Napi::Object by = Napi::Object::New(env);
  for (std::size_t c = 1; c < st.rejects_by_code.size(); ++c) {
    if (st.rejects_by_code[c] == 0) continue;
    by.Set(nexres::reject_code_name(static_cast<nexres::reject_code>(c)), static_cast<double>(st.rejects_by_code[c]));
  }
  out.Set("rejectsByReason", by);
  set_counters(out, st, engine_counters);
  Napi::Array clients = Napi::Array::New(env, st.clients.size());
  for (std::size_t i = 0; i < st.clients.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("connectionId", st.clients[i].id);
    o.Set("address", st.clients[i].remote);
    set_counters(o, st.clients[i], client_counters);
    o.Set("paused", st.clients[i].paused);
    o.Set("waitingForMemory", st.clients[i].waiting_for_memory);
    clients.Set(static_cast<std::uint32_t>(i), o);
  }
  out.Set("clients", clients);
  return out;
}

}  // namespace nexres::addon
