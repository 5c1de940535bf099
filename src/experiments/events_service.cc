#include "experiments/events_service.h"

#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "experiments/event_results.h"
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

// ?control=NAME&alpha=X&weights=a:1,b:2 (values percent-decoded).
absl::StatusOr<ResultsOptions> ParseResultsQuery(std::string_view query) {
  ResultsOptions options;
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
      options.control = value;
    } else if (name == "alpha") {
      if (!absl::SimpleAtod(value, &options.alpha)) {
        return absl::InvalidArgumentError("alpha: must be a number in (0, 1)");
      }
    } else if (name == "weights") {
      for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        size_t colon = item.rfind(':');
        double weight = 0;
        if (colon == absl::string_view::npos ||
            !absl::SimpleAtod(item.substr(colon + 1), &weight) || !(weight >= 0)) {
          return absl::InvalidArgumentError(
              "weights: must be variant:weight pairs, comma-separated, weights >= 0");
        }
        options.weights[std::string(item.substr(0, colon))] = weight;
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(name, ": unknown parameter"));
    }
  }
  return options;
}

}  // namespace

ServiceExtension MakeEventsExtension(EventsOptions options) {
  return [options](const ServiceContext& context) -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<EventStore> opened,
                     EventStore::Open({.directory = options.directory,
                                       .max_queued_events = options.max_queued_events,
                                       .checkpoint_events = options.checkpoint_events,
                                       .rebuild_on_open = options.rebuild_on_open,
                                       .before_group_write = options.before_group_write}));
    std::shared_ptr<EventStore> store = std::move(opened);
    CAPSTAN_LOG(info, "experiments: events enabled", "directory", options.directory, "log_sequence",
                store->Stats().next_sequence);
    metrics::Registry& reg = *context.registry;
    metrics::Counter* accepted = reg.AddCounter("capstan_experiments_events_accepted_total",
                                                "Events written to the durable log.");
    metrics::Counter* duplicates =
        reg.AddCounter("capstan_experiments_events_duplicates_total",
                       "Events whose idempotency key was accepted before (not counted again).");
    metrics::Counter* rejected = reg.AddCounter("capstan_experiments_events_rejected_batches_total",
                                                "Event batches refused as invalid (400).");
    metrics::Counter* throttled =
        reg.AddCounter("capstan_experiments_events_throttled_batches_total",
                       "Event batches refused because the pipeline was behind (429).");
    reg.AddGaugeFunc("capstan_experiments_events_queued", "Events queued or being written.",
                     [store] { return static_cast<double>(store->Stats().queued_events); });
    reg.AddGaugeFunc("capstan_experiments_events_log_sequence", "Events in the durable log.",
                     [store] { return static_cast<double>(store->Stats().next_sequence); });
    reg.AddGaugeFunc("capstan_experiments_events_aggregated_sequence",
                     "Events of the log reflected in the results.",
                     [store] { return static_cast<double>(store->Stats().aggregated_sequence); });

    int retry_after = options.retry_after_seconds;
    context.router->Add(
        "POST", "/v1/events",
        [store, accepted, duplicates, rejected, throttled, retry_after](
            const net::HttpRequest& request, const net::PathParams&) {
          EventDecodeError decode_error;
          absl::StatusOr<std::vector<Event>> events = DecodeEventBatch(request.body, &decode_error);
          if (!events.ok()) {
            rejected->Inc();
            if (request.body.size() > kMaxEventBatchBytes) {
              return net::JsonError(413, "too_large", std::string(events.status().message()));
            }
            return InvalidBatch(decode_error, events.status());
          }
          absl::StatusOr<AppendResult> result = store->Append(*std::move(events));
          if (!result.ok()) {
            if (absl::IsResourceExhausted(result.status())) {
              throttled->Inc();
              net::HttpResponse response =
                  net::JsonError(429, "behind", std::string(result.status().message()));
              response.headers.emplace_back("Retry-After", absl::StrCat(retry_after));
              return response;
            }
            return net::JsonError(503, "unavailable", std::string(result.status().message()));
          }
          accepted->Inc(result->accepted);
          duplicates->Inc(result->duplicates);
          return net::JsonResponse(
              200,
              JsonValue{{"accepted", result->accepted}, {"duplicates", result->duplicates}}.dump());
        });
    context.router->Add("GET", "/v1/experiments/{id}/results",
                        [store](const net::HttpRequest& request, const net::PathParams& params) {
                          absl::StatusOr<ResultsOptions> query = ParseResultsQuery(request.query);
                          if (!query.ok()) return ErrorResponse(query.status());
                          if (store->Stats().aggregation_failed) {
                            return net::JsonError(
                                503, "unavailable",
                                "the event aggregation stopped on an error (see the log); "
                                "restart the service to replay the log");
                          }
                          const std::string& id = params.at("id");
                          absl::StatusOr<JsonValue> results = Results(*store, id, *query);
                          if (!results.ok()) return ErrorResponse(results.status());
                          return net::JsonResponse(200, results->dump());
                        });
    context.router->Add(
        "GET", "/v1/events/status", [store](const net::HttpRequest&, const net::PathParams&) {
          EventStoreStats s = store->Stats();
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
                                                  {"queuedEvents", s.queued_events},
                                                  {"aggregationFailed", s.aggregation_failed}}
                                            .dump());
        });
    return absl::OkStatus();
  };
}

}  // namespace capstan::experiments
