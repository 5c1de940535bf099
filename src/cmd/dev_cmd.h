// `capstan dev`: what runs beside the store member (src/cmd/main.cc starts
// the member and its flags): two versions of an example HTTP/1.1 "hello"
// service registered in the store under `services/hello` and
// `services/hello-v2`; the experiments service (HTTP API and GrowthBook SDK
// endpoints, documents under /capstan/experiments/, events); and a gateway
// in front of the example whose route splits the two versions by
// experiment `hello-v2` (assignments in process, events to the experiments
// service), whose clusters follow the registry and whose routes and
// clusters also come live from the store (/capstan/gateway/...). All on
// localhost, in the one process; stopped in order on SIGINT/SIGTERM.
// Every server of the process, the store member's client port included,
// runs on one LoopGroup (`--threads` loops) that the caller owns and stops
// last; blocking work keeps its own threads (src/cmd/README.md lists them).
//
//   auto loops = StartDevLoops(dev_flags).value();
//   ... the store member with StoreServerConfig::client_group = loops.get() ...
//   DevServices::Start(dev_flags, "http://127.0.0.1:2379", loops.get())  // after the store is up
//   ... WaitForTerminationSignal() ...
//   services.reset();                                       // before the store stops
//   ... the store member shuts down ...
//   loops.reset();                                          // stops the loops, last
//
// Thread-safety: Start and the destructor from one thread (not a loop's).
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "base/status.h"

namespace capstan {

namespace client {
class Client;
}
namespace mesh {
class Registration;
}
namespace net {
class HttpServer;
class LoopGroup;
}  // namespace net
namespace gateway {
class ExperimentRouting;
class Gateway;
class StoreConfig;
}  // namespace gateway
namespace experiments {
class ExperimentsService;
}
namespace experiments_rpc {
class ExperimentsRpcServer;
}

struct DevFlags {
  // The gateway's listen address; empty: no gateway.
  std::string gateway_listen = "127.0.0.1:8080";
  // The event loops every server of the process shares (0: one per core).
  int threads = 0;
  // The gateway's admin endpoint (/status, /metrics, /health; port 0 picks
  // one, printed); the console's Gateways page reads its /status. Empty: none.
  std::string gateway_admin_listen = "127.0.0.1:0";
  // The example service's listen address (port 0 picks a free one: the
  // gateway finds it in the registry); empty: no example service.
  std::string hello_listen = "127.0.0.1:0";
  // Its second version's (registered under kDevHelloV2Service); empty: none.
  std::string hello_v2_listen = "127.0.0.1:0";
  // The experiments service's listen address; empty: none.
  std::string experiments_listen = "127.0.0.1:8090";
  // The experiments service's RPC API (proto/capstan/experiments.proto);
  // port 0 picks one, printed as "experiments rpc listening on port N";
  // empty: none. Only with the experiments service.
  std::string experiments_rpc_listen = "127.0.0.1:0";
  // Where the experiments service keeps its event log (POST /v1/events);
  // set from the store's data directory; empty: no event ingestion.
  std::string events_dir;
  // Its log's retention (--events-retention, --events-retention-bytes, as
  // `capstan experiments serve`'s).
  std::string events_retention = "7d";
  std::string events_retention_bytes = "off";
};

// The registry prefixes of the example service's two versions. The
// gateway's default route splits them by experiment kDevExperiment (variants
// "v1" and "v2"); until that experiment exists and runs, everyone gets v1.
inline constexpr char kDevHelloService[] = "services/hello";
inline constexpr char kDevHelloV2Service[] = "services/hello-v2";
inline constexpr char kDevExperiment[] = "hello-v2";

void AddDevFlags(CLI::App* cmd, DevFlags* flags);

// The loops every server of `capstan dev` runs on (--threads of them;
// INVALID_ARGUMENT naming the flag when it is out of range).
absl::StatusOr<std::unique_ptr<net::LoopGroup>> StartDevLoops(const DevFlags& flags);

class DevServices {
 public:
  // `store_url`: the member's client URL (http://HOST:PORT; an unspecified
  // host such as 0.0.0.0 is reached on 127.0.0.1).
  // `group`: the process's shared loops (StartDevLoops); every server here
  // runs on them and leaves them running when it stops.
  static absl::StatusOr<std::unique_ptr<DevServices>> Start(const DevFlags& flags,
                                                            std::string_view store_url,
                                                            net::LoopGroup* group);
  // Drains the gateway, deregisters and stops the example service.
  ~DevServices();
  DevServices(const DevServices&) = delete;
  DevServices& operator=(const DevServices&) = delete;

  // The summary `make run` shows: where each part answers.
  void PrintUrls(std::ostream& out, std::string_view store_endpoint,
                 const std::vector<std::string>& metrics_urls) const;

  int gateway_port() const { return gateway_port_; }                  // 0: none
  int gateway_admin_port() const { return gateway_admin_port_; }      // 0: none
  int hello_port() const { return hello_port_; }                      // 0: none
  int hello_v2_port() const { return hello_v2_port_; }                // 0: none
  int experiments_port() const { return experiments_port_; }          // 0: none
  int experiments_rpc_port() const { return experiments_rpc_port_; }  // 0: none

 private:
  DevServices() = default;

  // One version of the example service: its server and its registration.
  struct Hello {
    std::unique_ptr<net::HttpServer> server;
    std::unique_ptr<mesh::Registration> registration;
    int port = 0;
  };
  static absl::StatusOr<Hello> StartHello(const std::string& listen, const char* flag,
                                          const char* prefix, const char* version,
                                          std::shared_ptr<client::Client> store,
                                          net::LoopGroup* group);

  std::shared_ptr<client::Client> store_;
  Hello hello_, hello_v2_;
  // Declared before the gateway: it outlives it (Gateway::Start's contract).
  std::unique_ptr<gateway::ExperimentRouting> experiment_routing_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::unique_ptr<gateway::StoreConfig> live_;
  std::unique_ptr<experiments::ExperimentsService> experiments_;
  std::unique_ptr<experiments_rpc::ExperimentsRpcServer> experiments_rpc_;
  int gateway_port_ = 0;
  int gateway_admin_port_ = 0;
  int experiments_port_ = 0;
  int experiments_rpc_port_ = 0;
  int hello_port_ = 0;
  int hello_v2_port_ = 0;
};

}  // namespace capstan
