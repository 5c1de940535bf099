#include "experiments/event_store_aggregator.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/status.h"
#include "experiments/event_store_format.h"
#include "rocksdb/db.h"
#include "rocksdb/sst_file_writer.h"
#include "xxhash.h"

namespace capstan::experiments {

using event_format::AppendBigEndian;
using event_format::DictionaryKey;
using event_format::FromRocks;
using event_format::kChangedUnitsFileName;
using event_format::kCheckpointFileName;
using event_format::kCheckpointKey;
using event_format::kCheckpointLayout1Size;
using event_format::kCheckpointLayout2Size;
using event_format::kDictionaryPrefix;
using event_format::kMetricDictionary;
using event_format::kNewUnitsFileName;
using event_format::kSumsPrefix;
using event_format::kUnitPrefix;
using event_format::kUnitStatePrefix;
using event_format::kUnitStateVersion;
using event_format::kVariantDictionary;
using event_format::ReadBigEndian;
using event_format::Reader;
using event_format::UnitRecord;
using event_format::UnitStateKey;

namespace {

constexpr size_t kKeyChunkMin = 64 << 10;
constexpr size_t kKeyChunkMax = 4 << 20;
constexpr uint64_t kUnitHashSeed = 0x756e69742d737461;
// How many events ahead ApplyGroup prefetches a unit's table slot.
constexpr size_t kPrefetchDistance = 8;

uint64_t DefaultUnitHash(std::string_view key) {
  return XXH3_64bits_withSeed(key.data(), key.size(), kUnitHashSeed);
}

// One unit's outcome totals for a metric.
struct Totals {
  double x = 0;
  double den = 0;
};

void AddContribution(MetricSums* sums, EventType kind, const Totals& t, double covariate) {
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
void UpdateContribution(MetricSums* sums, EventType kind, const Totals& before, const Totals& after,
                        double covariate) {
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
  uint32_t name_id = 0;  // in variant_names_ (the dictionary)
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
  bool layout1 = true;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kCheckpointKey, &value);
  if (s.ok()) {
    if (value.size() != kCheckpointLayout1Size && value.size() != kCheckpointLayout2Size) {
      return absl::DataLossError("event store: checkpoint is corrupt");
    }
    next_sequence_ = ReadBigEndian(value);
    if (value.size() == kCheckpointLayout2Size) {
      layout1 = false;
      next_unit_id_ = unit_id_on_disk_ = ReadBigEndian(std::string_view(value).substr(8));
    }
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
  if (layout1) return MigrateLayout1(it.get());
  RETURN_IF_ERROR(LoadDictionary(it.get()));
  // A crash after the migration's ingestion and before its range deletion
  // leaves layout-1 states behind: they are superseded.
  it->Seek(std::string(1, kUnitPrefix));
  if (it->Valid() && it->key()[0] == kUnitPrefix) {
    rocksdb::WriteOptions sync_write;
    sync_write.sync = true;
    RETURN_IF_ERROR(
        FromRocks(db_->DeleteRange(sync_write, db_->DefaultColumnFamily(),
                                   std::string(1, kUnitPrefix), std::string(1, kUnitPrefix + 1)),
                  "delete layout-1 unit states"));
  }
  UnitRecord record;
  for (it->Seek(std::string(1, kUnitStatePrefix)); it->Valid() && it->key()[0] == kUnitStatePrefix;
       it->Next()) {
    rocksdb::Slice key = it->key();
    if (key.size() != 9) return absl::DataLossError("event store: a unit state key is corrupt");
    const uint64_t id = ReadBigEndian(std::string_view(key.data() + 1, 8));
    if (!event_format::DecodeUnitRecord(it->value().ToStringView(), &record)) {
      return absl::DataLossError(
          absl::StrCat("event store: the unit state with id ", id, " is corrupt"));
    }
    lookup_key_.assign(1, kUnitPrefix);
    lookup_key_.append(record.key);
    const uint64_t hash = unit_hash_(lookup_key_);
    if (cached_units() >= options_.max_cached_units) {
      RememberStored(hash, id);  // too many to hold: read it when needed
      continue;
    }
    RETURN_IF_ERROR(FromRecord(record, InsertUnit(lookup_key_, hash, id)));
  }
  return FromRocks(it->status(), "scan unit states");
}

absl::Status EventAggregator::LoadDictionary(rocksdb::Iterator* it) {
  auto corrupt = [](std::string_view what) {
    return absl::DataLossError(
        absl::StrCat("event store: the ", std::string(what), " dictionary is corrupt"));
  };
  for (it->Seek(std::string(1, kDictionaryPrefix));
       it->Valid() && it->key()[0] == kDictionaryPrefix; it->Next()) {
    std::string_view key = it->key().ToStringView();
    std::string_view name = it->value().ToStringView();
    if (key.size() != 6) return corrupt("name");
    const uint32_t id = event_format::ReadBigEndian32(key.substr(2));
    if (key[1] == kMetricDictionary) {
      // Ids are dense and in order: the metric index is the id.
      if (name.empty() || name[0] < 1 || name[0] > 3 || id != metrics_.size()) {
        return corrupt("metric");
      }
      const uint32_t index = MetricIndex(static_cast<EventType>(name[0]), name.substr(1));
      if (index != id) return corrupt("metric");
    } else if (key[1] == kVariantDictionary) {
      if (id != variant_names_.size() || VariantNameId(name) != id) return corrupt("variant");
    } else {
      return corrupt("name");
    }
  }
  metrics_on_disk_ = metrics_.size();
  variant_names_on_disk_ = variant_names_.size();
  return FromRocks(it->status(), "scan the dictionary");
}

absl::Status EventAggregator::MigrateLayout1(rocksdb::Iterator* it) {
  it->Seek(std::string(1, kUnitPrefix));
  if (!it->Valid() || it->key()[0] != kUnitPrefix) {
    // Nothing in layout 1 (a new store): the first checkpoint writes layout 2.
    return FromRocks(it->status(), "scan unit states");
  }
  CAPSTAN_LOG(info, "events: rewriting the unit states in layout 2", "directory",
              options_.directory);
  // Streamed: the states past the cache are decoded into `scratch` and
  // written, never held.
  const std::string units_path = absl::StrCat(options_.directory, "/", kNewUnitsFileName);
  rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), CheckpointTableOptions());
  RETURN_IF_ERROR(FromRocks(writer.Open(units_path), "create the migration's table file"));
  std::string encoded;
  UnitState scratch;
  for (; it->Valid() && it->key()[0] == kUnitPrefix; it->Next()) {
    std::string_view key = it->key().ToStringView();
    const uint64_t hash = unit_hash_(key);
    const uint64_t id = next_unit_id_++;
    UnitState* unit = &scratch;
    if (cached_units() < options_.max_cached_units) {
      unit = InsertUnit(key, hash, id);
    } else {
      scratch.metrics.clear();
      scratch.held.clear();
      scratch.variant = nullptr;
      scratch.key = key;
      scratch.id = id;
      RememberStored(hash, id);
    }
    absl::Status decoded = DecodeLayout1Unit(it->value().ToStringView(), unit);
    if (decoded.ok()) {
      EncodeUnit(*unit, &encoded);
      decoded = FromRocks(writer.Put(UnitStateKey(id), encoded), "write the migration");
    }
    if (!decoded.ok()) {
      std::remove(units_path.c_str());
      return decoded;
    }
  }
  absl::Status status = FromRocks(it->status(), "scan unit states");
  if (status.ok()) status = FromRocks(writer.Finish(), "write the migration");
  const std::string meta_path = absl::StrCat(options_.directory, "/", kCheckpointFileName);
  if (status.ok()) status = WriteMetaFile(meta_path);
  if (status.ok()) {
    rocksdb::IngestExternalFileOptions ingest;
    ingest.move_files = true;
    ingest.write_global_seqno = false;
    status =
        FromRocks(db_->IngestExternalFile({meta_path, units_path}, ingest), "ingest the migration");
  }
  if (!status.ok()) {
    std::remove(units_path.c_str());
    std::remove(meta_path.c_str());
    return status;
  }
  // Layout 2 is on disk ("c" says so): the "u" states are garbage now, and
  // a crash before this deletion has Load delete them.
  rocksdb::WriteOptions sync_write;
  sync_write.sync = true;
  RETURN_IF_ERROR(
      FromRocks(db_->DeleteRange(sync_write, db_->DefaultColumnFamily(),
                                 std::string(1, kUnitPrefix), std::string(1, kUnitPrefix + 1)),
                "delete layout-1 unit states"));
  for (ExperimentSlot* experiment : dirty_experiments_) experiment->dirty = false;
  dirty_experiments_.clear();
  unit_id_on_disk_ = next_unit_id_;
  return absl::OkStatus();
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
      const uint64_t ahead = hashes_[i + kPrefetchDistance];
      __builtin_prefetch(&slots_[static_cast<size_t>(ahead) & (slots_.size() - 1)]);
      // A unit not in the cache is looked up among the evicted ones: a miss
      // in a map of millions too.
      if (!stored_only_.empty()) stored_only_.prefetch(ahead);
    }
    RETURN_IF_ERROR(Apply(*events[i], hashes_[i]));
  }
  next_sequence_ += events.size();
  since_checkpoint_ += events.size();
  return absl::OkStatus();
}

absl::Status EventAggregator::Checkpoint() {
  // A checkpoint is up to three sorted table files ingested in one atomic
  // step: no memtable (its skiplist inserts and key comparisons were most of
  // a checkpoint's CPU), no flush writing it a second time, and durable
  // (files synced, manifest written) when this returns.
  // - the meta file: statistics "a", position "c", new dictionary names "d";
  // - the units new since the last checkpoint: their ids are above every
  //   "s" key on disk, so RocksDB puts the file in the last level, where no
  //   compaction rewrites it (the units' states are most of the bytes);
  // - the units of earlier checkpoints that changed: merged by compactions
  //   like any update.
  std::sort(dirty_units_.begin(), dirty_units_.end(),
            [](const UnitState* a, const UnitState* b) { return a->id < b->id; });
  auto first_new =
      std::partition_point(dirty_units_.begin(), dirty_units_.end(),
                           [&](const UnitState* u) { return u->id < unit_id_on_disk_; });
  std::vector<UnitState*> changed(dirty_units_.begin(), first_new);
  std::vector<UnitState*> added(first_new, dirty_units_.end());
  std::vector<std::string> paths = {absl::StrCat(options_.directory, "/", kCheckpointFileName)};
  absl::Status status = WriteMetaFile(paths.back());
  if (status.ok() && !added.empty()) {
    paths.push_back(absl::StrCat(options_.directory, "/", kNewUnitsFileName));
    status = WriteUnitsFile(paths.back(), added);
  }
  if (status.ok() && !changed.empty()) {
    paths.push_back(absl::StrCat(options_.directory, "/", kChangedUnitsFileName));
    status = WriteUnitsFile(paths.back(), changed);
  }
  if (status.ok()) {
    rocksdb::IngestExternalFileOptions ingest;
    ingest.move_files = true;  // linked into the database, not copied
    ingest.write_global_seqno = false;
    status = FromRocks(db_->IngestExternalFile(paths, ingest), "ingest checkpoint");
  }
  if (!status.ok()) {
    for (const std::string& path : paths) std::remove(path.c_str());
    return status;
  }
  for (UnitState* unit : dirty_units_) unit->dirty = false;
  for (ExperimentSlot* experiment : dirty_experiments_) experiment->dirty = false;
  dirty_units_.clear();
  dirty_experiments_.clear();
  metrics_on_disk_ = metrics_.size();
  variant_names_on_disk_ = variant_names_.size();
  unit_id_on_disk_ = next_unit_id_;
  last_unit_ = nullptr;  // the cache may be trimmed below
  since_checkpoint_ = 0;
  if (cached_units() > options_.max_cached_units) EvictUnits();
  return absl::OkStatus();
}

rocksdb::Options EventAggregator::CheckpointTableOptions() const {
  rocksdb::Options table_options = db_->GetOptions();
  // Uncompressed (SstFileWriter would otherwise take the last level's
  // compression): LZ4 cost more CPU than the smaller files saved.
  table_options.compression = rocksdb::kNoCompression;
  table_options.compression_per_level.clear();
  table_options.bottommost_compression = rocksdb::kDisableCompressionOption;
  return table_options;
}

absl::Status EventAggregator::WriteMetaFile(const std::string& path) {
  std::sort(dirty_experiments_.begin(), dirty_experiments_.end(),
            [](const ExperimentSlot* a, const ExperimentSlot* b) { return a->name < b->name; });
  rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), CheckpointTableOptions());
  RETURN_IF_ERROR(FromRocks(writer.Open(path), "create checkpoint file"));
  // Keys in order: "a"... < "c" < "dm"... < "dv"...
  rocksdb::Status s;
  for (size_t i = 0; s.ok() && i < dirty_experiments_.size(); ++i) {
    s = writer.Put(absl::StrCat(std::string(1, kSumsPrefix), dirty_experiments_[i]->name),
                   EncodeExperimentSums(*dirty_experiments_[i]->sums));
  }
  std::string position;
  AppendBigEndian(&position, next_sequence_);
  AppendBigEndian(&position, next_unit_id_);
  if (s.ok())
    s = writer.Put(rocksdb::Slice(kCheckpointKey.data(), kCheckpointKey.size()), position);
  std::string name;
  for (size_t id = metrics_on_disk_; s.ok() && id < metrics_.size(); ++id) {
    name.assign(1, static_cast<char>(metrics_[id].kind));
    name.append(metrics_[id].name);
    s = writer.Put(DictionaryKey(kMetricDictionary, static_cast<uint32_t>(id)), name);
  }
  for (size_t id = variant_names_on_disk_; s.ok() && id < variant_names_.size(); ++id) {
    s = writer.Put(DictionaryKey(kVariantDictionary, static_cast<uint32_t>(id)),
                   variant_names_[id]);
  }
  if (s.ok()) s = writer.Finish();
  if (!s.ok()) {
    std::remove(path.c_str());
    return FromRocks(s, "write checkpoint");
  }
  return absl::OkStatus();
}

absl::Status EventAggregator::WriteUnitsFile(const std::string& path,
                                             const std::vector<UnitState*>& units) {
  rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), CheckpointTableOptions());
  RETURN_IF_ERROR(FromRocks(writer.Open(path), "create checkpoint file"));
  rocksdb::Status s;
  std::string key(1, kUnitStatePrefix);
  std::string encoded;
  for (size_t i = 0; s.ok() && i < units.size(); ++i) {
    key.resize(1);
    AppendBigEndian(&key, units[i]->id);
    EncodeUnit(*units[i], &encoded);
    s = writer.Put(key, encoded);
  }
  if (s.ok()) s = writer.Finish();
  if (!s.ok()) {
    std::remove(path.c_str());
    return FromRocks(s, "write checkpoint");
  }
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
  free_states_.clear();
  clock_hand_ = 0;
  key_chunks_.clear();
  key_chunk_used_ = key_chunk_size_ = 0;
  key_bytes_allocated_ = key_bytes_live_ = 0;
  dirty_units_.clear();
  last_unit_ = nullptr;
  stored_only_.clear();
  stored_collisions_.clear();
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
  if (inserted) metrics_.push_back(MetricId{kind, std::string(name)});
  last_metric_kind_ = kind;
  last_metric_name_.assign(name);
  last_metric_ = it->second;
  return last_metric_;
}

MetricSums* EventAggregator::SumsOf(VariantSlot* variant, uint32_t metric) {
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

EventAggregator::UnitState* EventAggregator::InsertUnit(std::string_view key, uint64_t hash,
                                                        uint64_t id) {
  if ((cached_units() + 1) * 2 > slots_.size()) GrowTable();
  size_t mask = slots_.size() - 1;
  size_t i = static_cast<size_t>(hash) & mask;
  while (slots_[i].index != 0) i = (i + 1) & mask;
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
  slots_[i] = Slot{hash, index + 1};
  return state;
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

void EventAggregator::EraseSlot(const UnitState& state, uint32_t index) {
  const size_t mask = slots_.size() - 1;
  size_t i = static_cast<size_t>(state.hash) & mask;
  while (slots_[i].index != index + 1) i = (i + 1) & mask;  // it is there
  // Backward-shift deletion: each later entry of the probe run whose home
  // is not between the hole and itself moves into the hole.
  for (size_t j = (i + 1) & mask; slots_[j].index != 0; j = (j + 1) & mask) {
    size_t home = static_cast<size_t>(slots_[j].hash) & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = Slot{0, 0};
}

void EventAggregator::EvictUnits() {
  // In place: the states stay where they are (no new pages to fault in, no
  // table rebuilt); a CLOCK hand sweeps them, sparing once each unit used
  // since its last pass.
  const size_t keep = options_.max_cached_units / 2;
  while (cached_units() > keep) {
    if (clock_hand_ >= states_.size()) clock_hand_ = 0;
    const uint32_t index = static_cast<uint32_t>(clock_hand_++);
    UnitState& state = states_[index];
    if (state.free) continue;
    if (state.referenced) {
      state.referenced = false;
      continue;
    }
    RememberStored(state.hash, state.id);
    EraseSlot(state, index);
    key_bytes_live_ -= state.key.size();
    state.free = true;
    state.variant = nullptr;
    state.exposure_ms = 0;
    state.metrics.clear();
    state.held = std::vector<HeldEvent>();
    free_states_.push_back(index);
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
    return last_unit_;  // dirty already: touched since the checkpoint
  }
  BuildUnitKey(event);

  UnitState* unit = nullptr;
  const size_t mask = slots_.size() - 1;
  for (size_t i = static_cast<size_t>(hash) & mask; slots_[i].index != 0; i = (i + 1) & mask) {
    if (slots_[i].hash != hash) continue;
    UnitState& candidate = states_[slots_[i].index - 1];
    if (candidate.key == lookup_key_) {  // equal hashes of different keys: keep probing
      unit = &candidate;
      // In use: touched again after the checkpoint period it was last
      // touched in (a second event in the same period does not count).
      if (!unit->dirty) unit->referenced = true;
      break;
    }
  }
  if (unit == nullptr && !stored_only_.empty()) {
    ASSIGN_OR_RETURN(unit, ReadStoredUnit(lookup_key_, hash));
  }
  if (unit == nullptr) unit = InsertUnit(lookup_key_, hash, next_unit_id_++);
  if (!unit->dirty) {  // every caller changes it
    unit->dirty = true;
    dirty_units_.push_back(unit);
  }
  last_unit_ = unit;
  return unit;
}

absl::StatusOr<EventAggregator::UnitState*> EventAggregator::ReadStoredUnit(std::string_view key,
                                                                            uint64_t hash) {
  auto it = stored_only_.find(hash);
  if (it == stored_only_.end()) return nullptr;
  absl::InlinedVector<uint64_t, 1> ids = {it->second};
  auto [first, last] = stored_collisions_.equal_range(hash);
  for (auto c = first; c != last; ++c) ids.push_back(c->second);
  std::string value;
  UnitRecord record;
  for (uint64_t id : ids) {
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), UnitStateKey(id), &value);
    if (!s.ok()) {
      // Evicted units were checkpointed first: their state must be there.
      return s.IsNotFound() ? absl::DataLossError(absl::StrCat(
                                  "event store: the unit state with id ", id, " is missing"))
                            : FromRocks(s, "read unit state");
    }
    if (!event_format::DecodeUnitRecord(value, &record)) return CorruptUnit(key);
    if (record.key != key.substr(1)) continue;  // another unit with the same hash
    ForgetStored(hash, id);
    ++units_read_back_;
    UnitState* unit = InsertUnit(key, hash, id);
    RETURN_IF_ERROR(FromRecord(record, unit));
    return unit;
  }
  return nullptr;
}

void EventAggregator::RememberStored(uint64_t hash, uint64_t id) {
  auto [it, inserted] = stored_only_.try_emplace(hash, id);
  if (inserted || it->second == id) return;
  auto [first, last] = stored_collisions_.equal_range(hash);
  for (auto c = first; c != last; ++c) {
    if (c->second == id) return;
  }
  stored_collisions_.emplace(hash, id);
}

void EventAggregator::ForgetStored(uint64_t hash, uint64_t id) {
  auto it = stored_only_.find(hash);
  if (it == stored_only_.end()) return;
  auto [first, last] = stored_collisions_.equal_range(hash);
  if (it->second == id) {
    if (first == last) {
      stored_only_.erase(it);
    } else {
      it->second = first->second;
      stored_collisions_.erase(first);
    }
    return;
  }
  for (auto c = first; c != last; ++c) {
    if (c->second == id) {
      stored_collisions_.erase(c);
      return;
    }
  }
}

// ---- aggregation ----

void EventAggregator::ApplyMetric(UnitState* unit, uint32_t metric, int64_t ts, double value,
                                  double denominator) {
  const EventType kind = metrics_[metric].kind;
  const bool outcome = ts >= unit->exposure_ms;
  if (!outcome &&
      (kind == EventType::kRatio || ts < unit->exposure_ms - options_.cuped_lookback_ms)) {
    return;  // before the pre-period, or a ratio's pre-period: counted nowhere
  }
  UnitMetric* m = nullptr;
  for (UnitMetric& candidate : unit->metrics) {
    if (candidate.metric == metric) {
      m = &candidate;
      break;
    }
  }
  if (m == nullptr) {
    m = &unit->metrics.emplace_back();
    m->metric = metric;
  }
  if (unit->variant != nullptr && m->sums == nullptr) m->sums = SumsOf(unit->variant, metric);
  if (outcome) {
    Totals before{m->x, m->den};
    if (kind == EventType::kConversion) {
      m->x = 1;
    } else {
      m->x += value;
      m->den += denominator;
    }
    if (m->sums != nullptr) UpdateContribution(m->sums, kind, before, {m->x, m->den}, m->covariate);
  } else {
    double before = m->covariate;
    m->covariate = kind == EventType::kConversion ? 1 : m->covariate + value;
    if (m->sums != nullptr) UpdateCovariate(m->sums, m->x, before, m->covariate);
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
      AddContribution(m.sums, metrics_[m.metric].kind, {m.x, m.den}, m.covariate);
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

// ---- unit states ----

void EventAggregator::EncodeUnit(const UnitState& unit, std::string* encoded) const {
  event_format::EncodeUnitRecord(unit.key, unit.variant == nullptr ? 0 : unit.variant->name_id + 1,
                                 unit.exposure_ms, unit.metrics, unit.held, encoded);
}

absl::Status EventAggregator::FromRecord(const UnitRecord& record, UnitState* unit) {
  if (record.variant > variant_names_.size()) return CorruptUnit(unit->key);
  unit->exposure_ms = record.exposure_ms;
  for (const event_format::UnitRecordMetric& m : record.metrics) {
    if (m.metric >= metrics_.size()) return CorruptUnit(unit->key);
    unit->metrics.push_back(UnitMetric{m.metric, m.x, m.den, m.covariate, nullptr});
  }
  for (const event_format::UnitRecordHeld& h : record.held) {
    if (h.metric >= metrics_.size()) return CorruptUnit(unit->key);
    unit->held.push_back(HeldEvent{h.metric, h.timestamp_ms, h.value, h.denominator});
  }
  if (record.variant != 0) {
    // The checkpoint that wrote this state counted the unit in its
    // variant's statistics: find them again.
    unit->variant =
        Variant(Experiment(ExperimentOfUnitKey(unit->key)), variant_names_[record.variant - 1]);
    for (UnitMetric& m : unit->metrics) m.sums = SumsOf(unit->variant, m.metric);
  }
  return absl::OkStatus();
}

absl::Status EventAggregator::CorruptUnit(std::string_view unit_key) const {
  std::string name_text(unit_key.substr(1));
  std::replace(name_text.begin(), name_text.end(), '\0', '/');
  return absl::DataLossError(
      absl::StrCat("event store: unit state of \"", name_text, "\" is corrupt"));
}

// Layout 1's unit state records ("u" + experiment + NUL + unit), version 2:
//   u8 version, short string variant ("" before the exposure), i64 exposure_ms,
//   u32 n, n × (u8 kind, short string metric, f64 x, f64 den, f64 covariate),
//   u32 m, m × (u8 kind, short string metric, i64 ts, f64 value, f64 denominator)
absl::Status EventAggregator::DecodeLayout1Unit(std::string_view data, UnitState* unit) {
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
  if (!ok || !r.done()) return CorruptUnit(unit->key);
  if (!variant.empty()) {
    unit->variant = Variant(Experiment(ExperimentOfUnitKey(unit->key)), variant);
    for (UnitMetric& m : unit->metrics) m.sums = SumsOf(unit->variant, m.metric);
  }
  return absl::OkStatus();
}

}  // namespace capstan::experiments
