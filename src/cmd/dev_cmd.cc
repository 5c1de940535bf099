// `capstan dev`'s example service and gateway (dev_cmd.h).
#include "cmd/dev_cmd.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "client/client.h"
#include "cmd/experiments_cmd.h"
#include "experiments/events_service.h"
#include "experiments/service.h"
#include "experiments_rpc/rpc_service.h"
#include "gateway/config.h"
#include "gateway/experiment_routing.h"
#include "gateway/gateway.h"
#include "gateway/store_config.h"
#include "mesh/registry.h"
#include "net/address.h"
#include "net/http_server.h"
#include "net/loop_group.h"

namespace capstan {

void AddDevFlags(CLI::App* cmd, DevFlags* f) {
  cmd->add_option("--gateway-listen", f->gateway_listen,
                  "Where the gateway in front of the example service listens (host:port); "
                  "empty: no gateway.")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads,
                  "Event loops shared by every server of the process: the store's client and "
                  "metrics ports, the gateway, the experiments service and its RPC API, the "
                  "example services (0: one per core). Blocking work keeps its own threads.")
      ->capture_default_str();
  cmd->add_option("--gateway-admin-listen", f->gateway_admin_listen,
                  "Where the gateway's admin endpoint (/status, /metrics, /health) listens "
                  "(host:port; port 0 picks one, printed); the console's Gateways page reads its "
                  "/status. Empty: none.")
      ->capture_default_str();
  cmd->add_option("--hello-listen", f->hello_listen,
                  absl::StrCat("Where the example HTTP service listens (host:port; port 0 picks "
                               "one), registered in the store under ",
                               kDevHelloService, "; empty: no example service."))
      ->capture_default_str();
  cmd->add_option("--hello-v2-listen", f->hello_v2_listen,
                  absl::StrCat("Where the example service's second version listens (host:port; "
                               "port 0 picks one), registered under ",
                               kDevHelloV2Service, "; empty: none."))
      ->capture_default_str();
  cmd->add_option("--experiments-listen", f->experiments_listen,
                  "Where the experiments service (HTTP API, GrowthBook SDK endpoints) listens "
                  "(host:port; port 0 picks one); empty: no experiments service.")
      ->capture_default_str();
  cmd->add_option("--experiments-rpc-listen", f->experiments_rpc_listen,
                  "Where the experiments service's Capstan RPC API listens (host:port; port 0 "
                  "picks one, printed); empty: no RPC API.")
      ->capture_default_str();
  AddEventsRetentionFlags(cmd, &f->events_retention, &f->events_retention_bytes);
}

absl::StatusOr<std::unique_ptr<net::LoopGroup>> StartDevLoops(const DevFlags& flags) {
  if (flags.threads < 0 || flags.threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads must be between 0 (one per core) and 1024, not ", flags.threads));
  }
  int threads = flags.threads > 0
                    ? flags.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return net::LoopGroup::Start({.threads = threads, .name = "dev-loop"});
}

namespace {

// Clients reach a listener bound to "any address" on loopback.
std::string Reachable(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host;
}

// What a version of the example service answers on "/": which version, and
// the experiment assignment the gateway sent along (none when reached
// directly).
net::HttpResponse HelloAnswer(const std::string& host, int port, const char* prefix,
                              const char* version, const net::HttpRequest& request) {
  std::optional<std::string_view> assignment = request.Header("x-capstan-experiment");
  return net::HttpResponse{
      .body = absl::StrCat(
          "hello from capstan dev: the example service ", version, " at ",
          net::FormatHostPort(host, port), " (registered under ", prefix, ")",
          assignment ? absl::StrCat("; experiment ", std::string(*assignment)) : std::string(),
          "\n")};
}

// The gateway of `capstan dev`: every request to the example service's
// cluster, whose endpoints are the registry's; routes and clusters under
// /capstan/gateway/ in the store are merged over this (a virtual host
// document named "dev" replaces the default one).
gateway::GatewayConfig DevGatewayConfig(const DevFlags& f, const std::string& store,
                                        const std::string& events_url) {
  gateway::GatewayConfig config;
  gateway::ListenerConfig listener;
  listener.name = "dev";
  listener.address = f.gateway_listen;
  config.listeners.push_back(listener);
  config.admin_address = f.gateway_admin_listen;
  gateway::ClusterConfig cluster;
  cluster.name = "hello";
  cluster.discovery = absl::StrCat("store://", store, "/", kDevHelloService);
  config.clusters.push_back(cluster);
  cluster.name = "hello-v2";
  cluster.discovery = absl::StrCat("store://", store, "/", kDevHelloV2Service);
  config.clusters.push_back(cluster);
  gateway::RouteConfig route;
  route.name = "hello";
  route.match.prefix = "/";
  // Split by experiment kDevExperiment: v1 and units in no variant to
  // "hello", v2 to "hello-v2". The unit is X-User-Id, else a cookie.
  gateway::ExperimentRoute split;
  split.experiment = kDevExperiment;
  split.variants = {{"v1", "hello"}, {"v2", "hello-v2"}};
  split.default_cluster = "hello";
  split.unit_header = "x-user-id";
  route.experiment = split;
  gateway::ExperimentsConfig experiments;
  experiments.store = absl::StrCat("store://", store);
  if (!events_url.empty()) experiments.events_url = events_url;
  config.experiments = experiments;
  gateway::VirtualHostConfig vh;
  vh.name = "dev";
  vh.domains = {"*"};
  vh.routes.push_back(route);
  config.virtual_hosts.push_back(vh);
  config.store = absl::StrCat("store://", store);
  // Ctrl-C in a terminal: requests in flight get a moment, not 15 s.
  config.drain_timeout = std::chrono::seconds(5);
  return config;
}

}  // namespace

absl::StatusOr<DevServices::Hello> DevServices::StartHello(const std::string& listen_flag,
                                                           const char* flag, const char* prefix,
                                                           const char* version,
                                                           std::shared_ptr<client::Client> store,
                                                           net::LoopGroup* group) {
  Hello hello;
  if (listen_flag.empty()) return hello;
  absl::StatusOr<net::HostPort> listen = net::ParseHostPort(listen_flag, /*allow_port_zero=*/true);
  if (!listen.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", std::string(listen.status().message())));
  }
  // Its one handler answers at once: it runs on the shared loop.
  hello.server = std::make_unique<net::HttpServer>(
      net::HttpServerOptions{.name = absl::StrCat("hello-", version), .group = group});
  std::string host = Reachable(listen->host);
  net::HttpServer* server = hello.server.get();
  // Handlers run on the server's loop, after Start has set the port.
  hello.server->HandleAll([host, server, prefix, version](const net::HttpRequest& request) {
    if (request.path == "/health") return net::HttpResponse{.body = "ok\n"};
    return HelloAnswer(host, server->port(), prefix, version, request);
  });
  RETURN_IF_ERROR(hello.server->Start(listen->host, listen->port));
  hello.port = hello.server->port();
  ASSIGN_OR_RETURN(
      hello.registration,
      mesh::Registration::Start(
          std::move(store), {.prefix = prefix, .endpoint = {.host = host, .port = hello.port}}));
  CAPSTAN_LOG(info, "dev: example service serving", "version", version, "address",
              net::FormatHostPort(host, hello.port), "key", hello.registration->key());
  return hello;
}

absl::StatusOr<std::unique_ptr<DevServices>> DevServices::Start(const DevFlags& flags,
                                                                std::string_view store_url,
                                                                net::LoopGroup* group) {
  std::unique_ptr<DevServices> dev(new DevServices());
  if (flags.gateway_listen.empty() && flags.hello_listen.empty() && flags.hello_v2_listen.empty() &&
      flags.experiments_listen.empty()) {
    return dev;
  }
  std::string admin_host;  // where the gateway's admin endpoint listens
  if (!flags.gateway_listen.empty()) {
    absl::StatusOr<net::HostPort> listen =
        net::ParseHostPort(flags.gateway_listen, /*allow_port_zero=*/true);
    if (!listen.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--gateway-listen: ", std::string(listen.status().message())));
    }
    if (!flags.gateway_admin_listen.empty()) {
      absl::StatusOr<net::HostPort> admin =
          net::ParseHostPort(flags.gateway_admin_listen, /*allow_port_zero=*/true);
      if (!admin.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--gateway-admin-listen: ", std::string(admin.status().message())));
      }
      admin_host = admin->host;
    }
  }
  absl::StatusOr<net::Url> url = net::ParseUrl(store_url, {.require_port = true});
  if (!url.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the store's client URL ",
                                                   std::string(store_url), ": ",
                                                   std::string(url.status().message())));
  }
  std::string store = net::FormatHostPort(Reachable(url->host), url->port);
  auto client = client::Client::Connect({.endpoints = {store}});
  if (!client.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the store at ", store, ": ", client.status().message()));
  }
  dev->store_ = std::shared_ptr<client::Client>(std::move(client).value());

  ASSIGN_OR_RETURN(dev->hello_, StartHello(flags.hello_listen, "--hello-listen", kDevHelloService,
                                           "v1", dev->store_, group));
  ASSIGN_OR_RETURN(dev->hello_v2_, StartHello(flags.hello_v2_listen, "--hello-v2-listen",
                                              kDevHelloV2Service, "v2", dev->store_, group));
  dev->hello_port_ = dev->hello_.port;
  dev->hello_v2_port_ = dev->hello_v2_.port;

  if (!flags.experiments_listen.empty()) {
    absl::StatusOr<net::HostPort> listen =
        net::ParseHostPort(flags.experiments_listen, /*allow_port_zero=*/true);
    if (!listen.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--experiments-listen: ", std::string(listen.status().message())));
    }
    experiments::ServiceOptions options;
    options.store_endpoints = {store};
    options.listen_host = listen->host;
    options.listen_port = listen->port;
    options.worker_threads = 2;
    options.group = group;
    std::shared_ptr<experiments::EventsApi> events;
    if (!flags.events_dir.empty()) {
      experiments::EventsOptions events_options{
          .directory = flags.events_dir,
          .on_open = [&events](std::shared_ptr<experiments::EventsApi> api) { events = api; }};
      RETURN_IF_ERROR(ApplyEventsRetentionFlags(flags.events_retention,
                                                flags.events_retention_bytes, &events_options));
      options.extensions.push_back(experiments::MakeEventsExtension(std::move(events_options)));
    }
    ASSIGN_OR_RETURN(dev->experiments_, experiments::ExperimentsService::Start(options));
    dev->experiments_port_ = dev->experiments_->port();
    std::cout << "experiments listening on port " << dev->experiments_port_ << "\n";
    std::cout.flush();
    if (!flags.experiments_rpc_listen.empty()) {
      absl::StatusOr<net::HostPort> rpc_listen =
          net::ParseHostPort(flags.experiments_rpc_listen, /*allow_port_zero=*/true);
      if (!rpc_listen.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--experiments-rpc-listen: ", std::string(rpc_listen.status().message())));
      }
      ASSIGN_OR_RETURN(dev->experiments_rpc_,
                       experiments_rpc::ExperimentsRpcServer::Start(
                           dev->experiments_.get(), std::move(events),
                           {.host = rpc_listen->host, .port = rpc_listen->port, .group = group}));
      dev->experiments_rpc_port_ = dev->experiments_rpc_->port();
      std::cout << "experiments rpc listening on port " << dev->experiments_rpc_port_ << "\n";
      std::cout.flush();
    }
  }
  if (!flags.gateway_listen.empty()) {
    // The gateway's experiment events go to the experiments service beside
    // it (when it ingests events).
    std::string events_url =
        dev->experiments_port_ != 0 && !flags.events_dir.empty()
            ? absl::StrCat("http://127.0.0.1:", dev->experiments_port_, "/v1/events")
            : "";
    gateway::GatewayConfig config = DevGatewayConfig(flags, store, events_url);
    RETURN_IF_ERROR(gateway::ValidateGatewayConfig(config));
    ASSIGN_OR_RETURN(dev->experiment_routing_,
                     gateway::ExperimentRouting::Start(*config.experiments, dev->store_));
    ASSIGN_OR_RETURN(dev->gateway_,
                     gateway::Gateway::Start(config, group, dev->experiment_routing_.get()));
    dev->live_ = gateway::StoreConfig::Start(dev->gateway_.get(), config, dev->store_);
    dev->gateway_port_ = dev->gateway_->ports().front();
    dev->gateway_admin_port_ = dev->gateway_->admin_port();
    if (dev->gateway_admin_port_ != 0 && dev->experiments_ != nullptr) {
      // The service started first (the gateway sends it events); now it
      // can show this gateway on the console's Gateways page.
      dev->experiments_->SetGatewayAdminUrls({absl::StrCat(
          "http://", net::FormatHostPort(Reachable(admin_host), dev->gateway_admin_port_))});
    }
    CAPSTAN_LOG(info, "dev: gateway serving", "port", dev->gateway_port_, "cluster",
                config.clusters.front().discovery.value_or(""), "live_config",
                config.store + config.store_prefix);
    // Tests and scripts read the bound port from here, as from `capstan gateway`.
    std::cout << "gateway listening on port " << dev->gateway_port_ << "\n";
    std::cout.flush();
  }
  return dev;
}

void DevServices::PrintUrls(std::ostream& out, std::string_view store_endpoint,
                            const std::vector<std::string>& metrics_urls) const {
  auto url = [](int port, const char* path) {
    return absl::StrCat("http://127.0.0.1:", port, path);
  };
  out << "\ncapstan dev is up:\n";
  if (gateway_port_ != 0) {
    out << "  gateway           " << url(gateway_port_, "/") << "   (splits v1/v2 by experiment "
        << kDevExperiment << "; unit: X-User-Id or a cookie)\n";
  }
  if (gateway_admin_port_ != 0) {
    out << "  gateway status    " << url(gateway_admin_port_, "/status") << "\n";
  }
  if (hello_port_ != 0) out << "  example v1        " << url(hello_port_, "/") << "\n";
  if (hello_v2_port_ != 0) out << "  example v2        " << url(hello_v2_port_, "/") << "\n";
  if (experiments_port_ != 0) {
    out << "  experiments API   " << url(experiments_port_, "/v1/")
        << "   (GrowthBook SDKs: " << url(experiments_port_, "/api/features/{clientKey}") << ")\n";
  }
  if (experiments_port_ != 0) {
    out << "  console           " << url(experiments_port_, "/console/") << "\n";
  }
  if (experiments_rpc_port_ != 0) {
    out << "  experiments RPC   127.0.0.1:" << experiments_rpc_port_ << "\n";
  }
  out << "  store             " << store_endpoint << "   (etcdctl --endpoints=" << store_endpoint
      << ")\n";
  for (const std::string& m : metrics_urls) out << "  store metrics     " << m << "/metrics\n";
  out << "  walkthrough       README.md, \"Walkthrough\"\n\n";
  out.flush();
}

DevServices::~DevServices() {
  // The gateway first: it stops accepting and finishes the requests it is
  // forwarding while the example services still answer them; then its
  // experiment events leave for the experiments service, still up.
  live_.reset();
  if (gateway_ != nullptr) {
    gateway_->Shutdown(std::chrono::seconds(5));
    gateway_.reset();
  }
  // Every server leaves the shared loops running: the caller stops them
  // after the store's server too.
  experiment_routing_.reset();
  experiments_rpc_.reset();  // its calls use the service
  experiments_.reset();
  // Out of the registry (the lease is revoked), then the services stop.
  bool stopped_any = hello_.server != nullptr || hello_v2_.server != nullptr || gateway_port_ != 0;
  for (Hello* hello : {&hello_, &hello_v2_}) {
    hello->registration.reset();
    if (hello->server != nullptr) hello->server->Stop();
    hello->server.reset();
  }
  store_.reset();
  if (stopped_any) CAPSTAN_LOG(info, "dev: gateway and example services stopped");
}

}  // namespace capstan
