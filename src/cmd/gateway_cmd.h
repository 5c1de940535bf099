// `capstan gateway`: flags and entry point (src/cmd/gateway_cmd.cc).
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace capstan {

struct GatewayFlags {
  std::string config;
  bool validate = false;
  std::string listen;
  std::vector<std::string> upstreams;
  int threads = 0;
  // Quick start: cache every cacheable response in memory, this many bytes
  // ("256MiB"); empty: no cache.
  std::string cache;
  // Quick start: the cache's disk tier, "DIR:SIZE" ("/var/cache/capstan:10GiB");
  // needs --cache.
  std::string cache_disk;
  std::string io_backend = "auto";
  bool io_splice = true;
  std::string log_level = "info";
  // The DNS server (docs/gateway.md, "DNS"): these set or override the
  // configuration's `dns:` section.
  std::string dns_listen;
  std::vector<std::string> dns_zones;
  std::string dns_registry;
  std::string dns_registry_zone;
  int dns_threads = 0;
};

void AddGatewayCommand(CLI::App* cmd, GatewayFlags* flags);
// Runs until SIGINT/SIGTERM (drains) ; SIGHUP reloads --config. Returns the
// exit code.
int RunGateway(const GatewayFlags& flags);

}  // namespace capstan
