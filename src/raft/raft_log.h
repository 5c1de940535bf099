// The Raft core's view of the log: entries after the last snapshot, which of
// them are durable (handed to the driver and persisted), committed and
// applied. Pure in-memory bookkeeping; the driver persists what Ready says.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "raft/types.h"

namespace capstan::raft {

class RaftLog {
 public:
  // Restores a log whose snapshot and entries are all durable.
  RaftLog(const SnapshotMeta& snap, std::vector<Entry> entries, uint64_t commit);

  uint64_t first_index() const { return snap_index_ + 1; }
  uint64_t last_index() const { return snap_index_ + entries_.size(); }
  uint64_t last_term() const { return *Term(last_index()); }
  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }
  uint64_t stable() const { return stable_; }
  uint64_t snapshot_index() const { return snap_index_; }

  // Term of the entry at index; nullopt when compacted away or past the end.
  std::optional<uint64_t> Term(uint64_t index) const;
  bool MatchTerm(uint64_t index, uint64_t term) const;
  // Whether a log ending at (last_index, last_term) is at least as
  // up-to-date as this one (Raft §5.4.1).
  bool IsUpToDate(uint64_t last_index, uint64_t last_term) const;

  // A follower's append after (index, log_term). Returns the index of the last
  // entry now known to match the leader, or nullopt when (index, log_term)
  // does not match. Conflicting uncommitted entries are replaced.
  std::optional<uint64_t> MaybeAppend(uint64_t index, uint64_t log_term, uint64_t commit,
                                      const std::vector<Entry>& ents);
  // A leader's append at the end.
  void Append(std::vector<Entry> ents);
  // Entries in [lo, hi), at most max_bytes of data but always at least one.
  // REQUIRES: first_index() <= lo <= hi <= last_index() + 1.
  std::vector<Entry> Slice(uint64_t lo, uint64_t hi, size_t max_bytes) const;

  void CommitTo(uint64_t index);
  // Commits up to index when that entry is from `term` (a leader commits
  // entries of earlier terms only by committing one of its own, §5.4.2).
  bool MaybeCommit(uint64_t index, uint64_t term);

  // Replaces the log with a snapshot (a follower that fell too far behind).
  void Restore(const SnapshotMeta& snap);
  // Forgets entries <= index, which a snapshot now covers. REQUIRES: index <= applied.
  void Compact(uint64_t index, uint64_t term);

  // For Ready: entries not yet durable, and entries committed but not applied.
  std::vector<Entry> UnstableEntries() const;
  bool HasUnstable() const { return std::max(unstable_from_, first_index()) <= last_index(); }
  std::vector<Entry> NextCommitted(size_t max_bytes) const;
  const std::optional<SnapshotMeta>& pending_snapshot() const { return pending_snapshot_; }
  // After the driver persisted a Ready.
  void StableTo(uint64_t index);
  void StableSnapshot() { pending_snapshot_.reset(); }
  void AppliedTo(uint64_t index);

 private:
  const Entry& At(uint64_t index) const { return entries_[index - snap_index_ - 1]; }

  uint64_t snap_index_ = 0;
  uint64_t snap_term_ = 0;
  std::deque<Entry> entries_;
  uint64_t committed_ = 0;
  uint64_t applied_ = 0;
  uint64_t stable_ = 0;         // entries <= stable_ are durable as they are now
  uint64_t unstable_from_ = 1;  // first index whose current content is not durable
  std::optional<SnapshotMeta> pending_snapshot_;
};

}  // namespace capstan::raft
