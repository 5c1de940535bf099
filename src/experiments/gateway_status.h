// What the console's Gateways page shows: GET /v1/gateways asks each gateway
// admin endpoint the service was told about (`capstan experiments serve
// --gateway-admin URL`, or `capstan dev`'s own gateway) for its `/status`
// (routes, clusters with their endpoints' health, edge functions; the
// gateway's JSON, docs/gateway.md "Admin endpoint") and answers
//   {"gateways": [{"admin": "http://127.0.0.1:9901", "ok": true,
//                  "elapsedMs": 1.2, "status": {...the gateway's /status...}},
//                 {"admin": "http://10.0.0.8:9901", "ok": false,
//                  "error": "connect: Connection refused"}]}
// Always 200: a gateway that does not answer within the timeout, answers
// something other than 200, or answers something that is not a JSON object
// is "ok": false with the reason, never an error page. The gateways are
// asked at once (one thread each), so the answer takes at most one timeout.
//
// Thread-safety: GatewayDirectory is safe from any thread; the handler runs
// on the service's worker threads and blocks for at most the timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "base/status.h"
#include "experiments/js_value.h"
#include "net/http_router.h"

namespace capstan::experiments {

struct GatewayFetchOptions {
  // Connect, send and the whole answer, per gateway.
  std::chrono::milliseconds timeout{2000};
  // A larger /status answer is refused ("ok": false).
  size_t max_answer_bytes = 4 << 20;
};

// Gateways one service asks at most (more are refused at start).
inline constexpr size_t kMaxGatewayAdmins = 32;

// "http://host:port" (a bare "host:port" is taken as http; a path, if any,
// is dropped: /status is asked at the root) or an error naming the value.
// https is refused: the gateway's admin endpoint speaks plain HTTP.
absl::StatusOr<std::string> ParseGatewayAdminUrl(std::string_view text);

// The gateways the service shows. `capstan dev` sets its own gateway's
// admin URL after the gateway started (after the service did).
class GatewayDirectory {
 public:
  void Set(std::vector<std::string> admin_urls) ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<std::string> Get() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable Mutex mu_;  // base/mutex.h: TSan sees it (absl::Mutex it cannot)
  std::vector<std::string> urls_ ABSL_GUARDED_BY(mu_);
};

// One gateway's row of the JSON above, asked now. `admin_url` as
// ParseGatewayAdminUrl returns it.
Json FetchGatewayStatus(const std::string& admin_url, const GatewayFetchOptions& options);

// Every gateway's row, asked in parallel: {"gateways": [...]} in `urls` order.
Json GatewaysStatus(const std::vector<std::string>& urls, const GatewayFetchOptions& options);

// Adds GET /v1/gateways to `router`.
void AddGatewayRoutes(net::HttpRouter* router, std::shared_ptr<const GatewayDirectory> directory,
                      GatewayFetchOptions options = {});

}  // namespace capstan::experiments
