#include "gateway/experiment_routing.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/logging.h"
#include "experiments/model_service.h"
#include "net/http_router.h"

namespace capstan::gateway {

namespace {

// What the experiments service accepts as an id (events.h: 1 to 128 bytes,
// no control characters); kept to visible ASCII so a unit also travels
// unchanged in a header and a cookie. A unit that is not one is ignored (a
// header) or replaced (a cookie).
constexpr size_t kMaxUnitBytes = 128;
bool ValidUnit(std::string_view unit) {
  if (unit.empty() || unit.size() > kMaxUnitBytes) return false;
  for (char c : unit) {
    if (c <= 0x20 || c >= 0x7f || c == ';' || c == ',' || c == '"' || c == '\\') return false;
  }
  return true;
}

std::string RandomHex(int bytes) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes * 2);
  uint64_t word = 0;
  for (int i = 0; i < bytes; ++i) {
    if (i % 8 == 0) word = rng();
    uint8_t b = static_cast<uint8_t>(word >> ((i % 8) * 8));
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

int64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ExperimentRouting::ExperimentRouting(const ExperimentsConfig& config)
    : config_(config), exposures_(config.exposure_dedup_slots), instance_(RandomHex(8)) {}

absl::StatusOr<std::unique_ptr<ExperimentRouting>> ExperimentRouting::StartWithoutStore(
    const ExperimentsConfig& config) {
  std::unique_ptr<ExperimentRouting> routing(new ExperimentRouting(config));
  if (!config.events_url.empty()) {
    EventShipperOptions options{.url = config.events_url,
                                .batch_events = config.batch_events,
                                .flush_interval = config.flush_interval,
                                .max_pending_batches = config.max_pending_batches};
    ASSIGN_OR_RETURN(routing->shipper_, EventShipper::Start(std::move(options)));
  }
  return routing;
}

absl::StatusOr<std::unique_ptr<ExperimentRouting>> ExperimentRouting::Start(
    const ExperimentsConfig& config, std::shared_ptr<client::Client> client) {
  ASSIGN_OR_RETURN(std::unique_ptr<ExperimentRouting> routing, StartWithoutStore(config));
  routing->watcher_ = experiments::ConfigWatcher::Start(std::move(client), config.prefix);
  ExperimentRouting* raw = routing.get();
  routing->subscription_ = routing->watcher_->Subscribe(
      [raw](const std::shared_ptr<const experiments::DocumentSnapshot>& documents) {
        raw->OnDocuments(documents);
      });
  return routing;
}

ExperimentRouting::~ExperimentRouting() {
  if (watcher_ != nullptr) watcher_->Unsubscribe(subscription_);
  watcher_.reset();
  shipper_.reset();  // sends what is queued, bounded by its I/O timeout
}

bool ExperimentRouting::WaitUntilListed(std::chrono::milliseconds timeout) const {
  return watcher_ == nullptr || watcher_->WaitUntilListed(timeout);
}

void ExperimentRouting::SetModel(std::shared_ptr<const experiments::ConfigSnapshot> model) {
  assigner_.SetSnapshot(std::move(model));
}

void ExperimentRouting::OnDocuments(
    const std::shared_ptr<const experiments::DocumentSnapshot>& documents) {
  absl::StatusOr<std::shared_ptr<const experiments::ConfigSnapshot>> built =
      experiments::BuildModelSnapshot(*documents);
  if (!built.ok()) {
    // The experiments service refuses such writes; a hand-written document
    // can still break the model: keep routing by the last good one.
    counters_->model_build_failures.fetch_add(1, std::memory_order_relaxed);
    CAPSTAN_LOG(warn, "gateway: the experiment model did not build; keeping the last good one",
                "error", std::string(built.status().message()));
    return;
  }
  counters_->model_builds.fetch_add(1, std::memory_order_relaxed);
  assigner_.SetSnapshot(*std::move(built));
}

ExperimentRouting::Decision ExperimentRouting::Assign(const ExperimentRoute& route,
                                                      net::http1::HeaderFields* fields) {
  Decision d;
  d.cluster = &route.default_cluster;
  if (!route.unit_header.empty()) {
    std::optional<std::string_view> v = fields->Get(route.unit_header);
    if (v && ValidUnit(*v)) d.unit = std::string(*v);
  }
  if (d.unit.empty() && !route.unit_cookie.empty()) {
    std::optional<std::string_view> v = fields->Cookie(route.unit_cookie);
    if (v && ValidUnit(*v)) {
      d.unit = std::string(*v);
    } else {
      d.unit = RandomHex(16);
      d.new_unit = true;
    }
  }
  if (d.unit.empty()) {
    // No unit: the default cluster, no assignment — and none a client
    // claimed for itself reaches the upstream either.
    if (!config_.unit_header.empty()) fields->Remove(config_.unit_header);
    if (!config_.assignment_header.empty()) fields->Remove(config_.assignment_header);
    return d;
  }

  // The EvaluationResult is per thread and used before any suspension; the
  // attributes object is rebuilt per request (a few small strings).
  thread_local experiments::EvaluationResult result;
  experiments::Json attributes = experiments::Json::object();
  attributes[route.attribute] = d.unit;
  for (const auto& [attribute, header] : route.attribute_headers) {
    if (std::optional<std::string_view> v = fields->Get(header)) attributes[attribute] = *v;
  }
  assigner_.Evaluate(attributes, &result);
  counters_->assignments.fetch_add(1, std::memory_order_relaxed);
  const experiments::Assignment* a = result.assignment(route.experiment);
  if (a != nullptr && a->variant >= 0) {
    d.variant = a->experiment->variant_ids[a->variant];
    for (const auto& [variant, cluster] : route.variants) {
      if (variant == d.variant) {
        d.cluster = &cluster;
        break;
      }
    }
  }
  if (!config_.unit_header.empty()) fields->Set(config_.unit_header, d.unit);
  if (!config_.assignment_header.empty()) {
    // Set even for a unit in no variant: the service sees "<id>=" and knows
    // the gateway looked.
    fields->Set(config_.assignment_header, absl::StrCat(route.experiment, "=", d.variant));
  }
  if (!d.variant.empty() && exposures_.FirstSeen(route.experiment, d.variant, d.unit)) {
    counters_->exposures.fetch_add(1, std::memory_order_relaxed);
    Emit(absl::StrCat(R"({"type":"exposure","key":)", net::JsonQuote(NextEventKey()),
                      R"(,"experiment":)", net::JsonQuote(route.experiment), R"(,"unit":)",
                      net::JsonQuote(d.unit), R"(,"variant":)", net::JsonQuote(d.variant),
                      R"(,"ts":)", NowMillis(), "}"));
  }
  return d;
}

std::string ExperimentRouting::SetCookieValue(const ExperimentRoute& route,
                                              const Decision& decision) const {
  return absl::StrCat(route.unit_cookie, "=", decision.unit,
                      "; Path=/; Max-Age=", config_.cookie_max_age.count() / 1000,
                      "; HttpOnly; SameSite=Lax");
}

void ExperimentRouting::RecordOutcome(const ExperimentRoute& route, const Decision& decision,
                                      int status, double latency_ms, uint64_t response_bytes) {
  if (decision.variant.empty() || shipper_ == nullptr) return;
  int64_t ts = NowMillis();
  std::string common = absl::StrCat(R"(,"experiment":)", net::JsonQuote(route.experiment),
                                    R"(,"unit":)", net::JsonQuote(decision.unit), R"(,"variant":)",
                                    net::JsonQuote(decision.variant));
  auto ratio = [&](const char* metric, double numerator) {
    Emit(absl::StrCat(R"({"type":"ratio","key":)", net::JsonQuote(NextEventKey()), common,
                      R"(,"metric":")", metric, R"(","numerator":)",
                      absl::StrFormat("%.6g", numerator), R"(,"denominator":1,"ts":)", ts, "}"));
  };
  ratio("gateway_latency_ms", latency_ms);
  ratio("gateway_error_rate", status >= 500 || status == 0 ? 1 : 0);
  ratio("gateway_response_bytes", static_cast<double>(response_bytes));
}

void ExperimentRouting::Emit(std::string_view json_line) {
  if (shipper_ != nullptr) shipper_->Add(json_line);
}

std::string ExperimentRouting::NextEventKey() {
  return absl::StrCat("gw-", instance_, "-", next_event_.fetch_add(1, std::memory_order_relaxed));
}

void ExperimentRouting::RegisterMetrics(metrics::Registry* registry) const {
  std::shared_ptr<Counters> c = counters_;
  auto add = [&](const char* name, const char* help, std::atomic<uint64_t> Counters::*field) {
    registry->AddGaugeFunc(name, help,
                           [c, field] { return static_cast<double>((*c.*field).load()); });
  };
  add("capstan_gateway_experiment_assignments_total",
      "Requests assigned by an experiment route; a counter.", &Counters::assignments);
  add("capstan_gateway_experiment_exposures_total",
      "First exposures of a unit to a variant sent as events; a counter.", &Counters::exposures);
  add("capstan_gateway_experiment_model_builds_total",
      "Experiment models built from the store's documents; a counter.", &Counters::model_builds);
  add("capstan_gateway_experiment_model_build_failures_total",
      "Store changes whose model did not build (the last good one kept); a counter.",
      &Counters::model_build_failures);
  if (shipper_ == nullptr) return;
  // The shipper lives as long as this object, which outlives the gateway
  // whose registry this is (the caller's order of destruction).
  const EventShipper* s = shipper_.get();
  auto stat = [&](const char* name, const char* help, uint64_t EventShipper::Stats::*field) {
    registry->AddGaugeFunc(name, help,
                           [s, field] { return static_cast<double>(s->stats().*field); });
  };
  stat("capstan_gateway_experiment_events_sent_total",
       "Experiment events the experiments service acknowledged; a counter.",
       &EventShipper::Stats::events_sent);
  stat("capstan_gateway_experiment_event_batches_dropped_total",
       "Event batches dropped because the send queue was full; a counter.",
       &EventShipper::Stats::batches_dropped);
  stat("capstan_gateway_experiment_event_batches_refused_total",
       "Event batches the experiments service refused (4xx); a counter.",
       &EventShipper::Stats::batches_refused);
  stat("capstan_gateway_experiment_event_send_failures_total",
       "Event batch sends that failed and were retried; a counter.",
       &EventShipper::Stats::send_failures);
  stat("capstan_gateway_experiment_event_batches_pending", "Event batches waiting to be sent.",
       &EventShipper::Stats::pending_batches);
}

}  // namespace capstan::gateway
