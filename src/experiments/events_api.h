// EventsApi: what the event endpoints do, apart from their transport, so the
// HTTP handlers (events_service.cc: POST /v1/events, GET
// /v1/experiments/{id}/results, GET /v1/events/status) and the RPC service
// (src/experiments_rpc: IngestEvents, GetResults, Status) share one path:
// the decoder's checks, EventStore::Append (durable before the answer,
// back-pressure as ResourceExhausted), the counters, the results.
//
//   std::shared_ptr<EventsApi> api = ...;            // from MakeEventsExtension's on_open
//   absl::StatusOr<std::vector<Event>> events = CheckEvents(std::move(typed), &error);
//   absl::StatusOr<AppendResult> r = api->Ingest(RefsOf(*events));
// (the services' own paths decode into EventRefs that point into the
// request and Ingest those: no event's strings are copied before the log).
//
// Thread-safety: every method from any thread at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "base/metrics.h"
#include "experiments/config_store.h"
#include "experiments/event_results.h"
#include "experiments/event_store.h"
#include "experiments/events.h"

namespace capstan::experiments {

// Checks events that arrived typed (not as JSON lines) by the decoder's own
// rules (CheckEvent, events.h: no JSON in between) and returns them
// normalized as the decoder would. On error, *error's line is the event's
// 1-based position. An empty batch and one over kMaxEventsPerBatch are
// refused ("(body)").
absl::StatusOr<std::vector<Event>> CheckEvents(std::vector<Event> events, EventDecodeError* error);

class EventsApi {
 public:
  // Registers the capstan_experiments_events_* metrics on `registry`.
  // `watcher` (may be null) gives the experiments' definitions for results.
  EventsApi(std::shared_ptr<EventStore> store, const ConfigWatcher* watcher,
            metrics::Registry* registry, int retry_after_seconds);
  EventsApi(const EventsApi&) = delete;
  EventsApi& operator=(const EventsApi&) = delete;

  // Appends a checked batch; returns once it is durable. ResourceExhausted
  // when the pipeline is behind (retry after retry_after_seconds(); the
  // message says so), Unavailable / Internal when the write failed (the same
  // batch may be sent again: keys deduplicate).
  // The events' strings must live until it returns (EventStore::Append).
  absl::StatusOr<AppendResult> Ingest(std::span<const EventRef> events);
  // Ingest's ResourceExhausted for any batch while the aggregation is
  // behind, answered before the batch is decoded (shedding load costs no
  // decoding); OK when a batch would be taken.
  absl::Status Admit();
  // A batch refused before Ingest (invalid, too large), for the metrics.
  void CountRejected();
  int retry_after_seconds() const { return retry_after_seconds_; }

  // The experiment's results as of the last commit (event_results.h):
  // analysed as the layered model defines it when the watched configuration
  // has it (ResultsOptionsFromExperiment), else over the variants its events
  // name; `overrides` (the HTTP query, the RPC request's fields) then change
  // the options, and may refuse with InvalidArgument naming the field. A
  // definition that does not parse is reported as "definitionError".
  absl::StatusOr<nlohmann::ordered_json> Results(
      std::string_view experiment,
      absl::FunctionRef<absl::Status(ResultsOptions*)> overrides) const;
  EventStoreStats Stats() const { return store_->Stats(); }

 private:
  // Counts a throttled batch; the status names when to retry.
  absl::Status Throttled(const absl::Status& status);

  std::shared_ptr<EventStore> store_;
  const ConfigWatcher* watcher_;
  int retry_after_seconds_;
  metrics::Counter* accepted_;
  metrics::Counter* duplicates_;
  metrics::Counter* rejected_;
  metrics::Counter* throttled_;
};

}  // namespace capstan::experiments
