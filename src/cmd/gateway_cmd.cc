// `capstan gateway`: the reverse proxy, from a YAML file (--config) or from
// flags alone (--listen / --upstream, the quick start).
#include "cmd/gateway_cmd.h"

#include <signal.h>
#include <unistd.h>

#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "gateway/config.h"
#include "gateway/dns/service.h"
#include "gateway/experiment_routing.h"
#include "gateway/gateway.h"
#include "gateway/store_config.h"
#include "net/loop_group.h"

namespace capstan {

void AddGatewayCommand(CLI::App* cmd, GatewayFlags* f) {
  cmd->add_option("--config", f->config, "YAML configuration file (docs/gateway.md).");
  cmd->add_flag("--validate", f->validate, "Check the configuration, report and exit.");
  cmd->add_option("--listen", f->listen,
                  "Quick start: address to listen on (without --config; default 127.0.0.1:8080).");
  cmd->add_option("--upstream", f->upstreams,
                  "Quick start: where every request goes, round robin: http://HOST:PORT "
                  "(repeat or separate with commas) or store://HOST:PORT/services/NAME.")
      ->delimiter(',');
  cmd->add_option("--cache", f->cache,
                  "Quick start: an HTTP cache of this size in memory (e.g. 256MiB) for every "
                  "cacheable response (docs/gateway.md, \"HTTP cache\").");
  cmd->add_option("--cache-disk", f->cache_disk,
                  "Quick start, with --cache: the cache's disk tier, DIR:SIZE (e.g. "
                  "/var/cache/capstan:10GiB); kept across restarts.");
  cmd->add_option("--threads", f->threads, "Event loops (default: one per CPU).");
  cmd->add_option("--log-level", f->log_level, "debug, info, warn or err.")->capture_default_str();
  cmd->add_option("--io-backend", f->io_backend,
                  "auto (io_uring when allowed, else epoll), io_uring or epoll (e.g. under "
                  "valgrind, which does not follow io_uring).")
      ->capture_default_str();
  cmd->add_option("--io-splice", f->io_splice,
                  "Send large cached bodies (64 KiB and up, clear text) to the client with "
                  "vmsplice/splice instead of copying them (docs/gateway.md, \"HTTP cache\").")
      ->capture_default_str();
  cmd->add_option("--dns-listen", f->dns_listen,
                  "DNS server: UDP and TCP address, e.g. 127.0.0.1:5353 (docs/gateway.md, DNS).");
  cmd->add_option("--dns-zone", f->dns_zones, "DNS server: a zone file (RFC 1035); repeat.");
  cmd->add_option("--dns-registry", f->dns_registry,
                  "DNS server: the discovery zone from the registry, store://HOST:PORT/PREFIX.");
  cmd->add_option("--dns-registry-zone", f->dns_registry_zone,
                  "DNS server: the discovery zone's name (default svc.capstan.).");
  cmd->add_option("--dns-threads", f->dns_threads,
                  "DNS server: how many event loops serve UDP, a socket each (default: all of "
                  "--threads).");
}

namespace {

// The configuration the quick-start flags describe.
absl::StatusOr<gateway::GatewayConfig> QuickStartConfig(const GatewayFlags& f) {
  if (f.upstreams.empty() && !f.dns_listen.empty() && f.listen.empty()) {
    return gateway::GatewayConfig{};  // a DNS server alone
  }
  if (f.upstreams.empty()) {
    return absl::InvalidArgumentError("give --config FILE, or --upstream URL for the quick start");
  }
  gateway::GatewayConfig config;
  gateway::ListenerConfig listener;
  listener.name = "quick";
  listener.address = f.listen.empty() ? "127.0.0.1:8080" : f.listen;
  config.listeners.push_back(listener);
  gateway::ClusterConfig cluster;
  cluster.name = "upstream";
  for (const std::string& u : f.upstreams) {
    if (u.starts_with("store://") || u.starts_with("dns:///")) {
      if (f.upstreams.size() != 1) {
        return absl::InvalidArgumentError("a discovery --upstream (store://...) stands alone");
      }
      cluster.discovery = u;
      continue;
    }
    std::string_view hostport = u;
    if (hostport.starts_with("http://")) hostport.remove_prefix(7);
    if (hostport.starts_with("https://")) {
      return absl::InvalidArgumentError(absl::StrCat("--upstream ", u,
                                                     ": TLS to upstreams is set per cluster in "
                                                     "--config (tls: true)"));
    }
    while (hostport.ends_with('/')) hostport.remove_suffix(1);
    cluster.endpoints.emplace_back(hostport);
  }
  config.clusters.push_back(cluster);
  gateway::VirtualHostConfig vh;
  vh.name = "all";
  vh.domains = {"*"};
  gateway::RouteConfig route;
  route.name = "all";
  route.match.prefix = "/";
  route.cluster = "upstream";
  if (!f.cache_disk.empty() && f.cache.empty()) {
    return absl::InvalidArgumentError("--cache-disk needs --cache SIZE (the memory tier)");
  }
  if (!f.cache.empty()) {
    absl::StatusOr<size_t> bytes = gateway::ParseByteSize(f.cache);
    if (!bytes.ok() || *bytes < (size_t{1} << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cache ", f.cache, ": must be a size of at least 1MiB, like 256MiB"));
    }
    gateway::CacheConfig cache;
    cache.memory = *bytes;
    cache.max_object_size = std::min(cache.max_object_size, cache.memory);
    if (!f.cache_disk.empty()) {
      // DIR:SIZE, split at the last colon (a directory may hold one).
      size_t colon = f.cache_disk.rfind(':');
      absl::StatusOr<size_t> disk_bytes =
          colon == std::string::npos
              ? absl::InvalidArgumentError("no size")
              : gateway::ParseByteSize(std::string_view(f.cache_disk).substr(colon + 1));
      if (colon == 0 || !disk_bytes.ok() || *disk_bytes < (size_t{1} << 20)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--cache-disk ", f.cache_disk,
            ": must be DIR:SIZE with a size of at least 1MiB, like /var/cache/capstan:10GiB"));
      }
      cache.disk_path = f.cache_disk.substr(0, colon);
      cache.disk_size = *disk_bytes;
    }
    config.cache = cache;
    route.cache.enabled = true;
    // The origin's 5xx answers are content here (cacheable, or served
    // stale-if-error), not a sign of a bad endpoint: with one origin,
    // ejecting it, or opening its breaker, would turn every request into a
    // 503.
    for (gateway::ClusterConfig& c : config.clusters) {
      c.outlier_detection = false;
      c.circuit_breaker = false;
    }
  }
  vh.routes.push_back(route);
  config.virtual_hosts.push_back(vh);
  return config;
}

// The --dns-* flags over the configuration's dns section.
absl::Status ApplyDnsFlags(const GatewayFlags& f, gateway::GatewayConfig* config) {
  bool any = !f.dns_listen.empty() || !f.dns_zones.empty() || !f.dns_registry.empty() ||
             !f.dns_registry_zone.empty() || f.dns_threads != 0;
  if (!any) return absl::OkStatus();
  gateway::DnsConfig dns = config->dns.value_or(gateway::DnsConfig{});
  if (!f.dns_listen.empty()) dns.listen = f.dns_listen;
  if (!f.dns_zones.empty()) dns.zones = f.dns_zones;
  if (!f.dns_registry.empty()) dns.registry = f.dns_registry;
  if (!f.dns_registry_zone.empty()) dns.registry_zone = f.dns_registry_zone;
  if (f.dns_threads != 0) dns.udp_threads = f.dns_threads;
  if (dns.listen.empty()) return absl::InvalidArgumentError("--dns-* flags need --dns-listen");
  if (dns.zones.empty() && dns.registry.empty()) {
    return absl::InvalidArgumentError("--dns-listen needs --dns-zone FILE or --dns-registry URL");
  }
  if (!dns.registry.empty() && !dns.registry.starts_with("store://")) {
    return absl::InvalidArgumentError("--dns-registry must be store://HOST:PORT/PREFIX");
  }
  config->dns = std::move(dns);
  return absl::OkStatus();
}

absl::StatusOr<gateway::GatewayConfig> LoadConfig(const GatewayFlags& f) {
  absl::StatusOr<gateway::GatewayConfig> config;
  if (f.config.empty()) {
    config = QuickStartConfig(f);
  } else if (!f.upstreams.empty() || !f.listen.empty()) {
    return absl::InvalidArgumentError("--listen and --upstream are for use without --config");
  } else if (!f.cache.empty() || !f.cache_disk.empty()) {
    return absl::InvalidArgumentError(
        "--cache and --cache-disk are for the quick start; with --config use the cache: section");
  } else {
    config = gateway::LoadGatewayConfigFile(f.config);
  }
  if (!config.ok()) return config;
  RETURN_IF_ERROR(ApplyDnsFlags(f, &*config));
  return config;
}

absl::StatusOr<std::unique_ptr<gateway::ExperimentRouting>> StartExperimentRouting(
    const gateway::GatewayConfig& config) {
  const gateway::ExperimentsConfig& e = *config.experiments;
  std::string store = e.store.empty() ? config.store : e.store;
  if (store.empty()) {
    return absl::InvalidArgumentError(
        "experiments.store (or the top-level store) is required: the model lives in the store");
  }
  ASSIGN_OR_RETURN(std::vector<std::string> endpoints, gateway::StoreEndpointsOf(store));
  ASSIGN_OR_RETURN(std::unique_ptr<client::Client> client,
                   client::Client::Connect({.endpoints = endpoints}));
  ASSIGN_OR_RETURN(
      std::unique_ptr<gateway::ExperimentRouting> routing,
      gateway::ExperimentRouting::Start(e, std::shared_ptr<client::Client>(std::move(client))));
  // Route by the store's model from the first request on; a store that is
  // slow to answer does not stop the gateway (requests use the routes'
  // default clusters until the listing arrives).
  if (!routing->WaitUntilListed(std::chrono::seconds(5))) {
    CAPSTAN_LOG(warn,
                "gateway: the experiment model is not listed yet; default clusters until it is");
  }
  return routing;
}

}  // namespace

int RunGateway(const GatewayFlags& f) {
  // Before any thread logs: the logger (the store's format) is set up on
  // this thread, not lazily by whichever loop logs first.
  if (!InitLogging(f.log_level)) {
    std::cerr << "capstan gateway: --log-level must be debug, info, warn or err\n";
    return 2;
  }
  auto config = LoadConfig(f);
  if (!config.ok()) {
    std::cerr << "capstan gateway: " << config.status().message() << "\n";
    return 2;
  }
  if (f.validate) {
    if (config->dns.has_value()) {
      for (const std::string& file : config->dns->zones) {
        auto zone = gateway::dns::LoadZoneFile(file);
        if (!zone.ok()) {
          std::cerr << "capstan gateway: " << zone.status().message() << "\n";
          return 2;
        }
      }
    }
    std::cout << "capstan gateway: configuration OK (" << config->listeners.size() << " listeners, "
              << config->virtual_hosts.size() << " virtual hosts, " << config->clusters.size()
              << " clusters" << (config->dns.has_value() ? ", a DNS server" : "") << ")\n";
    return 0;
  }
  // SIGHUP reloads the file: taken by sigwait below, so blocked in every
  // thread from before the loops start.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  int threads = f.threads > 0 ? f.threads
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto backend = net::ParseIoBackend(f.io_backend);
  if (!backend.ok()) {
    std::cerr << "capstan gateway: --io-backend: " << backend.status().message() << "\n";
    return 2;
  }
  net::LoopGroupOptions loop_options{.threads = threads, .name = "gateway"};
  loop_options.loop.backend = *backend;
  loop_options.loop.splice_mapped = f.io_splice;
  auto group = net::LoopGroup::Start(loop_options);
  if (!group.ok()) {
    std::cerr << "capstan gateway: " << group.status().message() << "\n";
    return 1;
  }
  std::chrono::milliseconds drain = config->drain_timeout;
  gateway::GatewayConfig base = *config;
  // Experiment routing: the model from the store (watched), events to the
  // experiments service. Declared before the gateway, so it outlives it.
  std::unique_ptr<gateway::ExperimentRouting> experiments;
  if (base.experiments.has_value()) {
    auto started = StartExperimentRouting(base);
    if (!started.ok()) {
      std::cerr << "capstan gateway: experiments: " << started.status().message() << "\n";
      return started.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    experiments = std::move(started).value();
  }
  auto gw = gateway::Gateway::Start(std::move(config).value(), group->get(), experiments.get());
  if (!gw.ok()) {
    std::cerr << "capstan gateway: " << gw.status().message() << "\n";
    return 1;
  }
  // The DNS server, beside the proxy on the same loops.
  std::unique_ptr<gateway::dns::DnsService> dns;
  if (base.dns.has_value()) {
    auto started = gateway::dns::DnsService::Start(base, group->get());
    if (!started.ok()) {
      std::cerr << "capstan gateway: " << started.status().message() << "\n";
      (*gw)->Shutdown(std::chrono::milliseconds(0));
      return 1;
    }
    dns = std::move(started).value();
    dns->server().RegisterMetrics(&(*gw)->metrics_registry());
    std::cout << "dns listening on port " << dns->port() << "\n";
  }
  if (experiments != nullptr) experiments->RegisterMetrics(&(*gw)->metrics_registry());
  // Live configuration: documents under the store prefix, watched.
  std::unique_ptr<gateway::StoreConfig> live;
  if (!base.store.empty()) {
    auto endpoints = gateway::StoreEndpointsOf(base.store);
    if (!endpoints.ok()) {
      std::cerr << "capstan gateway: " << endpoints.status().message() << "\n";
      return 2;
    }
    auto store = client::Client::Connect({.endpoints = *endpoints});
    if (!store.ok()) {
      std::cerr << "capstan gateway: " << store.status().message() << "\n";
      return 1;
    }
    live = gateway::StoreConfig::Start(gw->get(), base,
                                       std::shared_ptr<client::Client>(std::move(store).value()));
  }
  // Tests and scripts read the bound ports from here.
  for (int port : (*gw)->ports()) std::cout << "listening on port " << port << "\n";
  std::cout.flush();
  // Certificate files are looked at between signals; a change rebuilds the
  // TLS contexts with the configuration in force (file or store).
  gateway::CertificateFileWatch certificates(base);
  std::chrono::milliseconds check = base.certificate_check_interval;
  while (true) {
    int sig = 0;
    if (check.count() > 0 && certificates.files() > 0) {
      timespec wait{.tv_sec = check.count() / 1000, .tv_nsec = (check.count() % 1000) * 1000000};
      sig = sigtimedwait(&signals, nullptr, &wait);
      if (sig < 0) {
        if (!certificates.Changed()) continue;
        absl::Status st = (*gw)->ReloadCertificates();
        if (st.ok()) {
          CAPSTAN_LOG(info, "gateway: certificate files changed; TLS contexts rebuilt");
        } else {
          CAPSTAN_LOG(err, "gateway: certificate reload refused; the previous ones stay", "error",
                      std::string(st.message()));
        }
        continue;
      }
    } else {
      sigwait(&signals, &sig);
    }
    if (sig != SIGHUP) break;
    if (dns != nullptr && !base.dns->zones.empty()) {
      absl::Status st = dns->ReloadZoneFiles();
      if (st.ok()) {
        CAPSTAN_LOG(info, "gateway: DNS zone files reloaded", "files", base.dns->zones.size());
      } else {
        CAPSTAN_LOG(err, "gateway: DNS zone files not reloaded; the previous ones stay", "error",
                    std::string(st.message()));
      }
    }
    if (f.config.empty()) {
      CAPSTAN_LOG(info, "gateway: SIGHUP without --config: nothing to reload");
      continue;
    }
    if (live != nullptr) {
      CAPSTAN_LOG(info,
                  "gateway: SIGHUP with live configuration: the store is the source; "
                  "restart to change the file");
      continue;
    }
    auto next = gateway::LoadGatewayConfigFile(f.config);
    absl::Status st = next.ok() ? (*gw)->Reload(std::move(next).value()) : next.status();
    if (st.ok()) {
      CAPSTAN_LOG(info, "gateway: configuration reloaded", "file", f.config);
      // The reloaded file may name other certificate files, or another
      // interval.
      gateway::GatewayConfig now = (*gw)->config();
      certificates = gateway::CertificateFileWatch(now);
      check = now.certificate_check_interval;
    } else {
      CAPSTAN_LOG(err, "gateway: reload refused; the previous configuration stays", "error",
                  std::string(st.message()));
    }
  }
  CAPSTAN_LOG(info, "gateway: draining", "grace_ms", drain.count());
  live.reset();
  dns.reset();
  (*gw)->Shutdown(drain);
  gw->reset();
  (*group)->Stop();
  return 0;
}

}  // namespace capstan
