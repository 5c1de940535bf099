#include "experiments/event_store.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/status.h"
#include "experiments/event_log.h"
#include "experiments/event_store_aggregator.h"
#include "experiments/event_store_dedup.h"
#include "experiments/event_store_format.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace capstan::experiments {

using event_format::AppendBigEndian;
using event_format::FromRocks;
using event_format::IsLogKey;
using event_format::kCheckpointKey;
using event_format::kDictionaryPrefix;
using event_format::kLogPrefix;
using event_format::kLogRecordEventFixedBytes;
using event_format::kLogRecordHeader;
using event_format::kLogRecordVersion;
using event_format::kOldLogPrefix;
using event_format::kRebuildingKey;
using event_format::kSumsPrefix;
using event_format::kUnitPrefix;
using event_format::kUnitStatePrefix;
using event_format::LogRecordCount;
using event_format::ReadBigEndian;

namespace {

// The log's segments, under the store's directory (beside RocksDB's files).
constexpr char kLogDirectory[] = "events-log";
// Where an older store's log records ("g" keys in RocksDB) are copied before
// the copy is renamed to kLogDirectory.
constexpr char kMigratingLogDirectory[] = "events-log.migrating";

// Sums waits for the aggregator at most this long (it is at most
// max_unaggregated_events behind, well under a second of work).
constexpr auto kAggregationWaitLimit = std::chrono::seconds(30);

// Log record buffers the aggregator hands back to the writer: the groups in
// flight between the two are few (the writer waits on fsync).
constexpr size_t kSpareRecords = 4;

}  // namespace

struct EventStore::Pending {
  std::span<const EventRef> events;  // the caller's: alive until `done` is set
  std::promise<absl::StatusOr<AppendResult>> done;
};

// A group as logged: its log record (framed, as EventLog::Append took it),
// whose events have sequences first_sequence.. in order. The aggregator reads
// the events out of it: the record is the only copy the store makes of them.
struct EventStore::LoggedGroup {
  uint64_t first_sequence = 0;
  std::string record;
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
  if (options.segment_bytes < EventLog::kSegmentHeaderBytes + EventLog::kFrameBytes ||
      options.retention_check_interval <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("event store: segment_bytes must be at least ",
                     EventLog::kSegmentHeaderBytes + EventLog::kFrameBytes,
                     " and retention_check_interval positive"));
  }
  std::unique_ptr<EventStore> store(new EventStore());
  store->options_ = std::move(options);
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  // The first two levels take every flush and most compactions and hold the
  // newest, most rewritten data: uncompressed there (LZ4 was ~6% of the
  // service's CPU under ingestion), LZ4 below, where data settles.
  db_options.compression = rocksdb::kLZ4Compression;
  db_options.compression_per_level = {rocksdb::kNoCompression, rocksdb::kNoCompression};
  db_options.compression_per_level.resize(db_options.num_levels, rocksdb::kLZ4Compression);
  rocksdb::BlockBasedTableOptions table;
  // Debian's RocksDB computes CRC32C in software; XXH3 block checksums cost
  // a fraction (table files keep the type they were written with, so older
  // files still read). The WAL keeps its CRC32C.
  table.checksum = rocksdb::kXXH3;
  // Unit states read back after the cache was trimmed: mostly misses.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Evicted units read back are random point reads over files the page
  // cache holds: mapped, a read is a memory access, where pread cost a
  // system call, a copy and the kernel's readahead of pages nobody wants.
  db_options.allow_mmap_reads = true;
  db_options.memtable_whole_key_filtering = true;
  db_options.memtable_prefix_bloom_size_ratio = 0.1;
  rocksdb::DB* raw = nullptr;
  RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(db_options, store->options_.directory, &raw), "open"));
  store->db_.reset(raw);
  store->dedup_ = std::make_unique<DedupWindow>(store->options_.dedup_window_keys);
  store->aggregator_ = std::make_unique<EventAggregator>(store->db_.get(), store->options_);
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
  it.reset();

  RETURN_IF_ERROR(MigrateRocksLog());
  EventLogOptions log_options;
  log_options.sync = options_.sync;
  log_options.segment_bytes = options_.segment_bytes;
  ASSIGN_OR_RETURN(
      log_, EventLog::Open(absl::StrCat(options_.directory, "/", kLogDirectory), log_options));
  next_sequence_ = log_->next_sequence();
  const uint64_t log_start = log_->first_sequence();

  // The dedup index: the keys of the last dedup_window_keys events.
  // Retention keeps them (it removes only segments older than the window),
  // unless the window was made larger since: then it holds what is left.
  uint64_t window_start =
      next_sequence_ > options_.dedup_window_keys ? next_sequence_ - options_.dedup_window_keys : 0;
  if (window_start < log_start) {
    if (window_start > 0 || log_start > 0) {
      CAPSTAN_LOG(warn,
                  "events: the dedup window is larger than what retention kept of the log; keys "
                  "of removed events are not remembered",
                  "window_keys", options_.dedup_window_keys, "log_start", log_start);
    }
    window_start = log_start;
  }
  std::vector<EventRef> events;  // of one record, reused
  RETURN_IF_ERROR(
      log_->Read(window_start, [&](uint64_t first, std::string_view record) -> absl::Status {
        RETURN_IF_ERROR(DecodeLogRecordRefs(record, &events));
        for (size_t i = first < window_start ? window_start - first : 0; i < events.size(); ++i) {
          dedup_->Insert(DedupWindow::FingerprintOf(events[i].key));
        }
        return absl::OkStatus();
      }));

  // The aggregation: the checkpoint, or nothing when rebuilding.
  rocksdb::WriteOptions sync_write;
  sync_write.sync = true;
  std::string marker;
  bool rebuild =
      options_.rebuild_on_open || db_->Get(rocksdb::ReadOptions(), kRebuildingKey, &marker).ok();
  if (rebuild && log_start > 0) {
    // The removed segments' events exist only in the checkpoint: a rebuild
    // from what is left would silently drop them from every result.
    return absl::FailedPreconditionError(
        absl::StrCat("event store: cannot rebuild the aggregation from the log in ",
                     options_.directory, "/", kLogDirectory, ": retention removed events 0..",
                     log_start - 1, " (the first retained event is ", log_start,
                     "); open without rebuild_on_open to recover from the last checkpoint"));
  }
  if (rebuild) {
    CAPSTAN_LOG(info, "events: rebuilding the aggregation from the log", "directory",
                options_.directory);
    // One atomic batch: a crash after it replays from the start, and the
    // replay's own checkpoints are consistent like any other.
    rocksdb::WriteBatch clear;
    for (char prefix : {kUnitPrefix, kUnitStatePrefix, kDictionaryPrefix, kSumsPrefix}) {
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
  if (from < log_start) {
    // Retention removes only what a durable checkpoint covers: the
    // checkpoint was lost or replaced (RocksDB's files restored from an
    // older copy?).
    return absl::DataLossError(absl::StrCat("event store: the checkpoint is at event ", from,
                                            " but the log in ", options_.directory, "/",
                                            kLogDirectory, " starts at event ", log_start,
                                            " (retention removed the events before it)"));
  }
  uint64_t replayed = 0;
  RETURN_IF_ERROR(log_->Read(from, [&](uint64_t first, std::string_view record) -> absl::Status {
    if (first < from) {
      return absl::DataLossError(absl::StrCat("event store: the checkpoint at event ", from,
                                              " falls inside the log record of events ", first,
                                              ".."));
    }
    RETURN_IF_ERROR(DecodeLogRecordRefs(record, &events));
    RETURN_IF_ERROR(aggregator_->ApplyGroup(first, events));
    replayed += events.size();
    if (aggregator_->CheckpointDue()) RETURN_IF_ERROR(aggregator_->Checkpoint());
    return absl::OkStatus();
  }));
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

// Stores written before the log had files of its own kept it in RocksDB as
// "g" + first sequence records. They are copied, in order, into a log under
// a temporary name, which is synced and renamed into place; then the "g"
// records are deleted. A crash before the rename redoes the copy; one after
// it only the deletion.
absl::Status EventStore::MigrateRocksLog() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->Seek(std::string(1, kLogPrefix));
  const bool has_records = it->Valid() && IsLogKey(it->key().ToStringView());
  RETURN_IF_ERROR(FromRocks(it->status(), "scan the log"));
  const std::string target = absl::StrCat(options_.directory, "/", kLogDirectory);
  const std::string migrating = absl::StrCat(options_.directory, "/", kMigratingLogDirectory);
  std::error_code error;
  std::filesystem::remove_all(migrating, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("event store: remove ", migrating, ": ", error.message()));
  }
  if (!has_records) return absl::OkStatus();
  if (!std::filesystem::exists(target)) {
    CAPSTAN_LOG(info, "events: moving the log out of RocksDB into its own files", "directory",
                options_.directory);
    EventLogOptions log_options;
    log_options.sync = options_.sync;
    ASSIGN_OR_RETURN(std::unique_ptr<EventLog> log, EventLog::Open(migrating, log_options));
    std::string framed;
    for (; it->Valid() && IsLogKey(it->key().ToStringView()); it->Next()) {
      const uint64_t first = ReadBigEndian(it->key().ToStringView().substr(1));
      const std::string_view record = it->value().ToStringView();
      if (first != log->next_sequence() || LogRecordCount(record) == 0) {
        return absl::DataLossError(absl::StrCat("event store: the log record at event ", first,
                                                " does not follow the one before (",
                                                log->next_sequence(), ")"));
      }
      framed.assign(EventLog::kFrameBytes, '\0');
      framed.append(record);
      RETURN_IF_ERROR(log->Append(&framed, LogRecordCount(record)));
    }
    RETURN_IF_ERROR(FromRocks(it->status(), "scan the log"));
    log.reset();
    std::filesystem::rename(migrating, target, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("event store: rename ", migrating, ": ", error.message()));
    }
    int fd = ::open(options_.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
      if (fd >= 0) ::close(fd);
      return absl::InternalError(absl::StrCat("event store: fsync ", options_.directory));
    }
    ::close(fd);
  }
  it.reset();
  rocksdb::WriteOptions sync_write;
  sync_write.sync = true;
  return FromRocks(
      db_->DeleteRange(sync_write, db_->DefaultColumnFamily(), std::string(1, kLogPrefix),
                       std::string(1, static_cast<char>(kLogPrefix + 1))),
      "delete the log records moved out of RocksDB");
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

absl::StatusOr<AppendResult> EventStore::Append(const std::vector<Event>& events) {
  return Append(RefsOf(events));
}

absl::StatusOr<AppendResult> EventStore::Append(std::span<const EventRef> events) {
  if (events.empty()) return AppendResult{};
  auto pending = std::make_unique<Pending>();
  std::future<absl::StatusOr<AppendResult>> done = pending->done.get_future();
  size_t n = events.size();
  pending->events = events;
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
    RETURN_IF_ERROR(Admit());
    queued_events_ += n;
    queue_.push_back(std::move(pending));
  }
  queue_cv_.notify_one();
  return done.get();
}

void EventStore::WriterLoop() {
  pthread_setname_np(pthread_self(), "events-writer");
  std::vector<uint64_t> fingerprints;  // of the group's keys, reused
  std::vector<uint8_t> fresh;          // whether each key was new
  std::string record;  // the group's framed log record (a buffer the aggregator gave back)
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
    record.assign(EventLog::kFrameBytes + kLogRecordHeader, '\0');
    record[EventLog::kFrameBytes] = static_cast<char>(kLogRecordVersion);

    std::vector<AppendResult> results(taken.size());
    // Each key hashed once; the dedup table visited in one prefetching pass.
    fingerprints.clear();
    size_t record_bytes = record.size();  // at most: duplicates are left out
    for (const auto& pending : taken) {
      for (const EventRef& event : pending->events) {
        fingerprints.push_back(DedupWindow::FingerprintOf(event.key));
        record_bytes += kLogRecordEventFixedBytes + event.key.size() + event.experiment.size() +
                        event.unit.size() + event.variant.size() + event.metric.size();
      }
    }
    record.reserve(record_bytes);
    dedup_->InsertAll(fingerprints.data(), fingerprints.size(), &fresh);
    size_t position = 0;
    size_t accepted = 0;
    for (size_t i = 0; i < taken.size(); ++i) {
      size_t kept = 0;
      for (const EventRef& event : taken[i]->events) {
        if (!fresh[position++]) {
          ++results[i].duplicates;
          continue;
        }
        AppendLogRecordEvent(event, &record);
        ++kept;
      }
      results[i].accepted = kept;
      accepted += kept;
    }
    absl::Status status;
    if (accepted > 0) {
      uint32_t count = static_cast<uint32_t>(accepted);
      std::memcpy(record.data() + EventLog::kFrameBytes + 1, &count, 4);
      status = log_->Append(&record, count);
    }
    if (status.ok()) {
      next_sequence_ += accepted;
      published_next_sequence_.store(next_sequence_);
      group_commits_.fetch_add(1);
      for (const AppendResult& r : results) {
        accepted_.fetch_add(r.accepted);
        duplicates_.fetch_add(r.duplicates);
      }
      if (accepted > 0) {
        group->record = std::move(record);
        {
          std::lock_guard aggregate_lock(aggregate_mutex_);
          logged_.push_back(std::move(group));
          // The next group's buffer: one the aggregator is done with, whose
          // pages are mapped already (a fresh one of a few MB costs page faults).
          if (!spare_records_.empty()) {
            record = std::move(spare_records_.back());
            spare_records_.pop_back();
          }
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
  std::vector<EventRef> events;  // the group's, in log order (into its record), reused
  // Retention runs after each checkpoint and at least every
  // retention_check_interval (for time-based removal while idle).
  RunRetention();
  auto last_retention = std::chrono::steady_clock::now();
  auto retention_due = [&] {
    return std::chrono::steady_clock::now() - last_retention >= options_.retention_check_interval;
  };
  std::unique_lock lock(aggregate_mutex_);
  while (true) {
    if (!aggregate_cv_.wait_for(lock, options_.retention_check_interval,
                                [&] { return writer_done_ || !logged_.empty(); })) {
      lock.unlock();
      RunRetention();
      last_retention = std::chrono::steady_clock::now();
      lock.lock();
      continue;
    }
    if (logged_.empty()) break;  // the writer is done and everything is aggregated
    std::unique_ptr<LoggedGroup> group = std::move(logged_.front());
    logged_.pop_front();
    lock.unlock();

    if (options_.before_group_aggregate) options_.before_group_aggregate();
    absl::Status status =
        DecodeLogRecordRefs(std::string_view(group->record).substr(EventLog::kFrameBytes), &events);
    if (status.ok()) {
      std::unique_lock sums_lock(sums_mutex_);
      status = aggregator_->ApplyGroup(group->first_sequence, events);
    }
    bool checkpointed = false;
    if (status.ok() && aggregator_->CheckpointDue()) {
      status = aggregator_->Checkpoint();
      if (status.ok()) {
        checkpoints_.fetch_add(1);
        checkpoint_sequence_.store(aggregator_->next_sequence());
        checkpointed = true;
      }
    }
    if (status.ok() && (checkpointed || retention_due())) {
      RunRetention();
      last_retention = std::chrono::steady_clock::now();
    }
    conflicting_exposures_.fetch_add(aggregator_->TakeConflictingExposures());
    held_events_dropped_.fetch_add(aggregator_->TakeHeldEventsDropped());
    cached_units_.store(aggregator_->cached_units());
    units_read_back_.store(aggregator_->units_read_back());
    lock.lock();
    if (spare_records_.size() < kSpareRecords) spare_records_.push_back(std::move(group->record));
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

absl::Status EventStore::Admit() const {
  uint64_t behind = published_next_sequence_.load() - aggregated_sequence_.load();
  if (behind >= options_.max_unaggregated_events) {
    return absl::ResourceExhaustedError(
        absl::StrCat("event aggregation is behind: ", behind, " events not yet aggregated"));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> EventStore::EnforceRetention() {
  std::lock_guard lock(retention_mutex_);
  LogRetentionLimits limits;
  // Covered: in the durable checkpoint, and outside the dedup window (the
  // window is rebuilt from the log on open, so its events must stay).
  const uint64_t next = published_next_sequence_.load();
  const uint64_t window_start =
      next > options_.dedup_window_keys ? next - options_.dedup_window_keys : 0;
  limits.removable_before = std::min(checkpoint_sequence_.load(), window_start);
  if (options_.retention_ms >= 0) limits.max_age = std::chrono::milliseconds(options_.retention_ms);
  limits.max_bytes = options_.retention_bytes;
  limits.now = options_.wall_clock ? options_.wall_clock() : std::chrono::system_clock::now();
  ASSIGN_OR_RETURN(std::vector<LogSegmentInfo> segments, log_->SegmentInfos());
  const size_t count = SegmentsToRemove(segments, limits);
  if (count == 0) return 0;
  RETURN_IF_ERROR(log_->RemoveOldestSegments(count));
  log_segments_removed_.fetch_add(count);
  CAPSTAN_LOG(info, "events: retention removed log segments", "segments", count,
              "first_retained_event", log_->first_sequence(), "log_bytes", log_->retained_bytes());
  return count;
}

void EventStore::RunRetention() {
  absl::StatusOr<size_t> removed = EnforceRetention();
  if (!removed.ok()) {
    CAPSTAN_LOG(warn, "events: log retention failed (retried later)", "error",
                removed.status().ToString());
  }
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
  stats.log_first_sequence = log_->first_sequence();
  stats.log_segments = log_->segment_count();
  stats.log_bytes = log_->retained_bytes();
  stats.log_segments_removed = log_segments_removed_.load();
  stats.units_read_back = units_read_back_.load();
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

}  // namespace capstan::experiments
