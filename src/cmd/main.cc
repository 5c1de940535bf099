// `capstan`: one binary, one subcommand per role (see README.md).
//
//   capstan store [flags]   a metadata store member speaking the etcd v3 API
//   capstan store snapshot save|status|restore  backups (store_snapshot_cmd.h)
//   capstan dev             everything on localhost, data in ./data: a store member,
//                           an example service and a gateway (dev_cmd.h)
//   capstan experiments eval  GrowthBook evaluation, one JSON request per stdin line
//   capstan experiments serve the experiments HTTP API (experiments_cmd.h)
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/config.h"
#include "base/logging.h"
#include "base/signals.h"
#include "bench/null_server.h"
#include "bench/rpc_bench.h"
#include "bench/store_bench.h"
#include "cmd/dev_cmd.h"
#include "cmd/experiments_cmd.h"
#include "cmd/gateway_cmd.h"
#include "cmd/store_snapshot_cmd.h"
#include "experiments/eval_protocol.h"
#include "net/loop_group.h"
#include "store/jwt.h"
#include "store/server.h"

namespace capstan {
namespace {

constexpr char kVersion[] = "0.1.0";

struct StoreFlags {
  std::string name = "default";
  std::string data_dir;
  std::vector<std::string> listen_client_urls{"http://127.0.0.1:2379"};
  std::vector<std::string> advertise_client_urls;
  std::vector<std::string> initial_advertise_peer_urls{"http://localhost:2380"};
  std::vector<std::string> listen_metrics_urls;
  std::vector<std::string> listen_peer_urls;
  std::string initial_cluster;
  std::string initial_cluster_state = "new";
  std::string initial_cluster_token = "etcd-cluster";
  bool strict_reconfig_check = true;
  int64_t snapshot_catchup_entries = 5000;
  int64_t snapshot_count = 10000;
  int64_t quota_backend_bytes = 0;
  int64_t max_request_bytes = 1536 * 1024;
  int max_txn_ops = 128;
  int client_threads = 0;
  int64_t heartbeat_ms = 100;
  int64_t election_ms = 1000;
  std::string progress_notify_interval = "10m";
  std::string auth_token = "simple";
  int64_t auth_token_ttl = 300;
  int bcrypt_cost = 10;
  std::string log_level = "info";
  std::string config_file;
  store::TlsInfo client_tls;
  store::TlsInfo peer_tls;
};

void AddStoreFlags(CLI::App* cmd, StoreFlags* f, bool dev) {
  cmd->add_option("--name", f->name, "Human-readable name for this member.")->capture_default_str();
  cmd->add_option("--data-dir", f->data_dir,
                  dev ? "Directory for the data (write-ahead log and database)."
                      : "Directory for the data (default: ${name}.etcd, as etcd).")
      ->capture_default_str();
  cmd->add_option("--listen-client-urls", f->listen_client_urls,
                  "URLs to serve the etcd v3 gRPC API on (comma-separated, http://host:port).")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--advertise-client-urls", f->advertise_client_urls,
                  "Client URLs reported in MemberList (default: the listen URLs).")
      ->delimiter(',');
  cmd->add_option("--initial-advertise-peer-urls", f->initial_advertise_peer_urls,
                  "Peer URLs reported in MemberList.")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--listen-peer-urls", f->listen_peer_urls,
                  "URLs to accept traffic from the other members on (default: the advertised "
                  "peer URLs).")
      ->delimiter(',');
  cmd->add_option("--initial-cluster", f->initial_cluster,
                  "The members at bootstrap, name=peer-url,... (default: this member alone at "
                  "its advertised peer URLs). Ignored once the data directory exists.");
  cmd->add_option("--initial-cluster-state", f->initial_cluster_state,
                  "new: found a cluster with --initial-cluster; existing: join a cluster this "
                  "member was added to with `etcdctl member add`.")
      ->capture_default_str();
  cmd->add_option("--initial-cluster-token", f->initial_cluster_token,
                  "Makes member and cluster IDs unique to this cluster at bootstrap.")
      ->capture_default_str();
  cmd->add_option("--strict-reconfig-check", f->strict_reconfig_check,
                  "Refuse membership changes that would leave too few started, reachable "
                  "voters for a quorum (as etcd).")
      ->capture_default_str();
  cmd->add_option("--snapshot-count", f->snapshot_count,
                  "Applied entries after which the database is flushed and the log compacted.")
      ->capture_default_str();
  cmd->add_option("--experimental-snapshot-catchup-entries", f->snapshot_catchup_entries,
                  "Log entries kept behind the database's durable point for slow followers; "
                  "further behind, a follower is sent a snapshot.")
      ->capture_default_str();
  cmd->add_option("--listen-metrics-urls", f->listen_metrics_urls,
                  "URLs to serve /metrics (Prometheus text) and /health on.")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--quota-backend-bytes", f->quota_backend_bytes,
                  "Raise the NOSPACE alarm when the database exceeds this size; then only "
                  "reads and deletes are accepted (0: 2 GiB, etcd's default).")
      ->capture_default_str();
  cmd->add_option("--max-request-bytes", f->max_request_bytes,
                  "Largest request the server accepts, in bytes (etcd's default: 1.5 MiB).")
      ->capture_default_str();
  cmd->add_option("--max-txn-ops", f->max_txn_ops,
                  "Most operations (compares, or ops per branch) in one txn.")
      ->capture_default_str();
  // `capstan dev` serves clients on the loops every server of it shares
  // (its --threads).
  if (!dev) {
    cmd->add_option("--client-threads", f->client_threads,
                    "Event-loop threads serving clients (0: one per CPU but one, which is left "
                    "to the thread that writes and applies the log).")
        ->capture_default_str();
  }
  cmd->add_option("--heartbeat-interval", f->heartbeat_ms,
                  "Raft heartbeat interval in milliseconds (also sets the minimum lease TTL).")
      ->capture_default_str();
  cmd->add_option("--election-timeout", f->election_ms,
                  "Raft election timeout in milliseconds (also sets the minimum lease TTL).")
      ->capture_default_str();
  cmd->add_option("--experimental-watch-progress-notify-interval", f->progress_notify_interval,
                  "How often watchers that asked for progress_notify get a progress response.")
      ->capture_default_str();
  cmd->add_option("--cert-file", f->client_tls.cert_file,
                  "TLS certificate (PEM) of the client port (https:// client and metrics URLs).");
  cmd->add_option("--key-file", f->client_tls.key_file, "TLS private key (PEM) of --cert-file.");
  cmd->add_option("--trusted-ca-file", f->client_tls.trusted_ca_file,
                  "CA bundle (PEM) that client certificates must chain to.");
  cmd->add_flag("--client-cert-auth", f->client_tls.client_cert_auth,
                "Require a client certificate signed by --trusted-ca-file on the client port.");
  cmd->add_flag("--auto-tls", f->client_tls.auto_tls,
                "Without --cert-file: serve https:// client URLs with a self-signed certificate "
                "made at start (for tests).");
  cmd->add_option("--peer-cert-file", f->peer_tls.cert_file,
                  "TLS certificate (PEM) of the peer port (https:// peer URLs); also presented "
                  "to other members.");
  cmd->add_option("--peer-key-file", f->peer_tls.key_file,
                  "TLS private key (PEM) of --peer-cert-file.");
  cmd->add_option("--peer-trusted-ca-file", f->peer_tls.trusted_ca_file,
                  "CA bundle (PEM) that other members' certificates must chain to.");
  cmd->add_flag("--peer-client-cert-auth", f->peer_tls.client_cert_auth,
                "Refuse members without a certificate signed by --peer-trusted-ca-file.");
  cmd->add_flag("--peer-auto-tls", f->peer_tls.auto_tls,
                "Without --peer-cert-file: serve https:// peer URLs with a self-signed "
                "certificate made at start, and do not verify other members' (for tests).");
  cmd->add_option("--auth-token", f->auth_token,
                  "Token type of the Auth API, as etcd's: \"simple\", or \"jwt,sign-method=M,"
                  "priv-key=PATH,pub-key=PATH,ttl=5m\" (M: RS256/384/512, PS256/384/512, "
                  "ES256/384/512, EdDSA, HS256/384/512; pub-key alone: verify only).")
      ->capture_default_str();
  cmd->add_option("--auth-token-ttl", f->auth_token_ttl,
                  "Seconds a simple token lives after its last use.")
      ->capture_default_str();
  cmd->add_option("--bcrypt-cost", f->bcrypt_cost,
                  "bcrypt cost of password hashes (4 to 31; each step doubles the work).")
      ->capture_default_str();
  cmd->add_option("--log-level", f->log_level, "debug, info, warn or err.")->capture_default_str();
  cmd->add_option("--config-file", f->config_file,
                  "YAML file of flag-name: value pairs; command-line flags override it.");
}

absl::StatusOr<store::StoreServerConfig> BuildConfig(const StoreFlags& f) {
  store::StoreServerConfig cfg;
  cfg.store.name = f.name;
  cfg.store.data_dir = f.data_dir.empty() ? f.name + ".etcd" : f.data_dir;
  cfg.listen_client_urls = f.listen_client_urls;
  cfg.listen_metrics_urls = f.listen_metrics_urls;
  cfg.client_tls = f.client_tls;
  cfg.peer_tls = f.peer_tls;
  cfg.store.advertise_client_urls = f.advertise_client_urls;
  cfg.store.advertise_peer_urls = f.initial_advertise_peer_urls;
  cfg.listen_peer_urls = f.listen_peer_urls;
  cfg.store.initial_cluster = f.initial_cluster;
  cfg.store.initial_cluster_state = f.initial_cluster_state;
  cfg.store.initial_cluster_token = f.initial_cluster_token;
  cfg.store.strict_reconfig_check = f.strict_reconfig_check;
  if (f.initial_cluster_state != "new" && f.initial_cluster_state != "existing") {
    return absl::InvalidArgumentError(
        absl::StrCat("--initial-cluster-state must be \"new\" or \"existing\", not \"",
                     f.initial_cluster_state, "\""));
  }
  if (f.initial_advertise_peer_urls.empty()) {
    return absl::InvalidArgumentError("--initial-advertise-peer-urls: give at least one URL");
  }
  if (f.snapshot_catchup_entries < 1) {
    return absl::InvalidArgumentError("--experimental-snapshot-catchup-entries must be >= 1");
  }
  cfg.store.snapshot_catchup_entries = static_cast<uint64_t>(f.snapshot_catchup_entries);
  if (f.snapshot_count < 1) return absl::InvalidArgumentError("--snapshot-count must be >= 1");
  cfg.store.snapshot_count = static_cast<uint64_t>(f.snapshot_count);
  if (f.listen_client_urls.empty()) {
    return absl::InvalidArgumentError("--listen-client-urls: give at least one URL");
  }
  if (f.quota_backend_bytes < 0) {
    return absl::InvalidArgumentError("--quota-backend-bytes must be >= 0 (0 means 2 GiB)");
  }
  if (f.quota_backend_bytes > 0) cfg.store.quota_backend_bytes = f.quota_backend_bytes;
  if (f.max_request_bytes < 1024 || f.max_request_bytes > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        "--max-request-bytes must be between 1024 and 1073741824 (1 GiB)");
  }
  cfg.store.max_request_bytes = static_cast<size_t>(f.max_request_bytes);
  if (f.max_txn_ops < 1) return absl::InvalidArgumentError("--max-txn-ops must be at least 1");
  cfg.store.max_txn_ops = f.max_txn_ops;
  if (f.client_threads < 0 || f.client_threads > 1024) {
    return absl::InvalidArgumentError(
        "--client-threads must be between 0 (one per CPU but one) and 1024");
  }
  cfg.client_loops = f.client_threads;
  if (f.heartbeat_ms <= 0) return absl::InvalidArgumentError("--heartbeat-interval must be > 0");
  if (f.election_ms < 5 * f.heartbeat_ms) {
    return absl::InvalidArgumentError(absl::StrCat("--election-timeout[", f.election_ms,
                                                   "ms] should be at least 5 times ",
                                                   "--heartbeat-interval[", f.heartbeat_ms, "ms]"));
  }
  // etcd's minimum lease TTL: 1.5 election timeouts, rounded up to a second.
  int64_t ticks = f.election_ms / f.heartbeat_ms;
  cfg.store.heartbeat = std::chrono::milliseconds(f.heartbeat_ms);
  cfg.store.election_ticks = static_cast<int>(ticks);
  cfg.store.min_lease_ttl_seconds = static_cast<int64_t>(
      std::ceil(static_cast<double>((3 * ticks) / 2 * f.heartbeat_ms) / 1000.0));
  auto progress = ParseDurationMillis(f.progress_notify_interval);
  if (!progress.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--experimental-watch-progress-notify-interval: ", progress.status().message()));
  }
  if (*progress < 100) {
    return absl::InvalidArgumentError(
        "--experimental-watch-progress-notify-interval must be at least 100ms");
  }
  cfg.store.progress_notify_interval = std::chrono::milliseconds(*progress);
  auto jwt = store::ParseAuthTokenOption(f.auth_token);
  if (!jwt.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--auth-token: ", jwt.status().message()));
  }
  cfg.store.auth_jwt = *std::move(jwt);
  if (f.auth_token_ttl < 1) return absl::InvalidArgumentError("--auth-token-ttl must be >= 1");
  cfg.store.auth_token_ttl = std::chrono::seconds(f.auth_token_ttl);
  if (f.bcrypt_cost < 4 || f.bcrypt_cost > 31) {
    return absl::InvalidArgumentError("--bcrypt-cost must be between 4 and 31");
  }
  cfg.store.bcrypt_cost = f.bcrypt_cost;
  return cfg;
}

// `dev`: the example service and the gateway run beside the member.
int RunStore(const StoreFlags& flags, const char* role, const DevFlags* dev = nullptr) {
  if (!InitLogging(flags.log_level)) {
    std::cerr << "capstan " << role << ": --log-level \"" << flags.log_level
              << "\" is not one of trace, debug, info, warn, err\n";
    return 2;
  }
  auto cfg = BuildConfig(flags);
  if (!cfg.ok()) {
    std::cerr << "capstan " << role << ": " << cfg.status().message() << "\n";
    return 2;
  }
  // A member removed from its cluster stops, as etcd's does.
  cfg->store.on_removed = [] { ::kill(::getpid(), SIGTERM); };
  std::string data_dir = cfg->store.data_dir;
  // `dev`: one set of event loops for every server of the process (the
  // member's client port included); stopped after all of them.
  std::unique_ptr<net::LoopGroup> dev_loops;
  if (dev != nullptr) {
    auto loops = StartDevLoops(*dev);
    if (!loops.ok()) {
      std::cerr << "capstan " << role << ": " << loops.status().message() << "\n";
      return loops.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    dev_loops = *std::move(loops);
    cfg->client_group = dev_loops.get();
  }
  auto server = store::StoreServer::Start(*std::move(cfg));
  if (!server.ok()) {
    std::cerr << "capstan " << role << ": " << server.status().message() << "\n";
    // A flag the server refuses (an https:// URL without a certificate) is
    // a usage error like the ones BuildConfig finds.
    return absl::IsInvalidArgument(server.status()) ? 2 : 1;
  }
  std::unique_ptr<DevServices> services;
  if (dev != nullptr) {
    // The event log sits beside the store's files, in its data directory.
    DevFlags with_events = *dev;
    with_events.events_dir = data_dir + "/experiments-events";
    auto started =
        DevServices::Start(with_events, flags.listen_client_urls.front(), dev_loops.get());
    if (!started.ok()) {
      std::cerr << "capstan " << role << ": " << started.status().message() << "\n";
      (*server)->Shutdown();
      dev_loops.reset();
      return 1;
    }
    services = *std::move(started);
  }
  CAPSTAN_LOG(info, "ready to serve client requests", "role", role);
  if (services != nullptr) {
    std::string endpoint = flags.listen_client_urls.front();
    if (endpoint.starts_with("http://")) endpoint = endpoint.substr(7);
    services->PrintUrls(std::cout, endpoint, flags.listen_metrics_urls);
  }
  int sig = WaitForTerminationSignal();
  CAPSTAN_LOG(info, "shutting down", "signal", sig);
  services.reset();  // they use the store: stopped before it
  (*server)->Shutdown();
  // Every server on the shared loops has stopped: the loops go last.
  dev_loops.reset();
  return 0;
}

// The --config-file named on the command line, if any.
std::string FindConfigFile(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config-file" && i + 1 < argc) return argv[i + 1];
    if (a.rfind("--config-file=", 0) == 0) return a.substr(14);
  }
  return "";
}

struct Cli {
  std::unique_ptr<CLI::App> app;
  CLI::App* store = nullptr;
  CLI::App* dev = nullptr;
  CLI::App* gateway = nullptr;
  CLI::App* bench_store = nullptr;
  CLI::App* bench_null_server = nullptr;
  CLI::App* bench_rpc = nullptr;
  CLI::App* bench_rpc_server = nullptr;
  CLI::App* experiments_eval = nullptr;
  CLI::App* experiments_serve = nullptr;
  // `store snapshot ...` (store_snapshot_cmd.h); its flags live with the Cli.
  std::unique_ptr<StoreSnapshotFlags> store_snapshot_flags = std::make_unique<StoreSnapshotFlags>();
  StoreSnapshotCommands store_snapshot;
};

struct ExperimentsFlags {
  std::string engine = "reference";
  ExperimentsServeFlags serve;
};

struct BenchFlags {
  bench::StoreBenchOptions store;
  bench::NullServerOptions null_server;
  bench::RpcBenchOptions rpc;
  bench::RpcBenchServerOptions rpc_server;
  bool json = false;
};

void AddBenchRpcFlags(CLI::App* cmd, BenchFlags* f) {
  auto& o = f->rpc;
  cmd->add_option("--system", o.system, "capstan or grpc (the client library to load with).")
      ->capture_default_str();
  cmd->add_option("--target", o.target, "host:port of the echo server.")->capture_default_str();
  cmd->add_option("--concurrency", o.concurrency, "Calls in flight at once.")
      ->capture_default_str();
  cmd->add_option("--conns", o.connections, "Connections.")->capture_default_str();
  cmd->add_option("--payload", o.payload_bytes, "Request (and response) payload bytes.")
      ->capture_default_str();
  cmd->add_option("--warmup", o.warmup_seconds, "Seconds of load before measuring.")
      ->capture_default_str();
  cmd->add_option("--duration", o.duration_seconds, "Seconds measured.")->capture_default_str();
  cmd->add_option("--threads", o.threads, "capstan: client event loops.")->capture_default_str();
  cmd->add_option("--io", o.io, "capstan: auto, io_uring or epoll.")->capture_default_str();
  cmd->add_option("--pid", o.server_pids, "Server process id(s), for CPU per call.")
      ->delimiter(',');
  cmd->add_option("--server-core", o.server_core,
                  "The core the server is pinned to, for its busy time from /proc/stat.");
  cmd->add_flag("--json", f->json, "Print the result as one JSON line.");
}

void AddBenchRpcServerFlags(CLI::App* cmd, BenchFlags* f) {
  auto& o = f->rpc_server;
  cmd->add_option("--system", o.system, "capstan or grpc.")->capture_default_str();
  cmd->add_option("--listen", o.listen, "host:port to serve on (port 0 picks one).")
      ->capture_default_str();
  cmd->add_option("--threads", o.threads, "capstan: event loops.")->capture_default_str();
  cmd->add_option("--io", o.io, "capstan: auto, io_uring or epoll.")->capture_default_str();
  cmd->add_option("--port-file", o.port_file, "Write the bound port here.");
}

void AddBenchStoreFlags(CLI::App* cmd, BenchFlags* f) {
  auto& o = f->store;
  cmd->add_option("--endpoints", o.endpoints, "Servers to load (host:port, comma-separated).")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--workload", o.workload, "put, range, txn-create, txn-update, watch or lease.")
      ->capture_default_str();
  cmd->add_option("--clients", o.clients, "Requests in flight at once.")->capture_default_str();
  cmd->add_option("--conns", o.connections, "HTTP/2 connections.")->capture_default_str();
  cmd->add_option("--total", o.total, "Operations to run.")->capture_default_str();
  cmd->add_option("--duration", o.duration_seconds, "Stop after this many seconds (0: none).")
      ->capture_default_str();
  cmd->add_option("--key-size", o.key_size, "Key size in bytes (put, range).")
      ->capture_default_str();
  cmd->add_option("--val-size", o.value_size, "Value size in bytes (put, range).")
      ->capture_default_str();
  cmd->add_option("--key-space", o.key_space, "Distinct keys.")->capture_default_str();
  cmd->add_flag("--sequential-keys", o.sequential_keys, "Keys in order instead of random.");
  cmd->add_option(
      "--consistency",
      [&o](const CLI::results_t& r) {
        o.serializable = r[0] == "s";
        return r[0] == "s" || r[0] == "l";
      },
      "range: l (linearizable) or s (serializable).");
  cmd->add_option("--limit", o.range_limit, "range: read a prefix with this limit (0: one key).")
      ->capture_default_str();
  cmd->add_option("--watchers", o.watchers, "watch: watchers on one prefix.")
      ->capture_default_str();
  cmd->add_option("--watchers-per-stream", o.watchers_per_stream, "watch: watchers per stream.")
      ->capture_default_str();
  cmd->add_option("--rate", o.rate, "watch: puts per second.")->capture_default_str();
  cmd->add_option("--lease-ttl", o.lease_ttl_seconds, "lease: TTL of each lease in seconds.")
      ->capture_default_str();
  cmd->add_option("--pid", o.server_pids, "Server process id(s), for CPU per op and peak RSS.")
      ->delimiter(',');
  cmd->add_flag("--json", f->json, "Print the result as one JSON line.");
  cmd->add_flag("!--no-progress", o.progress, "No progress line every second.");
  cmd->add_option(
      "--client",
      [&o](const CLI::results_t& r) {
        o.raw_client = r[0] == "raw";
        return r[0] == "raw" || r[0] == "grpc";
      },
      "put, range, txn: grpc (the C++ client library, default) or raw (HTTP/2 through nghttp2 "
      "on one thread: a fraction of the generator CPU per call).");
}

int RunBenchStore(const BenchFlags& f) {
  auto r = bench::RunStoreBench(f.store);
  if (!r.ok()) {
    std::cerr << "capstan bench store: " << r.status().message() << "\n";
    return 2;
  }
  std::cout << (f.json ? r->Json() + "\n" : r->Table());
  return r->errors == 0 ? 0 : 1;
}

Cli MakeCli(StoreFlags* store_flags, StoreFlags* dev_flags, DevFlags* dev_extra_flags,
            BenchFlags* bench_flags, GatewayFlags* gateway_flags,
            ExperimentsFlags* experiments_flags) {
  Cli cli;
  cli.app = std::make_unique<CLI::App>(
      "Capstan: metadata store, RPC framework, gateway and experiments in one binary.");
  cli.app->require_subcommand(1);
  cli.app->set_version_flag("--version", kVersion);
  cli.store = cli.app->add_subcommand(
      "store", "Run a metadata store member that speaks the etcd v3 gRPC API.");
  AddStoreFlags(cli.store, store_flags, false);
  cli.store_snapshot = AddStoreSnapshotCommands(cli.store, cli.store_snapshot_flags.get());
  cli.dev = cli.app->add_subcommand(
      "dev",
      "Run everything on localhost for development: a store member, an example HTTP service "
      "registered in it and a gateway in front of that service.");
  AddStoreFlags(cli.dev, dev_flags, true);
  AddDevFlags(cli.dev, dev_extra_flags);
  cli.gateway = cli.app->add_subcommand(
      "gateway", "Run the HTTP reverse proxy and load balancer (docs/gateway.md).");
  AddGatewayCommand(cli.gateway, gateway_flags);
  CLI::App* bench = cli.app->add_subcommand("bench", "Load generators.");
  bench->require_subcommand(1);
  cli.bench_store = bench->add_subcommand(
      "store", "Load an etcd v3 server (capstan or etcd) and report throughput and latency.");
  AddBenchStoreFlags(cli.bench_store, bench_flags);
  cli.bench_null_server = bench->add_subcommand(
      "null-server", "Serve the etcd KV API doing no work, to measure gRPC's own CPU per call.");
  cli.bench_null_server
      ->add_option("--listen", bench_flags->null_server.listen, "host:port to serve on.")
      ->capture_default_str();
  cli.bench_rpc = bench->add_subcommand(
      "rpc", "Load an echo server (capstan RPC or gRPC) and report QPS, latency and CPU.");
  AddBenchRpcFlags(cli.bench_rpc, bench_flags);
  cli.bench_rpc_server =
      bench->add_subcommand("rpc-server", "Serve the echo service with capstan RPC or gRPC C++.");
  AddBenchRpcServerFlags(cli.bench_rpc_server, bench_flags);
  CLI::App* experiments = cli.app->add_subcommand("experiments", "The experiments engine.");
  experiments->require_subcommand(1);
  cli.experiments_eval = experiments->add_subcommand(
      "eval",
      "Evaluate GrowthBook payloads as the JavaScript SDK does: one JSON request per stdin "
      "line, one JSON answer per stdout line (docs: experiments-eval-protocol.md).");
  cli.experiments_eval
      ->add_option("--engine", experiments_flags->engine,
                   "reference: the JSON-walking evaluator; compiled: the in-process SDK's "
                   "compiled payload where it applies (for testing that both agree).")
      ->check(CLI::IsMember({"reference", "compiled"}))
      ->capture_default_str();
  cli.experiments_serve = AddExperimentsServeCommand(experiments, &experiments_flags->serve);
  return cli;
}

}  // namespace
}  // namespace capstan

int main(int argc, char** argv) {
  using namespace capstan;
  BlockTerminationSignals();
  // Debian builds abseil without NDEBUG, which leaves absl::Mutex's deadlock
  // detector on: every lock gRPC takes then updates a global lock graph (a few
  // percent of the store's CPU in perf). Our own locks are checked by TSan.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Every subcommand logs in the store's logfmt, those without --log-level
  // (bench servers, eval) included; a --log-level later only sets the level.
  InitLogging("info");

  StoreFlags store_flags;
  StoreFlags dev_flags;
  DevFlags dev_extra_flags;
  BenchFlags bench_flags;
  GatewayFlags gateway_flags;
  ExperimentsFlags experiments_flags;
  dev_flags.name = "dev";
  dev_flags.data_dir = "./data";
  dev_flags.listen_metrics_urls = {"http://127.0.0.1:2381"};
  dev_flags.initial_advertise_peer_urls = {"http://127.0.0.1:2380"};

  // A config file is parsed first, as if its settings were flags; the command
  // line is parsed second, so each flag given there replaces the file's value.
  std::string config_file = FindConfigFile(argc, argv);
  if (!config_file.empty() && argc > 1) {
    auto from_file = LoadConfigFileAsArgs(config_file);
    if (!from_file.ok()) {
      std::cerr << "capstan: " << from_file.status().message() << "\n";
      return 2;
    }
    std::vector<std::string> args(from_file->rbegin(), from_file->rend());
    args.push_back(argv[1]);  // the subcommand
    Cli file_cli = MakeCli(&store_flags, &dev_flags, &dev_extra_flags, &bench_flags, &gateway_flags,
                           &experiments_flags);
    try {
      file_cli.app->parse(args);
    } catch (const CLI::ParseError& e) {
      std::cerr << "capstan: config file " << config_file << ": " << e.what() << "\n";
      return 2;
    }
  }
  Cli cli = MakeCli(&store_flags, &dev_flags, &dev_extra_flags, &bench_flags, &gateway_flags,
                    &experiments_flags);
  try {
    cli.app->parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.app->exit(e);
  }
  CLI::App* store_cmd = cli.store;
  CLI::App* dev_cmd = cli.dev;
  if (cli.store_snapshot.snapshot->parsed()) {
    return RunStoreSnapshot(cli.store_snapshot, *cli.store_snapshot_flags);
  }
  if (store_cmd->parsed()) return RunStore(store_flags, "store");
  if (dev_cmd->parsed()) return RunStore(dev_flags, "dev", &dev_extra_flags);
  if (cli.gateway->parsed()) return RunGateway(gateway_flags);
  if (cli.bench_store->parsed()) return RunBenchStore(bench_flags);
  if (cli.experiments_eval->parsed()) {
    std::ios::sync_with_stdio(false);  // nothing else in the process uses C stdio here
    experiments::EvalOptions options;
    options.compiled_engine = experiments_flags.engine == "compiled";
    return experiments::RunEvalLoop(std::cin, std::cout, options, &std::cerr);
  }
  if (cli.experiments_serve->parsed()) return RunExperimentsServe(experiments_flags.serve);
  if (cli.bench_rpc->parsed()) {
    auto r = bench::RunRpcBench(bench_flags.rpc);
    if (!r.ok()) {
      std::cerr << "capstan bench rpc: " << r.status().message() << "\n";
      return 2;
    }
    std::cout << (bench_flags.json ? r->Json() + "\n" : r->Table());
    return r->errors == 0 ? 0 : 1;
  }
  if (cli.bench_rpc_server->parsed()) {
    absl::Status st = bench::RunRpcBenchServer(bench_flags.rpc_server);
    if (!st.ok()) {
      std::cerr << "capstan bench rpc-server: " << st.message() << "\n";
      return 2;
    }
    return 0;
  }
  if (cli.bench_null_server->parsed()) {
    absl::Status st = bench::RunNullServer(bench_flags.null_server);
    if (!st.ok()) {
      std::cerr << "capstan bench null-server: " << st.message() << "\n";
      return 2;
    }
  }
  return 0;
}
