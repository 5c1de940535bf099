#include "experiments/events_service.h"

#include <cmath>
#include <memory>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "experiments/event_results.h"
#include "experiments/model_service.h"
#include "net/http_router.h"

namespace capstan::experiments {
namespace {

using JsonValue = nlohmann::ordered_json;

net::HttpResponse InvalidBatch(const EventDecodeError& e, const absl::Status& status) {
  JsonValue error = {
      {"code", "invalid"}, {"message", std::string(status.message())}, {"field", e.field}};
  if (e.line > 0) error["line"] = e.line;
  return net::JsonResponse(400, JsonValue{{"error", std::move(error)}}.dump());
}

// ?control=NAME&alpha=X&weights=a:1,b:2&correction=holm&sequential=true&sequentialTuning=N
// (values percent-decoded) applied over `options` (the experiment's
// definition, or the defaults).
absl::Status ApplyResultsQuery(std::string_view query, ResultsOptions* options) {
  for (absl::string_view pair :
       absl::StrSplit(absl::string_view(query.data(), query.size()), '&', absl::SkipEmpty())) {
    size_t eq = pair.find('=');
    std::string name(pair.substr(0, eq));
    std::string value;
    if (!net::PercentDecode(eq == absl::string_view::npos ? "" : std::string(pair.substr(eq + 1)),
                            &value)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": bad percent-encoding"));
    }
    if (name == "control") {
      options->control = value;
    } else if (name == "alpha") {
      if (!absl::SimpleAtod(value, &options->alpha)) {
        return absl::InvalidArgumentError("alpha: must be a number in (0, 1)");
      }
    } else if (name == "weights") {
      options->weights.clear();
      for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        size_t colon = item.rfind(':');
        double weight = 0;
        if (colon == absl::string_view::npos ||
            !absl::SimpleAtod(item.substr(colon + 1), &weight) || !(weight >= 0) ||
            !std::isfinite(weight)) {
          return absl::InvalidArgumentError(
              "weights: must be variant:weight pairs, comma-separated, weights >= 0");
        }
        options->weights[std::string(item.substr(0, colon))] = weight;
      }
    } else if (name == "correction") {
      std::optional<PValueCorrection> correction = ParsePValueCorrection(value);
      if (!correction.has_value()) {
        return absl::InvalidArgumentError("correction: must be holm, bh or none");
      }
      options->correction = *correction;
    } else if (name == "sequential") {
      if (value != "true" && value != "false") {
        return absl::InvalidArgumentError("sequential: must be true or false");
      }
      options->sequential = value == "true";
    } else if (name == "sequentialTuning") {
      if (!absl::SimpleAtod(value, &options->sequential_tuning)) {
        return absl::InvalidArgumentError("sequentialTuning: must be a finite number > 0");
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(name, ": unknown parameter"));
    }
  }
  return absl::OkStatus();
}

// The results of experiment `id` (EventsApi::Results: the layered model's
// definition when there is one), the query overriding it.
net::HttpResponse ResultsResponse(const EventsApi& api, const std::string& id,
                                  std::string_view query) {
  absl::StatusOr<JsonValue> results =
      api.Results(id, [&](ResultsOptions* options) { return ApplyResultsQuery(query, options); });
  if (!results.ok()) return ErrorResponse(results.status());
  return net::JsonResponse(200, results->dump());
}

}  // namespace

ServiceExtension MakeEventsExtension(EventsOptions options) {
  return [options](const ServiceContext& context) -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<EventStore> opened,
                     EventStore::Open({.directory = options.directory,
                                       .max_queued_events = options.max_queued_events,
                                       .dedup_window_keys = options.dedup_window_keys,
                                       .checkpoint_events = options.checkpoint_events,
                                       .max_cached_units = options.max_cached_units,
                                       .retention_ms = options.retention_ms,
                                       .retention_bytes = options.retention_bytes,
                                       .segment_bytes = options.segment_bytes,
                                       .rebuild_on_open = options.rebuild_on_open,
                                       .before_group_write = options.before_group_write}));
    std::shared_ptr<EventStore> store = std::move(opened);
    CAPSTAN_LOG(info, "experiments: events enabled", "directory", options.directory, "log_sequence",
                store->Stats().next_sequence);
    auto api = std::make_shared<EventsApi>(store, context.watcher, context.registry,
                                           options.retry_after_seconds);
    if (options.on_open) options.on_open(api);
    context.router->Add(
        "POST", "/v1/events", [api](const net::HttpRequest& request, const net::PathParams&) {
          auto too_many = [&api](const absl::Status& status) {
            net::HttpResponse response =
                net::JsonError(429, "behind", std::string(status.message()));
            response.headers.emplace_back("Retry-After", absl::StrCat(api->retry_after_seconds()));
            return response;
          };
          // Behind: refused before the batch is decoded.
          if (absl::Status admitted = api->Admit(); !admitted.ok()) return too_many(admitted);
          EventDecodeError decode_error;
          // The worker's, reused: its vector keeps its capacity. The events
          // refer to the request's body, alive until Ingest returns.
          thread_local EventBatchRefs batch;
          absl::Status decoded = DecodeEventBatchRefs(request.body, &batch, &decode_error);
          if (!decoded.ok()) {
            api->CountRejected();
            if (request.body.size() > kMaxEventBatchBytes) {
              return net::JsonError(413, "too_large", std::string(decoded.message()));
            }
            return InvalidBatch(decode_error, decoded);
          }
          absl::StatusOr<AppendResult> result = api->Ingest(batch.events);
          if (!result.ok()) {
            if (absl::IsResourceExhausted(result.status())) return too_many(result.status());
            return net::JsonError(503, "unavailable", std::string(result.status().message()));
          }
          return net::JsonResponse(
              200,
              JsonValue{{"accepted", result->accepted}, {"duplicates", result->duplicates}}.dump());
        });
    context.router->Add("GET", "/v1/experiments/{id}/results",
                        [api](const net::HttpRequest& request, const net::PathParams& params) {
                          return ResultsResponse(*api, params.at("id"), request.query);
                        });
    context.router->Add(
        "GET", "/v1/events/status", [api](const net::HttpRequest&, const net::PathParams&) {
          EventStoreStats s = api->Stats();
          return net::JsonResponse(200, JsonValue{{"logSequence", s.next_sequence},
                                                  {"accepted", s.accepted},
                                                  {"duplicates", s.duplicates},
                                                  {"groupCommits", s.group_commits},
                                                  {"aggregatedSequence", s.aggregated_sequence},
                                                  {"checkpointSequence", s.checkpoint_sequence},
                                                  {"checkpoints", s.checkpoints},
                                                  {"replayedOnOpen", s.replayed_on_open},
                                                  {"conflictingExposures", s.conflicting_exposures},
                                                  {"heldEventsDropped", s.held_events_dropped},
                                                  {"dedupKeys", s.dedup_keys},
                                                  {"cachedUnits", s.cached_units},
                                                  {"unitsReadBack", s.units_read_back},
                                                  {"queuedEvents", s.queued_events},
                                                  {"logFirstSequence", s.log_first_sequence},
                                                  {"logSegments", s.log_segments},
                                                  {"logBytes", s.log_bytes},
                                                  {"logSegmentsRemoved", s.log_segments_removed},
                                                  {"aggregationFailed", s.aggregation_failed}}
                                            .dump());
        });
    return absl::OkStatus();
  };
}

}  // namespace capstan::experiments
