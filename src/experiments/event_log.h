// EventLog: the event store's durable log (event_store.h), in segment files
// of its own rather than in RocksDB. One record per group commit, appended
// with pwrite and made durable with one fdatasync; each record carries a
// CRC-32C (base/crc32c.h: the SSE4.2 instruction where the CPU has it).
//
// Why not RocksDB: a record went through RocksDB's WAL (Debian's build
// computes its CRC32C in software), was copied into the memtable, then
// written again by every flush and compaction, although it is written once,
// read only on open, and already in sequence order. Here it is written once.
//
// Layout (docs/experiments-events.md, "Disk format"): `<directory>/` holds
// segments named by their first sequence, `%020llu.log`. A segment starts
// with a 24-byte header:
//   8 bytes magic "CEVLOG01", u64 first sequence (LE), u32 masked CRC-32C of
//   those 16 bytes, u32 zero
// followed by records:
//   u32 payload length (LE), u32 masked CRC-32C of the length's 4 bytes and
//   the payload, payload = u64 first sequence (LE) + the group record
//   (event_store.h, EncodeLogRecord: version, u32 count, events)
// and then zeros (preallocated space) or the end of the file. A record's
// events have sequences first.. first+count-1; the next record starts at
// first+count. Segments after the first start where the one before ended.
//
// Guarantees:
//  - Append returns after the record is durable (fdatasync; unless
//    options.sync is false, for tests). Records are appended one at a time,
//    so at most the last record of the last segment can be torn by a crash.
//  - Open repairs a torn tail (a bad record at the end of the last segment
//    that no valid record follows) by truncating it: such a record was never
//    acknowledged. Damage anywhere else fails Open with DataLoss naming the
//    file and byte offset.
//  - A failed write or sync leaves the log refusing every later Append
//    (after a failed fsync the kernel's page state is unknown): the store
//    answers 503 until it is reopened, so a key whose record may be on disk
//    is never accepted a second time (the dedup index is rebuilt from disk).
//  - New segments are written under a temporary name, synced and renamed,
//    then the directory is synced: a segment with its final name always has
//    a whole header.
//  - Retention (RemoveOldestSegments) removes whole segments from the front,
//    never the one being appended to, oldest first and syncing the directory
//    after each, so whatever a crash leaves is a contiguous suffix of the log.
//    The log then starts at first_sequence() > 0; Read from before it fails
//    with FailedPrecondition naming the first retained event. Which segments
//    may go (covered by a durable checkpoint, outside the dedup window, old
//    or over the size cap) is the store's decision: SegmentsToRemove.
//
// Thread-safety: Append from one thread (the store's writer); Read while no
// Append runs (Open and recovery) or from that same thread. SegmentInfos,
// RemoveOldestSegments, first_sequence, retained_bytes and segment_count
// from any thread (the segment list is under a mutex; the tail is the
// writer's).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace capstan::experiments {

struct EventLogOptions {
  // A new segment is started when a record would take the current one past
  // this size (a record is never split: a segment holds at least one).
  size_t segment_bytes = 64 << 20;
  // Zeros are written ahead of the tail in steps of this size, so that the
  // fdatasync after a record writes data only, not also a new file size.
  size_t preallocate_bytes = 4 << 20;
  bool sync = true;
};

// One record as found in a buffer (exposed for the fuzz target and tests).
enum class LogFrameResult {
  kOk,          // *first_sequence, *record and *consumed are set
  kEnd,         // no record here: end of the buffer, or zeros
  kIncomplete,  // a length that runs past the buffer
  kCorrupt,     // the checksum does not match, or the length is impossible
};
LogFrameResult DecodeLogFrame(std::string_view buffer, uint64_t* first_sequence,
                              std::string_view* record, size_t* consumed);

// A segment as retention sees it (EventLog::SegmentInfos), oldest first.
struct LogSegmentInfo {
  uint64_t first_sequence = 0;  // its first event
  uint64_t end_sequence = 0;    // one past its last event
  uint64_t bytes = 0;           // its file's size
  // The file's modification time: when its last record was written (a
  // sealed segment is not written again).
  std::chrono::system_clock::time_point modified;
  bool tail = false;  // the segment being appended to: never removed
};

struct LogRetentionLimits {
  // Only segments whose events are all below this may go: the store passes
  // min(durable checkpoint, next sequence - dedup window).
  uint64_t removable_before = 0;
  // A covered segment goes once it was last written at least this long ago;
  // nullopt: no time limit.
  std::optional<std::chrono::milliseconds> max_age;
  // A covered segment goes, however young, while the log is larger than
  // this; 0: no size cap.
  uint64_t max_bytes = 0;
  std::chrono::system_clock::time_point now;
};

// How many of `segments`' oldest to remove under `limits`: the longest
// prefix of segments that are each covered (end_sequence <=
// removable_before, not the tail) and either older than max_age or needed to
// bring the total under max_bytes. A prefix, so the log never has a hole.
size_t SegmentsToRemove(const std::vector<LogSegmentInfo>& segments,
                        const LogRetentionLimits& limits);

class EventLog {
 public:
  // Bytes an Append buffer starts with, reserved for the frame (length,
  // checksum, first sequence), which Append fills in.
  static constexpr size_t kFrameBytes = 16;
  static constexpr size_t kSegmentHeaderBytes = 24;

  // Opens (creating) the log in `directory`, repairing a torn tail.
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(std::string directory,
                                                        EventLogOptions options);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // The sequence the next record's first event gets: the events in the log.
  uint64_t next_sequence() const { return next_sequence_; }

  // Appends `framed` = kFrameBytes (any content) + a group record of `count`
  // >= 1 events, which get sequences next_sequence()...; durable on return.
  // On error nothing is acknowledged and the log refuses from then on.
  absl::Status Append(std::string* framed, uint32_t count);

  // Calls fn(first_sequence, record) for every record, in order, from the
  // one holding event `from` (every record when from is 0). Checks that the
  // records follow each other; DataLoss naming file and offset otherwise.
  absl::Status Read(uint64_t from,
                    const std::function<absl::Status(uint64_t, std::string_view)>& fn) const;

  // The first event still in the log: 0 until retention removed a segment.
  uint64_t first_sequence() const;
  // Every segment, oldest first, with its size and modification time (one
  // stat each; an I/O error names the file).
  absl::StatusOr<std::vector<LogSegmentInfo>> SegmentInfos() const;
  // Removes the `count` oldest segments (fewer if only the tail would be
  // left): unlink and directory sync per segment, oldest first. REQUIRES:
  // the caller has decided they are no longer needed (SegmentsToRemove).
  absl::Status RemoveOldestSegments(size_t count);
  // Bytes of the segments' headers and records (not the zeros written ahead).
  uint64_t retained_bytes() const { return retained_bytes_.load(std::memory_order_relaxed); }
  size_t segment_count() const;
  const std::string& directory() const { return directory_; }

 private:
  struct Segment {
    uint64_t first_sequence;
    std::string path;
    uint64_t bytes = 0;  // sealed segments: the file's size; the tail: unused
  };

  EventLog(std::string directory, EventLogOptions options);
  absl::Status Load();
  // Scans one segment; fn may be null. `last`: repair a torn tail (sets
  // *end_offset to where the next record goes). *next receives the sequence
  // after the segment's last record.
  absl::Status ScanSegment(const Segment& segment, bool last, uint64_t from,
                           const std::function<absl::Status(uint64_t, std::string_view)>* fn,
                           uint64_t* next, size_t* end_offset) const;
  absl::Status StartSegment(uint64_t first_sequence);
  absl::Status OpenTail(size_t end_offset);
  absl::Status Preallocate(size_t needed);

  std::string directory_;
  EventLogOptions options_;
  // Appended to by the writer (a roll), erased from the front by retention.
  mutable std::mutex segments_mutex_;
  std::vector<Segment> segments_;  // guarded by segments_mutex_ (Open: alone)
  std::mutex removal_mutex_;       // one RemoveOldestSegments at a time
  std::string tail_path_;          // the last segment's path (writer thread)
  std::atomic<uint64_t> retained_bytes_{0};
  std::atomic<uint64_t> appended_sequence_{0};  // next_sequence_, for other threads
  int tail_fd_ = -1;
  size_t tail_offset_ = 0;     // where the next record goes in the tail segment
  size_t tail_allocated_ = 0;  // the tail segment's file size (zeros past tail_offset_)
  uint64_t next_sequence_ = 0;
  bool failed_ = false;
};

}  // namespace capstan::experiments
