// ExperimentRouting: the gateway's side of the experiments engine. A route
// with `experiment:` (config.h ExperimentRoute) has each request's unit
// assigned in process by the layered model's Assigner
// (experiments/assigner.h), whose configuration comes from the store by
// watch, and goes to its variant's cluster. The outcome flows back as
// events (docs/gateway.md, "Experiment routing"):
//
//   request ─► unit: unit_header, else the unit cookie, else a new random
//              id (then Set-Cookie on the response: the anonymous unit stays)
//          ─► Assigner::Evaluate({attribute: unit, attribute_headers...})
//          ─► the experiment's variant ─► its cluster (else the default)
//          ─► upstream headers: "<assignment_header>: <experiment>=<variant>"
//             and "<unit_header>: <unit>" (any HTTP service reads them)
//          ─► first time (unit, experiment, variant) is seen: an exposure
//   response ─► three ratio metric events for the experiment, per request:
//              gateway_latency_ms (ms / 1), gateway_error_rate (5xx: 1 / 1),
//              gateway_response_bytes (bytes / 1) — latency, error-rate and
//              size guardrails for every experiment with no work by the
//              service
//   events ─► EventShipper (batched, bounded, off the request path)
//
// Thread-safety: every method from any thread (the loops call Assign and
// RecordOutcome concurrently).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/metrics.h"
#include "base/status.h"
#include "client/client.h"
#include "experiments/assigner.h"
#include "experiments/config_store.h"
#include "gateway/config.h"
#include "gateway/event_shipper.h"
#include "net/http1.h"

namespace capstan::gateway {

class ExperimentRouting {
 public:
  // Watches the model under config.prefix through `client`; with
  // config.events_url, starts the event shipper.
  static absl::StatusOr<std::unique_ptr<ExperimentRouting>> Start(
      const ExperimentsConfig& config, std::shared_ptr<client::Client> client);
  // No store: the model comes from SetModel (tests).
  static absl::StatusOr<std::unique_ptr<ExperimentRouting>> StartWithoutStore(
      const ExperimentsConfig& config);
  ~ExperimentRouting();
  ExperimentRouting(const ExperimentRouting&) = delete;
  ExperimentRouting& operator=(const ExperimentRouting&) = delete;

  void SetModel(std::shared_ptr<const experiments::ConfigSnapshot> model);
  // Waits for the first listing of the store's documents (false on timeout).
  bool WaitUntilListed(std::chrono::milliseconds timeout) const;

  struct Decision {
    const std::string* cluster = nullptr;  // into the route's configuration
    std::string variant;                   // empty: in no variant
    std::string unit;
    bool new_unit = false;  // generated here: the response sets the cookie
  };
  // Assigns the request's unit for `route` and adds the assignment headers
  // to `fields` (the request going upstream).
  Decision Assign(const ExperimentRoute& route, net::http1::HeaderFields* fields);
  // "name=value; Path=/; Max-Age=N; HttpOnly; SameSite=Lax" for a new unit.
  std::string SetCookieValue(const ExperimentRoute& route, const Decision& decision) const;
  // The request's outcome as metric events (units in a variant only).
  void RecordOutcome(const ExperimentRoute& route, const Decision& decision, int status,
                     double latency_ms, uint64_t response_bytes);

  void RegisterMetrics(metrics::Registry* registry) const;
  const ExperimentsConfig& config() const { return config_; }
  EventShipper* shipper() { return shipper_.get(); }

 private:
  explicit ExperimentRouting(const ExperimentsConfig& config);
  void OnDocuments(const std::shared_ptr<const experiments::DocumentSnapshot>& documents);
  void Emit(std::string_view json_line);
  std::string NextEventKey();

  const ExperimentsConfig config_;
  experiments::Assigner assigner_;
  experiments::ExposureDeduper exposures_;
  std::unique_ptr<EventShipper> shipper_;
  const std::string instance_;  // random: event keys unique across gateways and restarts
  std::atomic<uint64_t> next_event_{0};

  struct Counters {
    std::atomic<uint64_t> assignments{0}, exposures{0}, model_builds{0}, model_build_failures{0};
  };
  std::shared_ptr<Counters> counters_ = std::make_shared<Counters>();

  std::unique_ptr<experiments::ConfigWatcher> watcher_;  // last: stopped first
  uint64_t subscription_ = 0;
};

}  // namespace capstan::gateway
