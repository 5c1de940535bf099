#include "base/metrics.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace capstan::metrics {
namespace {

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string RenderLabels(const Labels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ",";
    first = false;
    out += k + "=\"" + EscapeLabelValue(v) + "\"";
  }
  if (!extra.empty()) {
    if (!first) out += ",";
    out += extra;
  }
  out += "}";
  return out;
}

std::string FormatDouble(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// Inserts `le` into an already rendered label set.
std::string WithLe(const std::string& rendered, const std::string& le) {
  std::string extra = "le=\"" + le + "\"";
  if (rendered.empty()) return "{" + extra + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + extra + "}";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(std::max(0.0, v) * 1e6), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

void Histogram::Read(std::vector<uint64_t>* cumulative, double* sum, uint64_t* count) const {
  cumulative->clear();
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    cumulative->push_back(running);
  }
  *sum = static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6;
  *count = running;
}

std::vector<double> LatencyBuckets() {
  std::vector<double> b;
  double v = 0.0001;
  for (int i = 0; i < 18; ++i) {
    b.push_back(v);
    v *= 2;
  }
  return b;
}

Registry::Series* Registry::AddSeries(const std::string& name, const std::string& help, Kind kind,
                                      const Labels& labels) {
  Family& fam = families_[name];
  if (fam.series.empty()) {
    fam.help = help;
    fam.kind = kind;
  } else if (fam.kind != kind) {
    // A programming error caught at startup, not input from outside.
    throw std::logic_error("metric " + name + " registered with two types");
  }
  fam.series.emplace_back();
  fam.series.back().labels = RenderLabels(labels);
  return &fam.series.back();
}

Counter* Registry::AddCounter(const std::string& name, const std::string& help, Labels labels) {
  MutexLock lock(&mu_);
  Series* s = AddSeries(name, help, Kind::kCounter, labels);
  s->counter = std::make_unique<Counter>();
  return s->counter.get();
}

Gauge* Registry::AddGauge(const std::string& name, const std::string& help, Labels labels) {
  MutexLock lock(&mu_);
  Series* s = AddSeries(name, help, Kind::kGauge, labels);
  s->gauge = std::make_unique<Gauge>();
  return s->gauge.get();
}

Histogram* Registry::AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> bounds, Labels labels) {
  MutexLock lock(&mu_);
  Series* s = AddSeries(name, help, Kind::kHistogram, labels);
  s->histogram = std::make_unique<Histogram>(std::move(bounds));
  return s->histogram.get();
}

void Registry::AddGaugeFunc(const std::string& name, const std::string& help,
                            std::function<double()> fn, Labels labels) {
  MutexLock lock(&mu_);
  Series* s = AddSeries(name, help, Kind::kGauge, labels);
  s->fn = std::move(fn);
}

std::string Registry::RenderText() const {
  MutexLock lock(&mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    const char* type = fam.kind == Kind::kCounter ? "counter"
                       : fam.kind == Kind::kGauge ? "gauge"
                                                  : "histogram";
    out += "# HELP " + name + " " + fam.help + "\n";
    out += "# TYPE " + name + " " + type + "\n";
    for (const Series& s : fam.series) {
      if (s.counter) {
        out += name + s.labels + " " + std::to_string(s.counter->Value()) + "\n";
      } else if (s.gauge) {
        out += name + s.labels + " " + std::to_string(s.gauge->Value()) + "\n";
      } else if (s.fn) {
        out += name + s.labels + " " + FormatDouble(s.fn()) + "\n";
      } else if (s.histogram) {
        std::vector<uint64_t> cum;
        double sum;
        uint64_t count;
        s.histogram->Read(&cum, &sum, &count);
        const auto& bounds = s.histogram->bounds();
        for (size_t i = 0; i < bounds.size(); ++i) {
          out += name + "_bucket" + WithLe(s.labels, FormatDouble(bounds[i])) + " " +
                 std::to_string(cum[i]) + "\n";
        }
        out +=
            name + "_bucket" + WithLe(s.labels, "+Inf") + " " + std::to_string(cum.back()) + "\n";
        out += name + "_sum" + s.labels + " " + FormatDouble(sum) + "\n";
        out += name + "_count" + s.labels + " " + std::to_string(count) + "\n";
      }
    }
  }
  return out;
}

}  // namespace capstan::metrics
