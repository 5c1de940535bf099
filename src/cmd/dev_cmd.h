// `capstan dev`: what runs beside the store member (src/cmd/main.cc starts
// the member and its flags): an example HTTP/1.1 "hello" service registered
// in the store under `services/hello`, and a gateway in front of it whose
// cluster follows that registry entry and whose routes and clusters also
// come live from the store (/capstan/gateway/...); and the experiments
// service (HTTP API and GrowthBook SDK endpoints, documents under
// /capstan/experiments/). All on localhost, in the one process; stopped in
// order on SIGINT/SIGTERM.
//
//   DevServices::Start(dev_flags, "http://127.0.0.1:2379")  // after the store is up
//   ... WaitForTerminationSignal() ...
//   services.reset();                                       // before the store stops
//
// Thread-safety: Start and the destructor from one thread (not a loop's).
#pragma once

#include <memory>
#include <string>
#include <string_view>

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
  int gateway_threads = 1;
  // The example service's listen address (port 0 picks a free one: the
  // gateway finds it in the registry); empty: no example service.
  std::string hello_listen = "127.0.0.1:0";
  // The experiments service's listen address; empty: none.
  std::string experiments_listen = "127.0.0.1:8090";
  // The experiments service's RPC API (proto/capstan/experiments.proto);
  // port 0 picks one, printed as "experiments rpc listening on port N";
  // empty: none. Only with the experiments service.
  std::string experiments_rpc_listen = "127.0.0.1:0";
  // Where the experiments service keeps its event log (POST /v1/events);
  // set from the store's data directory; empty: no event ingestion.
  std::string events_dir;
};

// The registry prefix of the example service, which the gateway's default
// route forwards to.
inline constexpr char kDevHelloService[] = "services/hello";

void AddDevFlags(CLI::App* cmd, DevFlags* flags);

class DevServices {
 public:
  // `store_url`: the member's client URL (http://HOST:PORT; an unspecified
  // host such as 0.0.0.0 is reached on 127.0.0.1).
  static absl::StatusOr<std::unique_ptr<DevServices>> Start(const DevFlags& flags,
                                                            std::string_view store_url);
  // Drains the gateway, deregisters and stops the example service.
  ~DevServices();
  DevServices(const DevServices&) = delete;
  DevServices& operator=(const DevServices&) = delete;

  int gateway_port() const { return gateway_port_; }                  // 0: none
  int hello_port() const { return hello_port_; }                      // 0: none
  int experiments_port() const { return experiments_port_; }          // 0: none
  int experiments_rpc_port() const { return experiments_rpc_port_; }  // 0: none

 private:
  DevServices() = default;

  std::shared_ptr<client::Client> store_;
  std::unique_ptr<net::HttpServer> hello_;
  std::unique_ptr<mesh::Registration> registration_;
  std::unique_ptr<net::LoopGroup> group_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::unique_ptr<gateway::StoreConfig> live_;
  std::unique_ptr<experiments::ExperimentsService> experiments_;
  std::unique_ptr<experiments_rpc::ExperimentsRpcServer> experiments_rpc_;
  int gateway_port_ = 0;
  int experiments_port_ = 0;
  int experiments_rpc_port_ = 0;
  int hello_port_ = 0;
};

}  // namespace capstan
