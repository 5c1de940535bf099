#include "experiments/event_store_aggregator.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "experiments/event_store_format.h"
#include "rocksdb/db.h"
#include "rocksdb/sst_file_writer.h"
#include "xxhash.h"

namespace capstan::experiments {

using event_format::AppendBigEndian;
using event_format::AppendRaw;
using event_format::AppendShortString;
using event_format::FromRocks;
using event_format::kCheckpointFileName;
using event_format::kCheckpointKey;
using event_format::kSumsPrefix;
using event_format::kUnitPrefix;
using event_format::kUnitStateVersion;
using event_format::ReadBigEndian;
using event_format::Reader;

namespace {

constexpr size_t kKeyChunkMin = 64 << 10;
constexpr size_t kKeyChunkMax = 4 << 20;
constexpr uint64_t kUnitHashSeed = 0x756e69742d737461;
// How many events ahead ApplyGroup prefetches a unit's table slot.
constexpr size_t kPrefetchDistance = 8;

uint64_t DefaultUnitHash(std::string_view key) {
  return XXH3_64bits_withSeed(key.data(), key.size(), kUnitHashSeed);
}

// `covariate`: the unit's pre-period value (x) and, for ratios, its
// pre-period denominator (den).
void AddContribution(MetricSums* sums, EventType kind, const MetricTotals& t,
                     const MetricTotals& covariate) {
  const double c = covariate.x;
  sums->sum += t.x;
  sums->sum_squares += t.x * t.x;
  sums->covariate_sum += c;
  sums->covariate_sum_squares += c * c;
  sums->covariate_products += t.x * c;
  if (kind == EventType::kRatio) {
    const double c_den = covariate.den;
    sums->den_sum += t.den;
    sums->den_sum_squares += t.den * t.den;
    sums->products += t.x * t.den;
    sums->covariate_den_sum += c_den;
    sums->covariate_den_sum_squares += c_den * c_den;
    sums->covariate_num_den_products += c * c_den;
    sums->covariate_den_products += t.x * c_den;
    sums->den_covariate_products += t.den * c;
    sums->den_covariate_den_products += t.den * c_den;
  }
}

// Moves the unit's outcome contribution from `before` to `after`.
// Differences of squares as (a − b)(a + b) and products as a_x·Δden +
// b_den·Δx: no cancellation between two large squares when a total grows by
// little.
void UpdateContribution(MetricSums* sums, EventType kind, const MetricTotals& before,
                        const MetricTotals& after, const MetricTotals& covariate) {
  double dx = after.x - before.x;
  sums->sum += dx;
  sums->sum_squares += dx * (after.x + before.x);
  sums->covariate_products += dx * covariate.x;
  if (kind == EventType::kRatio) {
    double dden = after.den - before.den;
    sums->den_sum += dden;
    sums->den_sum_squares += dden * (after.den + before.den);
    sums->products += after.x * dden + before.den * dx;
    sums->covariate_den_products += dx * covariate.den;
    sums->den_covariate_products += dden * covariate.x;
    sums->den_covariate_den_products += dden * covariate.den;
  }
}

// Moves the unit's covariate from `before` to `after` (`outcome` its
// outcome totals), as UpdateContribution does the outcome.
void UpdateCovariate(MetricSums* sums, EventType kind, const MetricTotals& outcome,
                     const MetricTotals& before, const MetricTotals& after) {
  double dc = after.x - before.x;
  sums->covariate_sum += dc;
  sums->covariate_sum_squares += dc * (after.x + before.x);
  sums->covariate_products += outcome.x * dc;
  if (kind == EventType::kRatio) {
    double dc_den = after.den - before.den;
    sums->covariate_den_sum += dc_den;
    sums->covariate_den_sum_squares += dc_den * (after.den + before.den);
    sums->covariate_num_den_products += after.x * dc_den + before.den * dc;
    sums->covariate_den_products += outcome.x * dc_den;
    sums->den_covariate_products += outcome.den * dc;
    sums->den_covariate_den_products += outcome.den * dc_den;
  }
}

// A ratio metric's pre-period totals live in the unit's state as a metric
// of their own, named after it with this suffix (a NUL: no event's metric
// can hold one), so the unit record's format is unchanged; it never has
// statistics of its own (its totals go into its metric's).
constexpr std::string_view kPrePeriodSuffix("\0pre", 4);

std::string_view ExperimentOfUnitKey(std::string_view key) {
  size_t nul = key.find('\0', 1);
  return key.substr(1, nul == std::string_view::npos ? std::string_view::npos : nul - 1);
}

}  // namespace

struct EventAggregator::ExperimentSlot {
  std::string name;
  ExperimentSums* sums = nullptr;
  std::vector<VariantSlot*> variants;  // few: found by a linear scan
  bool dirty = false;                  // since the checkpoint
};

struct EventAggregator::VariantSlot {
  std::string name;
  VariantSums* sums = nullptr;
  std::vector<MetricSums*> by_metric;  // by interned metric; null until used
};

EventAggregator::EventAggregator(rocksdb::DB* db, const EventStoreOptions& options)
    : db_(db),
      options_(options),
      unit_hash_(options.unit_hash != nullptr ? options.unit_hash : &DefaultUnitHash) {
  slots_.assign(1024, Slot{0, 0});
}

EventAggregator::~EventAggregator() = default;

absl::Status EventAggregator::Load() {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kCheckpointKey, &value);
  if (s.ok()) {
    if (value.size() != 8) return absl::DataLossError("event store: checkpoint is corrupt");
    next_sequence_ = ReadBigEndian(value);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read checkpoint");
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(std::string(1, kSumsPrefix)); it->Valid() && it->key()[0] == kSumsPrefix;
       it->Next()) {
    ASSIGN_OR_RETURN(ExperimentSums sums, DecodeExperimentSums(it->value().ToStringView()));
    sums_[it->key().ToString().substr(1)] = std::move(sums);
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scan statistics"));
  for (it->Seek(std::string(1, kUnitPrefix)); it->Valid() && it->key()[0] == kUnitPrefix;
       it->Next()) {
    std::string_view key = it->key().ToStringView();
    uint64_t hash = unit_hash_(key);
    if (states_.size() >= options_.max_cached_units) {
      stored_only_.insert(hash);  // too many to hold: read it when needed
      continue;
    }
    UnitState* unit = InsertUnit(key, hash);
    RETURN_IF_ERROR(DecodeUnit(it->value().ToStringView(), unit));
  }
  return FromRocks(it->status(), "scan unit states");
}

absl::Status EventAggregator::ApplyGroup(uint64_t first_sequence,
                                         const std::vector<Event>& events) {
  event_list_.clear();
  for (const Event& e : events) event_list_.push_back(&e);
  return ApplyGroup(first_sequence, event_list_);
}

absl::Status EventAggregator::ApplyGroup(uint64_t first_sequence,
                                         const std::vector<const Event*>& events) {
  if (first_sequence != next_sequence_) {
    return absl::InternalError(absl::StrCat("event store: aggregating group at ", first_sequence,
                                            " but the aggregation is at ", next_sequence_));
  }
  // Each unit's hash first, so the loop below can prefetch the table slot of
  // the unit a few events ahead: the table is far larger than the caches.
  hashes_.resize(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    hashes_[i] = unit_hash_(BuildUnitKey(*events[i]));
  }
  for (size_t i = 0; i < events.size(); ++i) {
    if (i + kPrefetchDistance < events.size()) {
      __builtin_prefetch(
          &slots_[static_cast<size_t>(hashes_[i + kPrefetchDistance]) & (slots_.size() - 1)]);
    }
    RETURN_IF_ERROR(Apply(*events[i], hashes_[i]));
  }
  next_sequence_ += events.size();
  since_checkpoint_ += events.size();
  return absl::OkStatus();
}

absl::Status EventAggregator::Checkpoint() {
  // The checkpoint is written as one sorted table file and ingested whole:
  // no memtable (its skiplist inserts and key comparisons were most of a
  // checkpoint's CPU), no flush that writes it a second time, and the
  // checkpoint is durable (file synced, manifest written) when this
  // returns. The keys go in sorted order: "a"... < "c" < "u"....
  std::sort(dirty_units_.begin(), dirty_units_.end(),
            [](const UnitState* a, const UnitState* b) { return a->key < b->key; });
  std::sort(dirty_experiments_.begin(), dirty_experiments_.end(),
            [](const ExperimentSlot* a, const ExperimentSlot* b) { return a->name < b->name; });
  rocksdb::Options table_options = db_->GetOptions();
  // Uncompressed, as the first levels are (SstFileWriter would otherwise
  // take the last level's compression).
  table_options.compression = rocksdb::kNoCompression;
  table_options.compression_per_level.clear();
  table_options.bottommost_compression = rocksdb::kDisableCompressionOption;
  rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), table_options);
  const std::string path = absl::StrCat(options_.directory, "/", kCheckpointFileName);
  RETURN_IF_ERROR(FromRocks(writer.Open(path), "create checkpoint file"));
  auto fail = [&](const rocksdb::Status& s, const char* what) {
    std::remove(path.c_str());
    return FromRocks(s, what);
  };
  std::string encoded;
  for (ExperimentSlot* experiment : dirty_experiments_) {
    rocksdb::Status s = writer.Put(absl::StrCat(std::string(1, kSumsPrefix), experiment->name),
                                   EncodeExperimentSums(*experiment->sums));
    if (!s.ok()) return fail(s, "write checkpoint");
  }
  std::string position;
  AppendBigEndian(&position, next_sequence_);
  rocksdb::Status s =
      writer.Put(rocksdb::Slice(kCheckpointKey.data(), kCheckpointKey.size()), position);
  if (!s.ok()) return fail(s, "write checkpoint");
  for (UnitState* unit : dirty_units_) {
    EncodeUnit(*unit, &encoded);
    s = writer.Put(rocksdb::Slice(unit->key.data(), unit->key.size()), encoded);
    if (!s.ok()) return fail(s, "write checkpoint");
  }
  s = writer.Finish();
  if (!s.ok()) return fail(s, "write checkpoint");
  rocksdb::IngestExternalFileOptions ingest;
  ingest.move_files = true;  // linked into the database, not copied
  ingest.write_global_seqno = false;
  s = db_->IngestExternalFile({path}, ingest);
  if (!s.ok()) return fail(s, "ingest checkpoint");
  for (UnitState* unit : dirty_units_) unit->dirty = false;
  for (ExperimentSlot* experiment : dirty_experiments_) experiment->dirty = false;
  dirty_units_.clear();
  dirty_experiments_.clear();
  last_unit_ = nullptr;  // the cache may be trimmed below
  since_checkpoint_ = 0;
  if (states_.size() > options_.max_cached_units) TrimCache();
  return absl::OkStatus();
}

void EventAggregator::Clear() {
  sums_.clear();
  experiment_slots_.clear();
  experiments_.clear();
  variant_slots_.clear();
  last_experiment_ = nullptr;
  dirty_experiments_.clear();
  slots_.assign(1024, Slot{0, 0});
  states_.clear();
  key_chunks_.clear();
  key_chunk_used_ = key_chunk_size_ = 0;
  dirty_units_.clear();
  last_unit_ = nullptr;
  stored_only_.clear();
  next_sequence_ = 0;
  since_checkpoint_ = 0;
}

// ---- names ----

EventAggregator::ExperimentSlot* EventAggregator::Experiment(std::string_view name) {
  // Events come in runs of one experiment: the last one is found without a lookup.
  if (last_experiment_ == nullptr || last_experiment_->name != name) {
    auto it = experiments_.find(absl::string_view(name.data(), name.size()));
    if (it == experiments_.end()) {
      ExperimentSlot& slot = experiment_slots_.emplace_back();
      slot.name = std::string(name);
      auto [sums, inserted] = sums_.try_emplace(slot.name);
      slot.sums = &sums->second;
      for (auto& [variant, unused] : slot.sums->variants) Variant(&slot, variant);
      it = experiments_.emplace(slot.name, &slot).first;
    }
    last_experiment_ = it->second;
  }
  if (!last_experiment_->dirty) {
    last_experiment_->dirty = true;
    dirty_experiments_.push_back(last_experiment_);
  }
  return last_experiment_;
}

EventAggregator::VariantSlot* EventAggregator::Variant(ExperimentSlot* experiment,
                                                       std::string_view name) {
  for (VariantSlot* v : experiment->variants) {
    if (v->name == name) return v;
  }
  VariantSlot& slot = variant_slots_.emplace_back();
  slot.name = std::string(name);
  slot.sums = &experiment->sums->variants[slot.name];
  experiment->variants.push_back(&slot);
  return &slot;
}

uint32_t EventAggregator::MetricIndex(EventType kind, std::string_view name) {
  if (!metrics_.empty() && kind == last_metric_kind_ && name == last_metric_name_) {
    return last_metric_;
  }
  metric_lookup_.assign(1, static_cast<char>(kind));
  metric_lookup_.append(name);
  auto [it, inserted] =
      metric_index_.try_emplace(metric_lookup_, static_cast<uint32_t>(metrics_.size()));
  const uint32_t index = it->second;
  if (inserted) {
    metrics_.push_back(MetricId{kind, std::string(name)});
    pre_period_metric_.push_back(0);
    if (kind == EventType::kRatio && name.ends_with(kPrePeriodSuffix)) {
      pre_period_metric_[index] = kIsPrePeriod;
      // Decoding a unit state may meet the pre-period entry first.
      const uint32_t outcome =
          MetricIndex(kind, std::string(name.substr(0, name.size() - kPrePeriodSuffix.size())));
      pre_period_metric_[outcome] = index + 1;
    }
  }
  last_metric_kind_ = kind;
  last_metric_name_.assign(name);
  last_metric_ = index;
  return last_metric_;
}

uint32_t EventAggregator::PrePeriodMetric(uint32_t ratio_metric) {
  if (pre_period_metric_[ratio_metric] == 0) {
    std::string name = metrics_[ratio_metric].name;
    name.append(kPrePeriodSuffix);
    MetricIndex(EventType::kRatio, name);  // sets pre_period_metric_
  }
  return pre_period_metric_[ratio_metric] - 1;
}

bool EventAggregator::IsPrePeriodMetric(uint32_t metric) const {
  return pre_period_metric_[metric] == kIsPrePeriod;
}

MetricSums* EventAggregator::SumsOf(VariantSlot* variant, uint32_t metric) {
  if (IsPrePeriodMetric(metric)) return nullptr;  // counted in its ratio's
  if (variant->by_metric.size() <= metric) variant->by_metric.resize(metric + 1, nullptr);
  MetricSums*& sums = variant->by_metric[metric];
  if (sums == nullptr) sums = &variant->sums->metrics[metrics_[metric]];
  return sums;
}

// ---- the unit table ----

std::string_view EventAggregator::CopyKey(std::string_view key) {
  if (key_chunks_.empty() || key_chunk_size_ - key_chunk_used_ < key.size()) {
    // Chunks grow with the cache: few allocations for millions of units.
    key_chunk_size_ = std::clamp(key_chunk_size_ * 2, kKeyChunkMin, kKeyChunkMax);
    key_chunk_size_ = std::max(key_chunk_size_, key.size());
    key_chunks_.emplace_back(new char[key_chunk_size_]);
    key_chunk_used_ = 0;
  }
  char* at = key_chunks_.back().get() + key_chunk_used_;
  std::memcpy(at, key.data(), key.size());
  key_chunk_used_ += key.size();
  return std::string_view(at, key.size());
}

EventAggregator::UnitState* EventAggregator::InsertUnit(std::string_view key, uint64_t hash) {
  if ((states_.size() + 1) * 2 > slots_.size()) GrowTable();
  size_t mask = slots_.size() - 1;
  size_t i = static_cast<size_t>(hash) & mask;
  while (slots_[i].index != 0) i = (i + 1) & mask;
  UnitState& state = states_.emplace_back();
  state.key = CopyKey(key);
  state.hash = hash;
  slots_[i] = Slot{hash, static_cast<uint32_t>(states_.size())};
  return &state;
}

void EventAggregator::GrowTable() {
  std::vector<Slot> grown(slots_.size() * 2, Slot{0, 0});
  size_t mask = grown.size() - 1;
  for (const Slot& slot : slots_) {
    if (slot.index == 0) continue;
    size_t i = static_cast<size_t>(slot.hash) & mask;
    while (grown[i].index != 0) i = (i + 1) & mask;
    grown[i] = slot;
  }
  slots_ = std::move(grown);
}

void EventAggregator::TrimCache() {
  // Every state is clean (just checkpointed). Keep the most recently
  // inserted half; remember the others by hash. Rebuilt from scratch, so
  // the key arena is compacted too.
  const size_t keep = options_.max_cached_units / 2;
  const size_t drop = states_.size() - std::min(keep, states_.size());
  std::deque<UnitState> kept;
  std::vector<std::unique_ptr<char[]>> old_chunks = std::move(key_chunks_);
  key_chunks_.clear();
  key_chunk_used_ = key_chunk_size_ = 0;
  size_t capacity = 1024;
  while (capacity < 2 * (keep + 1)) capacity *= 2;
  slots_.assign(capacity, Slot{0, 0});
  for (size_t n = 0; n < states_.size(); ++n) {
    UnitState& state = states_[n];
    if (n < drop) {
      stored_only_.insert(state.hash);
      continue;
    }
    state.key = CopyKey(state.key);  // old_chunks still hold the bytes
    UnitState& moved = kept.emplace_back(std::move(state));
    size_t mask = slots_.size() - 1;
    size_t i = static_cast<size_t>(moved.hash) & mask;
    while (slots_[i].index != 0) i = (i + 1) & mask;
    slots_[i] = Slot{moved.hash, static_cast<uint32_t>(kept.size())};
  }
  states_ = std::move(kept);
}

std::string_view EventAggregator::BuildUnitKey(const Event& event) {
  lookup_key_.resize(2 + event.experiment.size() + event.unit.size());
  char* p = lookup_key_.data();
  *p++ = kUnitPrefix;
  std::memcpy(p, event.experiment.data(), event.experiment.size());
  p += event.experiment.size();
  *p++ = '\0';
  std::memcpy(p, event.unit.data(), event.unit.size());
  return lookup_key_;
}

absl::StatusOr<EventAggregator::UnitState*> EventAggregator::FindUnit(const Event& event,
                                                                      uint64_t hash) {
  // A unit's events often come together (an exposure and its first metric
  // events): the last unit is found without a lookup.
  if (last_unit_ != nullptr && last_unit_->hash == hash &&
      last_unit_->key.size() == 2 + event.experiment.size() + event.unit.size() &&
      last_unit_->key.substr(2 + event.experiment.size()) == event.unit &&
      last_unit_->key[1 + event.experiment.size()] == '\0' &&
      last_unit_->key.substr(1, event.experiment.size()) == event.experiment) {
    return last_unit_;
  }
  BuildUnitKey(event);

  UnitState* unit = nullptr;
  const size_t mask = slots_.size() - 1;
  for (size_t i = static_cast<size_t>(hash) & mask; slots_[i].index != 0; i = (i + 1) & mask) {
    if (slots_[i].hash != hash) continue;
    UnitState& candidate = states_[slots_[i].index - 1];
    if (candidate.key == lookup_key_) {  // equal hashes of different keys: keep probing
      unit = &candidate;
      break;
    }
  }
  if (unit == nullptr) {
    unit = InsertUnit(lookup_key_, hash);
    if (!stored_only_.empty() && stored_only_.contains(hash)) {
      std::string value;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), lookup_key_, &value);
      if (s.ok()) {
        RETURN_IF_ERROR(DecodeUnit(value, unit));
      } else if (!s.IsNotFound()) {
        return FromRocks(s, "read unit state");
      }
      // The unit stays in the cache (empty if NotFound: a hash collision
      // with an evicted unit); stored_only_ keeps the hash, which may be
      // another's.
    }
  }
  if (!unit->dirty) {  // every caller changes it
    unit->dirty = true;
    dirty_units_.push_back(unit);
  }
  last_unit_ = unit;
  return unit;
}

// ---- aggregation ----

EventAggregator::UnitMetric* EventAggregator::FindMetric(UnitState* unit, uint32_t metric) {
  for (UnitMetric& candidate : unit->metrics) {
    if (candidate.metric == metric) return &candidate;
  }
  return nullptr;
}

EventAggregator::UnitMetric* EventAggregator::FindOrAddMetric(UnitState* unit, uint32_t metric) {
  UnitMetric* m = FindMetric(unit, metric);
  if (m == nullptr) {
    m = &unit->metrics.emplace_back();
    m->metric = metric;
  }
  return m;
}

MetricTotals EventAggregator::CovariateOf(UnitState* unit, const UnitMetric& m) {
  if (metrics_[m.metric].kind != EventType::kRatio) return {m.covariate, 0};
  const uint32_t pre_index = pre_period_metric_[m.metric];
  const UnitMetric* pre =
      pre_index == 0 || pre_index == kIsPrePeriod ? nullptr : FindMetric(unit, pre_index - 1);
  return pre == nullptr ? MetricTotals{} : MetricTotals{pre->x, pre->den};
}

void EventAggregator::ApplyMetric(UnitState* unit, uint32_t metric, int64_t ts, double value,
                                  double denominator) {
  const EventType kind = metrics_[metric].kind;
  const bool outcome = ts >= unit->exposure_ms;
  if (!outcome && ts < unit->exposure_ms - options_.cuped_lookback_ms) {
    return;  // before the pre-period: counted nowhere
  }
  if (kind == EventType::kRatio && !outcome) {
    // The pre-period entry first: adding it may move the vector's elements.
    UnitMetric* pre = FindOrAddMetric(unit, PrePeriodMetric(metric));
    const MetricTotals before{pre->x, pre->den};
    pre->x += value;
    pre->den += denominator;
    const MetricTotals after{pre->x, pre->den};
    UnitMetric* m = FindOrAddMetric(unit, metric);  // counts the unit as 0 if it has no outcome
    if (unit->variant != nullptr && m->sums == nullptr) m->sums = SumsOf(unit->variant, metric);
    if (m->sums != nullptr) UpdateCovariate(m->sums, kind, {m->x, m->den}, before, after);
    return;
  }
  UnitMetric* m = FindOrAddMetric(unit, metric);
  if (unit->variant != nullptr && m->sums == nullptr) m->sums = SumsOf(unit->variant, metric);
  if (outcome) {
    MetricTotals before{m->x, m->den};
    if (kind == EventType::kConversion) {
      m->x = 1;
    } else {
      m->x += value;
      m->den += denominator;
    }
    if (m->sums != nullptr) {
      UpdateContribution(m->sums, kind, before, {m->x, m->den}, CovariateOf(unit, *m));
    }
  } else {
    double before = m->covariate;
    m->covariate = kind == EventType::kConversion ? 1 : m->covariate + value;
    if (m->sums != nullptr) {
      UpdateCovariate(m->sums, kind, {m->x, 0}, {before, 0}, {m->covariate, 0});
    }
  }
}

absl::Status EventAggregator::Apply(const Event& event, uint64_t unit_hash) {
  ASSIGN_OR_RETURN(UnitState * unit, FindUnit(event, unit_hash));
  ExperimentSlot* experiment = Experiment(event.experiment);
  if (event.type == EventType::kExposure) {
    if (unit->variant != nullptr) {
      if (unit->variant->name != event.variant) ++conflicting_exposures_;
      return absl::OkStatus();
    }
    VariantSlot* variant = Variant(experiment, event.variant);
    unit->exposure_ms = event.timestamp_ms;
    for (const HeldEvent& h : unit->held) {
      ApplyMetric(unit, h.metric, h.timestamp_ms, h.value, h.denominator);
    }
    unit->held.clear();
    unit->held.shrink_to_fit();
    unit->variant = variant;
    ++variant->sums->units;
    for (UnitMetric& m : unit->metrics) {
      m.sums = SumsOf(variant, m.metric);
      if (m.sums == nullptr) continue;  // a ratio's pre-period: in its ratio's contribution
      AddContribution(m.sums, metrics_[m.metric].kind, {m.x, m.den}, CovariateOf(unit, m));
    }
    return absl::OkStatus();
  }
  const uint32_t metric = MetricIndex(event.type, event.metric);
  if (unit->variant == nullptr) {
    if (unit->held.size() >= kMaxHeldEventsPerUnit) {
      ++held_events_dropped_;
      return absl::OkStatus();
    }
    unit->held.push_back(HeldEvent{metric, event.timestamp_ms, event.value, event.denominator});
    return absl::OkStatus();
  }
  ApplyMetric(unit, metric, event.timestamp_ms, event.value, event.denominator);
  return absl::OkStatus();
}

// ---- unit state records ("u"), version 2 ----
//   u8 version, short string variant ("" before the exposure), i64 exposure_ms,
//   u32 n, n × (u8 kind, short string metric, f64 x, f64 den, f64 covariate),
//   u32 m, m × (u8 kind, short string metric, i64 ts, f64 value, f64 denominator)

void EventAggregator::EncodeUnit(const UnitState& unit, std::string* encoded) const {
  std::string& out = *encoded;
  out.clear();
  out.push_back(static_cast<char>(kUnitStateVersion));
  AppendShortString(&out, unit.variant == nullptr ? std::string_view() : unit.variant->name);
  AppendRaw(&out, unit.exposure_ms);
  AppendRaw(&out, static_cast<uint32_t>(unit.metrics.size()));
  for (const UnitMetric& m : unit.metrics) {
    const MetricId& id = metrics_[m.metric];
    out.push_back(static_cast<char>(id.kind));
    AppendShortString(&out, id.name);
    AppendRaw(&out, m.x);
    AppendRaw(&out, m.den);
    AppendRaw(&out, m.covariate);
  }
  AppendRaw(&out, static_cast<uint32_t>(unit.held.size()));
  for (const HeldEvent& h : unit.held) {
    const MetricId& id = metrics_[h.metric];
    out.push_back(static_cast<char>(id.kind));
    AppendShortString(&out, id.name);
    AppendRaw(&out, h.timestamp_ms);
    AppendRaw(&out, h.value);
    AppendRaw(&out, h.denominator);
  }
}

absl::Status EventAggregator::DecodeUnit(std::string_view data, UnitState* unit) {
  Reader r(data);
  uint8_t version = 0;
  uint32_t count = 0;
  std::string_view variant;
  std::string_view name;
  bool ok = r.Raw(&version) && version == kUnitStateVersion && r.ShortString(&variant) &&
            r.Raw(&unit->exposure_ms) && r.Raw(&count);
  for (uint32_t i = 0; ok && i < count; ++i) {
    uint8_t kind = 0;
    UnitMetric m;
    ok = r.Raw(&kind) && kind >= 1 && kind <= 3 && r.ShortString(&name) && r.Raw(&m.x) &&
         r.Raw(&m.den) && r.Raw(&m.covariate);
    if (ok) {
      m.metric = MetricIndex(static_cast<EventType>(kind), name);
      unit->metrics.push_back(m);
    }
  }
  ok = ok && r.Raw(&count);
  for (uint32_t i = 0; ok && i < count; ++i) {
    uint8_t kind = 0;
    HeldEvent h;
    ok = r.Raw(&kind) && kind >= 1 && kind <= 3 && r.ShortString(&name) && r.Raw(&h.timestamp_ms) &&
         r.Raw(&h.value) && r.Raw(&h.denominator);
    if (ok) {
      h.metric = MetricIndex(static_cast<EventType>(kind), name);
      unit->held.push_back(h);
    }
  }
  if (ok && r.done()) {
    if (!variant.empty()) {
      // The checkpoint that wrote this state counted the unit in its
      // variant's statistics: find them again.
      unit->variant = Variant(Experiment(ExperimentOfUnitKey(unit->key)), variant);
      for (UnitMetric& m : unit->metrics) m.sums = SumsOf(unit->variant, m.metric);
    }
    return absl::OkStatus();
  }
  std::string name_text(unit->key.substr(1));
  std::replace(name_text.begin(), name_text.end(), '\0', '/');
  return absl::DataLossError(
      absl::StrCat("event store: unit state of \"", name_text, "\" is corrupt"));
}

}  // namespace capstan::experiments
