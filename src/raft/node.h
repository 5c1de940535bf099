// Node: the driver that runs the Raft core against real time, a real disk and
// a real network. It owns the core and the WAL and runs two threads:
//
//  - the raft loop: takes proposals, peer messages, read requests and ticks,
//    steps them into the core, and processes each Ready in the order the core
//    requires: persist (WAL append + hard state, one fdatasync for the whole
//    batch: group commit), then send, then hand committed entries on;
//  - the applier: calls StateMachine::ApplyBatch, so fsync of batch N+1
//    overlaps with applying batch N. Snapshots for peers are cut here too, so
//    their content matches exactly the entries applied.
//
// The core is not tied to the raft loop's thread: whoever holds core_mu_ runs
// a round. A lone voter's proposer (an event loop answering one write at a
// time) runs the round itself when the raft loop is idle (DriveOrWake),
// which spares the two thread hand-offs per write that dominate its cost.
//
// Proposals arriving while there is no leader are held (not failed) for up to
// `hold_without_leader`, since an election usually ends sooner. A WAL write or
// fsync failure is not retried (the page cache state is unknown after a failed
// fsync): the node stops, queued proposals fail with the error, and the
// member must restart.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "raft/raft.h"
#include "raft/replicated_log.h"
#include "raft/wal.h"

namespace capstan::raft {

// Carries messages to the other members. Implementations queue and return at
// once; delivery is best-effort (Raft retries), and a peer that cannot be
// reached is reported back through Node::ReportUnreachable.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual void Send(std::vector<Message> messages) = 0;
  // Streams the snapshot in `dir` (made by StateMachine::CreateSnapshot) to
  // m.to, then delivers m; reports the outcome through Node::ReportSnapshot
  // and removes `dir` either way.
  virtual void SendSnapshot(Message m, std::string dir) = 0;
};

struct NodeOptions {
  uint64_t id = 0;
  std::string wal_dir;
  std::string snapshot_dir;  // scratch space for snapshots being sent
  Wal::Options wal;
  std::chrono::milliseconds tick{100};  // the heartbeat interval
  int election_ticks = 10;
  bool pre_vote = true;
  bool check_quorum = true;
  uint64_t seed = 0;
  // A founding member of a new cluster: the initial membership entries
  // (identical on every founding member), written when the WAL is empty.
  std::vector<Entry> bootstrap;
  // Entries kept in memory behind the state machine's durable index, so a
  // follower that is a little behind gets entries rather than a snapshot.
  uint64_t catch_up_entries = 5000;
  size_t max_pending_bytes = 256 << 20;  // queued proposals before RESOURCE_EXHAUSTED
  std::chrono::milliseconds hold_without_leader{3000};
  metrics::Registry* metrics = nullptr;
  // Told about proposals that never made it into the log (no leader in time,
  // rejected by the core, or the WAL failed under them), so their proposers
  // can get an error at once instead of a timeout.
  std::function<void(const absl::Status&, std::vector<std::string>)> on_dropped;
  // Called from the raft loop when the known leader or the term changes.
  std::function<void(uint64_t leader, uint64_t term)> on_leader_change;
};

struct NodeStatus {
  uint64_t id = 0;
  uint64_t leader = 0;
  uint64_t term = 0;
  Role role = Role::kFollower;
  uint64_t committed = 0;
  uint64_t applied = 0;
  uint64_t last_index = 0;
  ConfState conf;
  std::map<uint64_t, uint64_t> match;  // leader only: each member's matched index
};

class Node {
 public:
  // Opens the WAL, rebuilds the core from it and from `applied` (what the
  // state machine holds durably), and starts the threads. The transport may
  // be set later (it usually needs the node to deliver messages to).
  static absl::StatusOr<std::unique_ptr<Node>> Start(NodeOptions options, StateMachine* sm,
                                                     const AppliedState& applied);
  ~Node();

  void SetTransport(Transport* transport);

  // Queues `data` for the log. OK means queued, not committed: the outcome
  // reaches the proposer through the state machine (or on_dropped).
  //
  // With `defer_wake` the raft loop is not woken: the caller promises to call
  // DriveOrWake soon (an event loop does at the end of its turn, so that the
  // turn's proposals share one round).
  absl::Status Propose(std::string data, bool defer_wake = false);
  // Gets queued proposals moving. A member that is the only voter, whose raft
  // loop is idle and that has at most `max_entries` proposals queued runs
  // the round on the calling thread: it appends, syncs and applies, so the
  // outcome is delivered before this returns. That saves two thread
  // hand-offs per write when writes come one at a time, which on a VM cost
  // more CPU than the write itself; larger batches go to the raft loop so
  // that the caller keeps reading requests while the log syncs. Otherwise
  // it wakes the raft loop. Only callers that hold no locks the state
  // machine's callbacks take (event loops answering requests) may call it.
  void DriveOrWake(size_t max_entries);
  // Proposes a membership change; fails at once when the core refuses it
  // (not the leader, another change in progress, ...).
  absl::Status ProposeConfChange(const ConfChange& cc);
  // Asks for a linearizable read point. `done` gets the index to wait for
  // (read once the state machine has applied it) or an error by `deadline`.
  void ReadIndex(std::function<void(absl::Status, uint64_t)> done,
                 std::chrono::steady_clock::time_point deadline);
  // Starts handing leadership to `to` (the leader only). Watch Leader().
  absl::Status TransferLeadership(uint64_t to);

  // From the transport.
  void Step(Message m);
  // When a message from each member last arrived (members never heard from
  // are absent): which peers are alive, for etcd's strict reconfiguration
  // check.
  std::map<uint64_t, std::chrono::steady_clock::time_point> LastHeard();
  // A snapshot received into `dir`, with the message that announced it.
  void StepSnapshot(Message m, std::string dir);
  void ReportUnreachable(uint64_t id);
  void ReportSnapshot(uint64_t id, bool ok);

  // The state machine's state is durable up to `index`: the log may be
  // compacted behind it.
  void Compact(uint64_t index);

  uint64_t id() const { return options_.id; }
  uint64_t Leader() const { return leader_.load(); }
  uint64_t Term() const { return term_.load(); }
  uint64_t CommittedIndex() const { return committed_.load(); }
  uint64_t AppliedIndex() const { return applied_.load(); }
  bool IsLeader() const { return Leader() == options_.id; }
  NodeStatus Status();
  // OK, or why the node takes no more proposals (its disk failed).
  absl::Status Health() const;
  // Stops the threads; what is durable stays durable.
  void Stop();

 private:
  struct ReadBatch {
    std::vector<std::function<void(absl::Status, uint64_t)>> callbacks;
    std::chrono::steady_clock::time_point deadline;
    int ticks_since_sent = -1;  // -1: not accepted by the core yet
  };
  struct PendingRead {
    std::function<void(absl::Status, uint64_t)> done;
    std::chrono::steady_clock::time_point deadline;
  };
  struct ApplyItem {
    CommittedBatch batch;
    // Restore a received snapshot instead (then `restored` is set).
    std::string restore_dir;
    AppliedState restore_meta;
    std::promise<absl::Status>* restored = nullptr;
    // Cut a snapshot for a peer instead.
    std::optional<Message> snapshot_for;
  };

  Node(NodeOptions options, StateMachine* sm);
  absl::Status Init(const AppliedState& applied);
  void Loop();
  void ApplyLoop();
  // Runs `fn` on the raft loop and returns its result.
  absl::Status RunOnLoop(std::function<absl::Status()> fn);
  void DrainInputs();
  void ProcessReady();
  void HandleCommitted(std::vector<Entry> committed);
  void ServeReadStates(const std::vector<ReadState>& states);
  void RetryHeldWork(bool tick);
  // One round (inputs, the tick if due, held work, ready), then publishes
  // whether a proposer may drive the next one. Under core_mu_.
  void RunRound(bool tick);
  void PublishLoneLeader();
  void Fail(const absl::Status& st, std::vector<std::string> dropped);
  void PublishState();
  void EnqueueApply(ApplyItem item);
  void RunApplyItem(ApplyItem item);

  NodeOptions options_;
  StateMachine* sm_;
  // GUARDED_BY(mu_): set by Step; a handful of members, so a vector.
  std::vector<std::pair<uint64_t, std::chrono::steady_clock::time_point>> last_heard_;
  std::atomic<Transport*> transport_{nullptr};
  std::unique_ptr<Raft> raft_;  // raft loop only
  std::unique_ptr<Wal> wal_;    // raft loop only

  // Inputs, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> proposals_;
  size_t proposal_bytes_ = 0;
  std::vector<Message> inbox_;
  std::vector<PendingRead> reads_;
  std::vector<std::function<void()>> tasks_;
  std::vector<std::pair<uint64_t, std::string>> incoming_snapshots_;  // index -> dir
  uint64_t compact_to_ = 0;
  std::atomic<bool> stopping_{false};
  absl::Status failure_;

  // Held by whichever thread runs the core: the raft loop, or a proposer
  // driving a round itself (Propose with drive_if_idle). Everything marked
  // "raft loop only" is guarded by it.
  std::mutex core_mu_;
  bool core_closed_ = false;  // Stop has taken the core's state; guarded by core_mu_
  // The core is a leader that is the only voter (no learners): a round
  // commits what it appends, so a proposer can drive one.
  std::atomic<bool> lone_leader_{false};
  // Entries per round, averaged over the last few rounds, times 16.
  std::atomic<uint32_t> round_entries_x16_{16};

  // Raft-loop-only state.
  struct HeldProposals {
    std::vector<std::string> data;
    std::chrono::steady_clock::time_point deadline;
  };
  std::deque<HeldProposals> held_;
  std::map<std::string, ReadBatch> read_batches_;
  uint64_t next_read_ctx_ = 1;
  std::map<uint64_t, std::string> snapshot_dirs_;  // received, by index, not yet installed
  bool campaigned_alone_ = false;
  uint64_t compacted_ = 0;
  uint64_t last_leader_ = 0, last_term_ = 0;

  // Apply queue.
  std::mutex apply_mu_;
  std::condition_variable apply_cv_;
  std::deque<ApplyItem> apply_queue_;
  bool apply_stopping_ = false;
  bool applying_ = false;  // an item is being applied (by the applier or the raft loop)
  static constexpr size_t kInlineApplyMaxEntries = 4;

  std::atomic<uint64_t> leader_{0};
  std::atomic<uint64_t> term_{0};
  std::atomic<uint64_t> committed_{0};
  std::atomic<uint64_t> applied_{0};
  std::atomic<bool> failed_{false};
  std::thread loop_;
  std::thread applier_;

  metrics::Histogram* fsync_seconds_ = nullptr;
  metrics::Histogram* batch_entries_ = nullptr;
  metrics::Counter* leader_changes_ = nullptr;
  metrics::Counter* proposals_dropped_ = nullptr;
  metrics::Counter* proposer_rounds_ = nullptr;
};

}  // namespace capstan::raft
