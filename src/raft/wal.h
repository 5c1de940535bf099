// The write-ahead log: an append-only sequence of (index, term, data) entries
// in segment files, each record protected by a CRC-32C. This is the durable
// half of the replicated log; the disk format is specified in docs/wal.md.
//
// Guarantees:
//  - An entry is durable once Sync() has returned after the Append() that
//    wrote it (one fdatasync covers every entry appended since the last one:
//    group commit is the caller batching Appends before one Sync).
//  - Open() repairs a torn tail (a record cut short by a crash, followed by
//    nothing but zeros or end of file) by truncating it, and refuses to start on
//    damage anywhere else, naming the file and byte offset.
//  - Segment creation and deletion fsync the directory.
//
// Thread-safety: none; one thread owns a Wal.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace capstan::raft {

struct WalEntry {
  uint64_t index = 0;
  uint64_t term = 0;
  std::string data;
};

// Result of decoding one record from a byte buffer.
enum class DecodeResult {
  kOk,          // *entry and *consumed are set
  kEnd,         // the buffer holds no more records (end of data or zero fill)
  kIncomplete,  // a record starts here but the buffer ends inside it
  kCorrupt,     // a complete record whose checksum or shape is wrong
};

// Decodes the record at the start of `buf`. Exposed for the fuzz target and
// tests; Wal uses it to read segments. Never reads outside `buf`.
DecodeResult DecodeRecord(std::string_view buf, WalEntry* entry, size_t* consumed);

// Appends the encoding of one entry record to `out`.
void EncodeRecord(const WalEntry& entry, std::string* out);

class Wal {
 public:
  struct Options {
    size_t segment_bytes = 64 << 20;  // roll to a new segment past this size
  };

  // Opens (creating if needed) the log in `dir`. A new log starts at
  // `first_index_if_new`. Repairs a torn tail; fails on other damage.
  static absl::StatusOr<std::unique_ptr<Wal>> Open(const std::string& dir, Options options,
                                                   uint64_t first_index_if_new = 1);
  ~Wal();

  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // Calls fn for every stored entry with index >= from, in order.
  // Fails if entries from `from` on are no longer stored (released).
  absl::Status Replay(uint64_t from, const std::function<absl::Status(const WalEntry&)>& fn);

  // REQUIRES: entries[i].index == last_index() + 1 + i.
  absl::Status Append(const std::vector<WalEntry>& entries);
  // Makes every appended entry durable.
  absl::Status Sync();
  // Deletes segments all of whose entries are <= index. The newest segment is kept.
  absl::Status ReleaseTo(uint64_t index);

  uint64_t first_index() const;  // first stored index (== last_index()+1 when empty)
  uint64_t last_index() const { return next_index_ - 1; }
  size_t segment_count() const { return segments_.size(); }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  struct Segment {
    uint64_t seq;
    uint64_t first_index;
    std::string path;
  };
  Wal(std::string dir, Options options);
  absl::Status Load(uint64_t first_index_if_new);
  absl::Status OpenTail();
  absl::Status Roll();
  absl::Status SyncDir();
  absl::Status ScanSegment(const Segment& seg, bool is_last, uint64_t* next_index,
                           const std::function<absl::Status(const WalEntry&)>* fn, uint64_t from);

  std::string dir_;
  Options options_;
  std::vector<Segment> segments_;
  uint64_t next_index_ = 1;
  int tail_fd_ = -1;
  uint64_t tail_size_ = 0;
  uint64_t bytes_written_ = 0;
  bool dirty_ = false;
  std::string buf_;
};

}  // namespace capstan::raft
