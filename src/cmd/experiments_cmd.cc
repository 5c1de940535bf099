// `capstan experiments serve` (experiments_cmd.h).
#include "cmd/experiments_cmd.h"

#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/config.h"
#include "base/logging.h"
#include "base/signals.h"
#include "experiments_rpc/rpc_service.h"
#include "gateway/config.h"
#include "net/address.h"

namespace capstan {

void AddEventsRetentionFlags(CLI::App* cmd, std::string* retention, std::string* retention_bytes) {
  cmd->add_option("--events-retention", *retention,
                  "Event log retention: a log segment is removed once every event in it is in a "
                  "durable checkpoint and outside the dedup window, and it was last written this "
                  "long ago (e.g. 36h, 7d); off: no time limit.")
      ->capture_default_str();
  cmd->add_option("--events-retention-bytes", *retention_bytes,
                  "Event log size cap (e.g. 20GiB): covered segments are removed, however young, "
                  "while the log is larger; never below what the checkpoint and the dedup window "
                  "need. off: no cap.")
      ->capture_default_str();
}

absl::Status ApplyEventsRetentionFlags(const std::string& retention,
                                       const std::string& retention_bytes,
                                       experiments::EventsOptions* options) {
  if (retention == "off") {
    options->retention_ms = -1;
  } else {
    absl::StatusOr<int64_t> ms = ParseDurationMillis(retention);
    if (!ms.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--events-retention: ", ms.status().message(), ", or off"));
    }
    options->retention_ms = *ms;
  }
  if (retention_bytes == "off") {
    options->retention_bytes = 0;
  } else {
    absl::StatusOr<size_t> bytes = gateway::ParseByteSize(retention_bytes);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--events-retention-bytes: \"", retention_bytes,
                       "\" is not a size like 512MiB or 20GiB (or off)"));
    }
    options->retention_bytes = *bytes;
  }
  return absl::OkStatus();
}

CLI::App* AddExperimentsServeCommand(CLI::App* experiments, ExperimentsServeFlags* f) {
  CLI::App* cmd = experiments->add_subcommand(
      "serve",
      "Serve the experiments HTTP API: configuration documents in the store (watched), "
      "the layered model's /v1/evaluate, /v1/evaluate/batch and /v1/analyze, and "
      "GrowthBook's SDK endpoints /api/features/{clientKey} and /api/eval/{clientKey}; "
      "with --rpc-listen, the same calls over Capstan RPC (docs/experiments.md).");
  cmd->add_option("--store", f->store, "The store's endpoints (host:port, comma-separated).")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--listen", f->listen,
                  "Where the HTTP API listens (host:port; port 0 picks one).")
      ->capture_default_str();
  cmd->add_option("--prefix", f->prefix, "The store prefix the documents live under (ends in /).")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads,
                  "Worker threads running API requests (a write waits for the store).")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", f->max_body_bytes,
                  "Largest request body accepted; larger ones are answered 413.")
      ->capture_default_str();
  cmd->add_option("--max-batch-units", f->max_batch_units,
                  "Units in one POST /v1/evaluate/batch; more are answered 413.")
      ->capture_default_str();
  cmd->add_option("--max-connections", f->max_connections,
                  "HTTP connections served at once; more are closed as they arrive.")
      ->capture_default_str();
  cmd->add_option("--sse-max-subscribers", f->sse_max_subscribers,
                  "GrowthBook streaming (GET /sub/{clientKey}): subscribers at once, below "
                  "--max-connections; more are answered 503. -1: half of --max-connections; "
                  "0: streaming off.")
      ->capture_default_str();
  cmd->add_option("--sse-heartbeat-ms", f->sse_heartbeat_ms,
                  "A comment is sent on a stream idle this long, so proxies keep it open.")
      ->capture_default_str();
  cmd->add_option("--log-level", f->log_level, "debug, info, warn or err.")->capture_default_str();
  cmd->add_option("--events-dir", f->events_dir, "Event log directory; enables POST /v1/events.");
  cmd->add_option("--events-checkpoint-events", f->events_checkpoint_events,
                  "Events aggregated between two checkpoints of the event aggregation.")
      ->capture_default_str();
  AddEventsRetentionFlags(cmd, &f->events_retention, &f->events_retention_bytes);
  cmd->add_option("--events-segment-bytes", f->events_segment_bytes,
                  "Size of one event log segment file, the unit retention removes (at least "
                  "64KiB).")
      ->capture_default_str();
  cmd->add_option("--events-dedup-window", f->events_dedup_window,
                  "Idempotency keys remembered (at least this many of the most recent accepted "
                  "events, up to twice as many; ~26 bytes per window key in memory): a re-sent "
                  "event is recognized while fewer events than this were accepted after it.")
      ->capture_default_str();
  cmd->add_option("--events-max-cached-units", f->events_max_cached_units,
                  "Unit states kept in memory after a checkpoint (~220 bytes each); the others "
                  "are read back from the database when their unit sends an event. Size it to "
                  "the units active at once: a read back costs 10-20 microseconds of CPU.")
      ->capture_default_str();
  cmd->add_option("--rpc-listen", f->rpc_listen,
                  "Where the Capstan RPC API (proto/capstan/experiments.proto) listens "
                  "(host:port, e.g. 127.0.0.1:8091; port 0 picks one); empty: no RPC API.")
      ->capture_default_str();
  cmd->add_option("--rpc-threads", f->rpc_threads, "Event loops serving the RPC API.")
      ->capture_default_str();
  cmd->add_option("--gateway-admin", f->gateway_admin,
                  "A gateway's admin endpoint (http://host:port, its `admin:` address) whose "
                  "routes, clusters and endpoint health GET /v1/gateways and the console's "
                  "Gateways page show; repeat for each gateway (at most 32). Default: none.")
      ->take_all();
  cmd->add_option("--gateway-timeout-ms", f->gateway_timeout_ms,
                  "How long GET /v1/gateways waits for each gateway's /status; one that does "
                  "not answer in time is shown as unreachable.")
      ->capture_default_str();
  return cmd;
}

absl::StatusOr<experiments::ServiceOptions> ExperimentsServiceOptions(
    const ExperimentsServeFlags& f,
    std::function<void(std::shared_ptr<experiments::EventsApi>)> on_events_open) {
  experiments::ServiceOptions options;
  for (const std::string& endpoint : f.store) {
    absl::StatusOr<net::HostPort> parsed = net::ParseHostPort(endpoint);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--store ", endpoint, ": ", std::string(parsed.status().message())));
    }
    options.store_endpoints.push_back(endpoint);
  }
  absl::StatusOr<net::HostPort> listen = net::ParseHostPort(f.listen, /*allow_port_zero=*/true);
  if (!listen.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen: ", std::string(listen.status().message())));
  }
  options.listen_host = listen->host;
  options.listen_port = listen->port;
  options.prefix = f.prefix;
  if (f.threads < 1 || f.threads > 256) {
    return absl::InvalidArgumentError("--threads must be between 1 and 256");
  }
  options.worker_threads = f.threads;
  if (f.max_body_bytes < 1024 || f.max_body_bytes > (int64_t{64} << 20)) {
    return absl::InvalidArgumentError(
        "--max-body-bytes must be between 1024 and 67108864 (64 MiB)");
  }
  options.max_body_bytes = static_cast<uint64_t>(f.max_body_bytes);
  if (f.max_connections < 1) return absl::InvalidArgumentError("--max-connections must be >= 1");
  if (f.max_batch_units < 1 || f.max_batch_units > 100000) {
    return absl::InvalidArgumentError("--max-batch-units must be between 1 and 100000");
  }
  options.max_batch_units = static_cast<size_t>(f.max_batch_units);
  options.max_connections = static_cast<size_t>(f.max_connections);
  if (f.gateway_admin.size() > experiments::kMaxGatewayAdmins) {
    return absl::InvalidArgumentError(absl::StrCat("--gateway-admin: at most ",
                                                   experiments::kMaxGatewayAdmins,
                                                   " gateways (got ", f.gateway_admin.size(), ")"));
  }
  for (const std::string& admin : f.gateway_admin) {
    ASSIGN_OR_RETURN(std::string url, experiments::ParseGatewayAdminUrl(admin));
    options.gateway_admin_urls.push_back(std::move(url));
  }
  if (f.gateway_timeout_ms < 10 || f.gateway_timeout_ms > 60000) {
    return absl::InvalidArgumentError("--gateway-timeout-ms must be between 10 and 60000");
  }
  options.gateway_fetch.timeout = std::chrono::milliseconds(f.gateway_timeout_ms);
  if (f.sse_max_subscribers < -1 || f.sse_max_subscribers >= f.max_connections) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sse-max-subscribers must be -1 (half of --max-connections), 0 (off) or below "
        "--max-connections (",
        f.max_connections, "); got ", f.sse_max_subscribers));
  }
  options.streaming.max_subscribers = f.sse_max_subscribers == -1
                                          ? static_cast<size_t>(f.max_connections / 2)
                                          : static_cast<size_t>(f.sse_max_subscribers);
  if (f.sse_heartbeat_ms < 100 || f.sse_heartbeat_ms > 3600000) {
    return absl::InvalidArgumentError("--sse-heartbeat-ms must be between 100 and 3600000");
  }
  options.streaming.heartbeat_interval = std::chrono::milliseconds(f.sse_heartbeat_ms);
  if (!f.events_dir.empty()) {
    experiments::EventsOptions events{.directory = f.events_dir,
                                      .checkpoint_events = f.events_checkpoint_events,
                                      .on_open = std::move(on_events_open)};
    RETURN_IF_ERROR(
        ApplyEventsRetentionFlags(f.events_retention, f.events_retention_bytes, &events));
    absl::StatusOr<size_t> segment_bytes = gateway::ParseByteSize(f.events_segment_bytes);
    if (!segment_bytes.ok() || *segment_bytes < (64u << 10)) {
      return absl::InvalidArgumentError(absl::StrCat("--events-segment-bytes: \"",
                                                     f.events_segment_bytes,
                                                     "\" is not a size of at least 64KiB"));
    }
    events.segment_bytes = *segment_bytes;
    if (f.events_dedup_window < 1) {
      return absl::InvalidArgumentError("--events-dedup-window must be at least 1");
    }
    events.dedup_window_keys = f.events_dedup_window;
    if (f.events_max_cached_units < 1) {
      return absl::InvalidArgumentError("--events-max-cached-units must be at least 1");
    }
    events.max_cached_units = f.events_max_cached_units;
    options.extensions.push_back(experiments::MakeEventsExtension(std::move(events)));
  }
  return options;
}

int RunExperimentsServe(const ExperimentsServeFlags& f) {
  if (!InitLogging(f.log_level)) {
    std::cerr << "capstan experiments serve: --log-level \"" << f.log_level
              << "\" is not one of trace, debug, info, warn, err\n";
    return 2;
  }
  std::shared_ptr<experiments::EventsApi> events;
  absl::StatusOr<experiments::ServiceOptions> options = ExperimentsServiceOptions(
      f, [&events](std::shared_ptr<experiments::EventsApi> api) { events = std::move(api); });
  if (!options.ok()) {
    std::cerr << "capstan experiments serve: " << options.status().message() << "\n";
    return 2;
  }
  std::optional<net::HostPort> rpc_listen;
  if (!f.rpc_listen.empty()) {
    absl::StatusOr<net::HostPort> parsed =
        net::ParseHostPort(f.rpc_listen, /*allow_port_zero=*/true);
    if (!parsed.ok()) {
      std::cerr << "capstan experiments serve: --rpc-listen: " << parsed.status().message() << "\n";
      return 2;
    }
    if (f.rpc_threads < 1 || f.rpc_threads > 256) {
      std::cerr << "capstan experiments serve: --rpc-threads must be between 1 and 256\n";
      return 2;
    }
    rpc_listen = *parsed;
  }
  const size_t max_message_bytes = options->max_body_bytes;
  const int worker_threads = options->worker_threads;
  auto service = experiments::ExperimentsService::Start(*std::move(options));
  if (!service.ok()) {
    std::cerr << "capstan experiments serve: " << service.status().message() << "\n";
    return 1;
  }
  // Tests and scripts read the bound port from here.
  std::cout << "experiments listening on port " << (*service)->port() << "\n";
  std::unique_ptr<experiments_rpc::ExperimentsRpcServer> rpc;
  if (rpc_listen.has_value()) {
    auto started =
        experiments_rpc::ExperimentsRpcServer::Start(service->get(), std::move(events),
                                                     {.host = rpc_listen->host,
                                                      .port = rpc_listen->port,
                                                      .threads = f.rpc_threads,
                                                      .worker_threads = worker_threads,
                                                      .max_message_bytes = max_message_bytes});
    if (!started.ok()) {
      std::cerr << "capstan experiments serve: --rpc-listen: " << started.status().message()
                << "\n";
      return 1;
    }
    rpc = *std::move(started);
    std::cout << "experiments rpc listening on port " << rpc->port() << "\n";
  }
  std::cout.flush();
  int sig = WaitForTerminationSignal();
  CAPSTAN_LOG(info, "experiments: shutting down", "signal", sig);
  rpc.reset();  // its calls use the service
  service->reset();
  return 0;
}

}  // namespace capstan
