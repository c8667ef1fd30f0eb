// Per-peer state shared by that peer's inbound session and outbound link.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

namespace nexres {

class peer_link;
class inbound_session;

struct peer_slot {
  std::uint32_t id = 0;
  std::shared_ptr<peer_link> link;  // set once at start

  // Receive side. rx_mu_ is held by the active inbound session while it
  // filters duplicates and pushes a read's deliveries, so a replaced session
  // can never interleave with its successor.
  std::mutex rx_mu;
  std::uint64_t rx_generation = 0;   // which session is active (rx_mu)
  std::uint64_t rx_incarnation = 0;  // sender's incarnation (rx_mu)
  std::uint64_t rx_last_id = 0;      // highest delivered msg id (rx_mu)
  std::weak_ptr<inbound_session> rx_session;  // the active one (rx_mu)
  std::uint64_t rx_consumed_id = 0;  // highest id the consumer is done with (rx_mu)
  bool ack_scheduled = false;        // an ACK request is posted (rx_mu)
  /// Deliveries handed to the consumer and not released (rx_mu). At
  /// max_pending_runs the session pushes no more and stops reading until the
  /// consumer releases half of them (rx_runs_waiting): a peer whose messages
  /// the consumer holds back (pending handlers) cannot fill the input queue
  /// every peer shares.
  std::uint32_t rx_pending_runs = 0;
  bool rx_runs_waiting = false;

  std::atomic<std::uint64_t> msgs_in{0}, bytes_in{0}, duplicates{0}, rejects{0};
  /// Bytes read from the peer and handed to the consumer, not yet consumed.
  std::atomic<std::uint64_t> rx_pending_bytes{0};
};

}  // namespace nexres
