#include "experiments/model_service.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "experiments/analyze.h"

namespace capstan::experiments {
namespace {

std::string Sv(std::string_view s) { return std::string(s); }

// "<kind>/<id>", as model.h and snapshot.h name a document in their errors.
std::string DocumentName(DocumentKind kind, std::string_view id) {
  return absl::StrCat(Sv(DocumentKindDirectory(kind)), "/", Sv(id));
}

// The lines of an InvalidArgument from model.h / snapshot.h.
std::vector<std::string> ErrorLines(const absl::Status& status) {
  std::vector<std::string> lines;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(status.message().data(), status.message().size()), '\n')) {
    if (!line.empty()) lines.emplace_back(line);
  }
  return lines;
}

// Of the error lines, those about `name`, with "<name>: " removed so they
// start with the field's path (the service's contract: "field" is what comes
// before the first ": "). Others are kept whole when `keep_others`.
std::string ErrorsAbout(const absl::Status& status, const std::string& name, bool keep_others) {
  const std::string own = name + ": ";
  std::vector<std::string> kept;
  for (std::string& line : ErrorLines(status)) {
    if (line.compare(0, own.size(), own) == 0) {
      kept.push_back(line.substr(own.size()));
    } else if (keep_others) {
      kept.push_back(std::move(line));
    }
  }
  return absl::StrJoin(kept, "\n");
}

// The parts of "<kind>/<id>: <field>: <message>".
Json DescribeError(const absl::Status& status) {
  Json error = {{"message", std::string(status.message())}};
  std::vector<std::string> lines = ErrorLines(status);
  if (lines.empty()) return error;
  std::vector<std::string> parts = absl::StrSplit(lines.front(), absl::MaxSplits(": ", 2));
  if (parts.size() >= 2 && parts[0].find('/') != std::string::npos) {
    error["document"] = parts[0];
    if (parts.size() == 3) error["field"] = parts[1];
  }
  return error;
}

net::HttpResponse Invalid(std::string message) {
  return ErrorResponse(absl::InvalidArgumentError(std::move(message)));
}

Json ParseBody(std::string_view body) {
  return Json::parse(body, nullptr, /*allow_exceptions=*/false);
}

void LogExposure(const Exposure& e) {
  CAPSTAN_LOG(debug, "experiments: exposure", "experiment", e.experiment, "variant", e.variant,
              "layer", e.layer, "unit_type", e.unit_type, "unit", e.unit);
}

}  // namespace

const std::vector<DocumentKind>& ModelKinds() {
  static const std::vector<DocumentKind> kKinds = {
      DocumentKind::kUnitType,   DocumentKind::kDomain,  DocumentKind::kLayer,
      DocumentKind::kExperiment, DocumentKind::kHoldout, DocumentKind::kSavedGroup,
      DocumentKind::kFlag};
  return kKinds;
}

absl::StatusOr<ModelDocument> ParseModelSpec(DocumentKind kind, const std::string& id,
                                             const Json& spec) {
  std::string name = DocumentName(kind, id);
  if (!spec.is_object()) return absl::InvalidArgumentError("(body): must be a JSON object");
  if (!IsValidModelId(id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "id: \"", id, "\" is not 1-128 of the characters A-Z a-z 0-9 . _ - (the model's ids)"));
  }
  auto given = spec.find("id");
  if (given != spec.end() && (!given->is_string() || given->get<std::string>() != id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("id: must equal the document's id \"", id, "\" (or be left out)"));
  }
  absl::StatusOr<ModelDocument> parsed;
  if (given == spec.end()) {
    // The document's id is its place in the store; the model wants it inside.
    Json with_id = spec;
    with_id["id"] = id;
    parsed = ParseModelDocument(kind, with_id);
  } else {
    parsed = ParseModelDocument(kind, spec);
  }
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(ErrorsAbout(parsed.status(), name, /*keep_others=*/true));
  }
  return parsed;
}

absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> BuildModelSnapshot(
    const DocumentSnapshot& documents) {
  std::vector<ModelDocument> parsed;
  std::vector<std::string> errors;
  for (DocumentKind kind : ModelKinds()) {
    for (const auto& [id, document] : documents.Of(DocumentKindDirectory(kind))) {
      absl::StatusOr<ModelDocument> doc = ParseModelSpec(kind, id, document->spec);
      if (!doc.ok()) {
        for (const std::string& line : ErrorLines(doc.status()))
          errors.push_back(absl::StrCat(DocumentName(kind, id), ": ", line));
        continue;
      }
      doc->revision = document->revision;
      parsed.push_back(*std::move(doc));
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  return ConfigSnapshot::Build(std::move(parsed));
}

Json ExperimentLifecycle(const std::string& id, const std::vector<HistoryRecord>& history) {
  Json transitions = Json::array();
  Json state;  // null: absent (before creation, after a delete)
  for (const HistoryRecord& entry : history) {
    const Json& record = entry.record;
    Json next;
    auto document = record.find("document");
    if (document != record.end() && document->is_object()) {
      next = "draft";  // the model's default
      auto spec = document->find("spec");
      if (spec != document->end() && spec->is_object()) {
        auto named = spec->find("state");
        if (named != spec->end() && named->is_string()) next = *named;
      }
    }
    if (next == state) continue;
    auto field = [&](const char* name) {
      auto it = record.find(name);
      return it == record.end() ? Json() : *it;
    };
    transitions.push_back({{"from", state},
                           {"to", next},
                           {"by", field("user")},
                           {"at", field("at")},
                           {"version", field("version")},
                           {"sequence", entry.sequence}});
    state = std::move(next);
  }
  return {{"experiment", id}, {"state", state}, {"transitions", std::move(transitions)}};
}

LayeredModelService::LayeredModelService(const ServiceContext& context, LayeredModelOptions options)
    : context_(context),
      options_(std::move(options)),
      exposures_(options_.exposure_capacity, options_.exposure_sink
                                                 ? options_.exposure_sink
                                                 : ExposureLogger::Sink(&LogExposure)) {}

absl::StatusOr<std::unique_ptr<LayeredModelService>> LayeredModelService::Install(
    const ServiceContext& context, LayeredModelOptions options) {
  if (options.max_batch_units == 0) {
    return absl::InvalidArgumentError("max_batch_units must be at least 1");
  }
  std::unique_ptr<LayeredModelService> svc(new LayeredModelService(context, std::move(options)));
  LayeredModelService* raw = svc.get();
  for (DocumentKind kind : ModelKinds()) {
    std::string directory(DocumentKindDirectory(kind));
    if (context.store->HasKind(directory)) {
      return absl::AlreadyExistsError(absl::StrCat("kind \"", directory, "\" is taken"));
    }
    context.store->RegisterKind(directory, [kind](const std::string& id, const Json& spec) {
      return ParseModelSpec(kind, id, spec).status();
    });
    context.store->SetWriteCheck(
        directory, [raw, kind](const std::string& id, const Json* before, const Json* after) {
          return raw->CheckWrite(kind, id, before, after);
        });
  }

  metrics::Registry& reg = *context.registry;
  svc->evaluations_ = reg.AddCounter("capstan_experiments_evaluations_total",
                                     "Units evaluated by /v1/evaluate and /v1/evaluate/batch.");
  svc->builds_ = reg.AddCounter("capstan_experiments_model_builds_total",
                                "Layered-model snapshots built from the configuration.");
  svc->build_failures_ =
      reg.AddCounter("capstan_experiments_model_build_failures_total",
                     "Configurations whose layered model did not build (the last good one stays).");
  svc->writes_refused_ =
      reg.AddCounter("capstan_experiments_model_writes_refused_total",
                     "Model writes refused by the update rules or cross-document checks.");
  reg.AddGaugeFunc("capstan_experiments_exposures_logged",
                   "Exposures logged (first sight of an experiment, variant and unit).",
                   [raw] { return static_cast<double>(raw->exposures_.logged()); });
  reg.AddGaugeFunc("capstan_experiments_exposures_deduplicated",
                   "Exposures not logged because they were seen before.",
                   [raw] { return static_cast<double>(raw->exposures_.deduplicated()); });
  reg.AddGaugeFunc("capstan_experiments_model_ok",
                   "1 when the last configuration's layered model built, else 0.", [raw] {
                     MutexLock lock(&raw->mu_);
                     return raw->last_error_.ok() ? 1.0 : 0.0;
                   });

  net::HttpRouter& router = *context.router;
  router.Add("POST", "/v1/evaluate", [raw](const net::HttpRequest& r, const net::PathParams&) {
    return raw->Evaluate(r.body);
  });
  router.Add("POST", "/v1/evaluate/batch",
             [raw](const net::HttpRequest& r, const net::PathParams&) {
               return raw->EvaluateBatch(r.body);
             });
  router.Add("POST", "/v1/analyze",
             [](const net::HttpRequest& r, const net::PathParams&) { return Analyze(r.body); });
  router.Add("GET", "/v1/experiments/{id}/lifecycle",
             [raw](const net::HttpRequest&, const net::PathParams& p) {
               const std::string& id = p.at("id");
               absl::StatusOr<std::vector<HistoryRecord>> history = raw->context_.store->History(
                   std::string(DocumentKindDirectory(DocumentKind::kExperiment)), id);
               if (!history.ok()) return ErrorResponse(history.status());
               if (history->empty()) {
                 return ErrorResponse(
                     absl::NotFoundError(absl::StrCat("experiments/", id, " has no history")));
               }
               return net::JsonResponse(200, ExperimentLifecycle(id, *history).dump());
             });
  router.Add("GET", "/v1/status", [raw](const net::HttpRequest&, const net::PathParams&) {
    return net::JsonResponse(200, Json{{"model", raw->StatusJson()}}.dump());
  });

  // Tests drive OnSnapshot themselves, without a watcher.
  if (context.watcher == nullptr) return svc;
  svc->subscription_ =
      context.watcher->Subscribe([raw](const std::shared_ptr<const DocumentSnapshot>& documents) {
        raw->OnSnapshot(documents);
      });
  return svc;
}

LayeredModelService::~LayeredModelService() {
  if (context_.watcher != nullptr) context_.watcher->Unsubscribe(subscription_);
}

void LayeredModelService::OnSnapshot(const std::shared_ptr<const DocumentSnapshot>& documents) {
  std::vector<std::shared_ptr<const ConfigDocument>> inputs;
  for (DocumentKind kind : ModelKinds()) {
    for (const auto& [id, document] : documents->Of(DocumentKindDirectory(kind)))
      inputs.push_back(document);
  }
  {
    MutexLock lock(&mu_);
    seen_generation_ = documents->generation;
    if (attempted_ && inputs == last_inputs_) {
      // Only other kinds (GrowthBook's) changed: the same model, whether it
      // built or not.
      if (last_error_.ok()) good_generation_ = documents->generation;
      return;
    }
  }
  absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> built = BuildModelSnapshot(*documents);
  MutexLock lock(&mu_);
  attempted_ = true;
  last_inputs_ = std::move(inputs);
  if (!built.ok()) {
    build_failures_->Inc();
    last_error_ = built.status();
    failed_generation_ = documents->generation;
    CAPSTAN_LOG(warn, "experiments: the layered model did not build; keeping the last good one",
                "generation", documents->generation, "kept_generation", good_generation_, "error",
                std::string(built.status().message()));
    return;
  }
  builds_->Inc();
  assigner_.SetSnapshot(*std::move(built));
  good_generation_ = documents->generation;
  last_error_ = absl::OkStatus();
  failed_generation_ = 0;
}

Json LayeredModelService::StatusJson() const {
  std::shared_ptr<const ConfigSnapshot> model = assigner_.snapshot();
  MutexLock lock(&mu_);
  Json out = {{"ok", last_error_.ok() && good_generation_ != 0},
              {"generation", good_generation_},
              {"seenGeneration", seen_generation_},
              {"revision", model->revision()},
              {"layers", model->layers().size()},
              {"experiments", model->experiments().size()},
              {"holdouts", model->holdouts().size()},
              {"flags", model->flags().size()},
              {"parameters", model->parameter_names().size()}};
  if (!last_error_.ok()) {
    Json error = DescribeError(last_error_);
    error["generation"] = failed_generation_;
    out["error"] = std::move(error);
  }
  return out;
}

absl::Status LayeredModelService::CheckWrite(DocumentKind kind, const std::string& id,
                                             const Json* before, const Json* after) const {
  const std::string name = DocumentName(kind, id);
  std::optional<ModelDocument> after_doc;
  if (after != nullptr) {
    absl::StatusOr<ModelDocument> parsed = ParseModelSpec(kind, id, *after);
    if (!parsed.ok()) return parsed.status();  // the validator has said so already
    after_doc = *std::move(parsed);
  }
  // Once an experiment has run, what its units' assignment depends on stays.
  if (kind == DocumentKind::kExperiment && before != nullptr && after_doc.has_value()) {
    absl::StatusOr<ModelDocument> stored = ParseModelSpec(kind, id, *before);
    // A stored document that does not parse (written by hand) has nothing to keep.
    if (stored.ok()) {
      absl::Status update = CheckExperimentUpdate(std::get<ExperimentDoc>(stored->object),
                                                  std::get<ExperimentDoc>(after_doc->object));
      if (!update.ok()) {
        writes_refused_->Inc();
        return absl::InvalidArgumentError(ErrorsAbout(update, name, /*keep_others=*/true));
      }
    }
  }
  // A running experiment that takes traffic is stopped before it goes:
  // deleting it (and creating it again) would otherwise escape the frozen
  // fields above. One that never made it into a model that built (written
  // behind the API's back, say) may go: deleting it mends the set.
  if (kind == DocumentKind::kExperiment && before != nullptr && after == nullptr) {
    std::shared_ptr<const ConfigSnapshot> live = assigner_.snapshot();
    int index = live->ExperimentIndex(id);
    if (index >= 0 && live->experiments()[index].state == ExperimentState::kRunning) {
      writes_refused_->Inc();
      return absl::InvalidArgumentError(
          "state: a running experiment cannot be deleted; stop it first (\"state\": \"stopped\")");
    }
  }
  // The cross-document checks, against the store as it is now (not the
  // watched copy, which may lag behind a write just answered).
  std::vector<ModelDocument> current;
  std::vector<ModelDocument> candidate;
  for (DocumentKind k : ModelKinds()) {
    absl::StatusOr<std::vector<ConfigDocument>> listed =
        context_.store->List(std::string(DocumentKindDirectory(k)));
    if (!listed.ok()) return listed.status();
    for (const ConfigDocument& stored : *listed) {
      absl::StatusOr<ModelDocument> doc = ParseModelSpec(k, stored.id, stored.spec);
      if (!doc.ok()) continue;  // already broken: the watcher reports it
      bool self = k == kind && stored.id == id;
      if (!self) candidate.push_back(*doc);
      current.push_back(*std::move(doc));
    }
  }
  if (after_doc.has_value()) candidate.push_back(*std::move(after_doc));
  absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> with_write =
      ConfigSnapshot::Build(std::move(candidate));
  if (with_write.ok()) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> without_write =
      ConfigSnapshot::Build(std::move(current));
  // A set that built must still build; a set already broken may be mended
  // document by document, so only problems of this document refuse it.
  std::string problems = ErrorsAbout(with_write.status(), name, /*keep_others=*/without_write.ok());
  if (problems.empty()) return absl::OkStatus();
  writes_refused_->Inc();
  if (after == nullptr) {
    problems = absl::StrCat(problems, "\n(deleting ", name, " would leave this)");
  }
  return absl::InvalidArgumentError(problems);
}

absl::StatusOr<uint64_t> LayeredModelService::ServingGeneration() const {
  MutexLock lock(&mu_);
  if (good_generation_ == 0) return absl::UnavailableError("the layered model is not built yet");
  return good_generation_;
}

absl::Status LayeredModelService::CheckBatchSize(size_t units, std::string_view field) const {
  if (units <= options_.max_batch_units) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      Sv(field), ": ", units, " units in one batch; at most ", options_.max_batch_units));
}

absl::Status LayeredModelService::EvaluateAttributes(const Json& attributes, std::string_view field,
                                                     bool log, EvaluationResult* result) {
  if (!attributes.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(field), ": must be an object"));
  }
  assigner_.Evaluate(attributes, result);
  evaluations_->Inc();
  if (log) exposures_.Log(*result);
  return absl::OkStatus();
}

absl::StatusOr<Json> LayeredModelService::ParseAttributes(std::string_view text,
                                                          std::string_view field) {
  Json attributes = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (attributes.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(field), ": is not valid JSON"));
  }
  if (!attributes.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(field), ": must be an object"));
  }
  return attributes;
}

absl::StatusOr<Json> LayeredModelService::EvaluateUnitJson(const Json& unit,
                                                           const std::string& field, bool log,
                                                           EvaluationResult* result) {
  if (!unit.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be an object"));  // a batch's
  }
  auto attributes = unit.find("attributes");
  const std::string attributes_field = absl::StrCat(field.empty() ? "" : field + ".", "attributes");
  if (attributes == unit.end()) {
    return absl::InvalidArgumentError(absl::StrCat(attributes_field, ": must be an object"));
  }
  RETURN_IF_ERROR(EvaluateAttributes(*attributes, attributes_field, log, result));
  return result->ToJson();
}

// "generation" is read before evaluating, so the answer was computed on that
// configuration or a newer one: a client waiting for its write can rely on it.
net::HttpResponse LayeredModelService::Evaluate(const std::string& body) {
  absl::StatusOr<uint64_t> generation = ServingGeneration();
  if (!generation.ok()) {
    return net::JsonError(503, "unavailable", std::string(generation.status().message()));
  }
  Json request = ParseBody(body);
  if (request.is_discarded()) return Invalid("(body): is not valid JSON");
  if (!request.is_object()) return Invalid("(body): must be a JSON object {\"attributes\": {...}}");
  bool log = true;
  if (auto it = request.find("exposures"); it != request.end()) {
    if (!it->is_boolean()) return Invalid("exposures: must be true or false");
    log = it->get<bool>();
  }
  EvaluationResult evaluation;  // holds the snapshot it evaluated on
  absl::StatusOr<Json> result = EvaluateUnitJson(request, "", log, &evaluation);
  if (!result.ok()) return ErrorResponse(result.status());
  (*result)["generation"] = *generation;
  return net::JsonResponse(200, result->dump());
}

net::HttpResponse LayeredModelService::EvaluateBatch(const std::string& body) {
  absl::StatusOr<uint64_t> generation = ServingGeneration();
  if (!generation.ok()) {
    return net::JsonError(503, "unavailable", std::string(generation.status().message()));
  }
  Json request = ParseBody(body);
  if (request.is_discarded()) return Invalid("(body): is not valid JSON");
  bool log = true;
  const Json* units = &request;
  if (request.is_object()) {
    auto it = request.find("units");
    if (it == request.end()) return Invalid("units: missing (an array of {\"attributes\": {...}})");
    units = &*it;
    if (auto exposures = request.find("exposures"); exposures != request.end()) {
      if (!exposures->is_boolean()) return Invalid("exposures: must be true or false");
      log = exposures->get<bool>();
    }
  }
  if (!units->is_array()) return Invalid("units: must be an array of {\"attributes\": {...}}");
  if (absl::Status size = CheckBatchSize(units->size(), "units"); !size.ok()) {
    Json error = {{"code", "too_many_units"},
                  {"message", std::string(size.message())},
                  {"field", "units"},
                  {"limit", options_.max_batch_units}};
    return net::JsonResponse(413, Json{{"error", std::move(error)}}.dump());
  }
  Json results = Json::array();
  EvaluationResult evaluation;  // reused: its vectors keep their capacity
  for (size_t i = 0; i < units->size(); ++i) {
    absl::StatusOr<Json> result =
        EvaluateUnitJson((*units)[i], absl::StrCat("units[", i, "]"), log, &evaluation);
    if (!result.ok()) return ErrorResponse(result.status());
    results.push_back(*std::move(result));
  }
  return net::JsonResponse(
      200, Json{{"results", std::move(results)}, {"generation", *generation}}.dump());
}

absl::StatusOr<Json> LayeredModelService::AnalyzeText(std::string_view body) {
  Json request = ParseBody(body);
  if (request.is_discarded()) return absl::InvalidArgumentError("(body): is not valid JSON");
  if (!request.is_object()) {
    return absl::InvalidArgumentError("(body): must be a JSON object with \"op\"");
  }
  return AnalyzeJson(request);
}

net::HttpResponse LayeredModelService::Analyze(const std::string& body) {
  absl::StatusOr<Json> answer = AnalyzeText(body);
  if (!answer.ok() && absl::StrContains(answer.status().message(), "(body): ")) {
    return ErrorResponse(answer.status());
  }
  if (!answer.ok()) {
    // The engine says "a.n must be ..." or "missing field: a.n".
    std::string message(answer.status().message());
    std::string field;
    constexpr std::string_view kMissing = "missing field: ";
    if (message.compare(0, 10, "unknown op") == 0) {
      field = "op";
    } else if (message.compare(0, kMissing.size(), kMissing) == 0) {
      field = message.substr(kMissing.size());
      field = field.substr(0, field.find(' '));
    } else {
      field = message.substr(0, message.find(' '));
    }
    // The engine's message already names the field; "field" says which.
    Json error = {{"code", "invalid"}, {"message", message}, {"field", field}};
    return net::JsonResponse(400, Json{{"error", std::move(error)}}.dump());
  }
  return net::JsonResponse(200, answer->dump());
}

}  // namespace capstan::experiments
