#include "mesh/policy.h"

#include "gtest/gtest.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;

TEST(PolicyTest, EveryFieldIsReadAndTheRestKeepTheirDefaults) {
  auto full = ParsePolicy(R"({
    "balancer": "round_robin",
    "timeout_ms": 2000,
    "per_try_timeout_ms": 300,
    "max_attempts": 4,
    "hedge_delay_ms": 50,
    "retry_backoff": {"initial_ms": 20, "max_ms": 800},
    "retry_budget": {"ratio": 0.2, "min_retries_per_second": 5, "window_s": 30},
    "circuit_breaker": {"consecutive_failures": 7, "error_rate": 0.4, "min_calls_for_rate": 50,
                        "window_ms": 20000, "open_ms": 2000, "max_open_ms": 60000,
                        "probes": 2, "probe_successes": 3},
    "outlier": {"enabled": false, "interval_ms": 5000, "stdev_factor": 2.5, "min_hosts": 3,
                "min_requests": 20, "base_ejection_ms": 10000, "max_ejection_ms": 100000,
                "max_ejection_percent": 30}
  })");
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->balancer, "round_robin");
  EXPECT_EQ(full->timeout, 2000ms);
  EXPECT_EQ(full->per_try_timeout, 300ms);
  EXPECT_EQ(full->max_attempts, 4);
  EXPECT_EQ(full->hedge_delay, 50ms);
  EXPECT_EQ(full->initial_retry_backoff, 20ms);
  EXPECT_EQ(full->max_retry_backoff, 800ms);
  EXPECT_DOUBLE_EQ(full->retry_budget.ratio, 0.2);
  EXPECT_DOUBLE_EQ(full->retry_budget.min_retries_per_second, 5);
  EXPECT_EQ(full->retry_budget.window, 30s);
  EXPECT_EQ(full->breaker.consecutive_failures, 7);
  EXPECT_DOUBLE_EQ(full->breaker.error_rate, 0.4);
  EXPECT_EQ(full->breaker.min_calls_for_rate, 50);
  EXPECT_EQ(full->breaker.window, 20000ms);
  EXPECT_EQ(full->breaker.open_duration, 2000ms);
  EXPECT_EQ(full->breaker.max_open_duration, 60000ms);
  EXPECT_EQ(full->breaker.probes, 2);
  EXPECT_EQ(full->breaker.probe_successes, 3);
  EXPECT_FALSE(full->outlier.enabled);
  EXPECT_EQ(full->outlier.interval, 5000ms);
  EXPECT_DOUBLE_EQ(full->outlier.stdev_factor, 2.5);
  EXPECT_EQ(full->outlier.min_hosts, 3);
  EXPECT_EQ(full->outlier.min_requests, 20);
  EXPECT_EQ(full->outlier.base_ejection_time, 10000ms);
  EXPECT_EQ(full->outlier.max_ejection_time, 100000ms);
  EXPECT_EQ(full->outlier.max_ejection_percent, 30);

  auto empty = ParsePolicy("{}");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EndpointPoolOptions defaults;
  EXPECT_EQ(empty->balancer, defaults.balancer);
  EXPECT_EQ(empty->max_attempts, defaults.max_attempts);
  EXPECT_EQ(empty->hedge_delay, defaults.hedge_delay);
  EXPECT_EQ(empty->breaker.consecutive_failures, defaults.breaker.consecutive_failures);
  EXPECT_EQ(empty->outlier.interval, defaults.outlier.interval);
  // A nested object with some fields keeps the defaults of the others.
  auto partial = ParsePolicy(R"({"circuit_breaker": {"probes": 3}})");
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->breaker.probes, 3);
  EXPECT_EQ(partial->breaker.consecutive_failures, defaults.breaker.consecutive_failures);
}

TEST(PolicyTest, BadDocumentsAreRefusedNamingTheField) {
  struct Case {
    const char* document;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {"not json", "not valid JSON"},
           {"[1, 2]", "JSON object"},
           {R"({"balancr": "p2c"})", "unknown field 'balancr'"},
           {R"({"circuit_breaker": {"opne_ms": 5}})", "unknown field 'circuit_breaker.opne_ms'"},
           {R"({"max_attempts": "3"})", "field 'max_attempts' must be an integer >= 1"},
           {R"({"max_attempts": 0})", "field 'max_attempts' must be an integer >= 1"},
           {R"({"timeout_ms": -1})", "field 'timeout_ms' must be an integer between 0"},
           {R"({"hedge_delay_ms": 1.5})", "field 'hedge_delay_ms'"},
           {R"({"retry_budget": {"ratio": -0.1}})", "field 'retry_budget.ratio'"},
           {R"({"circuit_breaker": {"error_rate": 2}})", "field 'circuit_breaker.error_rate'"},
           {R"({"outlier": {"enabled": "yes"}})", "field 'outlier.enabled' must be true or false"},
           {R"({"outlier": 5})", "field 'outlier' must be an object"},
           {R"({"balancer": "nope"})", "field 'balancer'"},
           {R"({"retry_backoff": {"initial_ms": 900, "max_ms": 100}})", "retry back-off"},
           {R"({"circuit_breaker": {"open_ms": 0}})", "circuit_breaker"},
       }) {
    auto r = ParsePolicy(c.document);
    ASSERT_FALSE(r.ok()) << c.document;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.document;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << c.document << " -> " << r.status().message();
  }
}

}  // namespace
}  // namespace capstan::mesh
