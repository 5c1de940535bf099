// Measurements the load generators share: a process's CPU time and memory
// from /proc, and a lock-free latency histogram.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace capstan::bench {

// utime + stime of a process, in microseconds.
inline int64_t CpuMicros(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  // Fields after the command name, which is in parentheses and may hold spaces.
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  int64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return (utime + stime) * 1'000'000 / sysconf(_SC_CLK_TCK);
}

// A "kB" field of /proc/PID/status (VmHWM: peak RSS, VmRSS: current RSS), in bytes.
inline int64_t StatusBytes(int pid, std::string_view field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(field)) return std::stoll(line.substr(field.size())) * 1024;
  }
  return 0;
}
inline int64_t PeakRss(int pid) { return StatusBytes(pid, "VmHWM:"); }
inline int64_t CurrentRss(int pid) { return StatusBytes(pid, "VmRSS:"); }

// Latencies from many threads without a lock: log-scaled buckets of 1/16 of
// a power of two (about 4% wide), from 1 µs up.
class LatencyHistogram {
 public:
  // Records `count` samples of `us` microseconds.
  void Add(int64_t us, int64_t count = 1) {
    us = std::max<int64_t>(us, 1);
    int log = 63 - __builtin_clzll(static_cast<uint64_t>(us));
    int sub = log >= 4 ? static_cast<int>((us >> (log - 4)) & 15) : 0;
    size_t b = std::min<size_t>(static_cast<size_t>(log * 16 + sub), kBuckets - 1);
    counts_[b].fetch_add(count, std::memory_order_relaxed);
  }
  int64_t Count() const {
    int64_t n = 0;
    for (const auto& c : counts_) n += c.load();
    return n;
  }
  double PercentileMs(double p) const {
    int64_t total = Count();
    int64_t want =
        std::min<int64_t>(total - 1, static_cast<int64_t>(p * static_cast<double>(total)));
    int64_t seen = 0;
    for (size_t b = 0; b < kBuckets; ++b) {
      seen += counts_[b].load();
      if (seen > want) {
        int log = static_cast<int>(b / 16), sub = static_cast<int>(b % 16);
        double us = std::ldexp(1.0 + sub / 16.0, log);
        return us / 1000.0;
      }
    }
    return 0;
  }

 private:
  static constexpr size_t kBuckets = 40 * 16;
  std::array<std::atomic<int64_t>, kBuckets> counts_{};
};

inline int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace capstan::bench
