// The backend: RocksDB holding the store's state machine. One column family,
// three key spaces (see docs/store.md, "On-disk layout"):
//
//   'r' main(8, big-endian) sub(8) ['t']   -> mvccpb.KeyValue    revision history
//   'l' lease id(8)                        -> capstan.store.LeaseRecord
//   'm' name                               -> meta (applied index, compaction, identity)
//
// RocksDB's own WAL is off: the replicated log is the write-ahead log, and
// every write batch carries the log index it reflects, so after a crash the
// backend is a consistent prefix of the log and replay resumes right after it.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "store/index.h"

namespace capstan::store {

std::string RevisionKey(Revision rev, bool tombstone);
// The same bytes on the stack, for the write and read paths.
struct RevisionKeyBytes {
  char data[18];
  uint8_t size;
  std::string_view view() const { return {data, size}; }
};
RevisionKeyBytes EncodeRevisionKey(Revision rev, bool tombstone);
// Parses a key made by RevisionKey. False when `key` is not a revision key.
bool ParseRevisionKey(std::string_view key, Revision* rev, bool* tombstone);
std::string LeaseKey(int64_t id);
std::string MetaKey(std::string_view name);

inline constexpr char kMetaAppliedIndex[] = "applied_index";
inline constexpr char kMetaCompactRev[] = "compact_rev";
inline constexpr char kMetaIdentity[] = "identity";
inline constexpr char kMetaAlarms[] = "alarms";
inline constexpr char kMetaRaftConf[] = "raft_conf";
inline constexpr char kMetaJoinMembers[] = "join_members";
// Members are stored under MetaKey(kMetaMemberPrefix + 16 hex digits of the ID).
inline constexpr char kMetaMemberPrefix[] = "member/";

class Backend {
 public:
  struct Options {
    size_t block_cache_bytes = 64 << 20;
  };
  static absl::StatusOr<std::unique_ptr<Backend>> Open(const std::string& path, Options options);
  ~Backend();

  absl::Status Write(rocksdb::WriteBatch* batch);
  // NOT_FOUND when absent.
  absl::StatusOr<std::string> Get(std::string_view key) const;
  std::unique_ptr<rocksdb::Iterator> NewIterator() const;
  // Persists everything written so far (memtables to SST files).
  absl::Status Flush();
  // Physical size of the database files in bytes.
  int64_t SizeBytes() const;
  // SizeBytes as of at most 10 ms ago: asking RocksDB takes its mutex and
  // two property lookups, too much for every write's quota check.
  int64_t RecentSizeBytes() const;
  // Bytes of live data (an estimate), for Status.dbSizeInUse.
  int64_t SizeInUseBytes() const;
  // Rewrites the files to drop deleted data (Maintenance.Defragment).
  absl::Status CompactAll();
  // A consistent copy of the database in `dir` (hard links where possible).
  absl::Status Checkpoint(const std::string& dir);
  // Replaces the whole content with that of the checkpoint in `dir` (a
  // snapshot from the leader), keeping the keys in `keep` (this member's own
  // identity). One write batch, then a flush: readers and a crash see the old
  // content or the new, never a mix. The batch holds the whole snapshot in
  // memory.
  absl::Status ReplaceWith(const std::string& dir, const std::vector<std::string>& keep);
  const std::string& path() const { return path_; }

 private:
  Backend(std::string path, std::unique_ptr<rocksdb::DB> db);
  std::string path_;
  std::unique_ptr<rocksdb::DB> db_;
  mutable std::atomic<int64_t> recent_size_{0};
  mutable std::atomic<int64_t> recent_size_until_ns_{0};  // steady clock
  rocksdb::WriteOptions write_options_;
};

}  // namespace capstan::store
