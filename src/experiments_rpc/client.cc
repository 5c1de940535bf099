#include "experiments_rpc/client.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "net/block_on.h"
#include "rpc/channel.h"

namespace capstan::experiments_rpc {

using experiments::Json;

absl::StatusOr<std::unique_ptr<ExperimentsRpcClient>> ExperimentsRpcClient::Connect(
    std::string host, int port, ClientOptions options) {
  std::unique_ptr<ExperimentsRpcClient> client(new ExperimentsRpcClient());
  client->options_ = options;
  ASSIGN_OR_RETURN(client->loops_, net::LoopGroup::Start({.name = "exp-rpc-client"}));
  net::EventLoop* loop = client->loops_->loop(0);
  // The connection opens on the first call.
  client->channel_ = net::RunOn(loop, [&] { return rpc::Channel::Create(loop, host, port); });
  return client;
}

ExperimentsRpcClient::~ExperimentsRpcClient() {
  if (loops_ != nullptr) {
    net::RunOn(loops_->loop(0), [this] { channel_.reset(); });
    loops_->Stop();
  }
}

template <typename Request, typename Response>
absl::StatusOr<Response> ExperimentsRpcClient::Call(const char* method, const Request& request) {
  return net::BlockOn(
      loops_->loop(0),
      channel_->Call<Request, Response>(
          method, request,
          rpc::CallOptions{
              .timeout = std::chrono::duration_cast<rpc::Clock::duration>(options_.timeout)}));
}

absl::StatusOr<v1::EvaluateResponse> ExperimentsRpcClient::Evaluate(
    const std::string& attributes_json, bool log_exposures) {
  v1::EvaluateRequest request;
  request.set_attributes_json(attributes_json);
  request.set_skip_exposures(!log_exposures);
  return Call<v1::EvaluateRequest, v1::EvaluateResponse>(
      "capstan.experiments.v1.Experiments/Evaluate", request);
}

absl::StatusOr<v1::EvaluateBatchResponse> ExperimentsRpcClient::EvaluateBatch(
    const std::vector<std::string>& attributes_json, bool log_exposures) {
  v1::EvaluateBatchRequest request;
  for (const std::string& a : attributes_json) request.add_attributes_json(a);
  request.set_skip_exposures(!log_exposures);
  return Call<v1::EvaluateBatchRequest, v1::EvaluateBatchResponse>(
      "capstan.experiments.v1.Experiments/EvaluateBatch", request);
}

absl::StatusOr<v1::Document> ExperimentsRpcClient::Get(const std::string& kind,
                                                       const std::string& id) {
  v1::GetDocumentRequest request;
  request.set_kind(kind);
  request.set_id(id);
  return Call<v1::GetDocumentRequest, v1::Document>(
      "capstan.experiments.v1.Experiments/GetDocument", request);
}

absl::StatusOr<std::vector<v1::Document>> ExperimentsRpcClient::List(const std::string& kind) {
  v1::ListDocumentsRequest request;
  request.set_kind(kind);
  ASSIGN_OR_RETURN(v1::ListDocumentsResponse response,
                   (Call<v1::ListDocumentsRequest, v1::ListDocumentsResponse>(
                       "capstan.experiments.v1.Experiments/ListDocuments", request)));
  return std::vector<v1::Document>(response.documents().begin(), response.documents().end());
}

absl::StatusOr<v1::PutDocumentResponse> ExperimentsRpcClient::Put(const std::string& kind,
                                                                  const std::string& id,
                                                                  const std::string& spec_json,
                                                                  int64_t expected_revision,
                                                                  const std::string& user) {
  v1::PutDocumentRequest request;
  request.set_kind(kind);
  request.set_id(id);
  request.set_spec_json(spec_json);
  request.set_expected_revision(expected_revision);
  request.set_user(user);
  return Call<v1::PutDocumentRequest, v1::PutDocumentResponse>(
      "capstan.experiments.v1.Experiments/PutDocument", request);
}

absl::StatusOr<v1::PutDocumentResponse> ExperimentsRpcClient::ChangeLifecycle(
    const v1::ChangeLifecycleRequest& request) {
  return Call<v1::ChangeLifecycleRequest, v1::PutDocumentResponse>(
      "capstan.experiments.v1.Experiments/ChangeLifecycle", request);
}

absl::Status ExperimentsRpcClient::Delete(const std::string& kind, const std::string& id,
                                          int64_t expected_revision, const std::string& user) {
  v1::DeleteDocumentRequest request;
  request.set_kind(kind);
  request.set_id(id);
  request.set_expected_revision(expected_revision);
  request.set_user(user);
  return Call<v1::DeleteDocumentRequest, v1::DeleteDocumentResponse>(
             "capstan.experiments.v1.Experiments/DeleteDocument", request)
      .status();
}

absl::StatusOr<std::vector<v1::HistoryEntry>> ExperimentsRpcClient::History(const std::string& kind,
                                                                            const std::string& id) {
  v1::HistoryRequest request;
  request.set_kind(kind);
  request.set_id(id);
  ASSIGN_OR_RETURN(v1::HistoryResponse response,
                   (Call<v1::HistoryRequest, v1::HistoryResponse>(
                       "capstan.experiments.v1.Experiments/GetHistory", request)));
  return std::vector<v1::HistoryEntry>(response.entries().begin(), response.entries().end());
}

absl::StatusOr<v1::IngestEventsResponse> ExperimentsRpcClient::IngestEvents(
    const v1::IngestEventsRequest& request) {
  return Call<v1::IngestEventsRequest, v1::IngestEventsResponse>(
      "capstan.experiments.v1.Experiments/IngestEvents", request);
}

absl::StatusOr<Json> ExperimentsRpcClient::Results(const v1::GetResultsRequest& request) {
  ASSIGN_OR_RETURN(v1::GetResultsResponse response,
                   (Call<v1::GetResultsRequest, v1::GetResultsResponse>(
                       "capstan.experiments.v1.Experiments/GetResults", request)));
  Json results = Json::parse(response.results_json(), nullptr, /*allow_exceptions=*/false);
  if (results.is_discarded()) return absl::InternalError("results_json is not valid JSON");
  return results;
}

absl::StatusOr<Json> ExperimentsRpcClient::Analyze(const std::string& request_json) {
  v1::AnalyzeRequest request;
  request.set_request_json(request_json);
  ASSIGN_OR_RETURN(v1::AnalyzeResponse response,
                   (Call<v1::AnalyzeRequest, v1::AnalyzeResponse>(
                       "capstan.experiments.v1.Experiments/Analyze", request)));
  Json analysis = Json::parse(response.analysis_json(), nullptr, /*allow_exceptions=*/false);
  if (analysis.is_discarded()) return absl::InternalError("analysis_json is not valid JSON");
  return analysis;
}

absl::StatusOr<v1::StatusResponse> ExperimentsRpcClient::Status() {
  return Call<v1::StatusRequest, v1::StatusResponse>("capstan.experiments.v1.Experiments/Status",
                                                     v1::StatusRequest());
}

Json UnitResultToJson(const v1::UnitResult& result) {
  Json out = Json::object();
  Json assignments = Json::array();
  for (const v1::Assignment& a : result.assignments()) {
    Json item = {{"experiment", a.experiment()}, {"layer", a.layer()}, {"unit", a.unit()}};
    if (!a.variant().empty()) item["variant"] = a.variant();
    if (!a.holdout().empty()) item["holdout"] = a.holdout();
    if (a.forced()) item["forced"] = true;
    if (a.launched()) item["launched"] = true;
    assignments.push_back(std::move(item));
  }
  out["assignments"] = std::move(assignments);
  Json parameters = Json::object();
  for (const auto& [name, value] : result.parameters_json()) {
    parameters[name] = Json::parse(value, nullptr, /*allow_exceptions=*/false);
  }
  out["parameters"] = std::move(parameters);
  Json flags = Json::object();
  for (const auto& [id, flag] : result.flags()) {
    // FLAG_SOURCE_EXPERIMENT -> "experiment", as the HTTP API names it.
    std::string source = absl::AsciiStrToLower(v1::FlagSource_Name(flag.source()));
    source = source.substr(std::string("flag_source_").size());
    flags[id] = {{"value", Json::parse(flag.value_json(), nullptr, /*allow_exceptions=*/false)},
                 {"source", source}};
  }
  out["flags"] = std::move(flags);
  Json holdouts = Json::array();
  for (const std::string& h : result.holdouts()) holdouts.push_back(h);
  out["holdouts"] = std::move(holdouts);
  return out;
}

std::optional<std::chrono::milliseconds> RetryAfterOf(const absl::Status& status) {
  if (!absl::IsResourceExhausted(status)) return std::nullopt;
  constexpr std::string_view kHint = "retry after ";
  std::string_view message(status.message().data(), status.message().size());
  size_t at = message.rfind(kHint);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = message.substr(at + kHint.size());
  size_t digits = 0;
  while (digits < rest.size() && absl::ascii_isdigit(static_cast<unsigned char>(rest[digits]))) {
    ++digits;
  }
  int seconds = 0;
  // At most an hour: a larger figure is not a hint this service gives.
  if (digits == 0 || rest.substr(digits) != " s" ||
      !absl::SimpleAtoi(absl::string_view(rest.data(), digits), &seconds) || seconds > 3600) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(int64_t{seconds} * 1000);
}

}  // namespace capstan::experiments_rpc
