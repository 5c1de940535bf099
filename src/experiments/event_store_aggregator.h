// EventAggregator: the event store's second stage (event_store.h has the
// whole design and the aggregation's rules). It applies logged groups, in log
// order, to per-unit state and to the sufficient statistics per experiment ×
// variant × metric, and writes checkpoints (unit states "u", statistics "a",
// position "c") to the store's RocksDB in one WriteBatch.
//
// The per-event path touches no RocksDB and allocates nothing in the common
// case:
// - units live in a flat open-addressing table keyed by a 64-bit XXH3 of
//   "u" + experiment + NUL + unit; the key bytes sit in an arena and are
//   compared only when two hashes are equal (collisions are handled, not
//   assumed away); states sit in a deque (stable addresses);
// - metric names are interned once (an index per kind and name; the last
//   one is remembered, so a run of one metric costs no lookup); a unit's
//   variant is a pointer to its variant's record, which caches the
//   statistics of each metric by that index;
// - units evicted from the cache (past max_cached_units after a checkpoint)
//   are remembered by their 64-bit hash only; a new unit whose hash matches
//   one costs a read that finds nothing (the database is authoritative).
//
// Thread-safety: none. The store's Open (replay), then its aggregator thread,
// own it; sums() is read by EventStore::Sums under the store's sums_mutex_
// (shared) while ApplyGroup runs under it exclusively.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "experiments/event_store.h"

namespace capstan::experiments {

// One unit's totals for a metric: its outcome (x: 0/1, a sum, or Σnum; den:
// a ratio's Σden), or a ratio's pre-period covariate in the same shape.
struct MetricTotals {
  double x = 0;
  double den = 0;
};

class EventAggregator {
 public:
  EventAggregator(rocksdb::DB* db, const EventStoreOptions& options);
  ~EventAggregator();
  EventAggregator(const EventAggregator&) = delete;
  EventAggregator& operator=(const EventAggregator&) = delete;

  // Loads the checkpoint: position, statistics, and the unit states that fit
  // in the cache.
  absl::Status Load();
  // Applies the events of the log group that starts at `first_sequence`.
  // REQUIRES: first_sequence == next_sequence() (groups in log order).
  absl::Status ApplyGroup(uint64_t first_sequence, const std::vector<const Event*>& events);
  absl::Status ApplyGroup(uint64_t first_sequence, const std::vector<Event>& events);
  bool CheckpointDue() const { return since_checkpoint_ >= options_.checkpoint_events; }
  bool Dirty() const { return since_checkpoint_ > 0; }
  // Writes the dirty unit states and statistics with the position they
  // reflect, in one batch; then trims the unit cache.
  absl::Status Checkpoint();
  // Forgets everything (a rebuild from the log follows).
  void Clear();

  uint64_t next_sequence() const { return next_sequence_; }
  size_t cached_units() const { return states_.size(); }
  uint64_t TakeConflictingExposures() { return std::exchange(conflicting_exposures_, 0); }
  uint64_t TakeHeldEventsDropped() { return std::exchange(held_events_dropped_, 0); }
  const std::map<std::string, ExperimentSums, std::less<>>& sums() const { return sums_; }

 private:
  struct VariantSlot;
  struct ExperimentSlot;
  struct UnitMetric {
    uint32_t metric = 0;  // interned (metrics_)
    double x = 0;         // outcome: 0/1, the sum of values, or Σnum
    double den = 0;       // ratio: Σden
    double covariate = 0;
    MetricSums* sums = nullptr;  // in the unit's variant, once exposed
  };
  struct HeldEvent {
    uint32_t metric;
    int64_t timestamp_ms;
    double value;
    double denominator;
  };
  struct UnitState {
    std::string_view key;  // "u" + experiment + NUL + unit, in the key arena
    uint64_t hash = 0;
    VariantSlot* variant = nullptr;  // null until the exposure
    int64_t exposure_ms = 0;
    absl::InlinedVector<UnitMetric, 2> metrics;
    std::vector<HeldEvent> held;  // metric events before the exposure arrived
    bool dirty = false;
  };
  struct Slot {
    uint64_t hash;
    uint32_t index;  // into states_, plus one; 0 is empty
  };

  absl::Status Apply(const Event& event, uint64_t unit_hash);
  // "u" + experiment + NUL + unit, in lookup_key_.
  std::string_view BuildUnitKey(const Event& event);
  absl::StatusOr<UnitState*> FindUnit(const Event& event, uint64_t hash);
  UnitState* InsertUnit(std::string_view key, uint64_t hash);
  void GrowTable();
  void TrimCache();
  ExperimentSlot* Experiment(std::string_view name);
  VariantSlot* Variant(ExperimentSlot* experiment, std::string_view name);
  uint32_t MetricIndex(EventType kind, std::string_view name);
  // null for a ratio's pre-period entry (kPrePeriodSuffix in the .cc).
  MetricSums* SumsOf(VariantSlot* variant, uint32_t metric);
  // The interned entry holding a ratio metric's pre-period totals (x = Σnum,
  // den = Σden before the exposure), and whether `metric` is one.
  uint32_t PrePeriodMetric(uint32_t ratio_metric);
  bool IsPrePeriodMetric(uint32_t metric) const;
  UnitMetric* FindMetric(UnitState* unit, uint32_t metric);
  UnitMetric* FindOrAddMetric(UnitState* unit, uint32_t metric);
  // The unit's CUPED covariate for `m`: {c, 0}, or for a ratio its
  // pre-period {Σnum, Σden}.
  MetricTotals CovariateOf(UnitState* unit, const UnitMetric& m);
  void ApplyMetric(UnitState* unit, uint32_t metric, int64_t ts, double value, double denominator);
  void EncodeUnit(const UnitState& unit, std::string* out) const;
  absl::Status DecodeUnit(std::string_view data, UnitState* unit);
  std::string_view CopyKey(std::string_view key);

  rocksdb::DB* db_;
  const EventStoreOptions& options_;
  uint64_t (*unit_hash_)(std::string_view);
  std::map<std::string, ExperimentSums, std::less<>> sums_;  // nodes are stable

  // Interned names. Experiments and variants point into sums_.
  std::deque<ExperimentSlot> experiment_slots_;
  absl::flat_hash_map<std::string, ExperimentSlot*> experiments_;
  std::deque<VariantSlot> variant_slots_;
  std::vector<MetricId> metrics_;
  absl::flat_hash_map<std::string, uint32_t> metric_index_;  // kind byte + name
  // By interned metric: for a ratio metric its pre-period entry's index + 1
  // (0: none yet), for a pre-period entry kIsPrePeriod.
  static constexpr uint32_t kIsPrePeriod = UINT32_MAX;
  std::vector<uint32_t> pre_period_metric_;
  ExperimentSlot* last_experiment_ = nullptr;
  EventType last_metric_kind_ = EventType::kExposure;
  std::string last_metric_name_;
  std::string metric_lookup_;  // kind byte + name, reused
  uint32_t last_metric_ = 0;
  std::vector<ExperimentSlot*> dirty_experiments_;

  // The unit cache.
  std::vector<Slot> slots_;  // a power of two, at most half full
  std::deque<UnitState> states_;
  std::vector<std::unique_ptr<char[]>> key_chunks_;
  size_t key_chunk_used_ = 0;
  size_t key_chunk_size_ = 0;
  std::vector<UnitState*> dirty_units_;  // since the checkpoint
  UnitState* last_unit_ = nullptr;
  std::string lookup_key_;
  std::vector<uint64_t> hashes_;          // of the units of the group being applied
  std::vector<const Event*> event_list_;  // ApplyGroup(vector<Event>)'s, reused
  // The units whose state is in the database but not in the cache (evicted,
  // or past the cache at open), by hash: only these are looked up there, so
  // a new unit costs no read.
  absl::flat_hash_set<uint64_t> stored_only_;

  uint64_t next_sequence_ = 0;  // of the log: the next event to aggregate
  uint64_t since_checkpoint_ = 0;
  uint64_t conflicting_exposures_ = 0;
  uint64_t held_events_dropped_ = 0;
};

}  // namespace capstan::experiments
