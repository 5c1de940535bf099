// The `capstan experiments` service: the HTTP JSON API over the
// configuration documents in the store and GrowthBook's SDK endpoints, on one
// net::HttpServer (handlers on worker threads, since writes wait on the
// store).
//
// Data flow: PUT /v1/features/x ─► ConfigStore::Put (validate, Txn with a
// mod_revision compare + a history record) ─► store ─► watch ─► ConfigWatcher
// (new immutable DocumentSnapshot) ─► subscribers: GrowthBookEndpoints rebuilds
// each SDK connection's payload and swaps it in ─► GET /api/features/{key},
// POST /api/eval/{key}; then GrowthBookStreams sends each changed payload to
// the GET /sub/{key} subscribers (server-sent events). Readers never wait
// for writers.
//
// Endpoints (docs/experiments.md has examples):
//   GET    /health, /metrics
//   GET    /api/features/{clientKey}        POST /api/eval/{clientKey}
//   GET    /sub/{clientKey}                 server-sent events: the payload on every change
//                                           (growthbook_stream.h)
//   GET    /v1/{kind}                       the documents of a kind: {"items": [...]}
//   GET    /v1/{kind}/{id}                  one document (ETag: its revision)
//   PUT    /v1/{kind}/{id}                  body: the spec; creates, or with ?revision=N
//                                           (or If-Match: N) replaces revision N; 201 / 200
//   DELETE /v1/{kind}/{id}[?revision=N]
//   GET    /v1/{kind}/{id}/history          {"items": [...]} oldest first
//   POST   /v1/experiments/{id}/{action}    start, stop, launch, ramp (ChangeLifecycle)
//   GET    /v1/experiments/{id}/results/history  results over time (results_history.h)
//   GET    /console                         the web console (console_assets.h)
//   GET    /v1/system/store                 the store's members and leader (system_status.h)
//   GET    /v1/gateways                     each gateway's routes, clusters and endpoint
//                                           health, from its admin /status (gateway_status.h)
// Who made a change: the X-Capstan-User header, else "anonymous".
// Errors: {"error": {"code", "message", "field"?, "currentRevision"?}} with
// 400 (invalid; "field" names it), 404, 409 (conflict; "currentRevision"),
// 413 (body over the limit), 503 (the store did not answer).
//
// Thread-safety: Start and the destructor from one thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/metrics.h"
#include "base/status.h"
#include "client/client.h"
#include "experiments/config_store.h"
#include "experiments/gateway_status.h"
#include "experiments/growthbook_service.h"
#include "experiments/growthbook_stream.h"
#include "net/http_router.h"
#include "net/http_server.h"

namespace capstan::experiments {

class ConfigWatcher;
class LayeredModelService;
class ResultsHistory;

// What an extension of the service gets (the layered model, events,
// statistics): it registers its document kinds, subscribes to the
// configuration snapshot, adds routes and metrics. Everything stays valid
// for the service's lifetime; the server is not serving yet.
struct ServiceContext {
  ConfigStore* store;
  ConfigWatcher* watcher;
  net::HttpRouter* router;
  metrics::Registry* registry;
};
using ServiceExtension = std::function<absl::Status(const ServiceContext&)>;

// A layered-model experiment's lifecycle step (ExperimentsService::ChangeLifecycle).
enum class LifecycleAction { kStart, kStop, kLaunch, kRamp };
// "start", "stop", "launch", "ramp"; nullopt for anything else.
std::optional<LifecycleAction> ParseLifecycleAction(std::string_view name);
struct LifecycleChange {
  LifecycleAction action = LifecycleAction::kStart;
  double coverage = -1;           // kRamp: the new coverage (only grows)
  std::string launched_variant;   // kLaunch: the variant shipped
  int64_t expected_revision = 0;  // 0: the revision just read
  std::string user;
};

struct ServiceOptions {
  std::vector<std::string> store_endpoints;  // host:port
  std::string listen_host = "127.0.0.1";
  int listen_port = 8090;  // 0 picks one
  std::string prefix = kDefaultConfigPrefix;
  // Request bodies at most (a feature document is a few KiB).
  uint64_t max_body_bytes = 1 << 20;
  size_t max_connections = 1024;
  int worker_threads = 4;
  // Null: the HTTP server runs a loop of its own. Else it serves on a loop
  // of this caller-owned group (net::HttpServerOptions::group), which must
  // outlive the service and is left running when the service stops.
  net::LoopGroup* group = nullptr;
  // The native layered model (model_service.h): its kinds, /v1/evaluate,
  // /v1/evaluate/batch, /v1/analyze, /v1/status. Installed before `extensions`.
  bool layered_model = true;
  // Units in one POST /v1/evaluate/batch (more: 413).
  size_t max_batch_units = 1000;
  // GET /sub/{clientKey} (GrowthBook streaming). Each subscriber holds one
  // of max_connections, so keep max_subscribers below it (Start refuses
  // otherwise); 0 turns streaming off.
  GrowthBookStreamOptions streaming{.max_subscribers = 512};
  // Run in order before the server starts; an error stops Start.
  std::vector<ServiceExtension> extensions;
  // The gateways GET /v1/gateways shows (admin endpoints, as
  // ParseGatewayAdminUrl returns them; at most kMaxGatewayAdmins), and how
  // long it waits for each.
  std::vector<std::string> gateway_admin_urls;
  GatewayFetchOptions gateway_fetch;
};

class ExperimentsService {
 public:
  // Connects to the store, starts the watch and serves. The first listing
  // need not be in (the store may be down): /health says 503 until it is.
  static absl::StatusOr<std::unique_ptr<ExperimentsService>> Start(ServiceOptions options);
  ~ExperimentsService();
  ExperimentsService(const ExperimentsService&) = delete;
  ExperimentsService& operator=(const ExperimentsService&) = delete;

  int port() const { return server_->port(); }
  ConfigStore& store() { return *repository_; }
  ConfigWatcher& watcher() { return *watcher_; }
  const GrowthBookEndpoints& growthbook() const { return growthbook_; }
  const GrowthBookStreams& streams() const { return *streams_; }
  // nullptr when ServiceOptions::layered_model is false.
  LayeredModelService* layered_model() { return layered_model_.get(); }
  // Replaces the gateways GET /v1/gateways shows (ServiceOptions::
  // gateway_admin_urls at start); any thread.
  void SetGatewayAdminUrls(std::vector<std::string> urls) { gateways_->Set(std::move(urls)); }

  // The document writes of PUT and DELETE /v1/{kind}/{id}, counted in the
  // service's metrics; the RPC API (src/experiments_rpc) calls them too.
  // `expected_revision`: 0 creates; `user` empty is "anonymous". Errors as
  // ConfigStore's (validators' and write checks' name the field).
  absl::StatusOr<ConfigDocument> PutDocument(const std::string& kind, const std::string& id,
                                             Json spec, int64_t expected_revision,
                                             const std::string& user);
  absl::Status DeleteDocument(const std::string& kind, const std::string& id,
                              std::optional<int64_t> expected_revision, const std::string& user);
  // POST /v1/experiments/{id}/{start|stop|launch|ramp} and the RPC API's
  // ChangeLifecycle: reads experiments/<id>, sets "state" (and "coverage"
  // for a ramp, "launched_variant" for a launch), and writes it back through
  // PutDocument at the revision read (or `expected_revision`): the same
  // validators and write checks as PUT (legal transitions, coverage only
  // grows on a running experiment), the history records who and when.
  absl::StatusOr<ConfigDocument> ChangeLifecycle(const std::string& id,
                                                 const LifecycleChange& change);

 private:
  ExperimentsService() = default;
  void AddRoutes();
  net::HttpResponse Put(const net::HttpRequest& request, const net::PathParams& params);
  net::HttpResponse Delete(const net::HttpRequest& request, const net::PathParams& params);

  ServiceOptions options_;
  std::shared_ptr<client::Client> client_;
  std::unique_ptr<ConfigStore> repository_;
  GrowthBookEndpoints growthbook_;
  metrics::Registry registry_;
  metrics::Counter* requests_ = nullptr;
  metrics::Counter* writes_ = nullptr;
  metrics::Counter* conflicts_ = nullptr;
  net::HttpRouter router_;
  std::unique_ptr<ConfigWatcher> watcher_;
  std::unique_ptr<LayeredModelService> layered_model_;  // subscribed to watcher_
  std::unique_ptr<ResultsHistory> results_history_;     // samples through router_
  std::shared_ptr<GatewayDirectory> gateways_ = std::make_shared<GatewayDirectory>();
  std::unique_ptr<GrowthBookStreams> streams_;          // outlives server_: streams call it
  std::unique_ptr<net::HttpServer> server_;
};

// The HTTP answer for a ConfigStore error (see the table above).
net::HttpResponse ErrorResponse(const absl::Status& status);

}  // namespace capstan::experiments
