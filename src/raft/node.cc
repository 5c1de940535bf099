#include "raft/node.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/thread_name.h"

namespace capstan::raft {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Node::Node(NodeOptions options, StateMachine* sm) : options_(std::move(options)), sm_(sm) {
  if (options_.metrics != nullptr) {
    fsync_seconds_ = options_.metrics->AddHistogram("capstan_wal_fsync_duration_seconds",
                                                    "Latency of WAL fdatasync calls.",
                                                    metrics::LatencyBuckets());
    batch_entries_ = options_.metrics->AddHistogram(
        "capstan_wal_batch_entries", "Entries made durable by one fdatasync (group commit size).",
        {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096});
    leader_changes_ = options_.metrics->AddCounter("capstan_raft_leader_changes_total",
                                                   "Times this member saw the leader change.");
    proposals_dropped_ = options_.metrics->AddCounter(
        "capstan_raft_proposals_dropped_total",
        "Proposals that never entered the log (no leader in time, refused, disk failure).");
    proposer_rounds_ = options_.metrics->AddCounter(
        "capstan_raft_proposer_rounds_total",
        "Raft rounds a request's event loop ran itself because the raft loop was idle (lone "
        "voter, one write at a time).");
    options_.metrics->AddGaugeFunc("capstan_raft_term", "Current Raft term.",
                                   [this] { return static_cast<double>(term_.load()); });
    options_.metrics->AddGaugeFunc("capstan_raft_is_leader", "1 on the leader, else 0.",
                                   [this] { return IsLeader() ? 1.0 : 0.0; });
    options_.metrics->AddGaugeFunc("capstan_raft_committed_index", "Last committed log index.",
                                   [this] { return static_cast<double>(committed_.load()); });
  }
}

absl::StatusOr<std::unique_ptr<Node>> Node::Start(NodeOptions options, StateMachine* sm,
                                                  const AppliedState& applied) {
  std::unique_ptr<Node> node(new Node(std::move(options), sm));
  RETURN_IF_ERROR(node->Init(applied));
  node->applier_ = std::thread([n = node.get()] {
    SetThreadName("raft-apply");
    n->ApplyLoop();
  });
  node->loop_ = std::thread([n = node.get()] {
    SetThreadName("raft-loop");
    n->Loop();
  });
  return node;
}

absl::Status Node::Init(const AppliedState& applied) {
  WalState ws;
  ASSIGN_OR_RETURN(wal_, Wal::Open(options_.wal_dir, options_.wal, &ws));
  std::error_code ec;
  fs::remove_all(options_.snapshot_dir, ec);  // leftovers of snapshots being sent or received
  fs::create_directories(options_.snapshot_dir, ec);

  bool fresh = ws.entries.empty() && ws.snapshot_index == 0 && ws.hard_state == HardState{} &&
               applied.index == 0;
  if (fresh && !options_.bootstrap.empty()) {
    // Founding member of a new cluster: the initial membership is the first
    // entries of the log, committed by construction (as etcd does).
    RETURN_IF_ERROR(wal_->Append(options_.bootstrap));
    ws.hard_state = HardState{1, 0, options_.bootstrap.back().index};
    RETURN_IF_ERROR(wal_->SaveHardState(ws.hard_state));
    RETURN_IF_ERROR(wal_->Sync());
    ws.entries = options_.bootstrap;
  }

  // The state machine's durable state is the snapshot the core starts from;
  // the WAL supplies every entry after it.
  PersistentState ps;
  ps.snapshot = SnapshotMeta{applied.index, applied.term, applied.conf};
  ps.hard_state = ws.hard_state;
  for (Entry& e : ws.entries) {
    if (e.index > applied.index) ps.entries.push_back(std::move(e));
  }
  if (!ps.entries.empty() && ps.entries.front().index != applied.index + 1) {
    return absl::DataLossError(absl::StrCat(
        "the wal in ", options_.wal_dir, " starts at index ", ps.entries.front().index,
        " but the database has applied only up to ", applied.index,
        "; entries in between are missing (restore this member from a snapshot or re-add it)"));
  }
  if (wal_->last_index() < applied.index) {
    // The database is ahead of the log: a snapshot was installed and the
    // member stopped before the WAL recorded it. Record it now.
    RETURN_IF_ERROR(wal_->SaveSnapshot(applied.index, applied.term));
    RETURN_IF_ERROR(wal_->Sync());
  }
  uint64_t last = ps.entries.empty() ? applied.index : ps.entries.back().index;
  ps.hard_state.commit = std::clamp(ps.hard_state.commit, applied.index, last);

  Config cfg;
  cfg.id = options_.id;
  cfg.election_tick = options_.election_ticks;
  cfg.heartbeat_tick = 1;
  cfg.pre_vote = options_.pre_vote;
  cfg.check_quorum = options_.check_quorum;
  cfg.seed = options_.seed;
  raft_ = std::make_unique<Raft>(cfg, std::move(ps));
  compacted_ = applied.index;
  applied_ = applied.index;
  committed_ = raft_->log().committed();
  term_ = raft_->term();
  CAPSTAN_LOG(info, "raft node started", "id", absl::StrCat(absl::Hex(options_.id)), "term",
              raft_->term(), "applied", applied.index, "committed", raft_->log().committed(),
              "last_index", raft_->log().last_index(), "voters", raft_->conf().voters.size());
  return absl::OkStatus();
}

Node::~Node() { Stop(); }

void Node::SetTransport(Transport* transport) { transport_ = transport; }

void Node::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) loop_.join();
  // A proposer may be driving a round (it may still hand the applier work):
  // wait for it, and let none start.
  std::lock_guard<std::mutex> core(core_mu_);
  core_closed_ = true;
  lone_leader_ = false;
  {
    std::lock_guard<std::mutex> lock(apply_mu_);
    apply_stopping_ = true;
  }
  apply_cv_.notify_all();
  if (applier_.joinable()) applier_.join();
  // Whatever still waits hears that the node is gone.
  absl::Status stopped = absl::UnavailableError("raft node stopped");
  std::vector<std::string> dropped;
  for (auto& h : held_) {
    for (auto& d : h.data) dropped.push_back(std::move(d));
  }
  held_.clear();
  for (auto& [ctx, b] : read_batches_) {
    for (auto& cb : b.callbacks) cb(stopped, 0);
  }
  read_batches_.clear();
  std::vector<PendingRead> reads;
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& d : proposals_) dropped.push_back(std::move(d));
    proposals_.clear();
    reads.swap(reads_);
    tasks.swap(tasks_);
  }
  for (auto& r : reads) r.done(stopped, 0);
  for (auto& t : tasks) t();  // they see stopping_ and fail
  if (!dropped.empty() && options_.on_dropped) options_.on_dropped(stopped, std::move(dropped));
}

absl::Status Node::Health() const {
  if (!failed_) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

absl::Status Node::Propose(std::string data, bool defer_wake) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return failure_;
    if (stopping_) return absl::UnavailableError("raft node stopped");
    if (proposal_bytes_ + data.size() > options_.max_pending_bytes) {
      return absl::ResourceExhaustedError("too many proposals queued; retry later");
    }
    proposal_bytes_ += data.size();
    proposals_.push_back(std::move(data));
  }
  if (!defer_wake) cv_.notify_one();
  return absl::OkStatus();
}

void Node::DriveOrWake(size_t max_entries) {
  // try_lock, not lock: a busy loop takes these proposals with its next
  // round (group commit); waiting here would only serialize the proposers.
  if (lone_leader_.load() && core_mu_.try_lock()) {
    std::lock_guard<std::mutex> core(core_mu_, std::adopt_lock);
    bool small;
    {
      std::lock_guard<std::mutex> lock(mu_);
      small = proposals_.size() <= max_entries && !stopping_ && failure_.ok();
    }
    // Recent rounds carried more: writers are concurrent, and the ones behind
    // this proposal are better served by a caller that keeps reading.
    small = small && round_entries_x16_.load(std::memory_order_relaxed) <= max_entries * 16 + 8;
    if (small && !core_closed_) {
      RunRound(/*tick=*/false);
      if (proposer_rounds_) proposer_rounds_->Inc();
      return;
    }
  }
  cv_.notify_one();
}

absl::Status Node::RunOnLoop(std::function<absl::Status()> fn) {
  auto result = std::make_shared<std::promise<absl::Status>>();
  auto future = result->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("raft node stopped");
    if (!failure_.ok()) return failure_;  // the loop has exited
    tasks_.push_back([this, fn = std::move(fn), result] {
      if (stopping_) {
        result->set_value(absl::UnavailableError("raft node stopped"));
      } else {
        result->set_value(fn());
      }
    });
  }
  cv_.notify_one();
  return future.get();
}

absl::Status Node::ProposeConfChange(const ConfChange& cc) {
  return RunOnLoop([this, cc] { return raft_->ProposeConfChange(cc); });
}

absl::Status Node::TransferLeadership(uint64_t to) {
  return RunOnLoop([this, to] {
    if (raft_->role() != Role::kLeader) {
      return absl::FailedPreconditionError("not the leader");
    }
    raft_->TransferLeader(to);
    return absl::OkStatus();
  });
}

NodeStatus Node::Status() {
  NodeStatus out;
  absl::Status st = RunOnLoop([&] {
    out.id = options_.id;
    out.leader = raft_->leader();
    out.term = raft_->term();
    out.role = raft_->role();
    out.committed = raft_->log().committed();
    out.last_index = raft_->log().last_index();
    out.conf = raft_->conf();
    if (raft_->role() == Role::kLeader) {
      for (const auto& [id, pr] : raft_->progress()) out.match[id] = pr.match;
    }
    return absl::OkStatus();
  });
  if (!st.ok()) {
    out.id = options_.id;
    out.term = term_;
    out.committed = committed_;
  }
  out.applied = applied_;
  return out;
}

void Node::ReadIndex(std::function<void(absl::Status, uint64_t)> done,
                     std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.ok() && !stopping_) {
      reads_.push_back({std::move(done), deadline});
      cv_.notify_one();
      return;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  done(failure_.ok() ? absl::UnavailableError("raft node stopped") : failure_, 0);
}

void Node::Step(Message m) {
  if (m.to != options_.id) return;
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto heard = std::find_if(last_heard_.begin(), last_heard_.end(),
                              [&](const auto& e) { return e.first == m.from; });
    if (heard == last_heard_.end()) {
      last_heard_.emplace_back(m.from, now);
    } else {
      heard->second = now;
    }
    inbox_.push_back(std::move(m));
  }
  cv_.notify_one();
}

std::map<uint64_t, std::chrono::steady_clock::time_point> Node::LastHeard() {
  std::lock_guard<std::mutex> lock(mu_);
  return {last_heard_.begin(), last_heard_.end()};
}

void Node::StepSnapshot(Message m, std::string dir) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (m.snapshot) incoming_snapshots_.emplace_back(m.snapshot->index, std::move(dir));
    inbox_.push_back(std::move(m));
  }
  cv_.notify_one();
}

void Node::ReportUnreachable(uint64_t id) {
  Step(Message{.type = MsgType::kUnreachable, .from = id, .to = options_.id});
}

void Node::ReportSnapshot(uint64_t id, bool ok) {
  Step(Message{.type = MsgType::kSnapStatus, .from = id, .to = options_.id, .reject = !ok});
}

void Node::Compact(uint64_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  compact_to_ = std::max(compact_to_, index);
}

// ----- the raft loop ----------------------------------------------------

void Node::Loop() {
  auto next_tick = Clock::now() + options_.tick;
  // Committed entries recovered from disk (or the bootstrap membership) are
  // handed on at once, and a lone voter campaigns without waiting for a tick.
  {
    std::lock_guard<std::mutex> core(core_mu_);
    ProcessReady();
    RetryHeldWork(false);
    ProcessReady();
    PublishLoneLeader();
  }
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, next_tick, [&] {
        return stopping_ || !proposals_.empty() || !inbox_.empty() || !reads_.empty() ||
               !tasks_.empty();
      });
      if (stopping_ || !failure_.ok()) return;
    }
    std::lock_guard<std::mutex> core(core_mu_);
    if (failed_) return;  // a proposer's round failed the log
    bool tick = Clock::now() >= next_tick;
    if (tick) {
      next_tick += options_.tick;
      // After a long stall (a slow fsync, a stopped process) do not fire a
      // burst of ticks: that would expire election timers all at once.
      if (next_tick < Clock::now()) next_tick = Clock::now() + options_.tick;
    }
    RunRound(tick);
  }
}

void Node::RunRound(bool tick) {
  DrainInputs();
  if (tick) raft_->Tick();
  RetryHeldWork(tick);
  ProcessReady();
  PublishLoneLeader();
}

void Node::PublishLoneLeader() {
  const ConfState& conf = raft_->conf();
  lone_leader_ = raft_->role() == Role::kLeader && conf.voters.size() == 1 &&
                 conf.voters[0] == options_.id && conf.learners.empty() && !failed_;
}

void Node::DrainInputs() {
  std::vector<std::string> proposals;
  std::vector<Message> inbox;
  std::vector<PendingRead> reads;
  std::vector<std::function<void()>> tasks;
  std::vector<std::pair<uint64_t, std::string>> snaps;
  uint64_t compact_to;
  {
    std::lock_guard<std::mutex> lock(mu_);
    proposals.swap(proposals_);
    proposal_bytes_ = 0;
    inbox.swap(inbox_);
    reads.swap(reads_);
    tasks.swap(tasks_);
    snaps.swap(incoming_snapshots_);
    compact_to = compact_to_;
  }
  for (auto& [index, dir] : snaps) {
    auto [it, inserted] = snapshot_dirs_.emplace(index, dir);
    if (!inserted) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }
  for (Message& m : inbox) (void)raft_->Step(std::move(m));
  for (auto& t : tasks) t();
  if (!proposals.empty()) {
    held_.push_back({std::move(proposals), Clock::now() + options_.hold_without_leader});
  }
  if (!reads.empty()) {
    // Every read that arrived since the last round shares one quorum check.
    ReadBatch batch;
    batch.deadline = Clock::time_point::max();
    for (auto& r : reads) {
      batch.deadline = std::min(batch.deadline, r.deadline);
      batch.callbacks.push_back(std::move(r.done));
    }
    read_batches_.emplace(absl::StrCat("r", next_read_ctx_++), std::move(batch));
  }
  if (compact_to > compacted_) {
    // Keep some entries behind the durable index for followers a little behind.
    uint64_t durable = std::min(compact_to, raft_->log().applied());
    uint64_t keep_from =
        durable > options_.catch_up_entries ? durable - options_.catch_up_entries : 0;
    if (keep_from > raft_->log().snapshot_index() && keep_from <= raft_->log().stable()) {
      raft_->Compact(keep_from);
      CAPSTAN_LOG(info, "raft log compacted", "up_to", keep_from, "durable", durable);
    }
    auto term = raft_->log().Term(durable);
    if (term) {
      absl::Status st = wal_->ReleaseTo(durable, *term);
      if (!st.ok()) CAPSTAN_LOG(warn, "wal release failed", "error", st.ToString());
    }
    compacted_ = durable;
  }
}

void Node::RetryHeldWork(bool tick) {
  auto now = Clock::now();
  // Proposals: into the core once a leader is known; dropped after a while.
  while (!held_.empty()) {
    HeldProposals& h = held_.front();
    if (raft_->CanPropose().ok()) {
      Message m{.type = MsgType::kPropose, .from = options_.id, .to = options_.id};
      m.entries.reserve(h.data.size());
      for (auto& d : h.data) m.entries.push_back(Entry{.data = std::move(d)});
      absl::Status st = raft_->Step(std::move(m));
      if (!st.ok()) CAPSTAN_LOG(warn, "raft: proposals lost", "error", st.ToString());
      held_.pop_front();
      continue;
    }
    if (h.deadline > now) break;
    if (proposals_dropped_) proposals_dropped_->Inc(h.data.size());
    if (options_.on_dropped) {
      options_.on_dropped(raft_->CanPropose(), std::move(h.data));
    }
    held_.pop_front();
  }
  // Reads: (re)issue batches the core has not taken or that went unanswered.
  for (auto it = read_batches_.begin(); it != read_batches_.end();) {
    ReadBatch& b = it->second;
    if (b.deadline <= now) {
      for (auto& cb : b.callbacks) {
        cb(absl::DeadlineExceededError("timed out waiting for a linearizable read point"), 0);
      }
      it = read_batches_.erase(it);
      continue;
    }
    if (tick && b.ticks_since_sent >= 0) ++b.ticks_since_sent;
    bool resend = b.ticks_since_sent < 0 || b.ticks_since_sent > options_.election_ticks;
    if (resend && raft_->leader() != 0) {
      Message m{.type = MsgType::kReadIndex, .from = options_.id, .to = options_.id};
      m.context = it->first;
      if (raft_->Step(std::move(m)).ok()) b.ticks_since_sent = 0;
    }
    ++it;
  }
  // A member that is the only voter need not wait out an election timeout.
  if (!campaigned_alone_ && raft_->conf().voters.size() == 1 &&
      raft_->conf().voters[0] == options_.id && raft_->role() != Role::kLeader) {
    campaigned_alone_ = true;
    raft_->Campaign();
  }
}

void Node::ProcessReady() {
  while (raft_->HasReady()) {
    Ready rd = raft_->GetReady();
    // 1. Persist. A snapshot is installed before anything that follows it.
    if (rd.snapshot) {
      auto it = snapshot_dirs_.find(rd.snapshot->index);
      if (it == snapshot_dirs_.end()) {
        Fail(absl::InternalError(absl::StrCat("raft accepted snapshot ", rd.snapshot->index,
                                              " whose data was not received")),
             {});
        return;
      }
      std::promise<absl::Status> restored;
      auto done = restored.get_future();
      ApplyItem item;
      item.restore_dir = it->second;
      item.restore_meta = AppliedState{rd.snapshot->index, rd.snapshot->term, rd.snapshot->conf};
      item.restored = &restored;
      EnqueueApply(std::move(item));
      absl::Status st = done.get();
      std::error_code ec;
      fs::remove_all(it->second, ec);
      snapshot_dirs_.erase(it);
      if (st.ok()) st = wal_->SaveSnapshot(rd.snapshot->index, rd.snapshot->term);
      if (!st.ok()) {
        Fail(st, {});
        return;
      }
      compacted_ = rd.snapshot->index;
    }
    // A leader's appends and heartbeats leave before its own write (Raft
    // thesis §10.2.1), so followers write in parallel with the leader: the
    // leader counts its own entries toward commit only in Advance, after its
    // fsync, and its term was durable before it could lead. Votes and
    // acknowledgements still wait for the disk, below.
    std::vector<Message> early;
    for (Message& m : rd.messages) {
      if (m.type == MsgType::kAppend || m.type == MsgType::kHeartbeat)
        early.push_back(std::move(m));
    }
    if (!early.empty()) {
      std::erase_if(rd.messages, [](const Message& m) {
        return m.type == MsgType::kAppend || m.type == MsgType::kHeartbeat;
      });
      if (Transport* t = transport_.load(); t != nullptr) t->Send(std::move(early));
    }
    if (!rd.entries.empty()) {
      // A moving average (x16) of the entries a round appends.
      uint32_t avg = round_entries_x16_.load(std::memory_order_relaxed);
      uint32_t n = static_cast<uint32_t>(std::min<size_t>(rd.entries.size(), 1 << 16));
      round_entries_x16_.store(avg - avg / 8 + n * 2, std::memory_order_relaxed);
    }
    absl::Status st = wal_->Append(rd.entries);
    if (st.ok() && rd.hard_state) st = wal_->SaveHardState(*rd.hard_state);
    if (st.ok() && (rd.must_sync || rd.snapshot)) {
      auto start = Clock::now();
      st = wal_->Sync();
      if (fsync_seconds_) {
        fsync_seconds_->Observe(std::chrono::duration<double>(Clock::now() - start).count());
      }
      if (batch_entries_ && !rd.entries.empty()) {
        batch_entries_->Observe(static_cast<double>(rd.entries.size()));
      }
    }
    if (!st.ok()) {
      std::vector<std::string> dropped;
      for (Entry& e : rd.entries) {
        if (e.type == EntryType::kNormal && !e.data.empty()) dropped.push_back(std::move(e.data));
      }
      Fail(st, std::move(dropped));
      return;
    }
    // 2. Send. Snapshots are cut on the applier, in order with what it applied.
    std::vector<Message> out;
    out.reserve(rd.messages.size());
    for (Message& m : rd.messages) {
      if (m.type == MsgType::kSnapshot) {
        ApplyItem item;
        item.snapshot_for = std::move(m);
        EnqueueApply(std::move(item));
      } else {
        out.push_back(std::move(m));
      }
    }
    if (Transport* t = transport_.load(); t != nullptr && !out.empty()) t->Send(std::move(out));
    // 3. Apply and serve reads. Advance needs the committed entries' range
    // only, so hand over a copy-free batch and keep the last one as marker.
    std::vector<Entry> committed = std::move(rd.committed);
    if (!committed.empty()) rd.committed.push_back(Entry{.index = committed.back().index});
    HandleCommitted(std::move(committed));
    ServeReadStates(rd.read_states);
    raft_->Advance(rd);
    PublishState();
  }
  // Received snapshots the core did not take (already covered) are dropped.
  for (auto it = snapshot_dirs_.begin(); it != snapshot_dirs_.end();) {
    if (it->first <= raft_->log().committed()) {
      std::error_code ec;
      fs::remove_all(it->second, ec);
      it = snapshot_dirs_.erase(it);
    } else {
      ++it;
    }
  }
}

void Node::HandleCommitted(std::vector<Entry> committed) {
  if (committed.empty()) return;
  ApplyItem item;
  for (const Entry& e : committed) {
    if (e.type != EntryType::kConfChange) continue;
    ConfChange cc;
    if (!ConfChange::Decode(e.data, &cc)) {
      CAPSTAN_LOG(err, "undecodable membership change skipped", "index", e.index);
      continue;
    }
    item.batch.conf_after[e.index] = raft_->ApplyConfChange(cc);
    CAPSTAN_LOG(info, "raft membership changed", "index", e.index, "node",
                absl::StrCat(absl::Hex(cc.node)), "voters",
                item.batch.conf_after[e.index].voters.size(), "learners",
                item.batch.conf_after[e.index].learners.size());
  }
  item.batch.entries = std::move(committed);
  // While the applier is idle a batch is applied right here: handing it over
  // costs a thread wake-up per batch, and on a busy machine that wake-up (and
  // the switch back) costs more CPU than overlapping the apply with the next
  // fsync saves (docs/benchmarks/store-analysis.md). A member that is the only
  // voter applies every batch so: its raft loop has nobody to heartbeat, and
  // what waits behind a long apply (reads, the next writes) would wait for it
  // anyway. With peers only small batches are, so that a long apply never
  // holds back heartbeats and appends.
  bool inline_apply = false;
  const ConfState& conf = raft_->conf();
  bool alone = conf.voters.size() == 1 && conf.voters[0] == options_.id && conf.learners.empty();
  if ((alone || item.batch.entries.size() <= kInlineApplyMaxEntries) &&
      item.batch.conf_after.empty()) {
    std::lock_guard<std::mutex> lock(apply_mu_);
    inline_apply = apply_queue_.empty() && !applying_;
    applying_ = applying_ || inline_apply;
  }
  if (!inline_apply) {
    EnqueueApply(std::move(item));
    return;
  }
  RunApplyItem(std::move(item));
  std::lock_guard<std::mutex> lock(apply_mu_);
  applying_ = false;
}

void Node::ServeReadStates(const std::vector<ReadState>& states) {
  for (const ReadState& rs : states) {
    auto it = read_batches_.find(rs.context);
    if (it == read_batches_.end()) continue;
    for (auto& cb : it->second.callbacks) cb(absl::OkStatus(), rs.index);
    read_batches_.erase(it);
  }
}

void Node::PublishState() {
  committed_ = raft_->log().committed();
  uint64_t leader = raft_->leader(), term = raft_->term();
  leader_ = leader;
  term_ = term;
  if (leader != last_leader_ || term != last_term_) {
    if (leader != last_leader_ && leader_changes_) leader_changes_->Inc();
    last_leader_ = leader;
    last_term_ = term;
    CAPSTAN_LOG(info, "raft leader", "leader", absl::StrCat(absl::Hex(leader)), "term", term,
                "self", absl::StrCat(absl::Hex(options_.id)));
    if (options_.on_leader_change) options_.on_leader_change(leader, term);
  }
}

void Node::Fail(const absl::Status& cause, std::vector<std::string> dropped) {
  CAPSTAN_LOG(err, "raft log failed; this member takes no more writes until restarted", "error",
              cause.ToString());
  absl::Status st = absl::UnavailableError(
      absl::StrCat("etcdserver: write-ahead log failed (", cause.message(),
                   "); this member takes no more requests that need the log until it restarts "
                   "with the disk fixed"));
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = st;
    for (auto& d : proposals_) dropped.push_back(std::move(d));
    proposals_.clear();
    tasks.swap(tasks_);
  }
  failed_ = true;
  for (auto& t : tasks) t();  // the loop exits after this: nobody may wait on it
  for (auto& h : held_) {
    for (auto& d : h.data) dropped.push_back(std::move(d));
  }
  held_.clear();
  for (auto& [ctx, b] : read_batches_) {
    for (auto& cb : b.callbacks) cb(st, 0);
  }
  read_batches_.clear();
  leader_ = 0;
  if (!dropped.empty() && options_.on_dropped) options_.on_dropped(st, std::move(dropped));
}

// ----- the applier ------------------------------------------------------

void Node::EnqueueApply(ApplyItem item) {
  {
    std::lock_guard<std::mutex> lock(apply_mu_);
    apply_queue_.push_back(std::move(item));
  }
  apply_cv_.notify_one();
}

void Node::ApplyLoop() {
  while (true) {
    ApplyItem item;
    {
      std::unique_lock<std::mutex> lock(apply_mu_);
      apply_cv_.wait(lock, [&] { return apply_stopping_ || !apply_queue_.empty(); });
      if (apply_queue_.empty()) return;  // stopping, and everything handed over is applied
      item = std::move(apply_queue_.front());
      apply_queue_.pop_front();
      applying_ = true;
    }
    RunApplyItem(std::move(item));
    std::lock_guard<std::mutex> lock(apply_mu_);
    applying_ = false;
  }
}

void Node::RunApplyItem(ApplyItem item) {
  if (item.restored != nullptr) {
    absl::Status st = sm_->RestoreSnapshot(item.restore_dir, item.restore_meta);
    if (st.ok()) applied_ = item.restore_meta.index;
    item.restored->set_value(st);
    return;
  }
  if (item.snapshot_for) {
    Message m = std::move(*item.snapshot_for);
    std::string dir = absl::StrCat(options_.snapshot_dir, "/out-", m.to, "-", applied_.load());
    std::error_code ec;
    fs::remove_all(dir, ec);
    auto meta = sm_->CreateSnapshot(dir);
    Transport* t = transport_.load();
    if (!meta.ok() || t == nullptr) {
      CAPSTAN_LOG(warn, "cannot make a snapshot for a peer", "peer", absl::StrCat(absl::Hex(m.to)),
                  "error", meta.status().ToString());
      fs::remove_all(dir, ec);
      ReportSnapshot(m.to, false);
      return;
    }
    m.snapshot = SnapshotMeta{meta->index, meta->term, meta->conf};
    t->SendSnapshot(std::move(m), dir);
    return;
  }
  if (item.batch.entries.empty()) return;
  sm_->ApplyBatch(item.batch);
  applied_ = item.batch.entries.back().index;
}

}  // namespace capstan::raft
