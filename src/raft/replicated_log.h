// The seam between consensus and the state machine it drives.
//
// The Raft node (raft/node.h) orders proposals into a log, makes each entry
// durable on a quorum, and hands committed entries to the StateMachine in
// index order. The state machine keeps its own durable copy (the store's
// RocksDB) and reports how far it got, so the log can be compacted behind it
// and a lagging member can be sent the state machine's snapshot instead.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "raft/types.h"

namespace capstan::raft {

// Committed entries for the state machine. Membership changes are already
// in effect in the Raft core; `conf_after` gives, for each ConfChange entry's
// index, the membership that results, for the state machine to persist with
// that entry.
struct CommittedBatch {
  std::vector<Entry> entries;
  std::map<uint64_t, ConfState> conf_after;
};

// Where the state machine's durable state stands: the last entry it holds
// and the membership as of that entry.
struct AppliedState {
  uint64_t index = 0;
  uint64_t term = 0;
  ConfState conf;
};

class StateMachine {
 public:
  virtual ~StateMachine() = default;
  // Applies committed entries, in index order, each exactly once per process
  // lifetime, one batch at a time (never concurrently, though not always
  // from the same thread: the applier, the raft loop or a proposer driving
  // a round, with a happens-before edge between consecutive batches). Entries at or below the index
  // the state machine reported at startup are never passed again.
  virtual void ApplyBatch(const CommittedBatch& batch) = 0;
  // Writes a consistent snapshot of everything applied so far into `dir`
  // (which does not exist yet) and returns what it covers.
  virtual absl::StatusOr<AppliedState> CreateSnapshot(const std::string& dir) = 0;
  // Replaces the whole state with a snapshot another member made with
  // CreateSnapshot (received into `dir`). Called from the apply thread.
  virtual absl::Status RestoreSnapshot(const std::string& dir, const AppliedState& meta) = 0;
};

}  // namespace capstan::raft
