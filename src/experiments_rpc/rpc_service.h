// The experiments service over Capstan RPC (proto/capstan/experiments.proto):
// the same calls as its HTTP JSON API, on the same logic. Each handler calls
// what the HTTP handler calls (LayeredModelService's evaluation steps,
// ExperimentsService::PutDocument / DeleteDocument and ConfigStore's reads,
// EventsApi for ingestion and results), so validation, write checks, the
// Assigner, the durable log and the statistics are one code path, and the
// two APIs answer alike (tests/e2e/experiments_rpc_test.cc compares them).
//
// Floor: above src/rpc and src/experiments (it uses both); only src/cmd and
// tests use it.
//
// Threads: handlers run on the RPC server's loops. Evaluation is CPU only
// (~µs per unit) and runs there; calls that wait on the store or on an
// fsync (documents, IngestEvents) run on a WorkerPool of the server's own,
// so a loop never blocks. IngestEvents decodes its request there too.
//
//   auto service = experiments::ExperimentsService::Start(options);   // HTTP
//   auto rpc = experiments_rpc::ExperimentsRpcServer::Start(
//       service->get(), events_api /* or nullptr */, {.port = 8091});
//   ... rpc->get()->port() ...
//   rpc->reset();       // before the service: drains the calls in flight
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "capstan/experiments.capstan.h"
#include "experiments/events_api.h"
#include "experiments/service.h"
#include "experiments/snapshot.h"
#include "experiments_rpc/ingest_request.h"
#include "net/worker_pool.h"
#include "rpc/server.h"

namespace capstan::experiments_rpc {

namespace v1 = ::capstan::experiments::v1;

struct RpcServeOptions {
  std::string host = "127.0.0.1";
  int port = 8091;  // 0 picks one
  // Event loops serving calls.
  int threads = 1;
  // Null: the server runs `threads` loops of its own. Else it serves on every
  // loop of this caller-owned group (rpc::ServerOptions::group), which must
  // outlive the server and is left running when it stops.
  net::LoopGroup* group = nullptr;
  // Threads for calls that wait on the store or the event log's fsync;
  // concurrent IngestEvents calls beyond this wait in the pool's queue (the
  // server's adaptive limiter sheds them when they slow down).
  int worker_threads = 4;
  // Largest request frame; a bigger one closes the connection (the RPC
  // protocol's rule). The HTTP API's --max-body-bytes by default.
  size_t max_message_bytes = 1 << 20;
};

// The service's methods (the generated ExperimentsServer's overrides).
class ExperimentsRpcService final : public v1::ExperimentsServer {
 public:
  // `events` may be null (no --events-dir): event calls answer
  // FAILED_PRECONDITION. Everything outlives the service.
  ExperimentsRpcService(experiments::ExperimentsService* service,
                        std::shared_ptr<experiments::EventsApi> events, net::WorkerPool* pool);

  net::Task<absl::Status> Evaluate(rpc::ServerContext& context, const v1::EvaluateRequest& request,
                                   v1::EvaluateResponse* response) override;
  net::Task<absl::Status> EvaluateBatch(rpc::ServerContext& context,
                                        const v1::EvaluateBatchRequest& request,
                                        v1::EvaluateBatchResponse* response) override;
  net::Task<absl::Status> GetDocument(rpc::ServerContext& context,
                                      const v1::GetDocumentRequest& request,
                                      v1::Document* response) override;
  net::Task<absl::Status> ListDocuments(rpc::ServerContext& context,
                                        const v1::ListDocumentsRequest& request,
                                        v1::ListDocumentsResponse* response) override;
  net::Task<absl::Status> PutDocument(rpc::ServerContext& context,
                                      const v1::PutDocumentRequest& request,
                                      v1::PutDocumentResponse* response) override;
  net::Task<absl::Status> ChangeLifecycle(rpc::ServerContext& context,
                                          const v1::ChangeLifecycleRequest& request,
                                          v1::PutDocumentResponse* response);
  net::Task<absl::Status> DeleteDocument(rpc::ServerContext& context,
                                         const v1::DeleteDocumentRequest& request,
                                         v1::DeleteDocumentResponse* response) override;
  net::Task<absl::Status> GetHistory(rpc::ServerContext& context, const v1::HistoryRequest& request,
                                     v1::HistoryResponse* response) override;
  // From the request's serialized bytes (rpc::Service::SetUnaryBytesHandler
  // replaces the generated typed method): decoded, checked and appended in
  // one task on the pool (ingest_request.h).
  net::Task<absl::Status> IngestEvents(rpc::ServerContext& context, const net::Buffer& request,
                                       v1::IngestEventsResponse* response);
  net::Task<absl::Status> GetResults(rpc::ServerContext& context,
                                     const v1::GetResultsRequest& request,
                                     v1::GetResultsResponse* response) override;
  net::Task<absl::Status> Analyze(rpc::ServerContext& context, const v1::AnalyzeRequest& request,
                                  v1::AnalyzeResponse* response) override;
  net::Task<absl::Status> Status(rpc::ServerContext& context, const v1::StatusRequest& request,
                                 v1::StatusResponse* response) override;

 private:
  experiments::ExperimentsService* service_;
  std::shared_ptr<experiments::EventsApi> events_;
  net::WorkerPool* pool_;
};

// An rpc::Server with the service on it.
class ExperimentsRpcServer {
 public:
  static absl::StatusOr<std::unique_ptr<ExperimentsRpcServer>> Start(
      experiments::ExperimentsService* service, std::shared_ptr<experiments::EventsApi> events,
      RpcServeOptions options);
  // Drains the calls in flight (up to 5 s), then stops.
  ~ExperimentsRpcServer();
  int port() const { return server_->port(); }
  rpc::Server& server() { return *server_; }

 private:
  ExperimentsRpcServer() = default;
  std::unique_ptr<net::WorkerPool> pool_;
  std::unique_ptr<ExperimentsRpcService> service_;
  std::unique_ptr<rpc::Server> server_;
};

// Fills `out` from an evaluation (the HTTP API's ToJson, typed).
void ToProto(const experiments::EvaluationResult& result, v1::UnitResult* out);

}  // namespace capstan::experiments_rpc
