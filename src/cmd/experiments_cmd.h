// `capstan experiments serve`: flags and entry point (experiments_cmd.cc).
// The service itself is experiments::ExperimentsService (src/experiments/service.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "base/status.h"
#include "experiments/events_service.h"
#include "experiments/service.h"

namespace capstan {

struct ExperimentsServeFlags {
  std::vector<std::string> store{"127.0.0.1:2379"};
  std::string listen = "127.0.0.1:8090";
  std::string prefix = experiments::kDefaultConfigPrefix;
  int threads = 4;
  int64_t max_body_bytes = 1 << 20;
  int64_t max_batch_units = 1000;
  int max_connections = 1024;
  std::string log_level = "info";
  // Event ingestion (docs/experiments-events.md): the event database's
  // directory; empty leaves POST /v1/events and the results endpoint out.
  std::string events_dir;
  // The RPC API (proto/capstan/experiments.proto, src/experiments_rpc);
  // empty (the default): none. Off by default so two services on one host
  // (tests, several instances) never fight over a fixed port.
  std::string rpc_listen;
  int rpc_threads = 1;
  // GrowthBook streaming (GET /sub/{clientKey}): subscribers at once; -1:
  // half of max_connections (512 with the defaults); 0: streaming off.
  int64_t sse_max_subscribers = -1;
  int64_t sse_heartbeat_ms = 20000;
  size_t events_checkpoint_events = 250000;
  // Event log retention (docs/experiments-events.md, "Retention"): a
  // duration ("off": no time limit), a size ("off" or 0: no cap), the
  // segment size (the unit of removal), and the dedup window in keys (the
  // horizon of exactly-once for re-sent events).
  std::string events_retention = "7d";
  std::string events_retention_bytes = "off";
  std::string events_segment_bytes = "64MiB";
  size_t events_dedup_window = 10000000;
  size_t events_max_cached_units = 2000000;
  // Gateway admin endpoints (http://host:port) whose /status the console's
  // Gateways page shows (GET /v1/gateways); repeatable; none by default.
  std::vector<std::string> gateway_admin;
  int gateway_timeout_ms = 2000;
};

// Adds `serve` under `experiments`; returns it.
CLI::App* AddExperimentsServeCommand(CLI::App* experiments, ExperimentsServeFlags* flags);
// The service's options from the flags (INVALID_ARGUMENT naming the flag).
// `on_events_open` receives the event API once the event store is open (for
// the RPC server to share).
absl::StatusOr<experiments::ServiceOptions> ExperimentsServiceOptions(
    const ExperimentsServeFlags& flags,
    std::function<void(std::shared_ptr<experiments::EventsApi>)> on_events_open = {});
// The event log's retention flags into `options` (INVALID_ARGUMENT naming
// the flag); shared with `capstan dev`.
absl::Status ApplyEventsRetentionFlags(const std::string& retention,
                                       const std::string& retention_bytes,
                                       experiments::EventsOptions* options);
// Adds --events-retention and --events-retention-bytes (with their defaults).
void AddEventsRetentionFlags(CLI::App* cmd, std::string* retention, std::string* retention_bytes);
// Serves until SIGINT/SIGTERM; returns the exit code.
int RunExperimentsServe(const ExperimentsServeFlags& flags);

}  // namespace capstan
