#include "experiments/events_api.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "experiments/model_service.h"

namespace capstan::experiments {

absl::StatusOr<std::vector<Event>> CheckEvents(std::vector<Event> events, EventDecodeError* error) {
  EventDecodeError local;
  EventDecodeError* e = error != nullptr ? error : &local;
  if (events.empty() || events.size() > kMaxEventsPerBatch) {
    e->line = 0;
    e->field = "(body)";
    e->message = events.empty()
                     ? std::string("has no events")
                     : absl::StrCat("has ", events.size(), " events; at most ", kMaxEventsPerBatch);
    return absl::InvalidArgumentError(absl::StrCat(e->field, ": ", e->message));
  }
  for (size_t i = 0; i < events.size(); ++i) {
    if (!CheckEvent(&events[i], i + 1, e)) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", e->line, ": ", e->field, ": ", e->message));
    }
  }
  return events;
}

EventsApi::EventsApi(std::shared_ptr<EventStore> store, const ConfigWatcher* watcher,
                     metrics::Registry* registry, int retry_after_seconds)
    : store_(std::move(store)), watcher_(watcher), retry_after_seconds_(retry_after_seconds) {
  metrics::Registry& reg = *registry;
  accepted_ = reg.AddCounter("capstan_experiments_events_accepted_total",
                             "Events written to the durable log.");
  duplicates_ =
      reg.AddCounter("capstan_experiments_events_duplicates_total",
                     "Events whose idempotency key was accepted before (not counted again).");
  rejected_ = reg.AddCounter("capstan_experiments_events_rejected_batches_total",
                             "Event batches refused as invalid (400).");
  throttled_ = reg.AddCounter("capstan_experiments_events_throttled_batches_total",
                              "Event batches refused because the pipeline was behind (429).");
  std::shared_ptr<EventStore> s = store_;
  reg.AddGaugeFunc("capstan_experiments_events_queued", "Events queued or being written.",
                   [s] { return static_cast<double>(s->Stats().queued_events); });
  reg.AddGaugeFunc("capstan_experiments_events_log_sequence", "Events in the durable log.",
                   [s] { return static_cast<double>(s->Stats().next_sequence); });
  reg.AddGaugeFunc("capstan_experiments_events_aggregated_sequence",
                   "Events of the log reflected in the results.",
                   [s] { return static_cast<double>(s->Stats().aggregated_sequence); });
  // Retention (event_store.h, "3."): what the log holds and what it dropped.
  reg.AddGaugeFunc("capstan_experiments_events_log_first_sequence",
                   "The first event still in the durable log (retention removed those before).",
                   [s] { return static_cast<double>(s->Stats().log_first_sequence); });
  reg.AddGaugeFunc("capstan_experiments_events_log_segments", "Segment files in the durable log.",
                   [s] { return static_cast<double>(s->Stats().log_segments); });
  reg.AddGaugeFunc("capstan_experiments_events_log_bytes",
                   "Bytes of the durable log's segments (headers and records).",
                   [s] { return static_cast<double>(s->Stats().log_bytes); });
  reg.AddGaugeFunc("capstan_experiments_events_log_segments_removed_total",
                   "Log segments removed by retention since the service started.",
                   [s] { return static_cast<double>(s->Stats().log_segments_removed); });
}

absl::Status EventsApi::Throttled(const absl::Status& status) {
  throttled_->Inc();
  return absl::ResourceExhaustedError(
      absl::StrCat(status.message(), "; retry after ", retry_after_seconds_, " s"));
}

absl::Status EventsApi::Admit() {
  absl::Status status = store_->Admit();
  return status.ok() ? status : Throttled(status);
}

absl::StatusOr<AppendResult> EventsApi::Ingest(std::span<const EventRef> events) {
  absl::StatusOr<AppendResult> result = store_->Append(events);
  if (!result.ok()) {
    if (absl::IsResourceExhausted(result.status())) return Throttled(result.status());
    return result.status();
  }
  accepted_->Inc(result->accepted);
  duplicates_->Inc(result->duplicates);
  return result;
}

void EventsApi::CountRejected() { rejected_->Inc(); }

absl::StatusOr<nlohmann::ordered_json> EventsApi::Results(
    std::string_view experiment, absl::FunctionRef<absl::Status(ResultsOptions*)> overrides) const {
  if (store_->Stats().aggregation_failed) {
    return absl::UnavailableError(
        "the event aggregation stopped on an error (see the log); restart the service to replay "
        "the log");
  }
  ResultsOptions options;
  std::string definition_error;
  if (watcher_ != nullptr) {
    std::shared_ptr<const DocumentSnapshot> documents = watcher_->snapshot();
    if (const ConfigDocument* document =
            documents->Find(DocumentKindDirectory(DocumentKind::kExperiment), experiment)) {
      const std::string id(experiment);
      absl::StatusOr<ModelDocument> parsed =
          ParseModelSpec(DocumentKind::kExperiment, id, document->spec);
      if (parsed.ok()) {
        options = ResultsOptionsFromExperiment(std::get<ExperimentDoc>(parsed->object));
      } else {
        // Written behind the API's back: say so, and analyse the events alone.
        definition_error = std::string(parsed.status().message());
      }
    }
  }
  RETURN_IF_ERROR(overrides(&options));
  ASSIGN_OR_RETURN(nlohmann::ordered_json results,
                   experiments::Results(*store_, experiment, options));
  if (!definition_error.empty()) results["definitionError"] = definition_error;
  return results;
}

}  // namespace capstan::experiments
