#include "experiments/event_store_aggregator.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "experiments/event_store_format.h"
#include "rocksdb/options.h"
#include "xxhash.h"

namespace capstan::experiments {

using event_format::kUnitPrefix;

namespace {

constexpr size_t kKeyChunkMin = 64 << 10;
constexpr size_t kKeyChunkMax = 4 << 20;
constexpr uint64_t kUnitHashSeed = 0x756e69742d737461;
// How many events ahead ApplyGroup prefetches a unit's table slot.
constexpr size_t kPrefetchDistance = 8;
// The unit table's first size (slots; it doubles as units come).
constexpr size_t kInitialSlots = 1024;
// Units EvictUnits picks (and prefetches the table entries of) at a time.
constexpr size_t kEvictBatch = 16;

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

}  // namespace

EventAggregator::EventAggregator(rocksdb::DB* db, const EventStoreOptions& options)
    : db_(db),
      options_(options),
      unit_hash_(options.unit_hash != nullptr ? options.unit_hash : &DefaultUnitHash) {
  slots_ = ZeroedArray<Slot>(kInitialSlots);
}

EventAggregator::~EventAggregator() = default;

absl::Status EventAggregator::ApplyGroup(uint64_t first_sequence,
                                         std::span<const EventRef> events) {
  if (first_sequence != next_sequence_) {
    return absl::InternalError(absl::StrCat("event store: aggregating group at ", first_sequence,
                                            " but the aggregation is at ", next_sequence_));
  }
  // Each unit's hash first, so the loop below can prefetch the table slot of
  // the unit a few events ahead: the table is far larger than the caches.
  hashes_.resize(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    hashes_[i] = unit_hash_(BuildUnitKey(events[i]));
  }
  if (stored_units_ > 0) RETURN_IF_ERROR(ReadBackGroup(events));
  for (size_t i = 0; i < events.size(); ++i) {
    if (i + kPrefetchDistance < events.size()) {
      const uint64_t ahead = hashes_[i + kPrefetchDistance];
      __builtin_prefetch(&slots_[static_cast<size_t>(ahead) & (slots_.size() - 1)]);
    }
    RETURN_IF_ERROR(Apply(events[i], hashes_[i]));
  }
  next_sequence_ += events.size();
  since_checkpoint_ += events.size();
  return absl::OkStatus();
}

void EventAggregator::Clear() {
  sums_.clear();
  experiment_slots_.clear();
  experiments_.clear();
  variant_slots_.clear();
  last_experiment_ = nullptr;
  dirty_experiments_.clear();
  slots_ = ZeroedArray<Slot>(kInitialSlots);
  stored_units_ = 0;
  states_.clear();
  free_states_.clear();
  clock_hand_ = 0;
  key_chunks_.clear();
  key_chunk_used_ = key_chunk_size_ = 0;
  key_bytes_allocated_ = key_bytes_live_ = 0;
  dirty_units_.clear();
  last_unit_ = nullptr;
  metrics_.clear();
  metric_index_.clear();
  variant_names_.clear();
  variant_name_index_.clear();
  metrics_on_disk_ = variant_names_on_disk_ = 0;
  next_unit_id_ = unit_id_on_disk_ = 1;
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
  slot.name_id = VariantNameId(name);
  slot.sums = &experiment->sums->variants[slot.name];
  experiment->variants.push_back(&slot);
  return &slot;
}

uint32_t EventAggregator::VariantNameId(std::string_view name) {
  auto [it, inserted] = variant_name_index_.try_emplace(
      absl::string_view(name.data(), name.size()), static_cast<uint32_t>(variant_names_.size()));
  if (inserted) variant_names_.emplace_back(name);
  return it->second;
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
  key_bytes_allocated_ += key.size();
  return std::string_view(at, key.size());
}

size_t EventAggregator::EmptySlotFor(uint64_t hash) {
  if ((cached_units() + stored_units_ + 1) * 2 > slots_.size()) GrowTable();
  const size_t mask = slots_.size() - 1;
  size_t i = static_cast<size_t>(hash) & mask;
  while (slots_[i].ref != 0) i = (i + 1) & mask;
  return i;
}

EventAggregator::UnitState* EventAggregator::InsertUnit(std::string_view key, uint64_t hash,
                                                        uint64_t id) {
  return CacheAt(EmptySlotFor(hash), key, hash, id);
}

void EventAggregator::InsertStored(uint64_t hash, uint64_t id) {
  slots_[EmptySlotFor(hash)] = Slot{hash, kStoredRef | id};
  ++stored_units_;
}

EventAggregator::UnitState* EventAggregator::CacheAt(size_t slot, std::string_view key,
                                                     uint64_t hash, uint64_t id) {
  uint32_t index = 0;
  UnitState* state = nullptr;
  if (free_states_.empty()) {
    state = &states_.emplace_back();
    index = static_cast<uint32_t>(states_.size() - 1);
  } else {
    // An evicted unit's state, cleared by EvictUnits; its key bytes are
    // reused when the new key fits.
    index = free_states_.back();
    free_states_.pop_back();
    state = &states_[index];
    state->free = false;
  }
  if (state->key_capacity >= key.size()) {
    char* at = const_cast<char*>(state->key.data());
    std::memcpy(at, key.data(), key.size());
    state->key = std::string_view(at, key.size());
  } else {
    state->key = CopyKey(key);
    state->key_capacity = static_cast<uint32_t>(key.size());
  }
  key_bytes_live_ += key.size();
  state->hash = hash;
  state->id = id;
  state->referenced = false;  // an event in a later checkpoint period spares it once
  if ((slots_[slot].ref & kStoredRef) != 0) --stored_units_;  // read back
  slots_[slot] = Slot{hash, uint64_t{index} + 1};
  return state;
}

void EventAggregator::GrowTable() {
  ZeroedArray<Slot> grown(slots_.size() * 2);  // zero: every slot empty
  size_t mask = grown.size() - 1;
  for (const Slot& slot : slots_) {
    if (slot.ref == 0) continue;
    size_t i = static_cast<size_t>(slot.hash) & mask;
    while (grown[i].ref != 0) i = (i + 1) & mask;
    grown[i] = slot;
  }
  slots_ = std::move(grown);
}

void EventAggregator::EvictUnits() {
  // In place: the states stay where they are (no new pages to fault in, no
  // table rebuilt), and each unit's slot becomes a stored slot where it is;
  // a CLOCK hand sweeps the states, sparing once each unit used since its
  // last pass. Victims are taken kEvictBatch at a time and their slots
  // prefetched before any is rewritten: the table is far larger than the
  // caches, so each is a miss.
  const size_t keep = options_.max_cached_units / 2;
  const size_t mask = slots_.size() - 1;
  uint32_t victims[kEvictBatch];
  while (cached_units() > keep) {
    const size_t want = std::min(kEvictBatch, cached_units() - keep);
    size_t n = 0;
    while (n < want) {
      if (clock_hand_ >= states_.size()) clock_hand_ = 0;
      const uint32_t index = static_cast<uint32_t>(clock_hand_++);
      UnitState& state = states_[index];
      if (state.free) continue;
      if (state.referenced) {
        state.referenced = false;
        continue;
      }
      state.free = true;  // taken: a hand that comes round again skips it
      victims[n++] = index;
      __builtin_prefetch(&slots_[static_cast<size_t>(state.hash) & mask], 1);
    }
    for (size_t v = 0; v < n; ++v) {
      UnitState& state = states_[victims[v]];
      size_t i = static_cast<size_t>(state.hash) & mask;
      while (slots_[i].ref != uint64_t{victims[v]} + 1) i = (i + 1) & mask;  // it is there
      slots_[i].ref = kStoredRef | state.id;
      ++stored_units_;
      key_bytes_live_ -= state.key.size();
      state.variant = nullptr;
      state.exposure_ms = 0;
      state.metrics.clear();
      state.held = std::vector<HeldEvent>();
      free_states_.push_back(victims[v]);
    }
  }
  MaybeCompactKeys();
}

void EventAggregator::MaybeCompactKeys() {
  if (key_bytes_allocated_ <= 2 * key_bytes_live_ + kKeyChunkMax) return;
  std::vector<std::unique_ptr<char[]>> old_chunks = std::move(key_chunks_);
  key_chunks_.clear();
  key_chunk_used_ = key_chunk_size_ = 0;
  key_bytes_allocated_ = 0;
  for (UnitState& state : states_) {
    if (state.free) {
      state.key = std::string_view();
      state.key_capacity = 0;
    } else {
      state.key = CopyKey(state.key);  // old_chunks still hold the bytes
      state.key_capacity = static_cast<uint32_t>(state.key.size());
    }
  }
}

std::string_view EventAggregator::BuildUnitKey(const EventRef& event) {
  lookup_key_.resize(2 + event.experiment.size() + event.unit.size());
  char* p = lookup_key_.data();
  *p++ = kUnitPrefix;
  std::memcpy(p, event.experiment.data(), event.experiment.size());
  p += event.experiment.size();
  *p++ = '\0';
  std::memcpy(p, event.unit.data(), event.unit.size());
  return lookup_key_;
}

absl::StatusOr<EventAggregator::UnitState*> EventAggregator::FindUnit(const EventRef& event,
                                                                      uint64_t hash) {
  // A unit's events often come together (an exposure and its first metric
  // events): the last unit is found without a lookup.
  if (last_unit_ != nullptr && last_unit_->hash == hash &&
      last_unit_->key.size() == 2 + event.experiment.size() + event.unit.size() &&
      last_unit_->key.substr(2 + event.experiment.size()) == event.unit &&
      last_unit_->key[1 + event.experiment.size()] == '\0' &&
      last_unit_->key.substr(1, event.experiment.size()) == event.experiment) {
    return last_unit_;  // dirty already: touched since the checkpoint
  }
  BuildUnitKey(event);

  UnitState* unit = nullptr;
  const size_t mask = slots_.size() - 1;
  for (size_t i = static_cast<size_t>(hash) & mask; slots_[i].ref != 0; i = (i + 1) & mask) {
    // A stored slot with this hash is another unit's (ReadBackGroup brought
    // this one back if it was stored).
    if (slots_[i].hash != hash || (slots_[i].ref & kStoredRef) != 0) continue;
    UnitState& candidate = states_[slots_[i].ref - 1];
    if (candidate.key == lookup_key_) {  // equal hashes of different keys: keep probing
      unit = &candidate;
      // In use: touched again after the checkpoint period it was last
      // touched in (a second event in the same period does not count).
      if (!unit->dirty) unit->referenced = true;
      break;
    }
  }
  // Not cached: a new unit (ReadBackGroup brought the evicted ones back).
  if (unit == nullptr) unit = InsertUnit(lookup_key_, hash, next_unit_id_++);
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

absl::Status EventAggregator::Apply(const EventRef& event, uint64_t unit_hash) {
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

}  // namespace capstan::experiments
