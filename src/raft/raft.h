// The Raft consensus core: a deterministic state machine with no I/O, in the
// style of etcd's raft library. Inputs are Tick() (one logical clock tick),
// Step(message) and local requests (Propose, ReadIndex, TransferLeader);
// outputs come out of GetReady() as a batch the driver persists, sends and
// applies, in that order, before calling Advance().
//
// Safety rests on the Ready contract: messages are sent only after the same
// Ready's entries and hard state are durable, so every vote and every
// acknowledgement a peer sees is backed by this node's disk.
//
// Implemented (Ongaro's thesis): randomized elections, PreVote, CheckQuorum,
// replication with probe/replicate flow control and bounded in-flight appends,
// commit by a quorum of the current term, ReadIndex with batched heartbeats,
// leadership transfer, learners, single-server membership changes, snapshot
// install. Thread-safety: none; one thread drives a Raft.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "base/status.h"
#include "raft/progress.h"
#include "raft/raft_log.h"
#include "raft/types.h"

namespace capstan::raft {

struct Config {
  uint64_t id = 0;
  int election_tick = 10;  // ticks without a leader before campaigning (randomized up to 2x)
  int heartbeat_tick = 1;
  bool pre_vote = true;
  bool check_quorum = true;
  size_t max_inflight = 256;              // appends outstanding per follower
  size_t max_bytes_per_append = 1 << 20;  // entry data per append message
  uint64_t seed = 0;                      // for randomized election timeouts
  // Lease-based reads (off by default): the leader answers ReadIndex from its
  // commit index without a heartbeat round while it holds a lease, i.e. it
  // heard from a quorum in the current CheckQuorum window and the window has
  // more than `lease_margin_ticks` left. Safe only if clocks run at the same
  // rate within that margin and messages are delivered within it: followers
  // refuse votes for an election timeout after hearing from the leader, and
  // the lease must end before any of them can vote for someone else.
  bool lease_reads = false;
  int lease_margin_ticks = 4;
};

// What a restarted node recovers from disk.
struct PersistentState {
  HardState hard_state;
  SnapshotMeta snapshot;  // snapshot.conf is the membership at snapshot time
  std::vector<Entry> entries;
};

class Raft {
 public:
  // A brand-new cluster member passes the initial membership in state.snapshot.conf.
  Raft(const Config& config, PersistentState state);

  void Tick();
  // Handles a message from a peer or a local request. Errors only for local
  // requests that cannot be served (no leader to forward to, ...).
  absl::Status Step(Message m);

  absl::Status Propose(std::string data);
  // Whether a normal proposal would be taken (or forwarded) now; when not,
  // why (no leader, transfer in progress, leader removed).
  absl::Status CanPropose() const;
  absl::Status ProposeConfChange(const ConfChange& cc);
  // Asks for a linearizable read point; the answer arrives as a ReadState.
  void ReadIndex(std::string context);
  void TransferLeader(uint64_t to);
  void Campaign();

  bool HasReady() const;
  Ready GetReady();
  void Advance(const Ready& ready);

  // The driver applied a ConfChange entry: membership changes now.
  ConfState ApplyConfChange(const ConfChange& cc);
  // The driver took a snapshot covering entries up to `index`.
  void Compact(uint64_t index);

  uint64_t id() const { return id_; }
  uint64_t term() const { return term_; }
  uint64_t leader() const { return lead_; }
  Role role() const { return role_; }
  const RaftLog& log() const { return log_; }
  const ConfState& conf() const { return conf_; }
  const std::map<uint64_t, Progress>& progress() const { return prs_; }
  uint64_t vote() const { return vote_; }

  // Test hook: a deliberately broken rule, to prove the simulator catches it.
  // Grants votes without checking that the candidate's log is up to date.
  void set_bug_vote_without_log_check(bool on) { bug_vote_without_log_check_ = on; }

 private:
  // ReadIndex on the leader: reads waiting for a heartbeat quorum, by context,
  // in arrival order, and reads waiting for the first commit in this term.
  struct PendingRead {
    uint64_t index;
    uint64_t from;  // 0: this node
    std::string context;
    std::map<uint64_t, bool> acks;
  };
  void BecomeFollower(uint64_t term, uint64_t lead);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  void Reset(uint64_t term);
  void StartElection(bool pre_vote, bool transfer);
  void Send(Message m);
  void SendAppend(uint64_t to, bool send_empty = true);
  void BroadcastAppend();
  void SendHeartbeat(uint64_t to, const std::string& ctx);
  void BroadcastHeartbeat(const std::string& ctx);
  bool MaybeCommit();
  void AppendEntries(std::vector<Entry> ents);
  bool Promotable() const;
  bool IsVoter(uint64_t id) const;
  size_t Quorum() const;
  // Counts granted and rejected votes; returns +1 won, -1 lost, 0 pending.
  int TallyVotes(uint64_t from, bool granted);
  bool CommittedEntryInCurrentTerm() const;
  // Lease reads: whether the leader may answer a read without a quorum round.
  bool InLease() const;
  void ResetRandomizedElectionTimeout();
  void ApplyConf(const ConfState& cs);
  void ReleasePendingReads();
  // A leader no longer in the voters transfers leadership away.
  void HandOver();

  absl::Status StepLeader(Message& m);
  absl::Status StepCandidate(Message& m);
  absl::Status StepFollower(Message& m);
  void RespondToRead(const PendingRead& read);
  void HandleAppend(const Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshot(const Message& m);
  void HandleReadIndexRequest(Message& m);
  void HandleHeartbeatResp(const Message& m);

  uint64_t id_;
  Config cfg_;
  uint64_t term_ = 0;
  uint64_t vote_ = 0;
  uint64_t lead_ = 0;
  Role role_ = Role::kFollower;
  RaftLog log_;
  ConfState conf_;
  std::map<uint64_t, Progress> prs_;
  std::map<uint64_t, bool> votes_;
  std::vector<Message> msgs_;
  std::vector<ReadState> read_states_;
  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  uint64_t lead_transferee_ = 0;
  uint64_t pending_conf_index_ = 0;
  std::mt19937_64 rng_;
  HardState prev_hs_;

  std::vector<PendingRead> pending_reads_;
  std::vector<Message> reads_before_commit_;

  bool bug_vote_without_log_check_ = false;
};

}  // namespace capstan::raft
