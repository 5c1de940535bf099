// EventAggregator: the event store's second stage (event_store.h has the
// whole design and the aggregation's rules). It applies logged groups, in log
// order, to per-unit state and to the sufficient statistics per experiment ×
// variant × metric, and writes checkpoints (statistics "a", position "c",
// new dictionary names "d", unit states "s") to the store's RocksDB as table
// files ingested in one atomic step.
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
// - past max_cached_units after a checkpoint, units are evicted in place
//   down to half of it: a CLOCK hand over the states spares once each unit
//   sent an event in a later checkpoint period than the one it came in (or
//   was last spared in); evicted states are reused by new units. An evicted
//   unit keeps its slot in the table, which then holds its unit id instead
//   of its state (a "stored" slot): one write where the slot is, and the
//   lookup that finds a unit cached, stored or new is the same one probe.
//   A new unit whose hash matches a stored one costs a read that finds
//   another unit's key;
// - the evicted units a group's events refer to are read back before the
//   group is applied, all in one sorted MultiGet (ReadBackGroup), so the
//   per-event path never waits on RocksDB.
//
// On disk (layout 2) a unit's state is keyed by its unit id, given in order
// of first appearance, and refers to its variant and metrics by dictionary
// id: a checkpoint's new units form a table file above every key on disk,
// which RocksDB places in the last level with no compaction, and only
// changed units of earlier checkpoints are merged by compactions. A store
// written with layout 1 ("u" + experiment + NUL + unit keys, names inline)
// is rewritten to layout 2 by Load.
//
// Thread-safety: none. The store's Open (replay), then its aggregator thread,
// own it; sums() is read by EventStore::Sums under the store's sums_mutex_
// (shared) while ApplyGroup runs under it exclusively.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/zeroed_array.h"
#include "experiments/event_store.h"
#include "experiments/event_store_format.h"

namespace rocksdb {
class Iterator;
struct Options;
}  // namespace rocksdb

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

  // Loads the checkpoint: position, statistics, dictionary, and the unit
  // states that fit in the cache. A layout-1 store is rewritten to layout 2
  // first (one atomic ingestion; a crash before it leaves layout 1 whole).
  absl::Status Load();
  // Applies the events of the log group that starts at `first_sequence`.
  // REQUIRES: first_sequence == next_sequence() (groups in log order).
  absl::Status ApplyGroup(uint64_t first_sequence, std::span<const EventRef> events);
  bool CheckpointDue() const { return since_checkpoint_ >= options_.checkpoint_events; }
  bool Dirty() const { return since_checkpoint_ > 0; }
  // Writes the dirty unit states, statistics and new dictionary names with
  // the position they reflect, in one atomic ingestion; then trims the unit
  // cache.
  absl::Status Checkpoint();
  // Forgets everything (a rebuild from the log follows).
  void Clear();

  uint64_t next_sequence() const { return next_sequence_; }
  size_t cached_units() const { return states_.size() - free_states_.size(); }
  uint64_t units_read_back() const { return units_read_back_; }
  uint64_t TakeConflictingExposures() { return std::exchange(conflicting_exposures_, 0); }
  uint64_t TakeHeldEventsDropped() { return std::exchange(held_events_dropped_, 0); }
  const std::map<std::string, ExperimentSums, std::less<>>& sums() const { return sums_; }

 private:
  struct VariantSlot;
  struct ExperimentSlot {
    std::string name;
    ExperimentSums* sums = nullptr;
    std::vector<VariantSlot*> variants;  // few: found by a linear scan
    bool dirty = false;                  // since the checkpoint
  };

  struct VariantSlot {
    std::string name;
    uint32_t name_id = 0;  // in variant_names_ (the dictionary)
    VariantSums* sums = nullptr;
    std::vector<MetricSums*> by_metric;  // by interned metric; null until used
  };
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
    uint64_t id = 0;                 // its state's key on disk: "s" + id
    VariantSlot* variant = nullptr;  // null until the exposure
    int64_t exposure_ms = 0;
    absl::InlinedVector<UnitMetric, 2> metrics;
    std::vector<HeldEvent> held;  // metric events before the exposure arrived
    uint32_t key_capacity = 0;    // bytes at key.data() a reuse of this state may overwrite
    bool dirty = false;
    bool referenced = false;  // used since the clock hand last passed (EvictUnits)
    bool free = false;        // evicted: in free_states_
  };
  struct Slot {
    uint64_t hash;
    // 0: empty; kStoredRef | unit id: a unit whose state is only in the
    // database (evicted, or past the cache at open); else its state's
    // index in states_, plus one.
    uint64_t ref;
  };
  static constexpr uint64_t kStoredRef = uint64_t{1} << 63;

  absl::Status Apply(const EventRef& event, uint64_t unit_hash);
  // "u" + experiment + NUL + unit, in lookup_key_.
  std::string_view BuildUnitKey(const EventRef& event);
  absl::StatusOr<UnitState*> FindUnit(const EventRef& event, uint64_t hash);
  UnitState* InsertUnit(std::string_view key, uint64_t hash, uint64_t id);
  // A unit whose state is in the database only, as a stored slot.
  void InsertStored(uint64_t hash, uint64_t id);
  // Gives slots_[slot] (empty, or the unit's stored slot) a state: a free
  // one, or a new one. The caller fills it.
  UnitState* CacheAt(size_t slot, std::string_view key, uint64_t hash, uint64_t id);
  // The empty slot a new entry with `hash` goes in, the table grown first
  // if one more entry would make it over half full.
  size_t EmptySlotFor(uint64_t hash);
  // Reads the evicted units the group's events refer to back into the
  // cache, in one sorted MultiGet, before any event is applied (so FindUnit
  // never reads). REQUIRES: hashes_ holds the events' unit hashes.
  absl::Status ReadBackGroup(std::span<const EventRef> events);
  absl::Status LoadDictionary(rocksdb::Iterator* it);
  // Layout 1 → 2: every "u" state re-keyed and re-encoded, then the "u"
  // range deleted. REQUIRES: the position and statistics are loaded.
  absl::Status MigrateLayout1(rocksdb::Iterator* it);
  // The table file at `path` with `units` (sorted by id), for ingestion.
  absl::Status WriteUnitsFile(const std::string& path, const std::vector<UnitState*>& units);
  // The position, unit id and dictionary names not yet on disk, plus the
  // dirty statistics, as the table file at `path`.
  absl::Status WriteMetaFile(const std::string& path);
  rocksdb::Options CheckpointTableOptions() const;
  void GrowTable();
  // Evicts clean units, least recently used first as a CLOCK approximates
  // it, until max_cached_units / 2 are cached; in place: their states go
  // to free_states_ for reuse and their slots become stored slots.
  // REQUIRES: no dirty unit (just checkpointed).
  void EvictUnits();
  // Rewrites the live keys into fresh chunks when evicted keys hold most
  // of the arena.
  void MaybeCompactKeys();
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
  // Layout 1's encoding (kUnitStateVersion), read only to migrate.
  absl::Status DecodeLayout1Unit(std::string_view data, UnitState* unit);
  absl::Status FromRecord(const event_format::UnitRecord& record, UnitState* unit);
  absl::Status CorruptUnit(std::string_view unit_key) const;
  uint32_t VariantNameId(std::string_view name);
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
  // Variant names by dictionary id (VariantSlot::name_id).
  std::vector<std::string> variant_names_;
  absl::flat_hash_map<std::string, uint32_t> variant_name_index_;
  // Dictionary entries already on disk; those past them go with the next checkpoint.
  size_t metrics_on_disk_ = 0;
  size_t variant_names_on_disk_ = 0;

  // The unit cache.
  // Every unit of the store, cached or stored: a power of two, at most half full.
  ZeroedArray<Slot> slots_;
  size_t stored_units_ = 0;  // stored slots in slots_
  std::deque<UnitState> states_;
  std::vector<uint32_t> free_states_;  // indices into states_ of evicted units
  size_t clock_hand_ = 0;              // into states_
  std::vector<std::unique_ptr<char[]>> key_chunks_;
  size_t key_chunk_used_ = 0;
  size_t key_chunk_size_ = 0;
  size_t key_bytes_allocated_ = 0;       // in key_chunks_
  size_t key_bytes_live_ = 0;            // of the cached units' keys
  std::vector<UnitState*> dirty_units_;  // since the checkpoint
  UnitState* last_unit_ = nullptr;
  std::string lookup_key_;
  std::vector<uint64_t> hashes_;  // of the units of the group being applied
  // ReadBackGroup's, reused: a candidate per stored slot an event's hash
  // matched, the distinct ids sorted, and their keys.
  struct ReadBackCandidate {
    size_t event;
    uint64_t id;
    size_t slot;
  };
  std::vector<ReadBackCandidate> read_back_wanted_;
  std::vector<uint64_t> read_back_ids_;
  std::vector<std::string> read_back_keys_;
  uint64_t next_unit_id_ = 1;
  uint64_t unit_id_on_disk_ = 1;  // next_unit_id_ as of the last checkpoint

  uint64_t next_sequence_ = 0;  // of the log: the next event to aggregate
  uint64_t since_checkpoint_ = 0;
  uint64_t conflicting_exposures_ = 0;
  uint64_t held_events_dropped_ = 0;
  uint64_t units_read_back_ = 0;
};

}  // namespace capstan::experiments
