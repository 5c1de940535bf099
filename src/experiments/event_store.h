// EventStore: the durable event log, the deduplication by idempotency key
// and the incremental aggregation behind POST /v1/events and
// GET /v1/experiments/{id}/results, in one directory of its own.
//
// Two stages (docs/experiments-events.md has the whole story):
//
// 1. Acknowledged path (the writer thread). Append queues its batch; the
//    writer takes every batch queued while the previous write was syncing
//    (group commit), drops the events whose key it has seen (an in-memory
//    index of the last `dedup_window_keys` accepted keys, rebuilt from the log
//    on open), and appends the new events as ONE compact record to the log
//    (event_log.h: segment files of its own, CRC-32C, fdatasync). Each caller
//    is answered after the fsync that covers its batch. Nothing else is
//    written on this path.
//
// 2. Aggregation (the aggregator thread) applies each logged group, in log
//    order, to per-unit state cached in memory and to the sufficient
//    statistics; every `checkpoint_events` events it writes the dirty unit
//    states, the statistics and the log position they reflect ("c") to
//    RocksDB as table files ingested in one atomic step. Recovery = the checkpoint + a replay of
//    the log records after it, so an event is counted once whatever the moment of a crash.
//
// 3. Retention (EnforceRetention, run by the aggregator after each
//    checkpoint and every retention_check_interval): a log segment is
//    removed once every event in it is in a durable checkpoint AND outside
//    the dedup window (dedup_window_keys newer events follow it), AND it is
//    older than retention_ms or the log is over retention_bytes. So a crash
//    at any point replays only what is still in the log, and the dedup index
//    rebuilt on open has every key it had before. A log that no longer
//    starts at event 0 cannot be rebuilt (rebuild_on_open is refused, naming
//    the first retained event): the checkpoint is then the only record of
//    the removed events.
//
// On disk, under `directory`: `events-log/` (the log's segments) and
// RocksDB's files, with the keys (identifiers cannot hold NUL, the decoder
// refuses control characters):
//   "c"                              checkpoint: next sequence to aggregate, next unit id
//                                    (8 bytes big-endian each)
//   "s" + unit id (8 bytes BE)       per-unit state as of the checkpoint (its key inside);
//                                    ids in order of first appearance, so new units append
//   "dm" / "dv" + id (4 bytes BE)    the metric / variant names unit states refer to by id
//   "a" + experiment                 the experiment's statistics as of the checkpoint (JSON)
//   "u" + experiment + NUL + unit    (layout 1, older versions) per-unit state; Open rewrites
//                                    these as "s" and "d" records
//   "m" + "rebuilding"               (tests, older versions) forces a rebuild on open
//   "g" + seq (8 bytes big-endian)   (older versions) the log; Open moves it to events-log/
//
// Aggregation: a unit joins the variant of its FIRST exposure (a later
// exposure to another variant is counted in conflicting_exposures and
// ignored); the exposure's ts is the unit's exposure time. A metric event
// with ts >= the exposure time is OUTCOME: per unit and metric, conversion =
// 1 once converted, value = the sum of values, ratio = the sums of
// numerators and denominators. A metric event with ts in
// [exposure − cuped_lookback_ms, exposure) is the unit's PRE-PERIOD
// COVARIATE for that metric (same rules: 0/1, sum, or for ratios the sums
// of numerators and denominators), used by CUPED; older events count in
// neither. Metric events that
// arrive before the unit's exposure are held with the unit (at most
// kMaxHeldEventsPerUnit) and classified when it comes. Per experiment ×
// variant: units (exposed units) and per metric Σx, Σx² over the exposed
// units (a unit without events counts as 0), for ratios Σnum, Σden, Σnum²,
// Σden², Σnum·den, and for CUPED Σc, Σc², Σx·c (for ratios also the
// pre-period denominator's Σc_den, Σc_den² and its products with num, den
// and c, and Σden·c). An event costs O(1).
//
// Thread-safety: Append, Sums, Experiments and Stats from any number of threads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "experiments/events.h"

namespace rocksdb {
class DB;
}

namespace capstan::experiments {

class DedupWindow;      // event_store_dedup.h
class EventLog;         // event_log.h
class EventAggregator;  // event_store_aggregator.h

// Metric events held per unit while its exposure has not arrived; past it
// they are left out of the aggregation (counted in held_events_dropped).
inline constexpr size_t kMaxHeldEventsPerUnit = 1000;

// A metric is its kind and name: "revenue" as a value and as a ratio are two.
struct MetricId {
  EventType kind = EventType::kValue;  // never kExposure
  std::string name;
  auto operator<=>(const MetricId&) const = default;
};

// Over the exposed units of one variant. For conversion and value metrics
// only sum, sum_squares and the covariate sums are used.
struct MetricSums {
  double sum = 0;          // Σx, or Σnum for ratios
  double sum_squares = 0;  // Σx², or Σnum²
  double den_sum = 0;      // Σden
  double den_sum_squares = 0;
  double products = 0;  // Σnum·den
  // CUPED: c is the unit's pre-exposure value (for ratios its pre-period
  // numerator, and x its numerator).
  double covariate_sum = 0;          // Σc
  double covariate_sum_squares = 0;  // Σc²
  double covariate_products = 0;     // Σx·c
  // CUPED for ratios: c_den is the unit's pre-period denominator.
  double covariate_den_sum = 0;           // Σc_den
  double covariate_den_sum_squares = 0;   // Σc_den²
  double covariate_num_den_products = 0;  // Σc·c_den
  double covariate_den_products = 0;      // Σx·c_den (numerator × pre denominator)
  double den_covariate_products = 0;      // Σden·c
  double den_covariate_den_products = 0;  // Σden·c_den
};

struct VariantSums {
  uint64_t units = 0;  // exposed units
  std::map<MetricId, MetricSums> metrics;
};

struct ExperimentSums {
  std::map<std::string, VariantSums, std::less<>> variants;
};

struct EventStoreOptions {
  std::string directory;  // created if missing
  // Back-pressure: events queued or being written at most; Append past it
  // is refused with ResourceExhausted (HTTP 429). At least kMaxEventsPerBatch.
  size_t max_queued_events = 100000;
  // Back-pressure: events logged but not yet aggregated at most; Append
  // past it is refused with ResourceExhausted. Bounds the aggregation's
  // queue (memory), how stale results can be and the replay after a crash.
  size_t max_unaggregated_events = 1000000;
  // Events in one group commit at most (a batch is never split).
  size_t max_group_events = 50000;
  // The dedup index remembers the keys of at least this many most recently
  // accepted events (up to twice as many: two generations), as 64-bit
  // fingerprints (two tables at most 3/4 full: 256 MiB for 10M; a new key
  // is taken for a duplicate with probability at most 2 x window / 2^64, see
  // event_store_dedup.h). A key older than that sent again is new.
  size_t dedup_window_keys = 10000000;
  // The aggregator checkpoints after this many events (and on close).
  size_t checkpoint_events = 250000;
  // Per-unit states kept in memory at most after a checkpoint (about 220
  // bytes each with one or two metrics; an evicted unit keeps its 16-byte
  // slot in the unit table, which is kept at most half full: 32-64 bytes);
  // the others are read back from the database when needed,
  // a group's all in one MultiGet (~12-20 us of CPU per unit read back, so
  // size it to the units active at once; --events-max-cached-units).
  size_t max_cached_units = 2000000;
  // CUPED's pre-period: events this long before the exposure (14 days, as
  // GrowthBook's default lookback).
  int64_t cuped_lookback_ms = int64_t{14} * 24 * 3600 * 1000;
  // fsync each group commit. Only tests that measure nothing durable turn it off.
  bool sync = true;
  // Log retention (see 3. above; docs/experiments-events.md, "Retention").
  // A covered segment is removed once it was last written this long ago;
  // negative: no time limit. 7 days, as Kafka's default.
  int64_t retention_ms = int64_t{7} * 24 * 3600 * 1000;
  // A covered segment is removed, however young, while the log is larger
  // than this; 0: no cap. Never below what the checkpoint and the dedup
  // window still need (about 60 bytes per event of the window).
  uint64_t retention_bytes = 0;
  // The log's segment size (EventLogOptions::segment_bytes): the unit of
  // removal.
  size_t segment_bytes = 64 << 20;
  // How often retention looks at the log between checkpoints.
  std::chrono::milliseconds retention_check_interval = std::chrono::minutes(1);
  // Drop the aggregation and replay the whole log on open. Refused
  // (FailedPrecondition naming the first retained event) once retention
  // removed the log's first segment.
  bool rebuild_on_open = false;
  // Tests: false leaves the aggregation since the last checkpoint unwritten
  // on close, as a crash would (the next open replays it from the log).
  bool checkpoint_on_close = true;
  // Tests: runs on the writer thread before each group is written.
  std::function<void()> before_group_write;
  // Tests: runs on the aggregator thread before each group is aggregated.
  std::function<void()> before_group_aggregate;
  // Tests: replaces the 64-bit hash the aggregator keys units by (XXH3 of
  // "u" + experiment + NUL + unit), e.g. with one under which units collide.
  uint64_t (*unit_hash)(std::string_view unit_key) = nullptr;
  // Tests: the wall clock segment ages are measured with (default:
  // std::chrono::system_clock::now; a segment's age is from its file's mtime).
  std::function<std::chrono::system_clock::time_point()> wall_clock;
};

struct AppendResult {
  uint64_t accepted = 0;    // new events, now durable
  uint64_t duplicates = 0;  // keys accepted before (or twice in this group)
};

struct EventStoreStats {
  uint64_t next_sequence = 0;        // log sequence the next event gets (events in the log)
  uint64_t aggregated_sequence = 0;  // events of the log reflected in Sums
  uint64_t checkpoint_sequence = 0;  // events of the log reflected in the last checkpoint
  uint64_t accepted = 0;             // since open
  uint64_t duplicates = 0;           // since open
  uint64_t group_commits = 0;        // since open
  uint64_t checkpoints = 0;          // since open
  uint64_t replayed_on_open = 0;     // events of the log after the checkpoint, replayed by Open
  uint64_t conflicting_exposures = 0;
  uint64_t held_events_dropped = 0;  // since open: past kMaxHeldEventsPerUnit
  uint64_t queued_events = 0;
  uint64_t dedup_keys = 0;            // keys in the in-memory dedup index
  uint64_t cached_units = 0;          // unit states in memory
  uint64_t log_first_sequence = 0;    // the first event still in the log (retention)
  uint64_t log_segments = 0;          // segment files in the log
  uint64_t log_bytes = 0;             // their headers and records
  uint64_t log_segments_removed = 0;  // since open, by retention
  // Since open: unit states read back from the database (evicted from the
  // cache, or past it at open, and then sent an event).
  uint64_t units_read_back = 0;
  // The aggregation stopped on an error (logged): Sums is stale and Append
  // refuses; the next open replays the log.
  bool aggregation_failed = false;
};

class EventStore {
 public:
  // Opens (creating) the database, rebuilds the dedup index from the log and
  // replays the log after the last checkpoint: when it returns, Sums reflects
  // every event in the log.
  static absl::StatusOr<std::unique_ptr<EventStore>> Open(EventStoreOptions options);
  // Writes what is queued, aggregates it, checkpoints, then closes.
  ~EventStore();
  EventStore(const EventStore&) = delete;
  EventStore& operator=(const EventStore&) = delete;

  // Blocks until the events are durable in the log (or refused); what the
  // events refer to must live until then (the log record is the store's
  // only copy of them).
  // ResourceExhausted when the queue is full or the aggregation is behind,
  // Unavailable when closing, Internal when the write failed (nothing of the
  // batch is then stored or counted) or the aggregation has stopped on an
  // error.
  absl::StatusOr<AppendResult> Append(std::span<const EventRef> events);
  absl::StatusOr<AppendResult> Append(const std::vector<Event>& events);
  // ResourceExhausted while the aggregation is max_unaggregated_events
  // behind (Append would refuse any batch), else OK; lock-free, so a caller
  // can refuse a batch before it spends CPU decoding it.
  absl::Status Admit() const;

  // The experiment's statistics, reflecting every event acknowledged before
  // the call (waits for the aggregator to get there: at most
  // max_unaggregated_events behind). Empty if unknown.
  ExperimentSums Sums(std::string_view experiment) const;
  std::vector<std::string> Experiments() const;
  EventStoreStats Stats() const;

  // Removes the log segments retention allows (3. above) and returns how
  // many. Runs on its own after checkpoints and periodically; public for
  // tests and tools. Any thread.
  absl::StatusOr<size_t> EnforceRetention();

 private:
  struct Pending;
  struct LoggedGroup;

  EventStore();
  absl::Status Recover();
  absl::Status MigrateRocksLog();
  void WriterLoop();
  void AggregatorLoop();
  // Waits until the aggregation has reached `sequence` (or stopped).
  void AwaitAggregated(uint64_t sequence) const;
  // EnforceRetention, errors logged (retention failing loses nothing).
  void RunRetention();

  EventStoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  // Append and Read: the writer thread only (and Open); retention and Stats
  // use its thread-safe calls (event_log.h).
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<DedupWindow> dedup_;           // writer thread only (and Open)
  std::unique_ptr<EventAggregator> aggregator_;  // state under sums_mutex_
  uint64_t next_sequence_ = 0;                   // writer thread only (and Open)

  // Readers of the statistics hold it shared; the aggregator holds it
  // exclusively while it applies a group.
  mutable std::shared_mutex sums_mutex_;

  mutable std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<std::unique_ptr<Pending>> queue_;  // to the writer
  size_t queued_events_ = 0;                    // queued or being written
  bool stopping_ = false;
  std::thread writer_;

  // Logged groups on their way to the aggregator.
  mutable std::mutex aggregate_mutex_;
  mutable std::condition_variable aggregate_cv_;   // the aggregator waits for groups
  mutable std::condition_variable aggregated_cv_;  // Sums waits for the aggregator
  std::deque<std::unique_ptr<LoggedGroup>> logged_;
  std::vector<std::string> spare_records_;  // the aggregator's, back to the writer
  bool writer_done_ = false;                // no more groups will come
  bool aggregator_failed_ = false;
  std::thread aggregator_thread_;

  std::atomic<uint64_t> published_next_sequence_{0};
  std::atomic<uint64_t> aggregated_sequence_{0};
  std::atomic<uint64_t> checkpoint_sequence_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> duplicates_{0};
  std::atomic<uint64_t> group_commits_{0};
  std::atomic<uint64_t> checkpoints_{0};
  uint64_t replayed_on_open_ = 0;  // set by Open
  std::atomic<uint64_t> conflicting_exposures_{0};
  std::atomic<uint64_t> held_events_dropped_{0};
  std::atomic<uint64_t> dedup_keys_{0};
  std::atomic<uint64_t> cached_units_{0};
  std::atomic<uint64_t> log_segments_removed_{0};
  std::mutex retention_mutex_;  // one EnforceRetention at a time
  std::atomic<uint64_t> units_read_back_{0};
};

// The sums as a JSON document and back (the "a" records).
std::string EncodeExperimentSums(const ExperimentSums& sums);
absl::StatusOr<ExperimentSums> DecodeExperimentSums(std::string_view text);

// A log record: the events of one group, in sequence order, in a compact
// binary form (docs/experiments-events.md, "Disk format").
void AppendLogRecordEvent(const EventRef& event, std::string* record);
void AppendLogRecordEvent(const Event& event, std::string* record);
// *events (replaced) refer to `record`.
absl::Status DecodeLogRecordRefs(std::string_view record, std::vector<EventRef>* events);
absl::StatusOr<std::vector<Event>> DecodeLogRecord(std::string_view record);

}  // namespace capstan::experiments
