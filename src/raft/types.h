// The vocabulary of the Raft core: entries, persistent state, messages and
// the Ready batch the core hands to its driver. Plain values, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace capstan::raft {

enum class EntryType : uint8_t {
  kNormal = 0,
  kConfChange = 1,  // data is an encoded ConfChange
};

struct Entry {
  uint64_t index = 0;
  uint64_t term = 0;
  EntryType type = EntryType::kNormal;
  std::string data;
  bool operator==(const Entry&) const = default;
};

// What must be on disk before any message that depends on it is sent.
struct HardState {
  uint64_t term = 0;
  uint64_t vote = 0;
  uint64_t commit = 0;
  bool operator==(const HardState&) const = default;
};

struct ConfState {
  std::vector<uint64_t> voters;
  std::vector<uint64_t> learners;
  bool operator==(const ConfState&) const = default;
};

// One membership change at a time (see docs/raft.md, "Membership").
struct ConfChange {
  enum class Type : uint8_t { kAddVoter = 0, kAddLearner = 1, kRemove = 2 };
  Type type = Type::kAddVoter;
  uint64_t node = 0;
  std::string context;  // opaque to the core (e.g. the member's URLs)
  std::string Encode() const;
  static bool Decode(std::string_view data, ConfChange* out);
};

struct SnapshotMeta {
  uint64_t index = 0;  // last entry the snapshot covers
  uint64_t term = 0;
  ConfState conf;
};

enum class MsgType : uint8_t {
  // Local inputs (never sent over the network).
  kHup,             // campaign now
  kPropose,         // entries to append (forwarded to the leader by followers)
  kTransferLeader,  // from = the transferee
  kReadIndex,       // context = the read's id (forwarded to the leader by followers)
  kSnapStatus,      // the transport finished (reject=false) or failed sending a snapshot
  kUnreachable,     // the transport could not reach `from`
  // Messages between members.
  kAppend,
  kAppendResp,
  kVote,
  kVoteResp,
  kPreVote,
  kPreVoteResp,
  kHeartbeat,
  kHeartbeatResp,
  kSnapshot,
  kTimeoutNow,
  kReadIndexResp,
};

const char* MsgTypeName(MsgType t);

struct Message {
  MsgType type = MsgType::kHup;
  uint64_t from = 0;
  uint64_t to = 0;
  uint64_t term = 0;
  uint64_t log_term = 0;  // Append: term of `index`; Vote: term of the last entry
  uint64_t index = 0;     // Append: entry before `entries`; Vote: last index; Resp: match
  std::vector<Entry> entries;
  uint64_t commit = 0;
  bool reject = false;
  uint64_t reject_hint = 0;  // AppendResp reject: the follower's last index
  std::string context;       // ReadIndex and heartbeat read contexts
  std::optional<SnapshotMeta> snapshot;
};

// A linearizable read point: once the state machine has applied `index`,
// reads for `context` may be served.
struct ReadState {
  uint64_t index = 0;
  std::string context;
};

enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role r);

// Everything the driver must do, in this order: persist `snapshot`, `entries`
// and `hard_state` (fsync when must_sync), then send `messages`, then apply
// `committed` and serve `read_states`, then call Raft::Advance.
struct Ready {
  std::optional<HardState> hard_state;
  std::optional<SnapshotMeta> snapshot;  // install before the entries
  std::vector<Entry> entries;            // replace the log from entries[0].index on
  std::vector<Message> messages;
  std::vector<Entry> committed;
  std::vector<ReadState> read_states;
  bool must_sync = false;
  bool empty() const {
    return !hard_state && !snapshot && entries.empty() && messages.empty() && committed.empty() &&
           read_states.empty();
  }
};

}  // namespace capstan::raft
