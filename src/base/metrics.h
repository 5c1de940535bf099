// The metrics registry: every server declares its metrics here once and
// /metrics renders them in the Prometheus text exposition format (0.0.4).
//
// Thread-safety: metric objects are updated lock-free from any thread;
// registration and rendering take the registry mutex. Pointers returned by
// Add* stay valid for the registry's lifetime.
//
//   metrics::Registry reg;
//   auto* puts = reg.AddCounter("capstan_store_puts_total", "Put requests applied.");
//   puts->Inc();
//   std::string page = reg.RenderText();
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/mutex.h"

namespace capstan::metrics {

// Label pairs in the order they should be printed, e.g. {{"method", "Put"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void Add(int64_t d) { value_.fetch_add(d, std::memory_order_relaxed); }
  int64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Cumulative histogram with fixed upper bounds (in the metric's unit, seconds
// for latencies as Prometheus recommends).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  // Snapshot for rendering: cumulative counts per bound plus +Inf, and the sum.
  void Read(std::vector<uint64_t>* cumulative, double* sum, uint64_t* count) const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // one per bound, plus +Inf
  std::atomic<uint64_t> sum_micros_{0};
  std::atomic<uint64_t> count_{0};
};

// Exponential latency buckets from 100µs to ~13s, the shape etcd uses for its
// disk and request histograms.
std::vector<double> LatencyBuckets();

class Registry {
 public:
  Counter* AddCounter(const std::string& name, const std::string& help, Labels labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help, Labels labels = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> bounds, Labels labels = {});
  // A gauge whose value is computed at scrape time (e.g. database size).
  void AddGaugeFunc(const std::string& name, const std::string& help, std::function<double()> fn,
                    Labels labels = {});

  std::string RenderText() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Series {
    std::string labels;  // rendered: {a="b",c="d"} or empty
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> fn;
  };
  struct Family {
    std::string help;
    Kind kind;
    std::vector<Series> series;
  };
  Series* AddSeries(const std::string& name, const std::string& help, Kind kind,
                    const Labels& labels) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace capstan::metrics
