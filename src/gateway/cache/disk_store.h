// The HTTP cache's optional disk tier: responses written to a directory, one
// file per object (disk_record.h), read back on a memory miss, and found
// again after a restart (the index is rebuilt by scanning the directory).
//
//   auto disk = DiskStore::Open({.dir = "/var/cache/capstan", .max_bytes = 10 << 30});
//   (*disk)->Write(object);                        // queued; the request goes on
//   if (uint64_t seq = disk->Find(key, request)) {
//     auto obj = co_await pool.Run(loop, [&] { return disk->Read(seq, key); });  // blocking read
//   }
//
// What is written: every object the memory tier admits (write-through,
// asynchronous), not only what memory evicts: an object evicted later is
// then already on disk, and the disk holds what was cached before a crash
// (kill -9 loses only the writes still queued). The cost is one write per
// store, not per hit.
//
// Threads: one writer thread does every write, unlink and the start-up
// scan, in queue order; Read blocks and is meant for a WorkerPool thread;
// Find, the purges and stats take the index mutex briefly and never do
// I/O on the caller's thread (the files of a purge are unlinked by the
// writer thread). Writes are queued up to `max_pending_bytes`; past that
// they are dropped and counted, as is a failed write (ENOSPC, EIO): the
// request that stored the object has long been answered.
//
// Eviction: FIFO by write order over the byte budget (the file sizes). On
// disk the hit-path cost of a policy does not matter but its bookkeeping
// would have to survive restarts; what memory keeps hot is already in
// memory, and the disk is the second chance for the rest.
//
// Start-up: Open takes the directory's lock file (one process per
// directory), then the writer thread scans it: each "<seq>.obj" file's head
// and metadata are read (one read of 4 KiB for most objects, not the body),
// a torn or corrupt file is removed, "tmp-*" files (a write cut by a crash)
// are removed, other files are left alone. Until the scan ends Find answers
// nothing (a miss goes to the origin); writes and purges queue behind it.
//
// Thread-safety: every method from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/status.h"
#include "gateway/cache/store.h"

namespace capstan::gateway::cache {

struct DiskStoreOptions {
  std::string dir;  // created if missing
  uint64_t max_bytes = uint64_t{1} << 30;
  size_t max_variants = 16;             // per primary key, as in memory
  size_t max_pending_bytes = 64 << 20;  // queued writes past this are dropped
  // Tests: called before each write; a non-zero errno fails it as the disk would.
  std::function<int()> inject_write_error;
};

struct DiskStats {
  uint64_t bytes = 0;  // file bytes indexed
  uint64_t objects = 0;
  uint64_t writes = 0;        // objects written
  uint64_t write_errors = 0;  // failed writes (ENOSPC, EIO, ...): dropped
  uint64_t dropped = 0;       // writes dropped because the queue was full
  uint64_t corrupt = 0;       // torn or corrupt files found (scan or read): removed
  uint64_t evictions = 0;     // files removed to stay within the budget
  bool ready = false;         // the start-up scan has ended
};

class DiskStore {
 public:
  // Creates the directory if needed, takes its lock and starts the writer
  // thread (which scans the directory first).
  static absl::StatusOr<std::unique_ptr<DiskStore>> Open(DiskStoreOptions options);
  // Finishes the write under way and the queued unlinks (purges), drops the
  // writes not started (counted), then stops the thread.
  ~DiskStore();
  DiskStore(const DiskStore&) = delete;
  DiskStore& operator=(const DiskStore&) = delete;

  // Queues `object` to be written, replacing the variant with the same Vary
  // values. Never waits for I/O.
  void Write(ObjectRef object);
  // The record (its sequence number) of the newest variant of `key` whose
  // Vary values match `request`; 0 when none, or while the scan runs.
  uint64_t Find(const std::string& key, const Fields& request);
  // Blocking: reads record `seq` and checks its checksums and key. A torn
  // or corrupt file is removed and counted; null then, and when the record
  // is gone (evicted or purged since Find). The result's `cc` is left for
  // the caller to derive from its fields.
  std::shared_ptr<StoredResponse> Read(uint64_t seq, const std::string& key);

  // Purges, as MemoryStore's: the index forgets at once (Find misses), the
  // writer thread unlinks the files; queued writes of purged objects are
  // dropped. Each returns how many objects the index held.
  size_t Remove(const std::string& key);
  size_t RemoveTag(const std::string& tag);
  size_t RemoveKeyPrefix(const std::string& prefix);
  size_t Clear();

  // Tests: waits until the scan has ended and the queue is empty.
  bool WaitIdle(std::chrono::milliseconds timeout);
  DiskStats stats() const;
  const std::string& dir() const { return options_.dir; }
  uint64_t max_bytes() const { return options_.max_bytes; }
  // The file of record `seq`.
  std::string PathOf(uint64_t seq) const;

 private:
  // What the index keeps of a record (the rest is in the file).
  struct Entry {
    std::string key;
    std::vector<std::pair<std::string, std::string>> vary;
    std::vector<std::string> tags;
    uint64_t bytes = 0;
  };
  struct Job {
    enum class Kind { kScan, kWrite, kUnlink } kind;
    ObjectRef object;            // kWrite
    size_t pending_bytes = 0;    // kWrite: counted in pending_bytes_
    std::vector<uint64_t> seqs;  // kUnlink
  };
  using Doomed = std::function<bool(const std::string& key, const std::vector<std::string>& tags)>;

  explicit DiskStore(DiskStoreOptions options, int lock_fd);
  void Run();
  void Scan();
  void DoWrite(const ObjectRef& object);
  // Writes the record file; false (errno counted) on failure.
  bool WriteFile(const StoredResponse& object, uint64_t seq, uint64_t* bytes);
  void UnlinkAll(const std::vector<uint64_t>& seqs);
  // REQUIRES: mu_ held. Indexes `seq`, replacing the same variant and
  // evicting past the budget; the files to unlink go to *unlink.
  void IndexLocked(uint64_t seq, Entry entry, std::vector<uint64_t>* unlink);
  void EraseLocked(uint64_t seq);
  size_t Purge(const Doomed& doomed);
  void Enqueue(Job job);

  DiskStoreOptions options_;
  int lock_fd_ = -1;

  mutable std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<Job> queue_;              // guarded by mu_
  size_t pending_bytes_ = 0;           // guarded by mu_
  bool busy_ = false;                  // guarded by mu_: a job is running
  bool stopping_ = false;              // guarded by mu_
  bool ready_ = false;                 // guarded by mu_
  ObjectRef in_flight_;                // guarded by mu_: the write under way
  bool in_flight_purged_ = false;      // guarded by mu_
  std::vector<Doomed> scan_purges_;    // guarded by mu_: purges while scanning
  std::map<uint64_t, Entry> entries_;  // guarded by mu_; by seq = FIFO order
  absl::flat_hash_map<std::string, std::vector<uint64_t>> by_key_;  // newest first
  uint64_t bytes_ = 0;                                              // guarded by mu_
  uint64_t next_seq_ = 1;                                           // the writer thread's

  std::atomic<uint64_t> writes_{0}, write_errors_{0}, dropped_{0}, corrupt_{0}, evictions_{0};
  std::thread thread_;
};

}  // namespace capstan::gateway::cache
