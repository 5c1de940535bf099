#include "experiments/assigner.h"

#include <xxhash.h>

#include <bit>
#include <utility>

namespace capstan::experiments {
namespace {

std::atomic<uint64_t> next_assigner_id{1};

std::shared_ptr<const ConfigSnapshot> EmptySnapshot() {
  static const std::shared_ptr<const ConfigSnapshot> empty = *ConfigSnapshot::Build({});
  return empty;
}

}  // namespace

Assigner::Assigner() : Assigner(EmptySnapshot()) {}

Assigner::Assigner(std::shared_ptr<const ConfigSnapshot> snapshot)
    : id_(next_assigner_id.fetch_add(1, std::memory_order_relaxed)),
      snapshot_(std::move(snapshot)) {}

void Assigner::SetSnapshot(std::shared_ptr<const ConfigSnapshot> snapshot) {
  {
    MutexLock lock(&mu_);
    snapshot_.swap(snapshot);
    generation_.fetch_add(1, std::memory_order_release);
  }
  // `snapshot` now holds the old one, released here, outside the lock.
}

std::shared_ptr<const ConfigSnapshot> Assigner::snapshot() const {
  ReaderMutexLock lock(&mu_);
  return snapshot_;
}

void Assigner::Evaluate(const Json& attributes, EvaluationResult* result) const {
  if (result->assigner_id_ != id_ ||
      result->generation_ != generation_.load(std::memory_order_acquire)) {
    std::shared_ptr<const ConfigSnapshot> previous;  // released after the lock
    ReaderMutexLock lock(&mu_);
    // The pair is read under the lock, so it matches: a swap after this
    // changes the generation and the next call reloads.
    previous = std::exchange(result->owner_, snapshot_);
    result->generation_ = generation_.load(std::memory_order_relaxed);
    result->assigner_id_ = id_;
  }
  result->owner_->Evaluate(attributes, result);
}

ExposureDeduper::ExposureDeduper(size_t capacity) {
  size_t slots = std::bit_ceil(std::max(capacity, kWays));
  slots_ = std::make_unique<std::atomic<uint64_t>[]>(slots);
  for (size_t i = 0; i < slots; ++i) slots_[i].store(0, std::memory_order_relaxed);
  mask_ = slots - 1;
}

bool ExposureDeduper::FirstSeen(std::string_view experiment, std::string_view variant,
                                std::string_view unit) {
  uint64_t fingerprint = XXH3_64bits(experiment.data(), experiment.size());
  fingerprint = XXH3_64bits_withSeed(variant.data(), variant.size(), fingerprint);
  fingerprint = XXH3_64bits_withSeed(unit.data(), unit.size(), fingerprint);
  if (fingerprint == 0) fingerprint = 1;  // 0 marks an empty slot
  std::atomic<uint64_t>* set = &slots_[fingerprint & mask_ & ~(kWays - 1)];
  while (true) {
    size_t empty = kWays;
    for (size_t way = 0; way < kWays; ++way) {
      uint64_t held = set[way].load(std::memory_order_acquire);
      if (held == fingerprint) return false;
      if (held == 0 && empty == kWays) empty = way;
    }
    // The first empty way, else a victim picked by bits the set index does
    // not use. Racing inserts of one fingerprint pick the same slot, so one
    // CAS wins and the loser, rescanning, finds it.
    size_t way = empty != kWays ? empty : (fingerprint >> 58) % kWays;
    uint64_t expected = set[way].load(std::memory_order_acquire);
    if (empty != kWays && expected != 0) continue;  // taken meanwhile: rescan
    if (set[way].compare_exchange_strong(expected, fingerprint, std::memory_order_acq_rel)) {
      return true;
    }
  }
}

ExposureLogger::ExposureLogger(size_t capacity, Sink sink)
    : deduper_(capacity), sink_(std::move(sink)) {}

size_t ExposureLogger::Log(const EvaluationResult& result) {
  size_t count = 0;
  for (const Assignment& a : result.assignments()) {
    if (!a.exposed()) continue;
    if (!deduper_.FirstSeen(a.experiment->id, a.variant_id(), a.unit)) {
      deduplicated_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const ConfigSnapshot& snapshot = *result.snapshot();
    const SnapshotLayer& layer = snapshot.layers()[a.experiment->layer];
    Exposure exposure;
    exposure.experiment = a.experiment->id;
    exposure.variant = a.variant_id();
    exposure.layer = layer.id;
    exposure.unit_type = snapshot.unit_types()[layer.unit_type].id;
    exposure.unit = a.unit;
    exposure.forced = a.forced;
    exposure.experiment_revision = a.experiment->revision;
    sink_(exposure);
    logged_.fetch_add(1, std::memory_order_relaxed);
    ++count;
  }
  return count;
}

}  // namespace capstan::experiments
