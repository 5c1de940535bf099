#include "store/backend.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "rocksdb/cache.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"

namespace capstan::store {
namespace {

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsNotFound())
    return absl::NotFoundError(absl::StrCat(std::string(what), ": ", s.ToString()));
  if (s.IsNoSpace())
    return absl::ResourceExhaustedError(absl::StrCat(std::string(what), ": ", s.ToString()));
  if (s.IsCorruption())
    return absl::DataLossError(absl::StrCat(std::string(what), ": ", s.ToString()));
  return absl::InternalError(absl::StrCat(std::string(what), ": ", s.ToString()));
}

}  // namespace

RevisionKeyBytes EncodeRevisionKey(Revision rev, bool tombstone) {
  RevisionKeyBytes k;
  k.data[0] = 'r';
  EncodeFixed64BE(k.data + 1, static_cast<uint64_t>(rev.main));
  EncodeFixed64BE(k.data + 9, static_cast<uint64_t>(rev.sub));
  k.data[17] = 't';
  k.size = tombstone ? 18 : 17;
  return k;
}

std::string RevisionKey(Revision rev, bool tombstone) {
  return std::string(EncodeRevisionKey(rev, tombstone).view());
}

bool ParseRevisionKey(std::string_view key, Revision* rev, bool* tombstone) {
  if ((key.size() != 17 && key.size() != 18) || key[0] != 'r') return false;
  if (key.size() == 18 && key[17] != 't') return false;
  rev->main = static_cast<int64_t>(DecodeFixed64BE(key.data() + 1));
  rev->sub = static_cast<int64_t>(DecodeFixed64BE(key.data() + 9));
  *tombstone = key.size() == 18;
  return true;
}

std::string LeaseKey(int64_t id) {
  std::string k = "l";
  PutFixed64BE(&k, static_cast<uint64_t>(id));
  return k;
}

std::string MetaKey(std::string_view name) { return absl::StrCat("m", std::string(name)); }

Backend::Backend(std::string path, std::unique_ptr<rocksdb::DB> db)
    : path_(std::move(path)), db_(std::move(db)) {
  write_options_.disableWAL = true;
}

Backend::~Backend() {
  if (db_) {
    // The log replays what is lost, but a flush makes the next start quick.
    db_->Flush(rocksdb::FlushOptions());
    db_->Close();
  }
}

absl::StatusOr<std::unique_ptr<Backend>> Backend::Open(const std::string& path, Options options) {
  rocksdb::Options opts;
  opts.create_if_missing = true;
  opts.max_background_jobs = 2;
  opts.compression = rocksdb::kLZ4Compression;
  opts.bottommost_compression = rocksdb::kZSTD;
  opts.avoid_flush_during_shutdown = false;
  opts.max_open_files = 512;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  opts.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(opts, path, &raw);
  if (!s.ok()) return FromRocks(s, absl::StrCat("open backend ", path));
  return std::unique_ptr<Backend>(new Backend(path, std::unique_ptr<rocksdb::DB>(raw)));
}

absl::Status Backend::Write(rocksdb::WriteBatch* batch) {
  return FromRocks(db_->Write(write_options_, batch), "backend write");
}

absl::StatusOr<std::string> Backend::Get(std::string_view key) const {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), &value);
  if (!s.ok()) return FromRocks(s, "backend get");
  return value;
}

std::unique_ptr<rocksdb::Iterator> Backend::NewIterator() const {
  return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(rocksdb::ReadOptions()));
}

absl::Status Backend::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocks(db_->Flush(fo), "backend flush");
}

int64_t Backend::SizeBytes() const {
  uint64_t sst = 0, mem = 0;
  db_->GetIntProperty("rocksdb.total-sst-files-size", &sst);
  db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &mem);
  return static_cast<int64_t>(sst + mem);
}

int64_t Backend::RecentSizeBytes() const {
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
  if (now < recent_size_until_ns_.load(std::memory_order_acquire)) {
    return recent_size_.load(std::memory_order_relaxed);
  }
  int64_t size = SizeBytes();
  recent_size_.store(size, std::memory_order_relaxed);
  recent_size_until_ns_.store(now + 10'000'000, std::memory_order_release);
  return size;
}

int64_t Backend::SizeInUseBytes() const {
  uint64_t live = 0, mem = 0;
  db_->GetIntProperty("rocksdb.estimate-live-data-size", &live);
  db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &mem);
  return static_cast<int64_t>(live + mem);
}

absl::Status Backend::CompactAll() {
  RETURN_IF_ERROR(Flush());
  rocksdb::CompactRangeOptions cro;
  cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  return FromRocks(db_->CompactRange(cro, nullptr, nullptr), "backend compact");
}

absl::Status Backend::Checkpoint(const std::string& dir) {
  rocksdb::Checkpoint* cp = nullptr;
  RETURN_IF_ERROR(FromRocks(rocksdb::Checkpoint::Create(db_.get(), &cp), "checkpoint"));
  std::unique_ptr<rocksdb::Checkpoint> owned(cp);
  // Flush first so the checkpoint holds everything applied (our RocksDB WAL is off).
  return FromRocks(owned->CreateCheckpoint(dir, /*log_size_for_flush=*/0), "checkpoint create");
}

absl::Status Backend::ReplaceWith(const std::string& dir, const std::vector<std::string>& keep) {
  rocksdb::Options opts;
  rocksdb::DB* raw = nullptr;
  RETURN_IF_ERROR(FromRocks(rocksdb::DB::OpenForReadOnly(opts, dir, &raw),
                            absl::StrCat("open received snapshot ", dir)));
  std::unique_ptr<rocksdb::DB> src(raw);
  rocksdb::WriteBatch batch;
  // Every key space ('l', 'm', 'r') sorts below 0xff.
  batch.DeleteRange(db_->DefaultColumnFamily(), rocksdb::Slice("", 0), "\xff");
  std::unique_ptr<rocksdb::Iterator> it(src->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (std::find(keep.begin(), keep.end(), it->key().ToStringView()) != keep.end()) continue;
    batch.Put(it->key(), it->value());
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "read received snapshot"));
  for (const std::string& k : keep) {
    auto v = Get(k);
    if (v.ok()) batch.Put(k, *v);
  }
  RETURN_IF_ERROR(Write(&batch));
  return Flush();
}

}  // namespace capstan::store
