// The in-process assigner of Capstan's native experiment model: the public
// face of snapshot.h for services and the gateway. It holds the current
// ConfigSnapshot, swaps it atomically when the configuration changes (the
// store watcher calls SetSnapshot), and evaluates units against it; exposures
// go through an ExposureLogger that logs each (unit, experiment, variant) once
// within a bounded memory.
//
// Snapshot swap: SetSnapshot replaces the snapshot and bumps a generation
// counter, both under a lock. Evaluate compares the counter with the one the
// caller's EvaluationResult last saw and only on a change copies the
// shared_ptr into the result (under the lock, shared); otherwise it uses the
// snapshot the result already holds, so the steady state costs one atomic
// load and touches neither the lock nor a reference count. (Not
// std::atomic<shared_ptr>: libstdc++ 12's load releases its internal lock
// with a relaxed store, which ThreadSanitizer rightly reports as a race.) An evaluation in flight
// finishes on the snapshot it started with; the old snapshot is freed when the last result holding
// it moves on (or is destroyed).
//
// Thread-safety: every method may be called from any thread at once; each
// EvaluationResult belongs to one thread at a time.
//
// Example:
//   Assigner assigner(*ConfigSnapshot::Build(std::move(documents)));
//   ExposureLogger exposures(1 << 20, [](const Exposure& e) { Send(e); });
//   thread_local EvaluationResult result;
//   assigner.Evaluate(attributes, &result);
//   exposures.Log(result);
//   const Json* color = result.parameter("button_color");
#ifndef CAPSTAN_EXPERIMENTS_ASSIGNER_H_
#define CAPSTAN_EXPERIMENTS_ASSIGNER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "base/mutex.h"
#include "experiments/snapshot.h"

namespace capstan::experiments {

class Assigner {
 public:
  // An assigner over an empty snapshot (no experiments, no flags).
  Assigner();
  explicit Assigner(std::shared_ptr<const ConfigSnapshot> snapshot);

  Assigner(const Assigner&) = delete;
  Assigner& operator=(const Assigner&) = delete;

  // Evaluations that start afterwards use `snapshot`. REQUIRES: non-null.
  void SetSnapshot(std::shared_ptr<const ConfigSnapshot> snapshot);
  std::shared_ptr<const ConfigSnapshot> snapshot() const;

  // ConfigSnapshot::Evaluate on the current snapshot; `result` keeps that
  // snapshot alive for as long as it is used.
  void Evaluate(const Json& attributes, EvaluationResult* result) const;

 private:
  const uint64_t id_;  // tells results of different assigners apart
  mutable Mutex mu_;
  std::shared_ptr<const ConfigSnapshot> snapshot_ ABSL_GUARDED_BY(mu_);
  // Bumped under mu_ (exclusive) with every swap; read without it.
  std::atomic<uint64_t> generation_{1};
};

// What an exposure log entry carries; the views are valid during the sink call.
struct Exposure {
  std::string_view experiment;
  std::string_view variant;
  std::string_view layer;
  std::string_view unit_type;
  std::string_view unit;
  bool forced = false;
  int64_t experiment_revision = 0;
};

// Remembers which (experiment, variant, unit) triples were seen, in a fixed
// table of 64-bit fingerprints: `capacity` slots (rounded up to a power of
// two, at least 8), 8 bytes each, allocated once. The table is 8-way set
// associative (one 64-byte cache line per set); when a set is full, a slot
// picked by the fingerprint is overwritten, so memory never grows and a unit
// evicted that way is logged again the next time it is seen (downstream
// dedups exposures by unit anyway; this only keeps the stream small). Two
// fingerprints collide with probability ~capacity/2^64 per lookup, which
// would drop one exposure.
//
// Thread-safety: lock-free; concurrent FirstSeen calls for the same triple
// return true exactly once (compare-and-swap on the slot).
class ExposureDeduper {
 public:
  explicit ExposureDeduper(size_t capacity);

  // True when the triple was not in the table (and is now).
  bool FirstSeen(std::string_view experiment, std::string_view variant, std::string_view unit);

  size_t capacity() const { return mask_ + 1; }
  size_t memory_bytes() const { return capacity() * sizeof(uint64_t); }

  static constexpr size_t kWays = 8;

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> slots_;
  size_t mask_;
};

// Logs each exposed assignment of an evaluation (not held out, not launched)
// the first time its (experiment, variant, unit) is seen.
class ExposureLogger {
 public:
  using Sink = std::function<void(const Exposure&)>;
  ExposureLogger(size_t capacity, Sink sink);

  // Returns how many exposures went to the sink.
  size_t Log(const EvaluationResult& result);

  uint64_t logged() const { return logged_.load(std::memory_order_relaxed); }
  uint64_t deduplicated() const { return deduplicated_.load(std::memory_order_relaxed); }
  const ExposureDeduper& deduper() const { return deduper_; }

 private:
  ExposureDeduper deduper_;
  Sink sink_;
  std::atomic<uint64_t> logged_{0};
  std::atomic<uint64_t> deduplicated_{0};
};

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_ASSIGNER_H_
