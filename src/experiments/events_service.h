// The event endpoints of `capstan experiments serve`, added to the service
// through its ServiceExtension hook (service.h):
//   POST /v1/events                     a batch of JSON-lines events (events.h);
//                                       200 {"accepted", "duplicates"} once durable,
//                                       400 naming the line and field, 429 with
//                                       Retry-After when the pipeline is behind,
//                                       503 when the write failed (retrying the
//                                       same batch is safe: keys deduplicate)
//   GET  /v1/experiments/{id}/results   per metric and variant n, mean, lift with
//                                       CI, p-value and adjusted p-value, CUPED; SRM
//                                       status (event_results.h), after the aggregation
//                                       reached every acknowledged event; control,
//                                       variants, weights and analysis settings from
//                                       the experiment's definition in the watched
//                                       model when it has one; ?control=NAME&alpha=0.05
//                                       &weights=a:1,b:1&correction=holm|bh|none
//                                       &sequential=true&sequentialTuning=5000 override them
//   GET  /v1/events/status              log, aggregation and checkpoint
//                                       sequences, accepted, duplicates, queue,
//                                       the log's first retained event, segments
//                                       and bytes
// Metrics: capstan_experiments_events_{accepted,duplicates,rejected_batches,
// throttled_batches,log_segments_removed}_total, capstan_experiments_events_{queued,
// log_sequence,aggregated_sequence,log_first_sequence,log_segments,log_bytes}.
// docs/experiments-events.md describes the format, limits and guarantees.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "experiments/event_store.h"
#include "experiments/events_api.h"
#include "experiments/service.h"

namespace capstan::experiments {

struct EventsOptions {
  // The event database's directory (RocksDB); created if missing.
  std::string directory;
  size_t max_queued_events = 100000;
  // EventStoreOptions::checkpoint_events.
  size_t checkpoint_events = 250000;
  // EventStoreOptions' dedup window and log retention (--events-dedup-window,
  // --events-retention, --events-retention-bytes, --events-segment-bytes).
  size_t dedup_window_keys = 10000000;
  int64_t retention_ms = int64_t{7} * 24 * 3600 * 1000;  // < 0: no time limit
  uint64_t retention_bytes = 0;                          // 0: no size cap
  size_t segment_bytes = 64 << 20;
  // EventStoreOptions::max_cached_units (--events-max-cached-units).
  size_t max_cached_units = 2000000;
  // What a 429 asks the client to wait.
  int retry_after_seconds = 1;
  // Passed to the store (tests).
  bool rebuild_on_open = false;
  std::function<void()> before_group_write;
  // Called once the store is open with the API the routes use, for other
  // transports (the RPC service, src/experiments_rpc) to share it.
  std::function<void(std::shared_ptr<EventsApi>)> on_open;
};

// Opens the event store when the service starts and registers the routes and
// metrics. The store lives as long as the service's routes.
ServiceExtension MakeEventsExtension(EventsOptions options);

}  // namespace capstan::experiments
