// The engine shared by the main thread and its worker threads.
#pragma once

#include "dispatcher.hpp"
#include "engine.hpp"
#include "outbound_batch.hpp"

#include <cstdint>
#include <memory>
#include <vector>

namespace nexres::addon {

// One engine and, with worker consumers, its dispatcher: owned jointly by the
// main thread's Engine object and every worker's Consumer object, so
// whichever goes last frees it. Found by workers through the registry.
struct shared_engine {
  std::shared_ptr<engine> eng;
  std::unique_ptr<nexres::dispatcher> disp;  // only with consumers
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

/// Process-wide: worker threads (other environments) find an engine by key.
std::uint32_t register_engine(const std::shared_ptr<shared_engine>& se);
std::shared_ptr<shared_engine> find_engine(std::uint32_t key);

}  // namespace nexres::addon
