// Replays Zipf-distributed request traces through the eviction policies and
// prints their hit ratios (the table in README.md came from it):
//
//   build/release/src/gateway/cache/cache_eviction_sim [requests] [objects]
//
// Every object has the same size (one unit), so the ratio measures the
// policy alone. The trace is drawn from a fixed seed: runs are repeatable.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gateway/cache/eviction.h"

using capstan::gateway::cache::EvictionKind;
using capstan::gateway::cache::EvictionKindName;
using capstan::gateway::cache::MakeEvictionPolicy;

namespace {

std::vector<uint64_t> ZipfTrace(size_t requests, size_t objects, double alpha, uint64_t seed) {
  std::vector<double> cdf(objects);
  double sum = 0;
  for (size_t i = 0; i < objects; ++i) {
    sum += 1.0 / std::pow(static_cast<double>(i + 1), alpha);
    cdf[i] = sum;
  }
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, sum);
  // Ranks are scattered over ids so that id order says nothing of popularity.
  std::vector<uint64_t> ids(objects);
  for (size_t i = 0; i < objects; ++i) ids[i] = i * 0x9E3779B97F4A7C15ULL + 1;
  std::vector<uint64_t> trace(requests);
  for (size_t r = 0; r < requests; ++r) {
    size_t rank = std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin();
    trace[r] = ids[std::min(rank, objects - 1)];
  }
  return trace;
}

double HitRatio(EvictionKind kind, const std::vector<uint64_t>& trace, size_t capacity) {
  auto policy = MakeEvictionPolicy(kind, capacity);
  absl::flat_hash_set<uint64_t> resident;
  std::vector<uint64_t> evicted;
  size_t hits = 0;
  for (uint64_t id : trace) {
    if (resident.contains(id)) {
      ++hits;
      policy->Access(id);
      continue;
    }
    evicted.clear();
    policy->Insert(id, 1, &evicted);
    resident.insert(id);
    for (uint64_t v : evicted) resident.erase(v);
  }
  return static_cast<double>(hits) / static_cast<double>(trace.size());
}

}  // namespace

int main(int argc, char** argv) {
  size_t requests = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
  size_t objects = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 100000;
  const EvictionKind kinds[] = {EvictionKind::kLru, EvictionKind::kS3Fifo, EvictionKind::kTinyLfu};
  std::printf("| alpha | cache (%% of %zu objects) |", objects);
  for (EvictionKind k : kinds) std::printf(" %s |", std::string(EvictionKindName(k)).c_str());
  std::printf("\n| --- | --- | --- | --- | --- |\n");
  for (double alpha : {0.8, 1.0}) {
    std::vector<uint64_t> trace = ZipfTrace(requests, objects, alpha, 42);
    for (double fraction : {0.001, 0.01, 0.05, 0.1}) {
      size_t capacity = std::max<size_t>(1, static_cast<size_t>(objects * fraction));
      std::printf("| %.1f | %.1f%% (%zu) |", alpha, fraction * 100, capacity);
      for (EvictionKind k : kinds) std::printf(" %.4f |", HitRatio(k, trace, capacity));
      std::printf("\n");
    }
  }
  return 0;
}
