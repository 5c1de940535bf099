// A linearizability checker for single-key register histories (reads,
// writes, compare-and-set), after Wing & Gong with Lowe's memoization: search
// for an order of the operations that respects real time and the register's
// semantics. Histories of different keys are independent and checked apart.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace capstan::raft::sim {

struct Op {
  enum class Kind : uint8_t { kRead, kWrite, kCas };
  Kind kind = Kind::kRead;
  std::string key;
  std::string value;     // write: the value; cas: the new value
  std::string expected;  // cas: the value compared against
  int64_t invoke = 0;    // when the client sent it
  int64_t complete = 0;  // when the answer came back; INT64_MAX when it never did
  bool ok = false;       // read: got `output`; cas: swapped; write: acknowledged
  std::string output;    // read result ("" = absent)
  uint64_t client = 0;
};

struct CheckResult {
  bool linearizable = true;
  std::string key;      // first key that failed
  std::string details;  // its history
  // Keys whose search hit the step budget before finishing: neither proven
  // nor refuted. Callers should treat a non-zero count as a weak run.
  size_t inconclusive_keys = 0;
};

// Unacknowledged writes and CASes may or may not have happened; unanswered
// reads tell nothing and are ignored.
CheckResult CheckLinearizable(const std::vector<Op>& history);

}  // namespace capstan::raft::sim
