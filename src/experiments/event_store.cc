#include "experiments/event_store.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/status.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace capstan::experiments {
namespace {

using JsonValue = nlohmann::ordered_json;

constexpr char kLogPrefix = 'g';
constexpr char kUnitPrefix = 'u';
constexpr char kSumsPrefix = 'a';
constexpr char kOldLogPrefix = 'l';  // one record per event, before the checkpointed design
const std::string kCheckpointKey = "c";
const std::string kRebuildingKey = "mrebuilding";

constexpr uint8_t kLogRecordVersion = 1;
constexpr size_t kLogRecordHeader = 5;  // version, u32 event count
constexpr uint8_t kUnitStateVersion = 2;

// Sums waits for the aggregator at most this long (it is at most
// max_unaggregated_events behind, well under a second of work).
constexpr auto kAggregationWaitLimit = std::chrono::seconds(30);

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("event store: ", std::string(what), ": ", s.ToString()));
}

void AppendBigEndian(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (56 - 8 * i)) & 0xff));
}

uint64_t ReadBigEndian(std::string_view bytes) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}

std::string LogKey(uint64_t seq) {
  std::string key(1, kLogPrefix);
  AppendBigEndian(&key, seq);
  return key;
}

bool IsLogKey(std::string_view key) { return key.size() == 9 && key[0] == kLogPrefix; }

template <typename T>
void AppendRaw(std::string* out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out->append(bytes, sizeof(T));
}

void AppendShortString(std::string* out, std::string_view s) {
  out->push_back(static_cast<char>(s.size()));  // identifiers are at most 128 bytes
  out->append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  bool Raw(T* out) {
    if (data_.size() < sizeof(T)) return false;
    std::memcpy(out, data_.data(), sizeof(T));
    data_.remove_prefix(sizeof(T));
    return true;
  }
  bool ShortString(std::string* out) {
    uint8_t len = 0;
    if (!Raw(&len) || data_.size() < len) return false;
    out->assign(data_.substr(0, len));
    data_.remove_prefix(len);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  std::string_view data_;
};

uint32_t LogRecordCount(std::string_view record) {
  uint32_t count = 0;
  if (record.size() >= kLogRecordHeader) std::memcpy(&count, record.data() + 1, 4);
  return count;
}

// One unit's contribution to a metric: x (or num), den, and c (the covariate).
struct UnitTotals {
  double x = 0;
  double den = 0;
};

void AddContribution(MetricSums* sums, EventType kind, const UnitTotals& t, double covariate) {
  sums->sum += t.x;
  sums->sum_squares += t.x * t.x;
  if (kind == EventType::kRatio) {
    sums->den_sum += t.den;
    sums->den_sum_squares += t.den * t.den;
    sums->products += t.x * t.den;
  } else {
    sums->covariate_sum += covariate;
    sums->covariate_sum_squares += covariate * covariate;
    sums->covariate_products += t.x * covariate;
  }
}

// Moves the unit's outcome contribution from `before` to `after`.
// Differences of squares as (a − b)(a + b) and products as a_x·Δden +
// b_den·Δx: no cancellation between two large squares when a total grows by
// little.
void UpdateContribution(MetricSums* sums, EventType kind, const UnitTotals& before,
                        const UnitTotals& after, double covariate) {
  double dx = after.x - before.x;
  sums->sum += dx;
  sums->sum_squares += dx * (after.x + before.x);
  if (kind == EventType::kRatio) {
    double dden = after.den - before.den;
    sums->den_sum += dden;
    sums->den_sum_squares += dden * (after.den + before.den);
    sums->products += after.x * dden + before.den * dx;
  } else {
    sums->covariate_products += dx * covariate;
  }
}

// Moves the unit's covariate from `before` to `after` (x its outcome).
void UpdateCovariate(MetricSums* sums, double x, double before, double after) {
  double dc = after - before;
  sums->covariate_sum += dc;
  sums->covariate_sum_squares += dc * (after + before);
  sums->covariate_products += x * dc;
}

// A string as two independent 64-bit hashes (abseil's and libstdc++'s
// murmur): two strings are taken for one only if both collide, about
// n²/2^129 for n strings. In memory only (abseil's hash is seeded per process).
struct Fingerprint {
  uint64_t a;
  uint64_t b;
  bool operator==(const Fingerprint&) const = default;
};
struct FingerprintHash {
  size_t operator()(const Fingerprint& f) const { return f.a; }
};
Fingerprint FingerprintOf(std::string_view s) {
  return {absl::Hash<std::string_view>{}(s), std::hash<std::string_view>{}(s)};
}

}  // namespace

void AppendLogRecordEvent(const Event& event, std::string* record) {
  record->push_back(static_cast<char>(event.type));
  AppendShortString(record, event.key);
  AppendShortString(record, event.experiment);
  AppendShortString(record, event.unit);
  AppendShortString(record, event.variant);
  AppendShortString(record, event.metric);
  AppendRaw(record, event.value);
  AppendRaw(record, event.denominator);
  AppendRaw(record, event.timestamp_ms);
}

absl::StatusOr<std::vector<Event>> DecodeLogRecord(std::string_view record) {
  auto corrupt = [] { return absl::DataLossError("event store: log record is corrupt"); };
  if (record.size() < kLogRecordHeader || static_cast<uint8_t>(record[0]) != kLogRecordVersion) {
    return corrupt();
  }
  uint32_t count = LogRecordCount(record);
  Reader r(record.substr(kLogRecordHeader));
  std::vector<Event> events;
  events.reserve(std::min<size_t>(count, kMaxEventsPerBatch));
  for (uint32_t i = 0; i < count; ++i) {
    Event& e = events.emplace_back();
    uint8_t type = 0;
    if (!r.Raw(&type) || type > 3 || !r.ShortString(&e.key) || !r.ShortString(&e.experiment) ||
        !r.ShortString(&e.unit) || !r.ShortString(&e.variant) || !r.ShortString(&e.metric) ||
        !r.Raw(&e.value) || !r.Raw(&e.denominator) || !r.Raw(&e.timestamp_ms)) {
      return corrupt();
    }
    e.type = static_cast<EventType>(type);
  }
  if (!r.done()) return corrupt();
  return events;
}

struct EventStore::Pending {
  std::vector<Event> events;
  std::promise<absl::StatusOr<AppendResult>> done;
};

// A group as logged: its events have sequences first_sequence.. in order.
struct EventStore::LoggedGroup {
  uint64_t first_sequence = 0;
  std::vector<Event> events;
};

// The keys of the last `window` accepted events, as 128-bit fingerprints.
// Writer thread only.
class EventStore::DedupIndex {
 public:
  explicit DedupIndex(size_t window) : window_(window) {}

  // Whether the key is new; a new key is remembered (until RollBack or Trim).
  bool Insert(std::string_view key) {
    Fingerprint f = FingerprintOf(key);
    if (!keys_.insert(f).second) return false;
    order_.push_back(f);
    return true;
  }
  // Forgets the last `n` inserted keys (their group was not written).
  void RollBack(size_t n) {
    for (; n > 0; --n) {
      keys_.erase(order_.back());
      order_.pop_back();
    }
  }
  // Forgets the oldest keys past the window.
  void Trim() {
    while (order_.size() > window_) {
      keys_.erase(order_.front());
      order_.pop_front();
    }
  }
  size_t size() const { return order_.size(); }

 private:
  size_t window_;
  absl::flat_hash_set<Fingerprint, FingerprintHash> keys_;
  std::deque<Fingerprint> order_;  // oldest first
};

// The aggregation: per-unit state (cached; the database holds it as of the
// last checkpoint) and the experiments' statistics. Used by Open (replay),
// then by the aggregator thread only; sums_ is read by Sums under
// sums_mutex_ shared, and written under it exclusively.
class EventStore::Aggregator {
 public:
  Aggregator(rocksdb::DB* db, const EventStoreOptions& options) : db_(db), options_(options) {}

  // Loads the checkpoint: position, statistics, and the unit states when
  // they fit in the cache.
  absl::Status Load() {
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
      if (units_.size() >= options_.max_cached_units) {
        // Too many to hold: read it when needed.
        stored_only_.insert(FingerprintOf(it->key().ToStringView()));
        continue;
      }
      UnitState state;
      RETURN_IF_ERROR(state.Decode(it->value().ToStringView(), it->key().ToStringView()));
      units_.emplace(it->key().ToStringView(), std::move(state));
    }
    return FromRocks(it->status(), "scan unit states");
  }

  // Applies the events of the log group that starts at `first_sequence`.
  // REQUIRES: first_sequence == next_sequence() (groups in log order).
  absl::Status ApplyGroup(uint64_t first_sequence, const std::vector<Event>& events) {
    if (first_sequence != next_sequence_) {
      return absl::InternalError(absl::StrCat("event store: aggregating group at ", first_sequence,
                                              " but the aggregation is at ", next_sequence_));
    }
    for (const Event& event : events) RETURN_IF_ERROR(Apply(event));
    next_sequence_ += events.size();
    since_checkpoint_ += events.size();
    return absl::OkStatus();
  }

  bool CheckpointDue() const { return since_checkpoint_ >= options_.checkpoint_events; }
  bool Dirty() const { return since_checkpoint_ > 0; }

  // Writes the dirty unit states and statistics with the position they
  // reflect, in one batch; then trims the unit cache.
  absl::Status Checkpoint() {
    // In key order the memtable's skiplist reuses its insertion point
    // (splice) from one key to the next instead of searching from the top:
    // random-order inserts were most of a checkpoint's CPU.
    std::vector<std::pair<std::string_view, UnitState*>> dirty;
    dirty.reserve(dirty_units_.size());
    for (auto* entry : dirty_units_) dirty.emplace_back(entry->first, &entry->second);
    dirty_units_.clear();
    last_unit_ = nullptr;  // the cache may be trimmed below
    std::sort(dirty.begin(), dirty.end());
    rocksdb::WriteBatch batch;
    std::string encoded;
    for (auto& [key, unit] : dirty) {
      unit->EncodeTo(&encoded);
      batch.Put(rocksdb::Slice(key.data(), key.size()), encoded);
      unit->dirty = false;
    }
    for (const std::string& experiment : dirty_experiments_) {
      batch.Put(absl::StrCat(std::string(1, kSumsPrefix), experiment),
                EncodeExperimentSums(sums_.at(experiment)));
    }
    std::string position;
    AppendBigEndian(&position, next_sequence_);
    batch.Put(kCheckpointKey, position);
    // Without the WAL: a checkpoint lands whole in one memtable and becomes
    // durable whole when that memtable is flushed; a crash before loses it
    // whole, and the open replays from the previous one (the log records
    // are in the WAL). That costs a longer replay (at most a memtable's
    // worth of events) and saves writing every unit state twice.
    rocksdb::WriteOptions write_options;
    write_options.disableWAL = true;
    RETURN_IF_ERROR(FromRocks(db_->Write(write_options, &batch), "write checkpoint"));
    dirty_experiments_.clear();
    last_experiment_ = nullptr;
    since_checkpoint_ = 0;
    if (units_.size() > options_.max_cached_units) {
      // Every state is clean now; keep half the cache (arbitrary ones).
      for (auto it = units_.begin();
           it != units_.end() && units_.size() > options_.max_cached_units / 2;) {
        stored_only_.insert(FingerprintOf(it->first));
        units_.erase(it++);
      }
    }
    return absl::OkStatus();
  }

  void Clear() {
    sums_.clear();
    units_.clear();
    dirty_units_.clear();
    last_unit_ = nullptr;
    dirty_experiments_.clear();
    stored_only_.clear();
    next_sequence_ = 0;
    since_checkpoint_ = 0;
    last_experiment_ = nullptr;
  }

  uint64_t next_sequence() const { return next_sequence_; }
  size_t cached_units() const { return units_.size(); }
  uint64_t TakeConflictingExposures() { return std::exchange(conflicting_exposures_, 0); }
  uint64_t TakeHeldEventsDropped() { return std::exchange(held_events_dropped_, 0); }
  const std::map<std::string, ExperimentSums, std::less<>>& sums() const { return sums_; }

 private:
  struct UnitMetric {
    MetricId id;
    UnitTotals totals;
    double covariate = 0;
    MetricSums* sums = nullptr;  // in the unit's variant (std::map nodes are stable)
  };
  struct HeldEvent {
    EventType type;
    std::string metric;
    int64_t timestamp_ms;
    double value;
    double denominator;
  };
  struct UnitState {
    std::string variant;  // empty until the exposure
    int64_t exposure_ms = 0;
    std::vector<UnitMetric> metrics;
    std::vector<HeldEvent> held;  // metric events before the exposure arrived
    VariantSums* variant_sums = nullptr;
    bool dirty = false;

    UnitMetric& Metric(EventType kind, std::string_view name) {
      for (UnitMetric& m : metrics) {
        if (m.id.kind == kind && m.id.name == name) return m;
      }
      return metrics.emplace_back(UnitMetric{MetricId{kind, std::string(name)}, {}, 0, nullptr});
    }

    void EncodeTo(std::string* encoded) const {
      std::string& out = *encoded;
      out.clear();
      out.push_back(static_cast<char>(kUnitStateVersion));
      AppendShortString(&out, variant);
      AppendRaw(&out, exposure_ms);
      AppendRaw(&out, static_cast<uint32_t>(metrics.size()));
      for (const UnitMetric& m : metrics) {
        out.push_back(static_cast<char>(m.id.kind));
        AppendShortString(&out, m.id.name);
        AppendRaw(&out, m.totals.x);
        AppendRaw(&out, m.totals.den);
        AppendRaw(&out, m.covariate);
      }
      AppendRaw(&out, static_cast<uint32_t>(held.size()));
      for (const HeldEvent& h : held) {
        out.push_back(static_cast<char>(h.type));
        AppendShortString(&out, h.metric);
        AppendRaw(&out, h.timestamp_ms);
        AppendRaw(&out, h.value);
        AppendRaw(&out, h.denominator);
      }
    }

    absl::Status Decode(std::string_view data, std::string_view key) {
      Reader r(data);
      uint8_t version = 0;
      uint32_t count = 0;
      bool ok = r.Raw(&version) && version == kUnitStateVersion && r.ShortString(&variant) &&
                r.Raw(&exposure_ms) && r.Raw(&count);
      for (uint32_t i = 0; ok && i < count; ++i) {
        uint8_t kind = 0;
        UnitMetric& m = metrics.emplace_back();
        ok = r.Raw(&kind) && kind >= 1 && kind <= 3 && r.ShortString(&m.id.name) &&
             r.Raw(&m.totals.x) && r.Raw(&m.totals.den) && r.Raw(&m.covariate);
        m.id.kind = static_cast<EventType>(kind);
      }
      ok = ok && r.Raw(&count);
      for (uint32_t i = 0; ok && i < count; ++i) {
        uint8_t kind = 0;
        HeldEvent& h = held.emplace_back();
        ok = r.Raw(&kind) && kind >= 1 && kind <= 3 && r.ShortString(&h.metric) &&
             r.Raw(&h.timestamp_ms) && r.Raw(&h.value) && r.Raw(&h.denominator);
        h.type = static_cast<EventType>(kind);
      }
      if (ok && r.done()) return absl::OkStatus();
      std::string name(key.substr(1));
      std::replace(name.begin(), name.end(), '\0', '/');
      return absl::DataLossError(
          absl::StrCat("event store: unit state of \"", name, "\" is corrupt"));
    }
  };

  absl::StatusOr<UnitState*> LoadUnit(const Event& event) {
    // A unit's events often come together (an exposure and its first
    // metric events): the last unit is found without a lookup.
    if (last_unit_ != nullptr && last_unit_->second.dirty &&
        lookup_key_.size() == 2 + event.experiment.size() + event.unit.size() &&
        lookup_key_[1 + event.experiment.size()] == '\0' &&
        std::string_view(lookup_key_).substr(2 + event.experiment.size()) == event.unit &&
        std::string_view(lookup_key_).substr(1, event.experiment.size()) == event.experiment) {
      return &last_unit_->second;
    }
    last_unit_ = nullptr;
    lookup_key_.clear();
    lookup_key_.push_back(kUnitPrefix);
    lookup_key_.append(event.experiment);
    lookup_key_.push_back('\0');
    lookup_key_.append(event.unit);
    auto [it, inserted] = units_.try_emplace(lookup_key_);
    UnitState* state = &it->second;
    if (inserted && !stored_only_.empty() && stored_only_.contains(FingerprintOf(lookup_key_))) {
      std::string value;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), lookup_key_, &value);
      if (s.ok()) {
        absl::Status decoded = state->Decode(value, lookup_key_);
        if (!decoded.ok()) {
          units_.erase(it);
          return decoded;
        }
      } else if (!s.IsNotFound()) {
        units_.erase(it);
        return FromRocks(s, "read unit state");
      }
    }
    if (!state->dirty) {  // every caller changes it
      state->dirty = true;
      dirty_units_.push_back(&*it);
    }
    last_unit_ = &*it;
    return state;
  }

  ExperimentSums& SumsOf(const std::string& experiment) {
    // Events come in runs of one experiment: remember the last one (it is
    // marked dirty when first looked up after a checkpoint).
    if (last_experiment_ == nullptr || last_experiment_name_ != experiment) {
      auto it = sums_.find(experiment);
      if (it == sums_.end()) it = sums_.emplace(experiment, ExperimentSums{}).first;
      last_experiment_ = &it->second;
      last_experiment_name_ = experiment;
      dirty_experiments_.insert(experiment);
    }
    return *last_experiment_;
  }

  // Adds a metric event to an exposed unit's totals; `variant` (the unit's
  // variant statistics) gets the change, or nothing when null.
  void ApplyMetric(UnitState* unit, EventType kind, std::string_view metric, int64_t ts,
                   double value, double denominator, VariantSums* variant) {
    bool outcome = ts >= unit->exposure_ms;
    if (!outcome &&
        (kind == EventType::kRatio || ts < unit->exposure_ms - options_.cuped_lookback_ms)) {
      return;  // before the pre-period, or a ratio's pre-period: counted nowhere
    }
    UnitMetric& m = unit->Metric(kind, metric);
    MetricSums* sums = nullptr;
    if (variant != nullptr) {
      if (m.sums == nullptr) m.sums = &variant->metrics[m.id];
      sums = m.sums;
    }
    if (outcome) {
      UnitTotals before = m.totals;
      if (kind == EventType::kConversion) {
        m.totals.x = 1;
      } else {
        m.totals.x += value;
        m.totals.den += denominator;
      }
      if (sums != nullptr) UpdateContribution(sums, kind, before, m.totals, m.covariate);
    } else {
      double before = m.covariate;
      m.covariate = kind == EventType::kConversion ? 1 : m.covariate + value;
      if (sums != nullptr) UpdateCovariate(sums, m.totals.x, before, m.covariate);
    }
  }

  absl::Status Apply(const Event& event) {
    ASSIGN_OR_RETURN(UnitState * unit, LoadUnit(event));
    ExperimentSums& sums = SumsOf(event.experiment);
    if (event.type == EventType::kExposure) {
      if (!unit->variant.empty()) {
        if (unit->variant != event.variant) ++conflicting_exposures_;
        return absl::OkStatus();
      }
      unit->variant = event.variant;
      unit->exposure_ms = event.timestamp_ms;
      for (const HeldEvent& h : unit->held) {
        ApplyMetric(unit, h.type, h.metric, h.timestamp_ms, h.value, h.denominator, nullptr);
      }
      unit->held.clear();
      unit->held.shrink_to_fit();
      VariantSums& variant = sums.variants[event.variant];
      unit->variant_sums = &variant;
      ++variant.units;
      for (UnitMetric& m : unit->metrics) {
        m.sums = &variant.metrics[m.id];
        AddContribution(m.sums, m.id.kind, m.totals, m.covariate);
      }
      return absl::OkStatus();
    }
    if (unit->variant.empty()) {
      if (unit->held.size() >= kMaxHeldEventsPerUnit) {
        ++held_events_dropped_;
        return absl::OkStatus();
      }
      unit->held.push_back(
          HeldEvent{event.type, event.metric, event.timestamp_ms, event.value, event.denominator});
      return absl::OkStatus();
    }
    if (unit->variant_sums == nullptr) {
      // Loaded from the database: find its variant (and metrics) again.
      unit->variant_sums = &sums.variants[unit->variant];
      for (UnitMetric& m : unit->metrics) m.sums = &unit->variant_sums->metrics[m.id];
    }
    ApplyMetric(unit, event.type, event.metric, event.timestamp_ms, event.value, event.denominator,
                unit->variant_sums);
    return absl::OkStatus();
  }

  rocksdb::DB* db_;
  const EventStoreOptions& options_;
  std::map<std::string, ExperimentSums, std::less<>> sums_;
  // Nodes: the dirty list points into it (and a rehash moves no state).
  absl::node_hash_map<std::string, UnitState> units_;
  std::vector<std::pair<const std::string, UnitState>*> dirty_units_;  // since the checkpoint
  std::pair<const std::string, UnitState>* last_unit_ = nullptr;       // lookup_key_'s entry
  // The units whose state is in the database but not in units_ (evicted,
  // or past the cache at open): only these are looked up there, so a new
  // unit costs no read. About 20 bytes per unit.
  absl::flat_hash_set<Fingerprint, FingerprintHash> stored_only_;
  absl::flat_hash_set<std::string> dirty_experiments_;
  uint64_t next_sequence_ = 0;  // of the log: the next event to aggregate
  uint64_t since_checkpoint_ = 0;
  uint64_t conflicting_exposures_ = 0;
  uint64_t held_events_dropped_ = 0;
  std::string lookup_key_;
  ExperimentSums* last_experiment_ = nullptr;
  std::string last_experiment_name_;
};

EventStore::EventStore() = default;

absl::StatusOr<std::unique_ptr<EventStore>> EventStore::Open(EventStoreOptions options) {
  if (options.directory.empty()) return absl::InvalidArgumentError("event store: no directory");
  if (options.max_queued_events < kMaxEventsPerBatch) {
    return absl::InvalidArgumentError(
        absl::StrCat("event store: max_queued_events must be at least ", kMaxEventsPerBatch));
  }
  if (options.dedup_window_keys < 1 || options.checkpoint_events < 1 ||
      options.max_unaggregated_events < 1 || options.cuped_lookback_ms < 0) {
    return absl::InvalidArgumentError(
        "event store: dedup_window_keys, checkpoint_events and max_unaggregated_events must be "
        "positive, cuped_lookback_ms not negative");
  }
  std::unique_ptr<EventStore> store(new EventStore());
  store->options_ = std::move(options);
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.compression = rocksdb::kLZ4Compression;
  // Checkpoints write many unit states at once; a larger memtable flushes
  // (and compacts) less often.
  db_options.write_buffer_size = 128 << 20;
  rocksdb::BlockBasedTableOptions table;
  // Unit states read back after the cache was trimmed: mostly misses.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  db_options.memtable_whole_key_filtering = true;
  db_options.memtable_prefix_bloom_size_ratio = 0.1;
  rocksdb::DB* raw = nullptr;
  RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(db_options, store->options_.directory, &raw), "open"));
  store->db_.reset(raw);
  store->dedup_ = std::make_unique<DedupIndex>(store->options_.dedup_window_keys);
  store->aggregator_ = std::make_unique<Aggregator>(store->db_.get(), store->options_);
  RETURN_IF_ERROR(store->Recover());
  store->published_next_sequence_.store(store->next_sequence_);
  store->aggregated_sequence_.store(store->aggregator_->next_sequence());
  store->checkpoint_sequence_.store(store->aggregator_->next_sequence());
  store->dedup_keys_.store(store->dedup_->size());
  store->cached_units_.store(store->aggregator_->cached_units());
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  store->aggregator_thread_ = std::thread([s = store.get()] { s->AggregatorLoop(); });
  return store;
}

absl::Status EventStore::Recover() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->Seek(std::string(1, kOldLogPrefix));
  if (it->Valid() && it->key()[0] == kOldLogPrefix) {
    return absl::FailedPreconditionError(absl::StrCat(
        "event store: ", options_.directory,
        " holds events in the format of an earlier version (one record per event); move it "
        "away and send the events again"));
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scan"));

  // The end of the log.
  it->SeekForPrev(std::string(1, static_cast<char>(kLogPrefix + 1)));
  if (it->Valid() && IsLogKey(it->key().ToStringView())) {
    next_sequence_ = ReadBigEndian(it->key().ToStringView().substr(1)) +
                     LogRecordCount(it->value().ToStringView());
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "find the end of the log"));

  // The dedup index: the keys of the last dedup_window_keys events. Back
  // from the end to the record where the window starts, then forward.
  uint64_t window_start = 0;
  size_t counted = 0;
  for (; it->Valid() && IsLogKey(it->key().ToStringView()); it->Prev()) {
    window_start = ReadBigEndian(it->key().ToStringView().substr(1));
    counted += LogRecordCount(it->value().ToStringView());
    if (counted >= options_.dedup_window_keys) break;
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scan the log"));
  for (it->Seek(LogKey(window_start)); it->Valid() && IsLogKey(it->key().ToStringView());
       it->Next()) {
    ASSIGN_OR_RETURN(std::vector<Event> events, DecodeLogRecord(it->value().ToStringView()));
    for (const Event& e : events) dedup_->Insert(e.key);
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scan the log"));
  dedup_->Trim();

  // The aggregation: the checkpoint, or nothing when rebuilding.
  rocksdb::WriteOptions sync_write;
  sync_write.sync = true;
  std::string marker;
  bool rebuild =
      options_.rebuild_on_open || db_->Get(rocksdb::ReadOptions(), kRebuildingKey, &marker).ok();
  if (rebuild) {
    CAPSTAN_LOG(info, "events: rebuilding the aggregation from the log", "directory",
                options_.directory);
    // One atomic batch: a crash after it replays from the start, and the
    // replay's own checkpoints are consistent like any other.
    rocksdb::WriteBatch clear;
    for (char prefix : {kUnitPrefix, kSumsPrefix}) {
      clear.DeleteRange(std::string(1, prefix), std::string(1, static_cast<char>(prefix + 1)));
    }
    clear.Delete(kCheckpointKey);
    clear.Delete(kRebuildingKey);
    RETURN_IF_ERROR(FromRocks(db_->Write(sync_write, &clear), "clear the aggregation"));
    aggregator_->Clear();
  } else {
    RETURN_IF_ERROR(aggregator_->Load());
  }

  // Replay the log after the checkpoint.
  uint64_t from = aggregator_->next_sequence();
  if (from > next_sequence_) {
    return absl::DataLossError(absl::StrCat("event store: the checkpoint is at event ", from,
                                            " but the log ends at ", next_sequence_));
  }
  uint64_t replayed = 0;
  for (it->Seek(LogKey(from));
       from < next_sequence_ && it->Valid() && IsLogKey(it->key().ToStringView()); it->Next()) {
    uint64_t first = ReadBigEndian(it->key().ToStringView().substr(1));
    ASSIGN_OR_RETURN(std::vector<Event> events, DecodeLogRecord(it->value().ToStringView()));
    RETURN_IF_ERROR(aggregator_->ApplyGroup(first, events));
    replayed += events.size();
    if (aggregator_->CheckpointDue()) RETURN_IF_ERROR(aggregator_->Checkpoint());
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "replay the log"));
  if (aggregator_->next_sequence() != next_sequence_) {
    return absl::DataLossError(absl::StrCat("event store: the log's records after event ", from,
                                            " do not reach its end (", next_sequence_, ")"));
  }
  if (aggregator_->Dirty()) RETURN_IF_ERROR(aggregator_->Checkpoint());
  conflicting_exposures_.fetch_add(aggregator_->TakeConflictingExposures());
  held_events_dropped_.fetch_add(aggregator_->TakeHeldEventsDropped());
  replayed_on_open_ = replayed;
  CAPSTAN_LOG(info, "events: opened", "directory", options_.directory, "log_events", next_sequence_,
              "replayed", replayed, "dedup_keys", dedup_->size());
  return absl::OkStatus();
}

EventStore::~EventStore() {
  {
    std::lock_guard lock(queue_mutex_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  {
    std::lock_guard lock(aggregate_mutex_);
    writer_done_ = true;
  }
  aggregate_cv_.notify_all();
  if (aggregator_thread_.joinable()) aggregator_thread_.join();
}

absl::StatusOr<AppendResult> EventStore::Append(std::vector<Event> events) {
  if (events.empty()) return AppendResult{};
  auto pending = std::make_unique<Pending>();
  std::future<absl::StatusOr<AppendResult>> done = pending->done.get_future();
  size_t n = events.size();
  pending->events = std::move(events);
  {
    std::lock_guard lock(queue_mutex_);
    if (stopping_) return absl::UnavailableError("event store: closing");
    {
      std::lock_guard aggregate_lock(aggregate_mutex_);
      if (aggregator_failed_) {
        return absl::InternalError(
            "event store: the aggregation stopped on an error (see the log)");
      }
    }
    // An empty pipeline always takes a batch, so no batch waits forever.
    if (queued_events_ > 0 && queued_events_ + n > options_.max_queued_events) {
      return absl::ResourceExhaustedError(
          absl::StrCat("event pipeline is behind: ", queued_events_, " events queued"));
    }
    uint64_t behind = published_next_sequence_.load() - aggregated_sequence_.load();
    if (behind >= options_.max_unaggregated_events) {
      return absl::ResourceExhaustedError(
          absl::StrCat("event aggregation is behind: ", behind, " events not yet aggregated"));
    }
    queued_events_ += n;
    queue_.push_back(std::move(pending));
  }
  queue_cv_.notify_one();
  return done.get();
}

void EventStore::WriterLoop() {
  pthread_setname_np(pthread_self(), "events-writer");
  std::unique_lock lock(queue_mutex_);
  while (true) {
    queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything queued was written
    std::vector<std::unique_ptr<Pending>> taken;
    size_t events = 0;
    while (!queue_.empty() &&
           (taken.empty() || events + queue_.front()->events.size() <= options_.max_group_events)) {
      events += queue_.front()->events.size();
      taken.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();

    if (options_.before_group_write) options_.before_group_write();
    auto group = std::make_unique<LoggedGroup>();
    group->first_sequence = next_sequence_;
    group->events.reserve(events);
    std::string record(kLogRecordHeader, '\0');
    record[0] = static_cast<char>(kLogRecordVersion);
    record.reserve(events * 64);
    std::vector<AppendResult> results(taken.size());
    for (size_t i = 0; i < taken.size(); ++i) {
      for (Event& event : taken[i]->events) {
        if (!dedup_->Insert(event.key)) {
          ++results[i].duplicates;
          continue;
        }
        ++results[i].accepted;
        AppendLogRecordEvent(event, &record);
        group->events.push_back(std::move(event));
      }
    }
    const size_t accepted = group->events.size();
    absl::Status status;
    if (accepted > 0) {
      uint32_t count = static_cast<uint32_t>(accepted);
      std::memcpy(record.data() + 1, &count, 4);
      rocksdb::WriteOptions write_options;
      write_options.sync = options_.sync;
      status = FromRocks(db_->Put(write_options, LogKey(next_sequence_), record), "write the log");
    }
    if (status.ok()) {
      dedup_->Trim();
      next_sequence_ += accepted;
      published_next_sequence_.store(next_sequence_);
      group_commits_.fetch_add(1);
      for (const AppendResult& r : results) {
        accepted_.fetch_add(r.accepted);
        duplicates_.fetch_add(r.duplicates);
      }
      if (accepted > 0) {
        {
          std::lock_guard aggregate_lock(aggregate_mutex_);
          logged_.push_back(std::move(group));
        }
        aggregate_cv_.notify_one();
      }
    } else {
      dedup_->RollBack(accepted);
      CAPSTAN_LOG(err, "events: group commit failed", "error", status.ToString());
    }
    dedup_keys_.store(dedup_->size());

    lock.lock();
    queued_events_ -= events;
    lock.unlock();
    for (size_t i = 0; i < taken.size(); ++i) {
      if (status.ok()) {
        taken[i]->done.set_value(results[i]);
      } else {
        taken[i]->done.set_value(status);
      }
    }
    lock.lock();
  }
}

void EventStore::AggregatorLoop() {
  pthread_setname_np(pthread_self(), "events-aggr");
  std::unique_lock lock(aggregate_mutex_);
  while (true) {
    aggregate_cv_.wait(lock, [&] { return writer_done_ || !logged_.empty(); });
    if (logged_.empty()) break;  // the writer is done and everything is aggregated
    std::unique_ptr<LoggedGroup> group = std::move(logged_.front());
    logged_.pop_front();
    lock.unlock();

    if (options_.before_group_aggregate) options_.before_group_aggregate();
    absl::Status status;
    {
      std::unique_lock sums_lock(sums_mutex_);
      status = aggregator_->ApplyGroup(group->first_sequence, group->events);
    }
    if (status.ok() && aggregator_->CheckpointDue()) {
      status = aggregator_->Checkpoint();
      if (status.ok()) {
        checkpoints_.fetch_add(1);
        checkpoint_sequence_.store(aggregator_->next_sequence());
        // The checkpoint is not in the WAL: ask for the memtable holding it
        // to be written out (in the background), so a crash replays about
        // one checkpoint interval, not a whole memtable's worth.
        rocksdb::FlushOptions flush;
        flush.wait = false;
        flush.allow_write_stall = true;
        rocksdb::Status flushed = db_->Flush(flush);
        if (!flushed.ok()) {
          CAPSTAN_LOG(warn, "events: flush after a checkpoint failed", "error", flushed.ToString());
        }
      }
    }
    conflicting_exposures_.fetch_add(aggregator_->TakeConflictingExposures());
    held_events_dropped_.fetch_add(aggregator_->TakeHeldEventsDropped());
    cached_units_.store(aggregator_->cached_units());
    group.reset();  // its memory, outside the lock

    lock.lock();
    if (!status.ok()) {
      // What is logged stays in the log: the next open replays it.
      CAPSTAN_LOG(err, "events: aggregation stopped", "error", status.ToString());
      aggregator_failed_ = true;
      aggregated_cv_.notify_all();
      return;
    }
    aggregated_sequence_.store(aggregator_->next_sequence());
    aggregated_cv_.notify_all();
  }
  lock.unlock();
  if (aggregator_->Dirty() && options_.checkpoint_on_close) {
    absl::Status status = aggregator_->Checkpoint();
    // The checkpoints are not in the WAL: flush them to a table file.
    if (status.ok()) status = FromRocks(db_->Flush(rocksdb::FlushOptions()), "flush checkpoint");
    if (status.ok()) {
      checkpoints_.fetch_add(1);
      checkpoint_sequence_.store(aggregator_->next_sequence());
    } else {
      CAPSTAN_LOG(err, "events: final checkpoint failed (the next open replays the log)", "error",
                  status.ToString());
    }
  }
}

void EventStore::AwaitAggregated(uint64_t sequence) const {
  std::unique_lock lock(aggregate_mutex_);
  aggregated_cv_.wait_for(lock, kAggregationWaitLimit, [&] {
    return aggregator_failed_ || aggregated_sequence_.load() >= sequence;
  });
}

ExperimentSums EventStore::Sums(std::string_view experiment) const {
  AwaitAggregated(published_next_sequence_.load());
  std::shared_lock lock(sums_mutex_);
  auto it = aggregator_->sums().find(experiment);
  return it == aggregator_->sums().end() ? ExperimentSums{} : it->second;
}

std::vector<std::string> EventStore::Experiments() const {
  AwaitAggregated(published_next_sequence_.load());
  std::shared_lock lock(sums_mutex_);
  std::vector<std::string> names;
  for (const auto& [name, sums] : aggregator_->sums()) names.push_back(name);
  return names;
}

EventStoreStats EventStore::Stats() const {
  EventStoreStats stats;
  stats.next_sequence = published_next_sequence_.load();
  stats.aggregated_sequence = aggregated_sequence_.load();
  stats.checkpoint_sequence = checkpoint_sequence_.load();
  stats.accepted = accepted_.load();
  stats.duplicates = duplicates_.load();
  stats.group_commits = group_commits_.load();
  stats.checkpoints = checkpoints_.load();
  stats.replayed_on_open = replayed_on_open_;
  stats.conflicting_exposures = conflicting_exposures_.load();
  stats.held_events_dropped = held_events_dropped_.load();
  stats.dedup_keys = dedup_keys_.load();
  stats.cached_units = cached_units_.load();
  {
    std::lock_guard lock(queue_mutex_);
    stats.queued_events = queued_events_;
  }
  {
    std::lock_guard lock(aggregate_mutex_);
    stats.aggregation_failed = aggregator_failed_;
  }
  return stats;
}

std::string EncodeExperimentSums(const ExperimentSums& sums) {
  JsonValue variants = JsonValue::object();
  for (const auto& [name, v] : sums.variants) {
    JsonValue metrics = JsonValue::array();
    for (const auto& [id, m] : v.metrics) {
      metrics.push_back({{"kind", std::string(EventTypeName(id.kind))},
                         {"metric", id.name},
                         {"sum", m.sum},
                         {"sumSquares", m.sum_squares},
                         {"denSum", m.den_sum},
                         {"denSumSquares", m.den_sum_squares},
                         {"products", m.products},
                         {"covariateSum", m.covariate_sum},
                         {"covariateSumSquares", m.covariate_sum_squares},
                         {"covariateProducts", m.covariate_products}});
    }
    variants[name] = {{"units", v.units}, {"metrics", std::move(metrics)}};
  }
  return JsonValue{{"variants", std::move(variants)}}.dump();
}

absl::StatusOr<ExperimentSums> DecodeExperimentSums(std::string_view text) {
  JsonValue doc = JsonValue::parse(text.begin(), text.end(), nullptr, false);
  auto corrupt = [] { return absl::DataLossError("event store: aggregate record is corrupt"); };
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("variants")) return corrupt();
  ExperimentSums sums;
  try {
    for (const auto& [name, v] : doc.at("variants").items()) {
      VariantSums& variant = sums.variants[name];
      variant.units = v.at("units").get<uint64_t>();
      for (const JsonValue& m : v.at("metrics")) {
        std::string kind = m.at("kind").get<std::string>();
        MetricId id{kind == "conversion" ? EventType::kConversion
                    : kind == "ratio"    ? EventType::kRatio
                                         : EventType::kValue,
                    m.at("metric").get<std::string>()};
        variant.metrics[id] =
            MetricSums{m.at("sum").get<double>(),           m.at("sumSquares").get<double>(),
                       m.at("denSum").get<double>(),        m.at("denSumSquares").get<double>(),
                       m.at("products").get<double>(),      m.value("covariateSum", 0.0),
                       m.value("covariateSumSquares", 0.0), m.value("covariateProducts", 0.0)};
      }
    }
  } catch (const nlohmann::json::exception&) {
    return corrupt();
  }
  return sums;
}

}  // namespace capstan::experiments
