#include "experiments/event_store.h"

#include <algorithm>
#include <cstring>
#include <future>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
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

constexpr char kLogPrefix = 'l';
constexpr char kDedupPrefix = 'd';
constexpr char kUnitPrefix = 'u';
constexpr char kSumsPrefix = 'a';
const std::string kRebuildingKey = "mrebuilding";

// Log replay reads and rewrites this many events per WriteBatch.
constexpr size_t kRebuildChunkEvents = 20000;

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("event store: ", std::string(what), ": ", s.ToString()));
}

std::string LogKey(uint64_t seq) {
  std::string key(9, '\0');
  key[0] = kLogPrefix;
  for (int i = 0; i < 8; ++i) key[1 + i] = static_cast<char>((seq >> (56 - 8 * i)) & 0xff);
  return key;
}

uint64_t SequenceOfLogKey(std::string_view key) {
  uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) seq = (seq << 8) | static_cast<uint8_t>(key[1 + i]);
  return seq;
}

std::string UnitKey(std::string_view experiment, std::string_view unit) {
  std::string key;
  key.reserve(2 + experiment.size() + unit.size());
  key.push_back(kUnitPrefix);
  key.append(experiment);
  key.push_back('\0');
  key.append(unit);
  return key;
}

void AppendDouble(std::string* out, double d) {
  char bytes[8];
  std::memcpy(bytes, &d, 8);
  out->append(bytes, 8);
}

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool Byte(uint8_t* out) {
    if (data_.empty()) return false;
    *out = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return true;
  }
  bool Bytes(size_t n, std::string* out) {
    if (data_.size() < n) return false;
    out->assign(data_.substr(0, n));
    data_.remove_prefix(n);
    return true;
  }
  bool Double(double* out) {
    if (data_.size() < 8) return false;
    std::memcpy(out, data_.data(), 8);
    data_.remove_prefix(8);
    return true;
  }
  bool U32(uint32_t* out) {
    if (data_.size() < 4) return false;
    std::memcpy(out, data_.data(), 4);
    data_.remove_prefix(4);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  std::string_view data_;
};

// One unit's contribution to a metric: x (or num) and den.
struct UnitTotals {
  double x = 0;
  double den = 0;
};

// Adds the unit's contribution to the variant's sums (a unit joining).
void AddContribution(MetricSums* sums, EventType kind, const UnitTotals& t) {
  sums->sum += t.x;
  sums->sum_squares += t.x * t.x;
  if (kind == EventType::kRatio) {
    sums->den_sum += t.den;
    sums->den_sum_squares += t.den * t.den;
    sums->products += t.x * t.den;
  }
}

// Moves the unit's contribution from `before` to `after`. Differences of
// squares as (a − b)(a + b) and products as a_x·Δden + b_den·Δx: no
// cancellation between two large squares when a total grows by little.
void UpdateContribution(MetricSums* sums, EventType kind, const UnitTotals& before,
                        const UnitTotals& after) {
  double dx = after.x - before.x;
  sums->sum += dx;
  sums->sum_squares += dx * (after.x + before.x);
  if (kind == EventType::kRatio) {
    double dden = after.den - before.den;
    sums->den_sum += dden;
    sums->den_sum_squares += dden * (after.den + before.den);
    sums->products += after.x * dden + before.den * dx;
  }
}

}  // namespace

struct EventStore::Pending {
  std::vector<Event> events;
  std::promise<absl::StatusOr<AppendResult>> done;
};

struct EventStore::UnitState {
  std::string variant;
  std::map<MetricId, UnitTotals> metrics;

  std::string Encode() const {
    std::string out;
    out.push_back(static_cast<char>(variant.size()));
    out.append(variant);
    uint32_t count = static_cast<uint32_t>(metrics.size());
    char bytes[4];
    std::memcpy(bytes, &count, 4);
    out.append(bytes, 4);
    for (const auto& [id, totals] : metrics) {
      out.push_back(static_cast<char>(id.kind));
      out.push_back(static_cast<char>(id.name.size()));
      out.append(id.name);
      AppendDouble(&out, totals.x);
      AppendDouble(&out, totals.den);
    }
    return out;
  }

  bool Decode(std::string_view data) {
    Reader r(data);
    uint8_t len = 0;
    uint32_t count = 0;
    if (!r.Byte(&len) || !r.Bytes(len, &variant) || !r.U32(&count)) return false;
    for (uint32_t i = 0; i < count; ++i) {
      uint8_t kind = 0;
      MetricId id;
      UnitTotals t;
      if (!r.Byte(&kind) || kind > 3 || !r.Byte(&len) || !r.Bytes(len, &id.name) ||
          !r.Double(&t.x) || !r.Double(&t.den)) {
        return false;
      }
      id.kind = static_cast<EventType>(kind);
      metrics[std::move(id)] = t;
    }
    return r.done();
  }
};

// One WriteBatch's worth of events: the log records, dedup keys, unit states
// and aggregates they change, with reads that see the group's own writes.
// Nothing is visible to readers until Commit succeeds.
class EventStore::Group {
 public:
  explicit Group(EventStore* store) : store_(store), next_sequence_(store->next_sequence_) {}

  // Applies one event. `sequence` < 0: a new event (deduplicated, logged,
  // gets the next sequence); else a replay of the log record `sequence`.
  absl::StatusOr<bool> Apply(const Event& event, int64_t sequence) {
    std::string dedup_key = absl::StrCat(std::string(1, kDedupPrefix), event.key);
    if (sequence < 0) {
      if (keys_.contains(dedup_key)) return false;
      std::string ignored;
      rocksdb::Status s = store_->db_->Get(rocksdb::ReadOptions(), dedup_key, &ignored);
      if (s.ok()) return false;
      if (!s.IsNotFound()) return FromRocks(s, "dedup lookup");
      uint64_t seq = next_sequence_++;
      puts_.emplace_back(LogKey(seq), EncodeEvent(event));
      puts_.emplace_back(dedup_key, LogKey(seq).substr(1));
    } else {
      puts_.emplace_back(dedup_key, LogKey(static_cast<uint64_t>(sequence)).substr(1));
      next_sequence_ = std::max(next_sequence_, static_cast<uint64_t>(sequence) + 1);
    }
    keys_.insert(std::move(dedup_key));

    ASSIGN_OR_RETURN(UnitState * unit, LoadUnit(event.experiment, event.unit));
    ExperimentSums* sums = Touch(event.experiment);
    if (event.type == EventType::kExposure) {
      if (unit->variant.empty()) {
        unit->variant = event.variant;
        VariantSums& v = sums->variants[event.variant];
        ++v.units;
        for (const auto& [id, totals] : unit->metrics) {
          AddContribution(&v.metrics[id], id.kind, totals);
        }
      } else if (unit->variant != event.variant) {
        ++conflicting_exposures_;
      }
      return true;
    }
    MetricId id{event.type, event.metric};
    UnitTotals& totals = unit->metrics[id];
    UnitTotals before = totals;
    switch (event.type) {
      case EventType::kConversion:
        totals.x = 1;
        break;
      case EventType::kValue:
        totals.x += event.value;
        break;
      case EventType::kRatio:
        totals.x += event.value;
        totals.den += event.denominator;
        break;
      case EventType::kExposure:
        break;
    }
    if (!unit->variant.empty()) {
      MetricSums& m = sums->variants[unit->variant].metrics[id];
      UpdateContribution(&m, id.kind, before, totals);
    }
    return true;
  }

  // Writes the batch (fsynced when `sync`), then publishes the aggregates.
  absl::Status Commit(bool sync) {
    for (const auto& [key, unit] : units_) puts_.emplace_back(key, unit.Encode());
    for (const auto& [experiment, sums] : touched_) {
      puts_.emplace_back(absl::StrCat(std::string(1, kSumsPrefix), experiment),
                         EncodeExperimentSums(sums));
    }
    // In key order the memtable's skiplist reuses its insertion point
    // (splice) from one key to the next instead of searching from the top:
    // random-order inserts were 40% of a group's CPU.
    std::sort(puts_.begin(), puts_.end());
    rocksdb::WriteBatch batch;
    for (const auto& [key, value] : puts_) batch.Put(key, value);
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    RETURN_IF_ERROR(FromRocks(store_->db_->Write(write_options, &batch), "write"));
    {
      std::unique_lock lock(store_->sums_mutex_);
      for (auto& [experiment, sums] : touched_) store_->sums_[experiment] = std::move(sums);
    }
    store_->next_sequence_ = next_sequence_;
    store_->published_next_sequence_.store(next_sequence_);
    store_->conflicting_exposures_.fetch_add(conflicting_exposures_);
    return absl::OkStatus();
  }

  size_t size() const { return keys_.size(); }

 private:
  absl::StatusOr<UnitState*> LoadUnit(std::string_view experiment, std::string_view unit) {
    std::string key = UnitKey(experiment, unit);
    auto it = units_.find(key);
    if (it != units_.end()) return &it->second;
    UnitState state;
    std::string value;
    rocksdb::Status s = store_->db_->Get(rocksdb::ReadOptions(), key, &value);
    if (s.ok()) {
      if (!state.Decode(value)) {
        return absl::DataLossError(absl::StrCat("event store: unit state of \"", std::string(unit),
                                                "\" in \"", std::string(experiment),
                                                "\" is corrupt"));
      }
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "unit lookup");
    }
    return &units_.emplace(std::move(key), std::move(state)).first->second;
  }

  // The group's working copy of an experiment's sums (the writer thread is
  // the only one that changes store_->sums_, so it reads it unlocked).
  ExperimentSums* Touch(const std::string& experiment) {
    auto it = touched_.find(experiment);
    if (it != touched_.end()) return &it->second;
    auto current = store_->sums_.find(experiment);
    ExperimentSums copy = current == store_->sums_.end() ? ExperimentSums{} : current->second;
    return &touched_.emplace(experiment, std::move(copy)).first->second;
  }

  EventStore* store_;
  uint64_t next_sequence_;
  std::vector<std::pair<std::string, std::string>> puts_;  // at most one per key
  absl::flat_hash_set<std::string> keys_;
  absl::flat_hash_map<std::string, UnitState> units_;
  std::map<std::string, ExperimentSums> touched_;
  uint64_t conflicting_exposures_ = 0;
};

absl::StatusOr<std::unique_ptr<EventStore>> EventStore::Open(EventStoreOptions options) {
  if (options.directory.empty()) return absl::InvalidArgumentError("event store: no directory");
  if (options.max_queued_events < kMaxEventsPerBatch) {
    return absl::InvalidArgumentError(
        absl::StrCat("event store: max_queued_events must be at least ", kMaxEventsPerBatch));
  }
  std::unique_ptr<EventStore> store(new EventStore());
  store->options_ = std::move(options);
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.compression = rocksdb::kLZ4Compression;
  rocksdb::BlockBasedTableOptions table;
  // Most dedup lookups are misses (new keys): the filter answers them.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Dedup lookups and first sight of a unit miss; a memtable Bloom filter
  // answers those without a skiplist search (the profile's top item).
  db_options.memtable_whole_key_filtering = true;
  db_options.memtable_prefix_bloom_size_ratio = 0.1;
  rocksdb::DB* raw = nullptr;
  RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(db_options, store->options_.directory, &raw), "open"));
  store->db_.reset(raw);
  std::string marker;
  bool interrupted = store->db_->Get(rocksdb::ReadOptions(), kRebuildingKey, &marker).ok();
  if (store->options_.rebuild_on_open || interrupted) {
    RETURN_IF_ERROR(store->RebuildFromLog());
  } else {
    RETURN_IF_ERROR(store->Load());
  }
  store->published_next_sequence_.store(store->next_sequence_);
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  return store;
}

absl::Status EventStore::Load() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  std::string log_end(1, static_cast<char>(kLogPrefix + 1));
  it->SeekForPrev(log_end);
  if (it->Valid() && it->key().size() == 9 && it->key()[0] == kLogPrefix) {
    next_sequence_ = SequenceOfLogKey(it->key().ToStringView()) + 1;
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scan log"));
  std::string sums_start(1, kSumsPrefix);
  for (it->Seek(sums_start); it->Valid() && it->key()[0] == kSumsPrefix; it->Next()) {
    ASSIGN_OR_RETURN(ExperimentSums sums, DecodeExperimentSums(it->value().ToStringView()));
    sums_[it->key().ToString().substr(1)] = std::move(sums);
  }
  return FromRocks(it->status(), "scan aggregates");
}

absl::Status EventStore::RebuildFromLog() {
  CAPSTAN_LOG(info, "events: rebuilding aggregates from the log", "directory", options_.directory);
  rocksdb::WriteOptions sync_write;
  sync_write.sync = true;
  // The marker makes an interrupted rebuild start over on the next open.
  RETURN_IF_ERROR(FromRocks(db_->Put(sync_write, kRebuildingKey, ""), "mark rebuild"));
  rocksdb::WriteBatch clear;
  for (char prefix : {kDedupPrefix, kUnitPrefix, kSumsPrefix}) {
    clear.DeleteRange(std::string(1, prefix), std::string(1, static_cast<char>(prefix + 1)));
  }
  RETURN_IF_ERROR(FromRocks(db_->Write(sync_write, &clear), "clear derived state"));
  sums_.clear();
  next_sequence_ = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  auto group = std::make_unique<Group>(this);
  uint64_t replayed = 0;
  for (it->Seek(std::string(1, kLogPrefix)); it->Valid() && it->key()[0] == kLogPrefix;
       it->Next()) {
    uint64_t seq = SequenceOfLogKey(it->key().ToStringView());
    ASSIGN_OR_RETURN(std::vector<Event> events, DecodeEventBatch(it->value().ToStringView()));
    ASSIGN_OR_RETURN(bool applied, group->Apply(events.at(0), static_cast<int64_t>(seq)));
    (void)applied;
    ++replayed;
    if (group->size() >= kRebuildChunkEvents) {
      RETURN_IF_ERROR(group->Commit(/*sync=*/false));
      group = std::make_unique<Group>(this);
    }
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scan log"));
  RETURN_IF_ERROR(group->Commit(/*sync=*/false));
  // The marker goes with a synced write, after (and covering) the chunks.
  RETURN_IF_ERROR(FromRocks(db_->Delete(sync_write, kRebuildingKey), "unmark rebuild"));
  CAPSTAN_LOG(info, "events: rebuilt from the log", "events", replayed);
  return absl::OkStatus();
}

EventStore::~EventStore() {
  {
    std::lock_guard lock(queue_mutex_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
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
    // An empty pipeline always takes a batch, so no batch waits forever.
    if (queued_events_ > 0 && queued_events_ + n > options_.max_queued_events) {
      return absl::ResourceExhaustedError(
          absl::StrCat("event pipeline is behind: ", queued_events_, " events queued"));
    }
    queued_events_ += n;
    queue_.push_back(std::move(pending));
  }
  queue_cv_.notify_one();
  return done.get();
}

void EventStore::WriterLoop() {
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
    Group group(this);
    std::vector<AppendResult> results(taken.size());
    absl::Status status;
    for (size_t i = 0; i < taken.size() && status.ok(); ++i) {
      for (const Event& event : taken[i]->events) {
        absl::StatusOr<bool> applied = group.Apply(event, -1);
        if (!applied.ok()) {
          status = applied.status();
          break;
        }
        ++(*applied ? results[i].accepted : results[i].duplicates);
      }
    }
    if (status.ok()) status = group.Commit(options_.sync);
    if (status.ok()) {
      group_commits_.fetch_add(1);
      for (const AppendResult& r : results) {
        accepted_.fetch_add(r.accepted);
        duplicates_.fetch_add(r.duplicates);
      }
    } else {
      CAPSTAN_LOG(err, "events: group commit failed", "error", status.ToString());
    }

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

ExperimentSums EventStore::Sums(std::string_view experiment) const {
  std::shared_lock lock(sums_mutex_);
  auto it = sums_.find(experiment);
  return it == sums_.end() ? ExperimentSums{} : it->second;
}

std::vector<std::string> EventStore::Experiments() const {
  std::shared_lock lock(sums_mutex_);
  std::vector<std::string> names;
  for (const auto& [name, sums] : sums_) names.push_back(name);
  return names;
}

EventStoreStats EventStore::Stats() const {
  EventStoreStats stats;
  stats.next_sequence = published_next_sequence_.load();
  stats.accepted = accepted_.load();
  stats.duplicates = duplicates_.load();
  stats.group_commits = group_commits_.load();
  stats.conflicting_exposures = conflicting_exposures_.load();
  {
    std::lock_guard lock(queue_mutex_);
    stats.queued_events = queued_events_;
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
                         {"products", m.products}});
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
            MetricSums{m.at("sum").get<double>(), m.at("sumSquares").get<double>(),
                       m.at("denSum").get<double>(), m.at("denSumSquares").get<double>(),
                       m.at("products").get<double>()};
      }
    }
  } catch (const nlohmann::json::exception&) {
    return corrupt();
  }
  return sums;
}

}  // namespace capstan::experiments
