#include "raft/raft_log.h"

#include <algorithm>
#include <cstdlib>

#include "base/logging.h"

namespace capstan::raft {

// Invariant violations in the core are bugs that would corrupt replicated
// state: stop the process rather than carry on (always on, not debug-only).
#define RAFT_CHECK(cond, ...)                                                \
  do {                                                                       \
    if (!(cond)) {                                                           \
      CAPSTAN_LOG(critical, "raft invariant violated: " #cond, __VA_ARGS__); \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

RaftLog::RaftLog(const SnapshotMeta& snap, std::vector<Entry> entries, uint64_t commit)
    : snap_index_(snap.index), snap_term_(snap.term) {
  for (auto& e : entries) {
    RAFT_CHECK(e.index == last_index() + 1, "index", e.index, "last", last_index());
    entries_.push_back(std::move(e));
  }
  committed_ = std::max(commit, snap_index_);
  RAFT_CHECK(committed_ <= last_index(), "commit", committed_, "last", last_index());
  applied_ = snap_index_;
  stable_ = last_index();
  unstable_from_ = last_index() + 1;
}

std::optional<uint64_t> RaftLog::Term(uint64_t index) const {
  if (index == snap_index_) return snap_term_;
  if (index < snap_index_ || index > last_index()) return std::nullopt;
  return At(index).term;
}

bool RaftLog::MatchTerm(uint64_t index, uint64_t term) const {
  auto t = Term(index);
  return t && *t == term;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t last_term) const {
  return last_term > this->last_term() ||
         (last_term == this->last_term() && last_index >= this->last_index());
}

std::optional<uint64_t> RaftLog::MaybeAppend(uint64_t index, uint64_t log_term, uint64_t commit,
                                             const std::vector<Entry>& ents) {
  if (!MatchTerm(index, log_term)) return std::nullopt;
  uint64_t last_new = index + ents.size();
  // The first entry that is new or conflicts with what we have.
  size_t i = 0;
  while (i < ents.size() && MatchTerm(ents[i].index, ents[i].term)) ++i;
  if (i < ents.size()) {
    uint64_t conflict = ents[i].index;
    if (conflict <= last_index()) {
      RAFT_CHECK(conflict > committed_, "conflict", conflict, "committed", committed_);
      entries_.resize(conflict - first_index());
      stable_ = std::min(stable_, conflict - 1);
    }
    unstable_from_ = std::min(unstable_from_, conflict);
    for (; i < ents.size(); ++i) entries_.push_back(ents[i]);
  }
  CommitTo(std::min(commit, last_new));
  return last_new;
}

void RaftLog::Append(std::vector<Entry> ents) {
  for (auto& e : ents) {
    RAFT_CHECK(e.index == last_index() + 1, "index", e.index, "last", last_index());
    entries_.push_back(std::move(e));
  }
}

std::vector<Entry> RaftLog::Slice(uint64_t lo, uint64_t hi, size_t max_bytes) const {
  std::vector<Entry> out;
  size_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const Entry& e = At(i);
    if (!out.empty() && bytes + e.data.size() > max_bytes) break;
    bytes += e.data.size();
    out.push_back(e);
  }
  return out;
}

void RaftLog::CommitTo(uint64_t index) {
  if (index <= committed_) return;  // the commit index never goes back
  RAFT_CHECK(index <= last_index(), "commit", index, "last", last_index());
  committed_ = index;
}

bool RaftLog::MaybeCommit(uint64_t index, uint64_t term) {
  if (index > committed_ && Term(index) == term) {
    CommitTo(index);
    return true;
  }
  return false;
}

void RaftLog::Restore(const SnapshotMeta& snap) {
  RAFT_CHECK(snap.index > committed_, "snapshot", snap.index, "committed", committed_);
  entries_.clear();
  snap_index_ = snap.index;
  snap_term_ = snap.term;
  committed_ = snap.index;
  applied_ = snap.index;
  stable_ = snap.index;
  unstable_from_ = snap.index + 1;
  pending_snapshot_ = snap;
}

void RaftLog::Compact(uint64_t index, uint64_t term) {
  if (index <= snap_index_) return;
  RAFT_CHECK(index <= applied_ && index <= stable_, "compact", index, "applied", applied_);
  while (!entries_.empty() && entries_.front().index <= index) entries_.pop_front();
  snap_index_ = index;
  snap_term_ = term;
}

std::vector<Entry> RaftLog::UnstableEntries() const {
  std::vector<Entry> out;
  for (uint64_t i = std::max(unstable_from_, first_index()); i <= last_index(); ++i) {
    out.push_back(At(i));
  }
  return out;
}

std::vector<Entry> RaftLog::NextCommitted(size_t max_bytes) const {
  // Ready's contract makes every entry in the log durable before committed
  // entries are applied, so everything committed may go out in this Ready.
  uint64_t hi = committed_;
  if (hi <= applied_) return {};
  return Slice(applied_ + 1, hi + 1, max_bytes);
}

void RaftLog::StableTo(uint64_t index) {
  if (index > last_index()) return;
  stable_ = std::max(stable_, index);
  unstable_from_ = std::max(unstable_from_, index + 1);
}

void RaftLog::AppliedTo(uint64_t index) {
  if (index == 0) return;
  RAFT_CHECK(index <= committed_ && index >= applied_, "applied", index, "committed", committed_);
  applied_ = index;
}

}  // namespace capstan::raft
