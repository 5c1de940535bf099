// Store: one member's state machine and everything around it. It owns the
// backend (RocksDB), the MVCC index, the lessor, the watch hub and the
// replicated log, applies committed entries, and gives the API services a
// small surface: Propose a write and hear back when it is applied, read,
// fill response headers, check the space quota.
//
// The write path: service validates -> Propose (entry gets a request id and a
// waiter) -> the Raft node replicates it (a follower forwards it to the
// leader) -> every member's ApplyBatch applies it -> on the member that
// proposed it, the waiter's callback completes the RPC. Linearizable reads
// ask the node for a read index and run once it is applied. See
// src/store/README.md and docs/raft.md.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/metrics.h"
#include "capstan/peer.grpc.pb.h"
#include "net/event_loop.h"
#include "raft/node.h"
#include "raft/replicated_log.h"
#include "store/apply.h"
#include "store/backend.h"
#include "store/lease.h"
#include "store/mvcc.h"
#include "store/watch.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace capstan::store {

// The etcd API version Capstan implements and reports in Status.version.
inline constexpr char kEtcdApiVersion[] = "3.5.17";

struct StoreOptions {
  std::string name = "default";
  std::string data_dir = "default.etcd";
  std::vector<std::string> advertise_client_urls;
  std::vector<std::string> advertise_peer_urls;
  int64_t quota_backend_bytes = int64_t{2} << 30;
  size_t max_request_bytes = 1536 * 1024;
  int max_txn_ops = 128;
  int64_t min_lease_ttl_seconds = 2;
  std::chrono::milliseconds progress_notify_interval{600'000};
  std::chrono::milliseconds request_timeout{7'000};
  size_t max_watch_stream_bytes = 8 << 20;
  metrics::Registry* metrics = nullptr;
  // Cluster bootstrap, as etcd's flags: "name=peer-url,..." (empty: this
  // member alone, at its advertised peer URLs), "new" or "existing".
  std::string initial_cluster;
  std::string initial_cluster_state = "new";
  std::string initial_cluster_token = "etcd-cluster";
  // etcd's --strict-reconfig-check (reconfig_check.h).
  bool strict_reconfig_check = true;
  std::chrono::milliseconds heartbeat{100};
  int election_ticks = 10;
  uint64_t snapshot_catchup_entries = 5000;
  uint64_t snapshot_count = 10000;  // applied entries between backend flushes + log compactions
  // A lone voter's event loop that took a write may run the Raft round
  // itself (append, fsync, apply: ProposeFromLoop). False: every round goes
  // to the raft loop, so the event loops never wait on the disk — for loops
  // shared with other servers (StoreServerConfig::client_group).
  bool loops_run_rounds = true;
  // Auth (etcd's --auth-token-ttl, --bcrypt-cost): how long a simple token
  // lives after its last use, and the bcrypt cost of new password hashes.
  std::chrono::seconds auth_token_ttl{300};
  int bcrypt_cost = 10;
  // --auth-token jwt,...: the JWT provider (jwt.h); null: simple tokens.
  std::shared_ptr<const JwtTokenProvider> auth_jwt;
  // Called once when this member sees its own removal applied (etcd exits
  // then: the member must not serve stale data).
  std::function<void()> on_removed;
  // Credentials of the channels this member opens to https URLs: other
  // members' peer URLs (joining a cluster, the Raft transport) and the
  // leader's client URL (forwarded membership changes). Null: such URLs are
  // dialled in clear text. Set by StoreServer from --peer-* and client TLS.
  std::shared_ptr<grpc::ChannelCredentials> peer_channel_credentials;
  std::shared_ptr<grpc::ChannelCredentials> client_channel_credentials;
};

// A parsed --initial-cluster entry.
struct InitialMember {
  std::string name;
  std::vector<std::string> peer_urls;
  uint64_t id = 0;
};
// Parses "name=url,name=url"; a name may repeat to give several URLs.
absl::StatusOr<std::vector<InitialMember>> ParseInitialCluster(const std::string& spec,
                                                               const std::string& token);
// etcd-style IDs derived from the peer URLs and the cluster token, so every
// founding member computes the same ones.
uint64_t ComputeMemberId(std::vector<std::string> peer_urls, const std::string& token);
// The cluster ID the founding members of `members` compute (also what a
// snapshot restore writes).
uint64_t ComputeClusterId(const std::vector<InitialMember>& members, const std::string& token);

class Store final : public raft::StateMachine {
 public:
  static absl::StatusOr<std::unique_ptr<Store>> Open(StoreOptions options);
  ~Store() override;

  // Proposes a mutating request. `done` runs exactly once: on apply with the
  // response, or with an error (rejected, timed out, stopped).
  void Propose(LogEntry entry, ApplyDone done);
  // The same from an event loop thread: the proposal waits for the end of
  // the loop's turn, when one DriveOrWake moves all of the turn's proposals
  // (on a lone member with an idle log, by running the round right there).
  void ProposeFromLoop(LogEntry entry, ApplyDone done, net::EventLoop* loop);
  // Proposes a membership change for `member`; `done` gets a
  // MemberListResponse (the changed member first) once it is applied.
  void ProposeConfChange(raft::ConfChange::Type type, const etcdserverpb::Member& member,
                         ApplyDone done);
  // Runs `then` (on a read thread) once this member has applied everything
  // committed before the call: a linearizable read point (ReadIndex).
  void LinearizableRead(std::function<void(absl::Status)> then);
  // Runs `fn` once the current revision is above `rev`, or the store stops:
  // on the caller's thread when it already is, else on the apply thread
  // after the batch that passes it (so `fn` must be quick: post to a loop).
  // A coroutine's wait for a change under a prefix (Lock, Election).
  void OnRevisionAbove(int64_t rev, std::function<void()> fn);
  std::vector<etcdserverpb::Member> Members() const { return applier_->Members(); }
  // Whom to connect to: the applied member list, or, for a member that joined
  // an existing cluster and has not caught up yet, the list the peers gave it.
  std::vector<etcdserverpb::Member> PeerMembers() const;
  raft::Node* node() { return node_.get(); }
  // How to reach other members' peer service (set by the server once its
  // transport exists); LeaderStub is null when there is no leader or it is us.
  void set_peer_stubs(std::function<std::shared_ptr<capstan::peer::Peer::Stub>(uint64_t)> fn) {
    std::lock_guard<std::mutex> lock(stubs_mu_);
    peer_stubs_ = std::move(fn);
  }
  std::shared_ptr<capstan::peer::Peer::Stub> LeaderStub();
  // Called (from the apply thread) after the member list changed.
  void set_on_members_changed(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(stubs_mu_);
    on_members_changed_ = std::move(fn);
  }

  // Raises NOSPACE and fails when a write of `cost` bytes would exceed the quota.
  absl::Status CheckQuota(size_t cost);

  // Sets cluster and member id and raft term; sets the revision when unset.
  void FillHeader(etcdserverpb::ResponseHeader* header) const;
  void FillHeader(etcdserverpb::ResponseHeader* header, int64_t rev) const;

  // Blocks until the store revision exceeds `rev`, the deadline passes, or the
  // store stops. Returns the current revision.
  int64_t WaitRevisionAbove(int64_t rev, std::chrono::steady_clock::time_point deadline);

  // Maintenance.Status as this member sees it.
  etcdserverpb::StatusResponse Status() const;
  // Writes a consistent snapshot of the backend into `dir`.
  absl::Status Checkpoint(const std::string& dir) const { return backend_->Checkpoint(dir); }
  absl::Status Defragment() { return backend_->CompactAll(); }
  uint32_t BackendHash() const;

  Applier* applier() { return applier_.get(); }
  Mvcc* mvcc() { return mvcc_.get(); }
  Lessor* lessor() { return lessor_.get(); }
  AuthStore* auth() { return applier_->auth(); }
  WatchHub* watch_hub() { return hub_.get(); }
  const StoreOptions& options() const { return options_; }
  uint64_t member_id() const { return member_id_; }
  uint64_t cluster_id() const { return cluster_id_; }
  // Whether this member is a learner (non-voting): it then refuses client
  // requests as etcd's learners do (learner_gate.h). One atomic load.
  bool IsLearner() const { return is_learner_.load(std::memory_order_relaxed); }
  // Why the member cannot serve writes ("" when it can).
  std::string Unhealthy() const;

  // Stops accepting writes, applies what is durable, stops threads.
  void Stop();

 private:
  // ProposeConfChange once this member has a leader that committed in its term.
  void ProposeConfChangeNow(raft::ConfChange::Type type, const etcdserverpb::Member& member,
                            ApplyDone done);
  explicit Store(StoreOptions options);
  absl::Status Init();
  // Decides this member's and the cluster's IDs at first start; fills the
  // bootstrap entries for a founding member of a new cluster.
  absl::Status InitIdentity(std::vector<raft::Entry>* bootstrap);
  // (Re)builds the lessor and the MVCC index from the backend.
  absl::Status LoadLeasesAndIndex();
  absl::Status JoinExisting(const std::vector<InitialMember>& members, MemberIdentity* id);
  void ApplyBatch(const raft::CommittedBatch& batch) override;
  absl::StatusOr<raft::AppliedState> CreateSnapshot(const std::string& dir) override;
  absl::Status RestoreSnapshot(const std::string& dir, const raft::AppliedState& meta) override;
  void OnLeaderChange(uint64_t leader, uint64_t term);
  void FailDropped(const absl::Status& st, std::vector<std::string> dropped);
  ApplyDone TakeWaiter(uint64_t request_id);
  void ProposeImpl(LogEntry entry, ApplyDone done, bool defer_wake);
  // Wakes the threads and runs the OnRevisionAbove waiters the revision (or
  // stopping) releases.
  void RevisionMoved();
  // Past this many queued proposals a loop hands the round to the raft loop
  // and goes back to reading requests while the log syncs.
  static constexpr size_t kMaxEntriesDrivenByLoop = 1;
  static constexpr size_t kMaxWatchersForDriving = 256;
  void RunReads(uint64_t applied);
  void BackgroundLoop();
  void ReadLoop();

  StoreOptions options_;
  const Clock* clock_ = RealClock::Get();
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Mvcc> mvcc_;
  std::unique_ptr<Lessor> lessor_;
  std::unique_ptr<WatchHub> hub_;
  std::unique_ptr<Applier> applier_;
  std::unique_ptr<raft::Node> node_;
  uint64_t member_id_ = 0;
  uint64_t cluster_id_ = 0;
  uint64_t request_nonce_ = 0;
  std::atomic<uint64_t> next_request_{1};

  struct Waiter {
    ApplyDone done;
    std::chrono::steady_clock::time_point deadline;
  };
  std::mutex stubs_mu_;
  std::function<std::shared_ptr<capstan::peer::Peer::Stub>(uint64_t)> peer_stubs_;
  std::function<void()> on_members_changed_;
  std::mutex waiters_mu_;
  std::unordered_map<uint64_t, Waiter> waiters_;  // GUARDED_BY(waiters_mu_)

  std::mutex rev_mu_;
  std::condition_variable rev_cv_;  // signalled after every applied batch
  // OnRevisionAbove's waiters: the revision each waits to pass.
  std::vector<std::pair<int64_t, std::function<void()>>> rev_waiters_;  // GUARDED_BY(rev_mu_)
  std::mutex bg_mu_;
  std::condition_variable bg_cv_;  // wakes the background loop to stop
  std::atomic<bool> stopping_{false};
  std::atomic<bool> nospace_raised_{false};
  std::atomic<bool> published_{false};
  std::atomic<bool> is_learner_{false};  // from the applied membership
  void UpdateIsLearner();
  // Whether a majority of the other members say this one is not a member.
  bool RemovedWhileAway();
  std::vector<etcdserverpb::Member> join_members_;  // set once in Init
  std::thread background_;

  // Linearizable reads waiting for the applied index, and the threads that
  // run them (not the apply thread: a big range must not delay applying).
  std::mutex reads_mu_;
  std::condition_variable reads_cv_;
  std::multimap<uint64_t, std::function<void(absl::Status)>> reads_waiting_;  // by index
  std::deque<std::function<void()>> reads_ready_;
  std::vector<std::thread> read_threads_;
  std::atomic<uint64_t> applied_{0};
  uint64_t last_applied_term_ = 0;  // apply thread only

  metrics::Counter* proposals_ = nullptr;
  metrics::Counter* proposals_failed_ = nullptr;
  metrics::Gauge* applied_index_ = nullptr;
};

}  // namespace capstan::store
