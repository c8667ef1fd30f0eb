// Per-peer state shared by that peer's inbound session and outbound link.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace nexres {

namespace crypto {
class ed25519_verifier;
}
class peer_link;
class inbound_session;

// A slot belongs to one (cluster, id) for the engine's life: a replica
// removed from the configuration keeps its slot (deliveries and ACK state
// still name it) and gets it back when it is added again.
struct peer_slot {
  // Set before the slot is published (engine::slot_count_), then fixed.
  std::uint32_t id = 0;
  std::string cluster;
  bool remote = false;  // of another cluster (engine_options::remote_clusters)
  /// What deliveries, events and send destinations call it: the id for a
  /// peer of this cluster, slot_address | index for a remote one.
  std::uint32_t address = 0;
  /// The current link; null while the peer is not in the configuration.
  /// Owned by the engine (a replaced or retired link lives as long as the
  /// engine, so a reader that loaded it may still use it).
  std::atomic<peer_link*> link{nullptr};
  /// Its Ed25519 public key (auth mac/seal); owned by the engine likewise.
  std::atomic<const crypto::ed25519_verifier*> key{nullptr};

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
