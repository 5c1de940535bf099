// ExperimentsRpcClient: a blocking, typed client of the experiments service's
// RPC API (proto/capstan/experiments.proto), for tools, tests and programs
// without an event loop of their own. It owns one loop and one connection
// (calls from many threads share it, multiplexed). Code that already runs on
// a Capstan loop uses the generated coroutine client directly:
//
//   experiments::v1::ExperimentsClient stub(rpc::Channel::Create(loop, host, port));
//   absl::StatusOr<EvaluateResponse> r = co_await stub.Evaluate(request, {.timeout = 50ms});
//
// The blocking client:
//
//   auto client = experiments_rpc::ExperimentsRpcClient::Connect("127.0.0.1", 8091);
//   auto answer = (*client)->Evaluate(R"({"id": "u1", "country": "NL"})");
//   if (answer.ok()) for (const auto& a : answer->result().assignments()) ...
//   auto put = (*client)->Put("layers", "checkout", R"({"domain": "main"})", 0, "ann");
//
// Errors are the service's codes and messages (the .proto's header lists
// them); a call that could not reach the server is UNAVAILABLE, one that
// ran out of time DEADLINE_EXCEEDED.
//
// Thread-safety: every method from any thread except the client's own loop.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capstan/experiments.capstan.h"
#include "experiments/js_value.h"
#include "net/loop_group.h"

namespace capstan::experiments_rpc {

namespace v1 = ::capstan::experiments::v1;

struct ClientOptions {
  // Each call's deadline.
  std::chrono::milliseconds timeout{5000};
};

class ExperimentsRpcClient {
 public:
  static absl::StatusOr<std::unique_ptr<ExperimentsRpcClient>> Connect(std::string host, int port,
                                                                       ClientOptions options = {});
  ~ExperimentsRpcClient();
  ExperimentsRpcClient(const ExperimentsRpcClient&) = delete;
  ExperimentsRpcClient& operator=(const ExperimentsRpcClient&) = delete;

  // One unit; `attributes_json` is a JSON object.
  absl::StatusOr<v1::EvaluateResponse> Evaluate(const std::string& attributes_json,
                                                bool log_exposures = true);
  absl::StatusOr<v1::EvaluateBatchResponse> EvaluateBatch(
      const std::vector<std::string>& attributes_json, bool log_exposures = true);

  absl::StatusOr<v1::Document> Get(const std::string& kind, const std::string& id);
  absl::StatusOr<std::vector<v1::Document>> List(const std::string& kind);
  // expected_revision 0 creates.
  absl::StatusOr<v1::PutDocumentResponse> Put(const std::string& kind, const std::string& id,
                                              const std::string& spec_json,
                                              int64_t expected_revision, const std::string& user);
  absl::Status Delete(const std::string& kind, const std::string& id, int64_t expected_revision,
                      const std::string& user);
  // A layered-model experiment's lifecycle step (ChangeLifecycleRequest).
  absl::StatusOr<v1::PutDocumentResponse> ChangeLifecycle(
      const v1::ChangeLifecycleRequest& request);
  absl::StatusOr<std::vector<v1::HistoryEntry>> History(const std::string& kind,
                                                        const std::string& id);

  absl::StatusOr<v1::IngestEventsResponse> IngestEvents(const v1::IngestEventsRequest& request);
  // The results document (as GET /v1/experiments/{id}/results answers).
  absl::StatusOr<experiments::Json> Results(const v1::GetResultsRequest& request);
  absl::StatusOr<experiments::Json> Analyze(const std::string& request_json);
  absl::StatusOr<v1::StatusResponse> Status();

 private:
  ExperimentsRpcClient() = default;
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(const char* method, const Request& request);

  ClientOptions options_;
  std::unique_ptr<net::LoopGroup> loops_;
  std::shared_ptr<rpc::Channel> channel_;  // lives on loops_'s loop
};

// A unit's result in the HTTP API's JSON form ({"assignments", "parameters",
// "flags", "holdouts"}, as EvaluationResult::ToJson writes it): for
// comparing the two APIs and for callers that want JSON.
experiments::Json UnitResultToJson(const v1::UnitResult& result);

// How long a RESOURCE_EXHAUSTED answer (IngestEvents while the event
// pipeline is behind) asks the caller to wait before sending again: the
// message's "retry after N s" (EventsApi's wording; the retry-after-ms
// trailer carries the same number, which rpc::Channel does not hand to
// callers). nullopt for any other status, or one without the hint.
std::optional<std::chrono::milliseconds> RetryAfterOf(const absl::Status& status);

}  // namespace capstan::experiments_rpc
