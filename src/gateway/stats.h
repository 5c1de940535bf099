// The gateway's metrics and access log.
//
// Metrics (Prometheus text at the admin endpoint's /metrics), each declared
// once in the registry; series per route and per cluster are kept by name
// across reloads, and the request path reaches them through pointers the
// snapshot holds, so recording a request takes no lock:
//
//   capstan_gateway_requests_total{route, code}            counter, code = 2xx..5xx
//   capstan_gateway_request_duration_seconds{route}        histogram
//   capstan_gateway_upstream_requests_total{cluster}       counter
//   capstan_gateway_upstream_connect_failures_total{cluster}
//   capstan_gateway_upstream_resets_total{cluster}
//   capstan_gateway_downstream_connections                 gauge
//   capstan_gateway_bad_requests_total                     counter
//   capstan_gateway_edge_failures_total                    counter (edge/hooks.h)
//   capstan_gateway_access_log_dropped_total               counter
//
// The access log is JSON lines, one per request, written by a thread of its
// own: loops hand lines over under a short lock and never wait for the
// disk. Past `max_buffered_bytes` lines are dropped and counted.
//
// Thread-safety: RouteStats/ClusterStats are updated from any loop; the
// rest is guarded inside.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "base/status.h"

namespace capstan::gateway {

struct RouteStats {
  std::array<metrics::Counter*, 5> by_class{};  // 1xx..5xx
  metrics::Histogram* duration = nullptr;
  void Record(int status, double seconds) {
    int c = status / 100;
    if (c >= 1 && c <= 5) by_class[static_cast<size_t>(c - 1)]->Inc();
    duration->Observe(seconds);
  }
};

struct ClusterStats {
  metrics::Counter* requests = nullptr;
  metrics::Counter* connect_failures = nullptr;
  metrics::Counter* resets = nullptr;
};

class GatewayMetrics {
 public:
  GatewayMetrics();
  metrics::Registry& registry() { return registry_; }
  // Created on first use, then the same for that name.
  RouteStats* ForRoute(const std::string& label);
  ClusterStats* ForCluster(const std::string& name);

 private:
  metrics::Registry registry_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<RouteStats>> routes_;
  std::map<std::string, std::unique_ptr<ClusterStats>> clusters_;
};

class AccessLog {
 public:
  // `path`: a file (appended to) or "-" for standard output.
  static absl::StatusOr<std::unique_ptr<AccessLog>> Open(const std::string& path,
                                                         metrics::Counter* dropped,
                                                         size_t max_buffered_bytes = 8 << 20);
  ~AccessLog();  // writes what is buffered, then stops
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // One line (without its newline). Never blocks on the disk.
  void Write(std::string line);

 private:
  AccessLog(FILE* file, bool owned, metrics::Counter* dropped, size_t max)
      : file_(file), owned_(owned), dropped_(dropped), max_buffered_bytes_(max) {}
  void Run();

  FILE* file_;
  bool owned_;
  metrics::Counter* dropped_;
  size_t max_buffered_bytes_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::string buffer_;
  bool stopping_ = false;
  std::thread thread_;
};


}  // namespace capstan::gateway
