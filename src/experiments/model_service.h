// The native layered model (model.h, snapshot.h) served by the experiments
// service: its documents as ConfigStore kinds, an Assigner that follows the
// watched configuration, and the evaluation and analysis endpoints.
//
// Data flow:
//   PUT /v1/experiments/e1 ─► ConfigStore::Put
//       validator: ParseModelDocument (the field's path, 400)
//       write check (after the write's linearizable read): CheckExperimentUpdate
//         against the stored experiment (frozen fields, IsLegalTransition), and
//         ConfigSnapshot::Build over the store's model documents with this one
//         replaced: a write that breaks a set that built is refused (400); a
//         running experiment in the live model is not deleted (stop it first)
//   ─► store ─► ConfigWatcher ─► OnSnapshot: ParseModelDocument every model
//       document, ConfigSnapshot::Build; success ─► Assigner::SetSnapshot,
//       failure ─► the last good snapshot stays, the error is logged and shown
//       by GET /v1/status (a bad set never replaces a good one)
//   ─► POST /v1/evaluate, /v1/evaluate/batch: Assigner::Evaluate per unit,
//       ExposureLogger (each (experiment, variant, unit) once) ─► sink
//
// Endpoints:
//   POST /v1/evaluate        {"attributes": {...}, "exposures"?: bool}
//                            -> {"assignments": [...], "parameters": {...},
//                                "flags": {...}, "holdouts": [...], "generation": n}
//                            (generation: the configuration the answer was
//                            computed on, or an older one: a lower bound)
//   POST /v1/evaluate/batch  {"units": [{"attributes": {...}}, ...]} (or the bare
//                            array), at most max_batch_units (413 past it)
//                            -> {"results": [...], "generation": n}
//   POST /v1/analyze         an AnalyzeJson request ({"op": "welchTTest", ...})
//   GET  /v1/status          {"model": {"ok", "generation", "revision", "experiments", ...,
//                                        "error"?: {"message","document","field",...}}}
//                            (revision: the newest store revision among the
//                            documents the model was built from)
//   GET  /v1/experiments/{id}/lifecycle
//                            the experiment's state changes from its change
//                            history: {"experiment", "state", "transitions":
//                            [{"from", "to", "by", "at", "version", "sequence"}]}
//                            oldest first; "from" null at creation, "to" null
//                            for a delete; 404 when it was never written
// Errors as the service's (service.h): 400 naming the field, 413, 503 before
// the first listing.
//
// Thread-safety: the handlers run on any worker thread at once; OnSnapshot
// runs on the watcher's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/metrics.h"
#include "base/mutex.h"
#include "experiments/assigner.h"
#include "experiments/config_store.h"
#include "experiments/model.h"
#include "experiments/service.h"

namespace capstan::experiments {

// The model's kinds in the store ("units", "domains", ...): DocumentKindDirectory.
const std::vector<DocumentKind>& ModelKinds();

// Parses one stored spec of `kind` at `id` ("id" may be omitted: it is the
// document's). Errors are InvalidArgument, one line per problem, each
// starting with the field's path ("variants[1].weight: must be in [0,1]").
absl::StatusOr<ModelDocument> ParseModelSpec(DocumentKind kind, const std::string& id,
                                             const Json& spec);

// Every model document of a configuration snapshot, parsed, then
// ConfigSnapshot::Build. Errors name the document: "<kind>/<id>: <field>: ...".
absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> BuildModelSnapshot(
    const DocumentSnapshot& documents);

// The lifecycle view of an experiment's change history (ConfigStore::History
// of "experiments"/`id`): the records that changed its state (a creation, an
// update to another state, a delete), as GET /v1/experiments/{id}/lifecycle
// answers. A record whose document does not parse counts as its "state" text,
// or "draft" when it has none.
Json ExperimentLifecycle(const std::string& id, const std::vector<HistoryRecord>& history);

struct LayeredModelOptions {
  // Units in one POST /v1/evaluate/batch; more is answered 413.
  size_t max_batch_units = 1000;
  // Slots of the exposure deduplication table (8 bytes each: 8 MiB by default).
  size_t exposure_capacity = 1 << 20;
  // Where exposures go; default: the log at debug level (events and
  // aggregation are not built yet).
  ExposureLogger::Sink exposure_sink;
};

class LayeredModelService {
 public:
  // The service's extension: registers the kinds and write checks on
  // context.store, subscribes to context.watcher, adds the routes and
  // metrics. The result must outlive the watcher's subscription (the
  // destructor unsubscribes) and the router's use.
  static absl::StatusOr<std::unique_ptr<LayeredModelService>> Install(
      const ServiceContext& context, LayeredModelOptions options = {});
  ~LayeredModelService();
  LayeredModelService(const LayeredModelService&) = delete;
  LayeredModelService& operator=(const LayeredModelService&) = delete;

  const Assigner& assigner() const { return assigner_; }
  const ExposureLogger& exposures() const { return exposures_; }
  // What GET /v1/status shows under "model".
  Json StatusJson() const;

  // Transport-neutral steps of evaluation, shared by the HTTP handlers below
  // and the RPC service (src/experiments_rpc): a handler checks the serving
  // generation and the batch size, then evaluates each unit's attributes.
  //
  // The configuration generation answers are computed on now (or a newer
  // one: read it before evaluating); Unavailable before the first build.
  absl::StatusOr<uint64_t> ServingGeneration() const;
  // InvalidArgument naming `field` when a batch has more than max_batch_units.
  absl::Status CheckBatchSize(size_t units, std::string_view field) const;
  size_t max_batch_units() const { return options_.max_batch_units; }
  // Evaluates a unit into *result (reused across a batch) and logs its
  // exposures when `log`. InvalidArgument "<field>: must be an object" when
  // the attributes are not a JSON object.
  absl::Status EvaluateAttributes(const Json& attributes, std::string_view field, bool log,
                                  EvaluationResult* result);
  // Attributes sent as JSON text: InvalidArgument naming `field` when it is
  // not a JSON object.
  static absl::StatusOr<Json> ParseAttributes(std::string_view text, std::string_view field);

  // The handlers, on a request's body (public for tests).
  net::HttpResponse Evaluate(const std::string& body);
  net::HttpResponse EvaluateBatch(const std::string& body);
  static net::HttpResponse Analyze(const std::string& body);
  // What POST /v1/analyze computes from its body (AnalyzeJson), for both APIs.
  static absl::StatusOr<Json> AnalyzeText(std::string_view body);

  // The watcher's subscriber (public for tests).
  void OnSnapshot(const std::shared_ptr<const DocumentSnapshot>& documents);

 private:
  LayeredModelService(const ServiceContext& context, LayeredModelOptions options);
  absl::Status CheckWrite(DocumentKind kind, const std::string& id, const Json* before,
                          const Json* after) const;
  // Evaluates one unit's {"attributes": ...} into JSON (through `result`,
  // reused across a batch); InvalidArgument naming `field` when it is not one.
  absl::StatusOr<Json> EvaluateUnitJson(const Json& unit, const std::string& field, bool log,
                                        EvaluationResult* result);

  ServiceContext context_;
  LayeredModelOptions options_;
  Assigner assigner_;
  ExposureLogger exposures_;
  uint64_t subscription_ = 0;

  metrics::Counter* evaluations_ = nullptr;
  metrics::Counter* builds_ = nullptr;
  metrics::Counter* build_failures_ = nullptr;
  metrics::Counter* writes_refused_ = nullptr;

  mutable Mutex mu_;
  // The configuration generation the assigner's snapshot was built from (0: none yet).
  uint64_t good_generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t seen_generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool attempted_ ABSL_GUARDED_BY(mu_) = false;  // a build was tried
  // The last build's failure, cleared by a success.
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t failed_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // The documents of the last build, to skip rebuilding when only other
  // kinds (GrowthBook's) changed: the watcher shares unchanged documents.
  std::vector<std::shared_ptr<const ConfigDocument>> last_inputs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace capstan::experiments
