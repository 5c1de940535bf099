#include "experiments_rpc/rpc_service.h"

#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "experiments/config_store.h"
#include "experiments/model_service.h"

namespace capstan::experiments_rpc {
namespace {

using experiments::ConfigDocument;
using experiments::Event;
using experiments::Json;

absl::Status EventsDisabled() {
  return absl::FailedPreconditionError(
      "event ingestion is off: the service runs without --events-dir");
}

// What a caller reacts to rides along as trailers too (the messages say it
// for people): where a conflicting document is now, how long to back off.
void AddErrorTrailers(rpc::ServerContext& context, const absl::Status& status,
                      int retry_after_seconds = 0) {
  if (std::optional<int64_t> current = experiments::CurrentRevisionOf(status)) {
    context.AddTrailer("current-revision", std::to_string(*current));
  }
  if (absl::IsResourceExhausted(status) && retry_after_seconds > 0) {
    context.AddTrailer("retry-after-ms", std::to_string(retry_after_seconds * 1000));
  }
}

void ToProto(const ConfigDocument& doc, v1::Document* out) {
  out->set_kind(doc.kind);
  out->set_id(doc.id);
  out->set_spec_json(doc.spec.dump());
  out->set_version(doc.version);
  out->set_revision(doc.revision);
  out->set_created_by(doc.created_by);
  out->set_created_at(doc.created_at);
  out->set_updated_by(doc.updated_by);
  out->set_updated_at(doc.updated_at);
}

}  // namespace

void ToProto(const experiments::EvaluationResult& result, v1::UnitResult* out) {
  const experiments::ConfigSnapshot* snapshot = result.snapshot();
  out->Clear();
  if (snapshot == nullptr) return;
  for (const experiments::Assignment& a : result.assignments()) {
    v1::Assignment* item = out->add_assignments();
    item->set_experiment(a.experiment->id);
    item->set_layer(snapshot->layers()[a.experiment->layer].id);
    item->set_unit(std::string(a.unit));
    if (a.variant >= 0) item->set_variant(std::string(a.variant_id()));
    if (a.holdout != nullptr) item->set_holdout(a.holdout->id);
    item->set_forced(a.forced);
    item->set_launched(a.launched);
  }
  auto& parameters = *out->mutable_parameters_json();
  for (size_t i = 0; i < result.parameters().size(); ++i) {
    if (result.parameters()[i] != nullptr) {
      parameters[snapshot->parameter_names()[i]] = result.parameters()[i]->dump();
    }
  }
  auto& flags = *out->mutable_flags();
  for (size_t i = 0; i < result.flags().size(); ++i) {
    const experiments::FlagValue& flag = result.flags()[i];
    v1::FlagResult& item = flags[snapshot->flags()[i].id];
    item.set_value_json(flag.value->dump());
    // FlagSource numbers follow FlagValue::Source.
    item.set_source(static_cast<v1::FlagSource>(static_cast<int>(flag.source)));
  }
  for (uint32_t h : result.holdouts()) out->add_holdouts(snapshot->holdouts()[h].id);
}

ExperimentsRpcService::ExperimentsRpcService(experiments::ExperimentsService* service,
                                             std::shared_ptr<experiments::EventsApi> events,
                                             net::WorkerPool* pool)
    : service_(service), events_(std::move(events)), pool_(pool) {
  // IngestEvents decodes its request's wire bytes itself (ingest_request.h).
  SetUnaryBytesHandler<v1::IngestEventsResponse>(
      "IngestEvents", [this](rpc::ServerContext& context, const net::Buffer& request,
                             v1::IngestEventsResponse* response) {
        return IngestEvents(context, request, response);
      });
}

net::Task<absl::Status> ExperimentsRpcService::Evaluate(rpc::ServerContext&,
                                                        const v1::EvaluateRequest& request,
                                                        v1::EvaluateResponse* response) {
  experiments::LayeredModelService* model = service_->layered_model();
  if (model == nullptr) co_return absl::UnimplementedError("the layered model is not served");
  absl::StatusOr<uint64_t> generation = model->ServingGeneration();
  if (!generation.ok()) co_return generation.status();
  absl::StatusOr<Json> attributes = experiments::LayeredModelService::ParseAttributes(
      request.attributes_json(), "attributes_json");
  if (!attributes.ok()) co_return attributes.status();
  experiments::EvaluationResult result;
  absl::Status st =
      model->EvaluateAttributes(*attributes, "attributes_json", !request.skip_exposures(), &result);
  if (!st.ok()) co_return st;
  ToProto(result, response->mutable_result());
  response->set_generation(*generation);
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::EvaluateBatch(
    rpc::ServerContext&, const v1::EvaluateBatchRequest& request,
    v1::EvaluateBatchResponse* response) {
  experiments::LayeredModelService* model = service_->layered_model();
  if (model == nullptr) co_return absl::UnimplementedError("the layered model is not served");
  absl::StatusOr<uint64_t> generation = model->ServingGeneration();
  if (!generation.ok()) co_return generation.status();
  absl::Status size =
      model->CheckBatchSize(static_cast<size_t>(request.attributes_json_size()), "attributes_json");
  if (!size.ok()) co_return size;
  experiments::EvaluationResult result;  // reused: its vectors keep their capacity
  for (int i = 0; i < request.attributes_json_size(); ++i) {
    const std::string field = absl::StrCat("attributes_json[", i, "]");
    absl::StatusOr<Json> attributes =
        experiments::LayeredModelService::ParseAttributes(request.attributes_json(i), field);
    if (!attributes.ok()) co_return attributes.status();
    absl::Status st =
        model->EvaluateAttributes(*attributes, field, !request.skip_exposures(), &result);
    if (!st.ok()) co_return st;
    ToProto(result, response->add_results());
  }
  response->set_generation(*generation);
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::GetDocument(rpc::ServerContext& context,
                                                           const v1::GetDocumentRequest& request,
                                                           v1::Document* response) {
  absl::StatusOr<ConfigDocument> doc = co_await pool_->Run(
      context.loop(), [&] { return service_->store().Get(request.kind(), request.id()); });
  if (!doc.ok()) co_return doc.status();
  ToProto(*doc, response);
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::ListDocuments(
    rpc::ServerContext& context, const v1::ListDocumentsRequest& request,
    v1::ListDocumentsResponse* response) {
  absl::StatusOr<std::vector<ConfigDocument>> docs =
      co_await pool_->Run(context.loop(), [&] { return service_->store().List(request.kind()); });
  if (!docs.ok()) co_return docs.status();
  for (const ConfigDocument& doc : *docs) ToProto(doc, response->add_documents());
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::PutDocument(rpc::ServerContext& context,
                                                           const v1::PutDocumentRequest& request,
                                                           v1::PutDocumentResponse* response) {
  if (request.expected_revision() < 0) {
    co_return absl::InvalidArgumentError("expected_revision: must be a non-negative integer");
  }
  Json spec = Json::parse(request.spec_json(), nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) co_return absl::InvalidArgumentError("spec_json: is not valid JSON");
  absl::StatusOr<ConfigDocument> written = co_await pool_->Run(context.loop(), [&] {
    return service_->PutDocument(request.kind(), request.id(), std::move(spec),
                                 request.expected_revision(), request.user());
  });
  if (!written.ok()) {
    AddErrorTrailers(context, written.status());
    co_return written.status();
  }
  ToProto(*written, response->mutable_document());
  response->set_created(written->version == 1);
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::ChangeLifecycle(
    rpc::ServerContext& context, const v1::ChangeLifecycleRequest& request,
    v1::PutDocumentResponse* response) {
  experiments::LifecycleChange change{.coverage = request.coverage(),
                                      .launched_variant = request.launched_variant(),
                                      .expected_revision = request.expected_revision(),
                                      .user = request.user()};
  switch (request.action()) {
    case v1::ChangeLifecycleRequest::START:
      change.action = experiments::LifecycleAction::kStart;
      break;
    case v1::ChangeLifecycleRequest::STOP:
      change.action = experiments::LifecycleAction::kStop;
      break;
    case v1::ChangeLifecycleRequest::LAUNCH:
      change.action = experiments::LifecycleAction::kLaunch;
      break;
    case v1::ChangeLifecycleRequest::RAMP:
      change.action = experiments::LifecycleAction::kRamp;
      break;
    default:
      co_return absl::InvalidArgumentError("action: must be START, STOP, LAUNCH or RAMP");
  }
  absl::StatusOr<ConfigDocument> written = co_await pool_->Run(
      context.loop(), [&] { return service_->ChangeLifecycle(request.id(), change); });
  if (!written.ok()) {
    AddErrorTrailers(context, written.status());
    co_return written.status();
  }
  ToProto(*written, response->mutable_document());
  response->set_created(false);
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::DeleteDocument(
    rpc::ServerContext& context, const v1::DeleteDocumentRequest& request,
    v1::DeleteDocumentResponse*) {
  if (request.expected_revision() < 0) {
    co_return absl::InvalidArgumentError("expected_revision: must be a non-negative integer");
  }
  std::optional<int64_t> expected;
  if (request.expected_revision() > 0) expected = request.expected_revision();
  absl::Status st = co_await pool_->Run(context.loop(), [&] {
    return service_->DeleteDocument(request.kind(), request.id(), expected, request.user());
  });
  if (!st.ok()) AddErrorTrailers(context, st);
  co_return st;
}

net::Task<absl::Status> ExperimentsRpcService::GetHistory(rpc::ServerContext& context,
                                                          const v1::HistoryRequest& request,
                                                          v1::HistoryResponse* response) {
  absl::StatusOr<std::vector<experiments::HistoryRecord>> history = co_await pool_->Run(
      context.loop(), [&] { return service_->store().History(request.kind(), request.id()); });
  if (!history.ok()) co_return history.status();
  for (const experiments::HistoryRecord& record : *history) {
    v1::HistoryEntry* entry = response->add_entries();
    entry->set_sequence(record.sequence);
    entry->set_record_json(record.record.dump());
  }
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::IngestEvents(rpc::ServerContext& context,
                                                            const net::Buffer& request,
                                                            v1::IngestEventsResponse* response) {
  // One worker task decodes, checks and appends: the loop only moves bytes
  // (as the HTTP path's loop does), and Append waits for the group commit's
  // fsync, which a loop must not.
  struct Outcome {
    absl::Status refused;  // the request's own error (not counted when it did not parse)
    bool unparsable = false;
    absl::StatusOr<experiments::AppendResult> appended;
  };
  const bool enabled = events_ != nullptr;
  if (enabled) {
    // Behind: refused on the loop, before the hand-off and the decoding (two
    // atomic loads), so shedding a batch costs no thread switch: at
    // saturation, with callers that resend at once, refusals otherwise took
    // the core the aggregation needs to catch up.
    if (absl::Status admitted = events_->Admit(); !admitted.ok()) {
      AddErrorTrailers(context, admitted, events_->retry_after_seconds());
      co_return admitted;
    }
  }
  Outcome outcome = co_await pool_->Run(context.loop(), [&] {
    Outcome out;
    // The decoder wants the message's bytes in one piece; a frame that came
    // in several reads is copied together once (a memcpy per request).
    std::string joined;
    std::string_view bytes;
    if (request.slice_count() == 1) {
      bytes = request.slice(0);
    } else {
      joined.reserve(request.size());
      for (size_t i = 0; i < request.slice_count(); ++i) joined += request.slice(i);
      bytes = joined;
    }
    // The events refer to `bytes` (or to batch.owned) until Ingest returns.
    IngestEventsBatch batch;
    absl::Status decoded = DecodeIngestEventsRequest(bytes, &batch, &out.unparsable);
    if (!decoded.ok()) {
      out.refused = decoded;
    } else if (enabled) {
      out.appended = events_->Ingest(batch.events);
    }
    return out;
  });
  // A request that does not parse is refused as the server refuses any
  // (before the handler, so before "events are off").
  if (outcome.unparsable) co_return outcome.refused;
  if (!enabled) co_return EventsDisabled();
  if (!outcome.refused.ok()) {
    events_->CountRejected();
    co_return outcome.refused;
  }
  if (!outcome.appended.ok()) {
    AddErrorTrailers(context, outcome.appended.status(), events_->retry_after_seconds());
    co_return outcome.appended.status();
  }
  response->set_accepted(outcome.appended->accepted);
  response->set_duplicates(outcome.appended->duplicates);
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::GetResults(rpc::ServerContext&,
                                                          const v1::GetResultsRequest& request,
                                                          v1::GetResultsResponse* response) {
  if (events_ == nullptr) co_return EventsDisabled();
  // The request's fields override the definition, as the HTTP query does.
  auto overrides = [&request](experiments::ResultsOptions* options) -> absl::Status {
    if (!request.control().empty()) options->control = request.control();
    if (request.alpha() != 0) options->alpha = request.alpha();
    if (!request.weights().empty()) {
      options->weights.clear();
      for (const auto& [variant, weight] : request.weights()) {
        if (!(weight >= 0) || !std::isfinite(weight)) {
          return absl::InvalidArgumentError(
              absl::StrCat("weights[", variant, "]: must be a finite number >= 0"));
        }
        options->weights[variant] = weight;
      }
    }
    if (!request.correction().empty()) {
      std::optional<experiments::PValueCorrection> correction =
          experiments::ParsePValueCorrection(request.correction());
      if (!correction.has_value()) {
        return absl::InvalidArgumentError("correction: must be holm, bh or none");
      }
      options->correction = *correction;
    }
    if (!request.method().empty()) {
      if (request.method() != "fixed" && request.method() != "sequential") {
        return absl::InvalidArgumentError("method: must be fixed or sequential");
      }
      options->sequential = request.method() == "sequential";
    }
    if (request.sequential_tuning() != 0) options->sequential_tuning = request.sequential_tuning();
    return absl::OkStatus();
  };
  // Reads the published sums under a shared lock: cheap, on the loop.
  absl::StatusOr<nlohmann::ordered_json> results =
      events_->Results(request.experiment(), overrides);
  if (!results.ok()) co_return results.status();
  response->set_results_json(results->dump());
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::Analyze(rpc::ServerContext&,
                                                       const v1::AnalyzeRequest& request,
                                                       v1::AnalyzeResponse* response) {
  absl::StatusOr<Json> answer =
      experiments::LayeredModelService::AnalyzeText(request.request_json());
  if (!answer.ok()) co_return answer.status();
  response->set_analysis_json(answer->dump());
  co_return absl::OkStatus();
}

net::Task<absl::Status> ExperimentsRpcService::Status(rpc::ServerContext&, const v1::StatusRequest&,
                                                      v1::StatusResponse* response) {
  if (experiments::LayeredModelService* model = service_->layered_model(); model != nullptr) {
    Json status = model->StatusJson();
    v1::ModelStatus* out = response->mutable_model();
    out->set_ok(status.value("ok", false));
    out->set_generation(status.value("generation", uint64_t{0}));
    out->set_seen_generation(status.value("seenGeneration", uint64_t{0}));
    out->set_revision(status.value("revision", int64_t{0}));
    out->set_layers(status.value("layers", uint64_t{0}));
    out->set_experiments(status.value("experiments", uint64_t{0}));
    out->set_holdouts(status.value("holdouts", uint64_t{0}));
    out->set_flags(status.value("flags", uint64_t{0}));
    out->set_parameters(status.value("parameters", uint64_t{0}));
    if (auto error = status.find("error"); error != status.end()) {
      out->set_error_message(error->value("message", ""));
      out->set_error_document(error->value("document", ""));
      out->set_error_field(error->value("field", ""));
    }
  }
  v1::EventsStatus* events = response->mutable_events();
  events->set_enabled(events_ != nullptr);
  if (events_ != nullptr) {
    experiments::EventStoreStats s = events_->Stats();
    events->set_log_sequence(s.next_sequence);
    events->set_accepted(s.accepted);
    events->set_duplicates(s.duplicates);
    events->set_queued_events(s.queued_events);
  }
  co_return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ExperimentsRpcServer>> ExperimentsRpcServer::Start(
    experiments::ExperimentsService* service, std::shared_ptr<experiments::EventsApi> events,
    RpcServeOptions options) {
  if (options.threads < 1 || options.worker_threads < 1) {
    return absl::InvalidArgumentError("the RPC server needs at least one loop and one worker");
  }
  std::unique_ptr<ExperimentsRpcServer> server(new ExperimentsRpcServer());
  server->pool_ = std::make_unique<net::WorkerPool>(
      net::WorkerPoolOptions{.threads = options.worker_threads, .name = "exp-rpc-work"});
  server->service_ =
      std::make_unique<ExperimentsRpcService>(service, std::move(events), server->pool_.get());
  server->server_ = std::make_unique<rpc::Server>(
      rpc::ServerOptions{.host = options.host,
                         .port = options.port,
                         .threads = options.threads,
                         .group = options.group,
                         // The frame carries metadata beside the message.
                         .max_frame_size = options.max_message_bytes + rpc::kMaxMetaSize,
                         .name = "exp-rpc"});
  server->server_->AddService(server->service_.get());
  RETURN_IF_ERROR(server->server_->Start());
  CAPSTAN_LOG(info, "experiments: serving RPC", "port", server->server_->port());
  return server;
}

ExperimentsRpcServer::~ExperimentsRpcServer() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::seconds(5));
  // The pool finishes what is queued before the service goes.
  pool_.reset();
}

}  // namespace capstan::experiments_rpc
