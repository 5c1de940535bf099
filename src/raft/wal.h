// The write-ahead log: Raft's durable state in segment files, each record
// protected by a CRC-32C. It holds the log entries, the hard state (term,
// vote, commit) and snapshot markers; the disk format is in docs/wal.md.
//
// Guarantees:
//  - What was appended is durable once Sync() has returned (one fdatasync
//    covers every record appended since the last one: group commit is the
//    caller batching appends before one Sync).
//  - Appending an entry at an index the log already holds replaces that
//    entry and everything after it (a follower's conflicting suffix). On disk
//    this is just a later record with a lower index; Open() resolves it.
//  - Open() repairs a torn tail (a record cut short by a crash, followed by
//    nothing but zeros or end of file) by truncating it, and refuses to start on
//    damage anywhere else, naming the file and byte offset.
//  - Every segment starts with the hard state and snapshot marker current when
//    it was created, so releasing older segments never loses them.
//  - Segment creation and deletion fsync the directory.
//
// Thread-safety: none; one thread owns a Wal.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "raft/types.h"

namespace capstan::raft {

// One decoded record.
struct WalRecord {
  enum class Kind : uint8_t { kEntry = 1, kConfEntry = 2, kHardState = 3, kSnapshot = 4 };
  Kind kind = Kind::kEntry;
  Entry entry;                  // kEntry, kConfEntry
  HardState hard_state;         // kHardState
  uint64_t snapshot_index = 0;  // kSnapshot: entries <= index are covered by a snapshot
  uint64_t snapshot_term = 0;
};

// Result of decoding one record from a byte buffer.
enum class DecodeResult {
  kOk,          // *record and *consumed are set
  kEnd,         // the buffer holds no more records (end of data or zero fill)
  kIncomplete,  // a record starts here but the buffer ends inside it
  kCorrupt,     // a complete record whose checksum or shape is wrong
};

// Decodes the record at the start of `buf`. Exposed for the fuzz target and
// tests; Wal uses it to read segments. Never reads outside `buf`.
DecodeResult DecodeRecord(std::string_view buf, WalRecord* record, size_t* consumed);

// Appends the encoding of one record to `out`.
void EncodeRecord(const WalRecord& record, std::string* out);

// What Open() recovered.
struct WalState {
  HardState hard_state;
  uint64_t snapshot_index = 0;  // the newest snapshot marker
  uint64_t snapshot_term = 0;
  std::vector<Entry> entries;  // consecutive, all after snapshot_index
};

class Wal {
 public:
  struct Options {
    size_t segment_bytes = 64 << 20;  // roll to a new segment past this size
    // Zeros are written ahead of the tail segment's last record in steps of
    // this size. Records then overwrite blocks that already exist, so the
    // fdatasync after them writes data only, not also the inode's new file
    // size: one disk write per sync instead of two (docs/wal.md). 0 appends.
    size_t preallocate_bytes = 1 << 20;
  };

  // Opens (creating if needed) the log in `dir` and reads it into *state.
  // Repairs a torn tail; fails on other damage.
  static absl::StatusOr<std::unique_ptr<Wal>> Open(const std::string& dir, Options options,
                                                   WalState* state);
  ~Wal();

  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // REQUIRES: entries consecutive, entries[0].index <= last_index() + 1 and
  // > snapshot_index(). Entries at or after entries[0].index are replaced.
  absl::Status Append(const std::vector<Entry>& entries);
  absl::Status SaveHardState(const HardState& hs);
  // Records that a snapshot covers entries <= index. When index is past the
  // end of the log (a snapshot received from the leader) the log continues
  // at index + 1.
  absl::Status SaveSnapshot(uint64_t index, uint64_t term);
  // Makes every appended record durable.
  absl::Status Sync();
  // Records a snapshot marker at (index, term), syncs, and deletes segments
  // all of whose entries are <= index. The newest segment is kept.
  absl::Status ReleaseTo(uint64_t index, uint64_t term);

  uint64_t last_index() const { return next_index_ - 1; }
  // For the simulator's crash model: each segment file and how many of its
  // bytes are known durable (older segments were synced whole when rolled).
  std::vector<std::pair<std::string, uint64_t>> DurableSizes() const;
  uint64_t snapshot_index() const { return snapshot_index_; }
  size_t segment_count() const { return segments_.size(); }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  struct Segment {
    uint64_t seq;
    uint64_t first_index;
    std::string path;
  };
  // Replays records into a WalState (the loader's view of the log).
  struct Loader;

  Wal(std::string dir, Options options);
  absl::Status Load(WalState* state);
  // Opens the newest segment for writing after its last record at `end`.
  absl::Status OpenTail(uint64_t end);
  absl::Status Roll();
  absl::Status SyncDir();
  // Replays one segment; *end is where its records end (the rest is zeros).
  absl::Status ScanSegment(const Segment& seg, bool is_last, Loader* loader, uint64_t* end);
  absl::Status Write(const std::string& buf);
  absl::Status MaybeRoll();
  // Where the zeros written ahead of a tail ending at `end` should stop.
  uint64_t PreallocateEnd(uint64_t end) const;

  std::string dir_;
  Options options_;
  std::vector<Segment> segments_;
  uint64_t next_index_ = 1;
  HardState hard_state_;
  uint64_t snapshot_index_ = 0;
  uint64_t snapshot_term_ = 0;
  int tail_fd_ = -1;
  uint64_t tail_size_ = 0;       // bytes of records in the tail segment
  uint64_t tail_file_size_ = 0;  // tail_size_ plus the zeros written ahead
  uint64_t tail_synced_ = 0;     // bytes of the tail segment known durable
  uint64_t bytes_written_ = 0;
  bool dirty_ = false;
  std::string buf_;
};

}  // namespace capstan::raft
