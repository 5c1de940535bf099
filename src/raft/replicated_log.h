// The seam between consensus and the state machine it drives.
//
// A ReplicatedLog orders proposals into a log, makes each entry durable on a
// quorum (for the single-node log: on this member's disk), and hands the
// committed entries to the StateMachine in index order. The store is written
// against this interface only; the Raft implementation replaces the
// single-node one without the store noticing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "raft/wal.h"

namespace capstan::raft {

class StateMachine {
 public:
  virtual ~StateMachine() = default;
  // Applies committed entries, in index order, each exactly once per process
  // lifetime, always from the same thread. Entries at or below the index the
  // state machine reports as applied at startup are never passed again.
  virtual void ApplyBatch(const std::vector<WalEntry>& entries) = 0;
};

class ReplicatedLog {
 public:
  virtual ~ReplicatedLog() = default;
  // Queues `data` for the log. OK means queued, not committed: the outcome
  // reaches the proposer through the state machine. Fails fast (UNAVAILABLE)
  // once the log is stopped or has failed, RESOURCE_EXHAUSTED under overload.
  virtual absl::Status Propose(std::string data) = 0;
  // Allows the log to drop entries <= index, which the state machine has made
  // durable on its own.
  virtual void ReleaseTo(uint64_t index) = 0;
  virtual uint64_t CommittedIndex() const = 0;
  virtual uint64_t AppliedIndex() const = 0;
  virtual uint64_t Term() const = 0;
  // OK, or why the log can take no more proposals (e.g. its disk failed).
  virtual absl::Status Health() const = 0;
  // Stops accepting proposals, applies what is durable, joins threads.
  virtual void Stop() = 0;
};

}  // namespace capstan::raft
