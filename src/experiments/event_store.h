// EventStore: the durable event log and the incremental aggregation behind
// POST /v1/events and GET /v1/experiments/{id}/results, on one RocksDB
// database of its own.
//
// Durability (docs/experiments-events.md): Append returns only after its
// events, the idempotency keys, the per-unit state and the aggregates they
// change are written in ONE rocksdb::WriteBatch with WriteOptions::sync
// (the WAL is fsynced). One writer thread takes every batch queued while the
// previous write was syncing and commits them together (group commit), so
// concurrent callers share an fsync and each is answered after the sync that
// covers it. Because log, dedup index and aggregates change atomically, a
// kill -9 at any point leaves them consistent: an acknowledged event is in
// the log and counted once; an unacknowledged one is either wholly there or
// wholly absent (a retry with the same key is then a duplicate or new).
//
// Keys (one column family; the fields cannot hold NUL, the decoder refuses
// control characters):
//   "l" + seq (8 bytes big-endian)          the event, as EncodeEvent's line
//   "d" + idempotency key                   seq of the event that took the key
//   "u" + experiment + NUL + unit           per-unit state: variant (empty until
//                                           the exposure) and per-metric totals
//   "a" + experiment                        the experiment's sufficient statistics (JSON)
//   "m" + "rebuilding"                      set while RebuildFromLog runs
// Dedup index: on disk, every accepted key is kept for the life of the
// database (no TTL in this slice), so memory stays bounded (RocksDB's block
// cache and memtables; the Bloom filter makes a miss cheap) and disk grows
// by about key size + 20 bytes per event.
//
// Aggregation: a unit joins the variant of its FIRST exposure (a later
// exposure to another variant is counted in conflicting_exposures and
// ignored). Per unit and metric the value is: conversion, 1 once the unit
// converted (0/1); value, the sum of its values; ratio, the sums of
// numerators and of denominators. Metric events before the exposure are
// kept in the unit's state and join the variant when the exposure comes. Per
// experiment × variant: units (exposed units) and, per metric, Σx, Σx² (and
// for ratios Σnum, Σden, Σnum², Σden², Σnum·den) over the exposed units —
// units without an event count as 0. Updated from the unit's old and new
// totals, so one event costs O(1) aggregate work.
//
// Thread-safety: Append and Sums from any number of threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
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

// A metric is its kind and name: "revenue" as a value and as a ratio are two.
struct MetricId {
  EventType kind = EventType::kValue;  // never kExposure
  std::string name;
  auto operator<=>(const MetricId&) const = default;
};

// Over the exposed units of one variant. For conversion and value metrics
// only sum and sum_squares are used.
struct MetricSums {
  double sum = 0;          // Σx, or Σnum for ratios
  double sum_squares = 0;  // Σx², or Σnum²
  double den_sum = 0;      // Σden
  double den_sum_squares = 0;
  double products = 0;  // Σnum·den
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
  // Events in one group commit at most (a batch is never split).
  size_t max_group_events = 50000;
  // fsync each group commit. Only tests that measure nothing durable turn it off.
  bool sync = true;
  // Replay the log into fresh per-unit state and aggregates on open
  // (also done when a previous rebuild was interrupted).
  bool rebuild_on_open = false;
  // Tests: runs on the writer thread before each group is written.
  std::function<void()> before_group_write;
};

struct AppendResult {
  uint64_t accepted = 0;    // new events, now durable
  uint64_t duplicates = 0;  // keys accepted before (or twice in this group)
};

struct EventStoreStats {
  uint64_t next_sequence = 0;  // log sequence the next event gets (events in the log)
  uint64_t accepted = 0;       // since open
  uint64_t duplicates = 0;     // since open
  uint64_t group_commits = 0;  // since open
  uint64_t conflicting_exposures = 0;
  uint64_t queued_events = 0;
};

class EventStore {
 public:
  static absl::StatusOr<std::unique_ptr<EventStore>> Open(EventStoreOptions options);
  // Writes what is queued, then closes.
  ~EventStore();
  EventStore(const EventStore&) = delete;
  EventStore& operator=(const EventStore&) = delete;

  // Blocks until the events are durable (or refused). ResourceExhausted when
  // the queue is full, Unavailable when closing, Internal when the write
  // failed (nothing of the batch is then stored or counted).
  absl::StatusOr<AppendResult> Append(std::vector<Event> events);

  // The experiment's statistics as of the last commit (empty if unknown).
  ExperimentSums Sums(std::string_view experiment) const;
  std::vector<std::string> Experiments() const;
  EventStoreStats Stats() const;

 private:
  struct Pending;
  struct UnitState;
  class Group;

  EventStore() = default;
  absl::Status Load();
  absl::Status RebuildFromLog();
  void WriterLoop();

  EventStoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;

  // Written only by the writer thread (and Open); readers hold sums_mutex_
  // shared, the writer holds it exclusively to publish a commit.
  mutable std::shared_mutex sums_mutex_;
  std::map<std::string, ExperimentSums, std::less<>> sums_;
  uint64_t next_sequence_ = 0;  // writer thread only

  mutable std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<std::unique_ptr<Pending>> queue_;
  size_t queued_events_ = 0;  // queued or being written
  bool stopping_ = false;
  std::thread writer_;

  std::atomic<uint64_t> published_next_sequence_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> duplicates_{0};
  std::atomic<uint64_t> group_commits_{0};
  std::atomic<uint64_t> conflicting_exposures_{0};
};

// The sums as a JSON document and back (the "a" records).
std::string EncodeExperimentSums(const ExperimentSums& sums);
absl::StatusOr<ExperimentSums> DecodeExperimentSums(std::string_view text);

}  // namespace capstan::experiments
