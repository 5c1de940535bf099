#include "base/metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::metrics {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, RendersCountersGaugesAndHistograms) {
  Registry reg;
  Counter* puts = reg.AddCounter("capstan_puts_total", "Puts.", {{"method", "Put"}});
  Gauge* watchers = reg.AddGauge("capstan_watchers", "Watchers.");
  Histogram* lat = reg.AddHistogram("capstan_latency_seconds", "Latency.", {0.001, 0.01});
  reg.AddGaugeFunc("capstan_db_bytes", "DB size.", [] { return 42.0; });
  puts->Inc(3);
  watchers->Set(7);
  lat->Observe(0.0005);
  lat->Observe(0.005);
  lat->Observe(5);

  std::string text = reg.RenderText();
  EXPECT_THAT(text, HasSubstr("# TYPE capstan_puts_total counter\n"));
  EXPECT_THAT(text, HasSubstr("capstan_puts_total{method=\"Put\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("capstan_watchers 7\n"));
  EXPECT_THAT(text, HasSubstr("capstan_db_bytes 42\n"));
  EXPECT_THAT(text, HasSubstr("capstan_latency_seconds_bucket{le=\"0.001\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("capstan_latency_seconds_bucket{le=\"0.01\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("capstan_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("capstan_latency_seconds_count 3\n"));
}

TEST(Metrics, EscapesLabelValues) {
  Registry reg;
  reg.AddCounter("c_total", "C.", {{"path", "a\"b\\c"}})->Inc();
  EXPECT_THAT(reg.RenderText(), HasSubstr("c_total{path=\"a\\\"b\\\\c\"} 1\n"));
}

}  // namespace
}  // namespace capstan::metrics
