// `capstan dev`'s example service and gateway (dev_cmd.h).
#include "cmd/dev_cmd.h"

#include <chrono>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "client/client.h"
#include "experiments/events_service.h"
#include "experiments/service.h"
#include "experiments_rpc/rpc_service.h"
#include "gateway/config.h"
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
  cmd->add_option("--gateway-threads", f->gateway_threads, "The gateway's event loops.")
      ->capture_default_str();
  cmd->add_option("--hello-listen", f->hello_listen,
                  absl::StrCat("Where the example HTTP service listens (host:port; port 0 picks "
                               "one), registered in the store under ",
                               kDevHelloService, "; empty: no example service."))
      ->capture_default_str();
  cmd->add_option("--experiments-listen", f->experiments_listen,
                  "Where the experiments service (HTTP API, GrowthBook SDK endpoints) listens "
                  "(host:port; port 0 picks one); empty: no experiments service.")
      ->capture_default_str();
  cmd->add_option("--experiments-rpc-listen", f->experiments_rpc_listen,
                  "Where the experiments service's Capstan RPC API listens (host:port; port 0 "
                  "picks one, printed); empty: no RPC API.")
      ->capture_default_str();
}

namespace {

// Clients reach a listener bound to "any address" on loopback.
std::string Reachable(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host;
}

// What the example service answers on "/".
net::HttpResponse Hello(const std::string& host, int port) {
  return net::HttpResponse{.body = absl::StrCat("hello from capstan dev: the example service at ",
                                                net::FormatHostPort(host, port),
                                                " (registered under ", kDevHelloService, ")\n")};
}

// The gateway of `capstan dev`: every request to the example service's
// cluster, whose endpoints are the registry's; routes and clusters under
// /capstan/gateway/ in the store are merged over this (a virtual host
// document named "dev" replaces the default one).
gateway::GatewayConfig DevGatewayConfig(const DevFlags& f, const std::string& store) {
  gateway::GatewayConfig config;
  gateway::ListenerConfig listener;
  listener.name = "dev";
  listener.address = f.gateway_listen;
  config.listeners.push_back(listener);
  gateway::ClusterConfig cluster;
  cluster.name = "hello";
  cluster.discovery = absl::StrCat("store://", store, "/", kDevHelloService);
  config.clusters.push_back(cluster);
  gateway::RouteConfig route;
  route.name = "hello";
  route.match.prefix = "/";
  route.cluster = "hello";
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

absl::StatusOr<std::unique_ptr<DevServices>> DevServices::Start(const DevFlags& flags,
                                                                std::string_view store_url) {
  std::unique_ptr<DevServices> dev(new DevServices());
  if (flags.gateway_listen.empty() && flags.hello_listen.empty() &&
      flags.experiments_listen.empty()) {
    return dev;
  }
  if (flags.gateway_threads < 1 || flags.gateway_threads > 256) {
    return absl::InvalidArgumentError("--gateway-threads must be between 1 and 256");
  }
  if (!flags.gateway_listen.empty()) {
    absl::StatusOr<net::HostPort> listen =
        net::ParseHostPort(flags.gateway_listen, /*allow_port_zero=*/true);
    if (!listen.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--gateway-listen: ", std::string(listen.status().message())));
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

  if (!flags.hello_listen.empty()) {
    absl::StatusOr<net::HostPort> listen =
        net::ParseHostPort(flags.hello_listen, /*allow_port_zero=*/true);
    if (!listen.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--hello-listen: ", std::string(listen.status().message())));
    }
    dev->hello_ = std::make_unique<net::HttpServer>();
    std::string host = Reachable(listen->host);
    net::HttpServer* server = dev->hello_.get();
    // Handlers run on the server's loop, after Start has set the port.
    dev->hello_->Handle("/", [host, server] { return Hello(host, server->port()); });
    dev->hello_->Handle("/health", [] { return net::HttpResponse{.body = "ok\n"}; });
    RETURN_IF_ERROR(dev->hello_->Start(listen->host, listen->port));
    dev->hello_port_ = dev->hello_->port();
    auto registration = mesh::Registration::Start(
        dev->store_,
        {.prefix = kDevHelloService, .endpoint = {.host = host, .port = dev->hello_port_}});
    if (!registration.ok()) return registration.status();
    dev->registration_ = std::move(registration).value();
    CAPSTAN_LOG(info, "dev: example service serving", "address",
                net::FormatHostPort(host, dev->hello_port_), "key", dev->registration_->key());
  }

  if (!flags.gateway_listen.empty()) {
    gateway::GatewayConfig config = DevGatewayConfig(flags, store);
    RETURN_IF_ERROR(gateway::ValidateGatewayConfig(config));
    ASSIGN_OR_RETURN(dev->group_,
                     net::LoopGroup::Start({.threads = flags.gateway_threads, .name = "gateway"}));
    ASSIGN_OR_RETURN(dev->gateway_, gateway::Gateway::Start(config, dev->group_.get()));
    dev->live_ = gateway::StoreConfig::Start(dev->gateway_.get(), config, dev->store_);
    dev->gateway_port_ = dev->gateway_->ports().front();
    CAPSTAN_LOG(info, "dev: gateway serving", "port", dev->gateway_port_, "cluster",
                config.clusters.front().discovery.value_or(""), "live_config",
                config.store + config.store_prefix);
    // Tests and scripts read the bound port from here, as from `capstan gateway`.
    std::cout << "gateway listening on port " << dev->gateway_port_ << "\n";
    std::cout.flush();
  }
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
    std::shared_ptr<experiments::EventsApi> events;
    if (!flags.events_dir.empty()) {
      options.extensions.push_back(experiments::MakeEventsExtension(
          {.directory = flags.events_dir,
           .on_open = [&events](std::shared_ptr<experiments::EventsApi> api) { events = api; }}));
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
                           {.host = rpc_listen->host, .port = rpc_listen->port}));
      dev->experiments_rpc_port_ = dev->experiments_rpc_->port();
      std::cout << "experiments rpc listening on port " << dev->experiments_rpc_port_ << "\n";
      std::cout.flush();
    }
  }
  return dev;
}

DevServices::~DevServices() {
  experiments_rpc_.reset();  // its calls use the service
  experiments_.reset();
  // The gateway first: it stops accepting and finishes the requests it is
  // forwarding while the example service still answers them.
  live_.reset();
  if (gateway_ != nullptr) {
    gateway_->Shutdown(std::chrono::seconds(5));
    gateway_.reset();
  }
  if (group_ != nullptr) group_->Stop();
  group_.reset();
  // Out of the registry (the lease is revoked), then the service stops.
  registration_.reset();
  if (hello_ != nullptr) hello_->Stop();
  bool stopped_any = hello_ != nullptr || gateway_port_ != 0;
  hello_.reset();
  store_.reset();
  if (stopped_any) CAPSTAN_LOG(info, "dev: gateway and example service stopped");
}

}  // namespace capstan
