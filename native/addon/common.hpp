// Pieces every part of the Node-API glue uses: the flush's record layout,
// staged-byte blocks, the trash for JS references dropped on io threads,
// and calling into JS safely from thread-safe-function callbacks.
#pragma once

#include <napi.h>

#include "engine.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace nexres::addon {

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

// Calls a JS function without node-addon-api's error wrapping: while an
// environment is going away (a worker thread being terminated) the call
// fails, and building a Napi::Error for it aborts the process. False when
// the call did not complete; any exception stays pending for JS.
bool call_js(Napi::Env env, const Napi::FunctionReference& fn, std::initializer_list<napi_value> args,
             napi_value* result = nullptr);

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

}  // namespace nexres::addon
