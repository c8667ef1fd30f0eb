#include "stats.hpp"

namespace nexres::addon {

Napi::Object stats_to_js(Napi::Env env, const nexres::engine_stats& st) {
  Napi::Object out = Napi::Object::New(env);
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

}  // namespace nexres::addon
