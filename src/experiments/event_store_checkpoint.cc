// EventAggregator's side on disk (event_store_aggregator.h has the design):
// Load and the layout-1 rewrite, the checkpoint's table files, evicted
// units read back, and the unit state records' conversion to and from the
// cache's structures.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/status.h"
#include "experiments/event_store_aggregator.h"
#include "experiments/event_store_format.h"
#include "rocksdb/db.h"
#include "rocksdb/sst_file_writer.h"

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

// How many events ahead ReadBackGroup prefetches the stored units' map.
constexpr size_t kReadBackPrefetchDistance = 8;

std::string_view ExperimentOfUnitKey(std::string_view key) {
  size_t nul = key.find('\0', 1);
  return key.substr(1, nul == std::string_view::npos ? std::string_view::npos : nul - 1);
}

}  // namespace

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
      InsertStored(hash, id);  // too many to hold: read it when needed
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
      InsertStored(hash, id);
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
  // New units became dirty as they were created, so they come in id order:
  // only the changed ones need sorting (a sort of millions was ~3% of a
  // long run's aggregation).
  std::vector<UnitState*> changed;
  std::vector<UnitState*> added;
  for (UnitState* unit : dirty_units_) {
    (unit->id < unit_id_on_disk_ ? changed : added).push_back(unit);
  }
  auto by_id = [](const UnitState* a, const UnitState* b) { return a->id < b->id; };
  std::sort(changed.begin(), changed.end(), by_id);
  if (!std::is_sorted(added.begin(), added.end(), by_id)) {
    std::sort(added.begin(), added.end(), by_id);
  }
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

absl::Status EventAggregator::ReadBackGroup(std::span<const EventRef> events) {
  // Which events' units may be stored ones: a stored slot with their hash
  // (a new unit's hash rarely matches one, so it costs no read), and no
  // cached unit with their key.
  read_back_wanted_.clear();
  const size_t mask = slots_.size() - 1;
  for (size_t i = 0; i < events.size(); ++i) {
    if (i + kReadBackPrefetchDistance < events.size()) {
      __builtin_prefetch(
          &slots_[static_cast<size_t>(hashes_[i + kReadBackPrefetchDistance]) & mask]);
    }
    // A unit's events often come together: it was looked up just before.
    if (i > 0 && hashes_[i] == hashes_[i - 1] && events[i].unit == events[i - 1].unit &&
        events[i].experiment == events[i - 1].experiment) {
      continue;
    }
    const uint64_t hash = hashes_[i];
    const size_t first_candidate = read_back_wanted_.size();
    for (size_t slot = static_cast<size_t>(hash) & mask; slots_[slot].ref != 0;
         slot = (slot + 1) & mask) {
      if (slots_[slot].hash != hash) continue;
      const uint64_t ref = slots_[slot].ref;
      if ((ref & kStoredRef) != 0) {
        read_back_wanted_.push_back({i, ref & ~kStoredRef, slot});
      } else if (states_[ref - 1].key == BuildUnitKey(events[i])) {
        // Cached: the stored slots with its hash are other units'.
        read_back_wanted_.resize(first_candidate);
        break;
      }
    }
  }
  if (read_back_wanted_.empty()) return absl::OkStatus();
  // One MultiGet of the distinct ids in key order: RocksDB walks each
  // table file once for the whole batch instead of once per unit.
  read_back_ids_.clear();
  for (const ReadBackCandidate& c : read_back_wanted_) read_back_ids_.push_back(c.id);
  std::sort(read_back_ids_.begin(), read_back_ids_.end());
  read_back_ids_.erase(std::unique(read_back_ids_.begin(), read_back_ids_.end()),
                       read_back_ids_.end());
  const size_t n = read_back_ids_.size();
  read_back_keys_.resize(n);
  std::vector<rocksdb::Slice> keys(n);
  std::vector<rocksdb::PinnableSlice> values(n);
  std::vector<rocksdb::Status> statuses(n);
  for (size_t k = 0; k < n; ++k) {
    read_back_keys_[k] = UnitStateKey(read_back_ids_[k]);
    keys[k] = read_back_keys_[k];
  }
  rocksdb::ReadOptions read_options;
  // Each state is read once and then lives in the unit cache: its block in
  // RocksDB's block cache would only be a copy that pushes others out
  // (the table files are mmapped, so an uncompressed block is read in place).
  read_options.fill_cache = false;
  db_->MultiGet(read_options, db_->DefaultColumnFamily(), n, keys.data(), values.data(),
                statuses.data(), /*sorted_input=*/true);
  std::vector<UnitRecord> records(n);
  std::vector<uint8_t> loaded(n, 0);
  for (size_t k = 0; k < n; ++k) {
    if (!statuses[k].ok()) {
      // Evicted units were checkpointed first: their state must be there.
      return statuses[k].IsNotFound()
                 ? absl::DataLossError(absl::StrCat("event store: the unit state with id ",
                                                    read_back_ids_[k], " is missing"))
                 : FromRocks(statuses[k], "read unit states");
    }
    if (!event_format::DecodeUnitRecord(values[k].ToStringView(), &records[k])) {
      return absl::DataLossError(
          absl::StrCat("event store: the unit state with id ", read_back_ids_[k], " is corrupt"));
    }
  }
  // In event order, each unit whose stored key is the event's: into the
  // cache (once); a stored unit that only shares a hash stays where it is.
  for (const ReadBackCandidate& c : read_back_wanted_) {
    const size_t k =
        static_cast<size_t>(std::lower_bound(read_back_ids_.begin(), read_back_ids_.end(), c.id) -
                            read_back_ids_.begin());
    if (loaded[k]) continue;
    const std::string_view key = BuildUnitKey(events[c.event]);
    if (records[k].key != key.substr(1)) continue;  // another unit with the same hash
    loaded[k] = 1;
    ++units_read_back_;
    // Its stored slot becomes its cached one, where it is (nothing in
    // between moves slots: the count of units does not change).
    RETURN_IF_ERROR(FromRecord(records[k], CacheAt(c.slot, key, hashes_[c.event], c.id)));
  }
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
