// Multi-version key-value storage with etcd's revision semantics.
//
// Every write request (a Put, a DeleteRange that deletes something, a Txn
// that writes) gets one main revision; the changes inside it get sub
// revisions. Each change is stored in the backend under its revision, and the
// in-memory TreeIndex maps keys to revisions. Reads at any revision back to
// the compaction point are served from the index plus one backend read per key.
//
// Thread-safety: reads run concurrently from any thread. Writes come from one
// thread (the applier) through WriteTxn, which holds the write lock from
// BeginWrite to Commit, so readers never see half a txn.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "etcd/mvccpb/kv.pb.h"
#include "store/backend.h"
#include "store/index.h"

namespace capstan::store {

struct RangeOptions {
  int64_t limit = 0;  // 0: no limit
  int64_t rev = 0;    // <= 0: newest
  bool count_only = false;
};

struct RangeResult {
  std::vector<mvccpb::KeyValue> kvs;
  int64_t count = 0;  // keys in range at rev, regardless of limit
  int64_t rev = 0;    // the store's newest revision when served
};

class Mvcc {
 public:
  explicit Mvcc(Backend* backend);
  ~Mvcc();

  // Rebuilds the index from the backend; finishes an interrupted compaction.
  // Calls on_lease(key, lease) for every live key that has a lease.
  absl::Status Restore(const std::function<void(const std::string&, int64_t)>& on_lease);

  int64_t current_rev() const { return current_rev_.load(std::memory_order_acquire); }
  int64_t compact_rev() const { return compact_rev_.load(std::memory_order_acquire); }
  size_t key_count() const;

  absl::StatusOr<RangeResult> Range(std::string_view key, std::string_view end,
                                    const RangeOptions& opts) const;

  class WriteTxn {
   public:
    ~WriteTxn();
    // Reads the newest state including this txn's own writes.
    absl::StatusOr<RangeResult> Range(std::string_view key, std::string_view end,
                                      const RangeOptions& opts);
    // The revision a change made now gets (begin revision + 1).
    int64_t write_rev() const { return begin_rev_ + 1; }
    // The store revision as seen inside the txn.
    int64_t rev() const { return events_.empty() ? begin_rev_ : begin_rev_ + 1; }
    void Put(std::string_view key, std::string_view value, int64_t lease);
    // Deletes the live keys in [key, end), in key order; returns their names.
    // When `prev` is set it receives the deleted key-values as they were.
    std::vector<std::string> DeleteRange(std::string_view key, std::string_view end,
                                         std::vector<mvccpb::KeyValue>* prev);
    // Changes made so far, as watch events (prev_kv unset).
    const std::vector<mvccpb::Event>& events() const { return events_; }
    // For writes that must commit atomically with the txn (meta, leases).
    rocksdb::WriteBatch* batch() { return &batch_; }
    // Writes everything, publishes the new revision, releases the lock. On a
    // backend failure the index changes are undone and nothing is published.
    absl::Status Commit();

   private:
    friend class Mvcc;
    explicit WriteTxn(Mvcc* mvcc);
    void Rollback();
    Mvcc* mvcc_;
    int64_t begin_rev_;
    bool committed_ = false;
    // Change i has revision {write_rev(), i}; a put's event holds the
    // key-value reads inside the txn see before it is written.
    std::vector<mvccpb::Event> events_;
    rocksdb::WriteBatch batch_{1024};
    std::string record_;  // reused for each record's encoding
  };
  // Takes the write lock. A txn destroyed without Commit is undone.
  // REQUIRES: called from the applier thread only.
  std::unique_ptr<WriteTxn> BeginWrite();

  // Compacts history up to `rev` (etcd's Compact): the index at once; the
  // returned records are deleted by ScheduleDeletion. `batch` receives the
  // compaction meta so it commits with the log index.
  // Errors: ErrCompacted (rev <= compacted), ErrFutureRev (rev > current).
  absl::StatusOr<std::vector<DroppedRevision>> Compact(int64_t rev, rocksdb::WriteBatch* batch);
  // Deletes dropped records in the background; `done` (may be null) runs after.
  void ScheduleDeletion(std::vector<DroppedRevision> dropped, std::function<void()> done);

  // Events with revisions in [from, to], in revision order, stopping after
  // roughly max_bytes. *next is the first revision not returned.
  absl::Status History(int64_t from, int64_t to, size_t max_bytes, std::vector<mvccpb::Event>* out,
                       int64_t* next) const;

  // Hash of the history up to rev (Maintenance.HashKV).
  absl::StatusOr<uint32_t> HashKV(int64_t rev, int64_t* compact_rev) const;

 private:
  absl::StatusOr<RangeResult> RangeAt(std::string_view key, std::string_view end,
                                      const RangeOptions& opts, int64_t cur,
                                      const WriteTxn* txn) const;
  absl::Status ReadKv(Revision rev, mvccpb::KeyValue* kv) const;
  void CompactorLoop();

  Backend* backend_;
  mutable Mutex mu_;
  TreeIndex index_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> current_rev_{1};
  std::atomic<int64_t> compact_rev_{-1};  // etcd starts at -1: nothing compacted

  struct CompactionJob {
    std::vector<DroppedRevision> dropped;
    std::function<void()> done;
  };
  std::mutex compactor_mu_;
  std::condition_variable compactor_cv_;
  std::deque<CompactionJob> compactor_jobs_;
  bool compactor_stop_ = false;
  std::thread compactor_;
};

}  // namespace capstan::store
