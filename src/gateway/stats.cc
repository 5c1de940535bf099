#include "gateway/stats.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace capstan::gateway {

GatewayMetrics::GatewayMetrics() = default;

RouteStats* GatewayMetrics::ForRoute(const std::string& label) {
  std::lock_guard lock(mu_);
  auto& slot = routes_[label];
  if (slot == nullptr) {
    slot = std::make_unique<RouteStats>();
    static constexpr const char* kClasses[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    for (size_t i = 0; i < 5; ++i) {
      slot->by_class[i] = registry_.AddCounter("capstan_gateway_requests_total",
                                               "Requests answered, by route and status class.",
                                               {{"route", label}, {"code", kClasses[i]}});
    }
    slot->duration =
        registry_.AddHistogram("capstan_gateway_request_duration_seconds",
                               "From the request's head to the response's end, by route.",
                               metrics::LatencyBuckets(), {{"route", label}});
  }
  return slot.get();
}

ClusterStats* GatewayMetrics::ForCluster(const std::string& name) {
  std::lock_guard lock(mu_);
  auto& slot = clusters_[name];
  if (slot == nullptr) {
    slot = std::make_unique<ClusterStats>();
    slot->requests = registry_.AddCounter("capstan_gateway_upstream_requests_total",
                                          "Requests forwarded, by cluster.", {{"cluster", name}});
    slot->connect_failures = registry_.AddCounter(
        "capstan_gateway_upstream_connect_failures_total",
        "Connections to an endpoint that could not be made, by cluster.", {{"cluster", name}});
    slot->resets = registry_.AddCounter(
        "capstan_gateway_upstream_resets_total",
        "Upstream connections or streams that ended before their response, by cluster.",
        {{"cluster", name}});
  }
  return slot.get();
}

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const std::string& path,
                                                           metrics::Counter* dropped,
                                                           size_t max_buffered_bytes) {
  FILE* file = path == "-" ? stdout : std::fopen(path.c_str(), "a");
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("access log ", path, ": ", std::strerror(errno)));
  }
  std::unique_ptr<AccessLog> log(new AccessLog(file, path != "-", dropped, max_buffered_bytes));
  log->thread_ = std::thread([raw = log.get()] { raw->Run(); });
  return log;
}

AccessLog::~AccessLog() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (owned_) std::fclose(file_);
}

void AccessLog::Write(std::string line) {
  {
    std::lock_guard lock(mu_);
    if (buffer_.size() + line.size() + 1 > max_buffered_bytes_) {
      dropped_->Inc();
      return;
    }
    bool was_empty = buffer_.empty();
    buffer_.append(line);
    buffer_.push_back('\n');
    if (!was_empty) return;  // the writer is already woken
  }
  wake_.notify_one();
}

void AccessLog::Run() {
  std::string batch;
  while (true) {
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !buffer_.empty(); });
      if (buffer_.empty() && stopping_) return;
      batch.swap(buffer_);
    }
    std::fwrite(batch.data(), 1, batch.size(), file_);
    std::fflush(file_);
    batch.clear();
  }
}

}  // namespace capstan::gateway
