// events_bench's "many units" mode (a tool, not a test): how the event
// store's CPU per event moves as the number of distinct units grows to tens
// of millions. One caller appends 5,000-event batches until UNITS distinct
// units were seen; each pick of a unit is a NEW unit (an exposure and a value
// event) or, with probability RETURNING, a unit seen before, drawn uniformly
// (two value events: the worst case for the unit cache, since every seen
// unit is equally likely to come back). Every REPORT_UNITS new units it waits
// for the aggregation to catch up and prints one line: CPU per event over
// that window (every thread of the process but the caller's preparing of
// batches), split by thread (writer, aggregator, RocksDB's background
// threads, the rest), the cache and read-back counters, and the RSS. When
// the aggregation is behind (where a service answers 429) the caller waits
// for it rather than failing.
//
//   UNITS=30000000 RETURNING=0.5 build/release/src/experiments/events_bench
//
// Knobs (environment): UNITS (required), RETURNING (0), REPORT_UNITS
// (1000000), CACHE (max_cached_units, the store's default), DEDUP
// (dedup_window_keys, the store's default), SYNC (1: fdatasync each group),
// SEED (1), DIR (a fresh temp directory, removed at the end).
#include <dirent.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "experiments/event_store.h"
#include "experiments/events.h"

namespace capstan::experiments {
namespace {

constexpr int kBatchEvents = 5000;

double EnvDouble(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == '\0' ? fallback : std::strtod(v, nullptr);
}

double ThreadCpu() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

// CPU seconds of each of the process's threads, summed by role (its name).
std::map<std::string, double> CpuByRole() {
  std::map<std::string, double> by_role;
  static const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return by_role;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream in(std::string("/proc/self/task/") + entry->d_name + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    size_t open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::string name = line.substr(open + 1, close - open - 1);
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    std::vector<std::string> fields;
    size_t at = close + 2;
    while (at < line.size() && fields.size() < 13) {
      size_t end = line.find(' ', at);
      fields.push_back(line.substr(at, end - at));
      at = end == std::string::npos ? line.size() : end + 1;
    }
    if (fields.size() < 13) continue;
    double seconds =
        (std::strtod(fields[11].c_str(), nullptr) + std::strtod(fields[12].c_str(), nullptr)) /
        tick;
    std::string role = name == "events-writer"       ? "writer"
                       : name == "events-aggr"       ? "aggregator"
                       : name.starts_with("rocksdb") ? "rocksdb"
                                                     : "other";
    by_role[role] += seconds;
  }
  closedir(dir);
  return by_role;
}

double ProcessCpu() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

long RssMiB() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * sysconf(_SC_PAGESIZE) / (1 << 20);
}

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

}  // namespace

int RunManyUnits() {
  const uint64_t target_units = static_cast<uint64_t>(EnvDouble("UNITS", 0));
  const double returning = EnvDouble("RETURNING", 0);
  const uint64_t report_units = static_cast<uint64_t>(EnvDouble("REPORT_UNITS", 1e6));
  if (target_units == 0 || returning < 0 || returning >= 1 || report_units == 0) {
    std::fprintf(stderr,
                 "events_bench: UNITS must be > 0, RETURNING in [0, 1), REPORT_UNITS > 0\n");
    return 2;
  }
  std::string dir;
  bool remove_dir = false;
  if (const char* d = std::getenv("DIR"); d != nullptr && *d != '\0') {
    dir = d;
  } else {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "events_bench_units_XXXXXX").string();
    dir = ::mkdtemp(pattern.data());
    remove_dir = true;
  }
  EventStoreOptions options{.directory = dir, .sync = EnvDouble("SYNC", 1) != 0};
  if (std::getenv("CACHE") != nullptr) {
    options.max_cached_units = static_cast<size_t>(EnvDouble("CACHE", 0));
  }
  if (std::getenv("DEDUP") != nullptr) {
    options.dedup_window_keys = static_cast<size_t>(EnvDouble("DEDUP", 0));
  }
  auto store = EventStore::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "events_bench: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  std::printf("# UNITS=%" PRIu64
              " RETURNING=%.2f CACHE=%zu DEDUP=%zu SYNC=%d, %d-event batches, dir %s\n",
              target_units, returning, options.max_cached_units, options.dedup_window_keys,
              options.sync ? 1 : 0, kBatchEvents, dir.c_str());
  std::printf("%12s %12s %9s %8s %8s %8s %8s %8s %10s %10s %8s\n", "units", "events", "us/event",
              "writer", "aggr", "rocksdb", "other", "Mev/cpu-s", "cached", "readback/ev",
              "rss_MiB");
  uint64_t rng = static_cast<uint64_t>(EnvDouble("SEED", 1));
  const uint64_t returning_threshold = static_cast<uint64_t>(returning * 18446744073709551615.0);
  uint64_t units = 0, events = 0, next_key = 0;
  uint64_t window_events = 0;
  double preparing = 0;
  double window_cpu_start = ProcessCpu();
  std::map<std::string, double> window_roles = CpuByRole();
  uint64_t window_read_back = 0;
  uint64_t next_report = report_units;
  auto add = [&](std::vector<Event>* batch, EventType type, uint64_t unit, bool treatment) {
    Event& e = batch->emplace_back();
    e.type = type;
    e.key = "k" + std::to_string(next_key++);
    e.experiment = "bench-exp";
    e.unit = "user-" + std::to_string(unit);
    if (type == EventType::kExposure) {
      e.variant = treatment ? "treatment" : "control";
      e.timestamp_ms = 1700000000000;
    } else {
      e.metric = "revenue";
      e.value = static_cast<double>(unit % 7);
      e.timestamp_ms = 1700000001000;
    }
  };
  while (units < target_units) {
    double started = ThreadCpu();
    std::vector<Event> batch;
    batch.reserve(kBatchEvents);
    while (batch.size() < kBatchEvents) {
      if (units > 0 && SplitMix(&rng) < returning_threshold) {
        uint64_t unit = SplitMix(&rng) % units;
        add(&batch, EventType::kValue, unit, false);
        add(&batch, EventType::kValue, unit, false);
      } else {
        uint64_t unit = units++;
        add(&batch, EventType::kExposure, unit, unit % 2 == 1);
        add(&batch, EventType::kValue, unit, false);
      }
    }
    preparing += ThreadCpu() - started;
    // Behind: wait for the aggregation (a service would answer 429), then send.
    if (!(*store)->Admit().ok()) (void)(*store)->Sums("bench-exp");
    absl::StatusOr<AppendResult> r = (*store)->Append(std::move(batch));
    if (!r.ok() || r->accepted != kBatchEvents) {
      std::fprintf(stderr, "events_bench: append failed: %s\n",
                   r.ok() ? "duplicates" : std::string(r.status().message()).c_str());
      return 1;
    }
    events += kBatchEvents;
    window_events += kBatchEvents;
    if (units >= next_report || units >= target_units) {
      (void)(*store)->Sums("bench-exp");  // the aggregation caught up
      EventStoreStats stats = (*store)->Stats();
      double cpu = ProcessCpu() - window_cpu_start - preparing;
      std::map<std::string, double> roles = CpuByRole();
      auto share = [&](const char* role) {
        double s = roles[role] - window_roles[role];
        if (std::string(role) == "other") s -= preparing;
        return 1e6 * s / static_cast<double>(window_events);
      };
      std::printf("%12" PRIu64 " %12" PRIu64 " %9.3f %8.3f %8.3f %8.3f %8.3f %8.2f %10" PRIu64
                  " %10.3f %8ld\n",
                  units, events, 1e6 * cpu / static_cast<double>(window_events), share("writer"),
                  share("aggregator"), share("rocksdb"), share("other"),
                  static_cast<double>(window_events) / cpu / 1e6, stats.cached_units,
                  static_cast<double>(stats.units_read_back - window_read_back) /
                      static_cast<double>(window_events),
                  RssMiB());
      std::fflush(stdout);
      window_read_back = stats.units_read_back;
      window_roles = roles;
      window_events = 0;
      preparing = 0;
      window_cpu_start = ProcessCpu();
      while (next_report <= units) next_report += report_units;
    }
  }
  store->reset();
  if (remove_dir) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace capstan::experiments
