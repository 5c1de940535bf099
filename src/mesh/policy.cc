#include "mesh/policy.h"

#include <limits>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/logging.h"
#include "client/client.h"
#include "client/prefix_watcher.h"
#include "nlohmann/json.hpp"

namespace capstan::mesh {

namespace {

using Json = nlohmann::json;

// The fields of one JSON object, read by name; remembers which were read so
// that what is left over (a typo, a field of another version) is refused
// rather than ignored.
class Fields {
 public:
  Fields(const Json& object, std::string path) : object_(object), path_(std::move(path)) {}

  absl::Status String(const char* name, std::string* out) {
    const Json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Bad(name, "a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* name, bool* out) {
    const Json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Bad(name, "true or false");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  absl::Status Int(const char* name, int* out, int min) {
    const Json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number_integer() || v->get<int64_t>() < min ||
        v->get<int64_t>() > std::numeric_limits<int>::max()) {
      return Bad(name, absl::StrCat("an integer >= ", min));
    }
    *out = static_cast<int>(v->get<int64_t>());
    return absl::OkStatus();
  }
  absl::Status Double(const char* name, double* out, double min, double max) {
    const Json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number() || v->get<double>() < min || v->get<double>() > max) {
      return Bad(name, absl::StrCat("a number between ", min, " and ", max));
    }
    *out = v->get<double>();
    return absl::OkStatus();
  }
  // A whole number of `Unit`s >= 0 (at most a day: beyond is a mistake).
  template <typename Unit, typename Out>
  absl::Status Duration(const char* name, Out* out) {
    const Json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    constexpr int64_t kDay = std::chrono::duration_cast<Unit>(std::chrono::hours(24)).count();
    if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > kDay) {
      return Bad(name, absl::StrCat("an integer between 0 and ", kDay));
    }
    *out = std::chrono::duration_cast<Out>(Unit(v->get<int64_t>()));
    return absl::OkStatus();
  }
  // A nested object, read by `read`.
  template <typename Read>
  absl::Status Object(const char* name, Read read) {
    const Json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_object()) return Bad(name, "an object");
    Fields inner(*v, Path(name));
    RETURN_IF_ERROR(read(inner));
    return inner.NothingElse();
  }
  // Every field was read.
  absl::Status NothingElse() const {
    for (const auto& [key, value] : object_.items()) {
      if (!read_.contains(key)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown field '", Path(key.c_str()), "'"));
      }
    }
    return absl::OkStatus();
  }

 private:
  const Json* Find(const char* name) {
    read_.insert(name);
    auto it = object_.find(name);
    return it == object_.end() ? nullptr : &*it;
  }
  std::string Path(const char* name) const {
    return path_.empty() ? std::string(name) : absl::StrCat(path_, ".", name);
  }
  absl::Status Bad(const char* name, const std::string& expected) const {
    return absl::InvalidArgumentError(absl::StrCat("field '", Path(name), "' must be ", expected));
  }

  const Json& object_;
  std::string path_;
  absl::flat_hash_set<std::string> read_;
};

using Ms = std::chrono::milliseconds;
using Seconds = std::chrono::seconds;

absl::Status ReadPolicy(Fields& f, EndpointPoolOptions* o) {
  RETURN_IF_ERROR(f.String("balancer", &o->balancer));
  RETURN_IF_ERROR(f.Duration<Ms>("timeout_ms", &o->timeout));
  RETURN_IF_ERROR(f.Duration<Ms>("per_try_timeout_ms", &o->per_try_timeout));
  RETURN_IF_ERROR(f.Int("max_attempts", &o->max_attempts, 1));
  RETURN_IF_ERROR(f.Duration<Ms>("hedge_delay_ms", &o->hedge_delay));
  RETURN_IF_ERROR(f.Object("retry_backoff", [o](Fields& b) -> absl::Status {
    RETURN_IF_ERROR(b.Duration<Ms>("initial_ms", &o->initial_retry_backoff));
    return b.Duration<Ms>("max_ms", &o->max_retry_backoff);
  }));
  RETURN_IF_ERROR(f.Object("retry_budget", [o](Fields& b) -> absl::Status {
    RetryBudgetOptions& r = o->retry_budget;
    RETURN_IF_ERROR(b.Double("ratio", &r.ratio, 0, 100));
    RETURN_IF_ERROR(b.Double("min_retries_per_second", &r.min_retries_per_second, 0, 1e9));
    return b.Duration<Seconds>("window_s", &r.window);
  }));
  RETURN_IF_ERROR(f.Object("circuit_breaker", [o](Fields& b) -> absl::Status {
    CircuitBreakerOptions& c = o->breaker;
    RETURN_IF_ERROR(b.Int("consecutive_failures", &c.consecutive_failures, 1));
    RETURN_IF_ERROR(b.Double("error_rate", &c.error_rate, 0, 1));
    RETURN_IF_ERROR(b.Int("min_calls_for_rate", &c.min_calls_for_rate, 1));
    RETURN_IF_ERROR(b.Duration<Ms>("window_ms", &c.window));
    RETURN_IF_ERROR(b.Duration<Ms>("open_ms", &c.open_duration));
    RETURN_IF_ERROR(b.Duration<Ms>("max_open_ms", &c.max_open_duration));
    RETURN_IF_ERROR(b.Int("probes", &c.probes, 1));
    return b.Int("probe_successes", &c.probe_successes, 1);
  }));
  RETURN_IF_ERROR(f.Object("outlier", [o](Fields& b) -> absl::Status {
    OutlierOptions& d = o->outlier;
    RETURN_IF_ERROR(b.Bool("enabled", &d.enabled));
    RETURN_IF_ERROR(b.Duration<Ms>("interval_ms", &d.interval));
    RETURN_IF_ERROR(b.Double("stdev_factor", &d.stdev_factor, 0, 100));
    RETURN_IF_ERROR(b.Int("min_hosts", &d.min_hosts, 1));
    RETURN_IF_ERROR(b.Int("min_requests", &d.min_requests, 1));
    RETURN_IF_ERROR(b.Duration<Ms>("base_ejection_ms", &d.base_ejection_time));
    RETURN_IF_ERROR(b.Duration<Ms>("max_ejection_ms", &d.max_ejection_time));
    return b.Int("max_ejection_percent", &d.max_ejection_percent, 0);
  }));
  return f.NothingElse();
}

}  // namespace

absl::StatusOr<EndpointPoolOptions> ParsePolicy(std::string_view json) {
  Json document = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!document.is_object()) return absl::InvalidArgumentError("a policy is a JSON object");
  EndpointPoolOptions options;
  Fields fields(document, "");
  RETURN_IF_ERROR(ReadPolicy(fields, &options));
  RETURN_IF_ERROR(EndpointPoolCore::Validate(options));
  absl::StatusOr<std::unique_ptr<Balancer>> balancer = NewBalancer(options.balancer);
  if (!balancer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field 'balancer': ", balancer.status().message()));
  }
  return options;
}

// One receiver of a service's policy.
struct PolicyWatcher::Subscriber {
  net::EventLoop* loop;
  PolicyCallback callback;
  // Read and written on the loop only (the subscription ends there).
  bool active = true;
};

class PolicyWatcher::SubscriptionImpl final : public PolicyWatcher::Subscription {
 public:
  SubscriptionImpl(PolicyWatcher* watcher, std::string service,
                   std::shared_ptr<Subscriber> subscriber)
      : watcher_(watcher), service_(std::move(service)), subscriber_(std::move(subscriber)) {}
  ~SubscriptionImpl() override {
    subscriber_->active = false;
    watcher_->Unsubscribe(service_, subscriber_);
  }

 private:
  PolicyWatcher* watcher_;
  std::string service_;
  std::shared_ptr<Subscriber> subscriber_;
};

std::unique_ptr<PolicyWatcher> PolicyWatcher::Start(std::shared_ptr<client::Client> client,
                                                    PolicyWatcherOptions options) {
  std::unique_ptr<PolicyWatcher> watcher(new PolicyWatcher(options.prefix));
  watcher->watcher_ = client::PrefixWatcher::Start(
      std::move(client),
      {.prefix = std::move(options.prefix), .retry = options.retry, .what = "mesh policies"},
      [w = watcher.get()](const std::vector<client::PrefixChange>& batch) { w->OnChange(batch); });
  return watcher;
}

PolicyWatcher::PolicyWatcher(std::string prefix) : prefix_(std::move(prefix)) {}

PolicyWatcher::~PolicyWatcher() { watcher_.reset(); }

void PolicyWatcher::OnChange(const std::vector<client::PrefixChange>& batch) {
  std::lock_guard lock(mu_);
  for (const client::PrefixChange& change : batch) {
    Apply(change.key, change.value ? &*change.value : nullptr);
  }
}

void PolicyWatcher::Apply(const std::string& key, const std::string* document) {
  std::string service = key.substr(prefix_.size());
  if (document == nullptr) {
    if (policies_.erase(service) > 0) {
      CAPSTAN_LOG(info, "mesh policy removed; clients use their own options", "key", key);
      Notify(service);
    }
    return;
  }
  auto it = policies_.find(service);
  if (it != policies_.end() && it->second.document == *document) return;
  absl::StatusOr<EndpointPoolOptions> options =
      service.empty() ? absl::InvalidArgumentError("the key names no service")
                      : ParsePolicy(*document);
  if (!options.ok()) {
    refused_++;
    CAPSTAN_LOG(err, "refusing a mesh policy document; the last good policy stays", "key", key,
                "error", std::string(options.status().message()));
    return;
  }
  accepted_++;
  policies_[service] = Policy{.document = *document, .options = *std::move(options)};
  CAPSTAN_LOG(info, "mesh policy applied", "key", key);
  Notify(service);
}

void PolicyWatcher::Notify(const std::string& service) {
  auto subs = subscribers_.find(service);
  if (subs == subscribers_.end()) return;
  std::optional<EndpointPoolOptions> policy;
  if (auto it = policies_.find(service); it != policies_.end()) policy = it->second.options;
  for (const std::shared_ptr<Subscriber>& s : subs->second) {
    s->loop->Post([s, policy] {
      if (s->active) s->callback(policy);
    });
  }
}

std::unique_ptr<PolicyWatcher::Subscription> PolicyWatcher::Subscribe(std::string service,
                                                                      net::EventLoop* loop,
                                                                      PolicyCallback on_policy) {
  auto subscriber = std::make_shared<Subscriber>();
  subscriber->loop = loop;
  subscriber->callback = std::move(on_policy);
  std::lock_guard lock(mu_);
  subscribers_[service].push_back(subscriber);
  if (auto it = policies_.find(service); it != policies_.end()) {
    loop->Post([subscriber, policy = it->second.options] {
      if (subscriber->active) subscriber->callback(policy);
    });
  }
  return std::make_unique<SubscriptionImpl>(this, std::move(service), std::move(subscriber));
}

void PolicyWatcher::Unsubscribe(const std::string& service,
                                const std::shared_ptr<Subscriber>& subscriber) {
  std::lock_guard lock(mu_);
  auto it = subscribers_.find(service);
  if (it == subscribers_.end()) return;
  std::erase(it->second, subscriber);
  if (it->second.empty()) subscribers_.erase(it);
}

std::optional<EndpointPoolOptions> PolicyWatcher::Current(std::string_view service) const {
  std::lock_guard lock(mu_);
  auto it = policies_.find(std::string(service));
  if (it == policies_.end()) return std::nullopt;
  return it->second.options;
}

uint64_t PolicyWatcher::accepted() const {
  std::lock_guard lock(mu_);
  return accepted_;
}

uint64_t PolicyWatcher::refused() const {
  std::lock_guard lock(mu_);
  return refused_;
}

}  // namespace capstan::mesh
