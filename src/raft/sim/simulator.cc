#include "raft/sim/simulator.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "raft/sim/sim_disk.h"

namespace capstan::raft::sim {
namespace {

struct PendingClientOp {
  size_t history_index;
  int64_t deadline;
};

struct Node {
  uint64_t id;
  std::unique_ptr<Raft> raft;  // null while crashed
  Disk disk;
  Kv kv;                                        // the replicated state machine
  std::shared_ptr<const Kv> incoming_snapshot;  // data for a snapshot being installed
  uint64_t applied = 0;
  uint64_t last_term_seen = 0;
  // Client ops this node proposed, by op id, and reads waiting for an index.
  std::map<std::string, PendingClientOp> proposals;
  std::map<std::string, std::pair<PendingClientOp, uint64_t>> reads;  // ctx -> (op, index)
  int restart_at = -1;
  // What this node applied since it started (or installed a snapshot), for
  // the watchers attached to it: index -> entry data.
  std::map<uint64_t, std::string> applied_log;
  uint64_t log_base = 1;  // first index applied_log can hold
};

// A watch client: attached to one node, it receives every entry that node
// applies from `next` on; when the node dies it reconnects to another one with
// its last index, as an etcd client does with its last revision.
struct Watcher {
  uint64_t node = 0;
  uint64_t next = 1;
};

struct InFlight {
  int64_t deliver_at;
  uint64_t seq;
  Message msg;
  std::shared_ptr<const Kv> snapshot_kv;  // kSnapshot: the leader's snapshot data
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& o) : opts_(o), rng_(o.seed) {
    // Bootstrap as etcd does: the initial membership is the first entries of
    // the log (one AddVoter per member, term 1, committed), identical on
    // every founding member, so a member that joins later replays them and
    // learns who the voters are.
    PersistentState founding;
    for (int i = 1; i <= o.nodes; ++i) {
      ConfChange cc{ConfChange::Type::kAddVoter, static_cast<uint64_t>(i), ""};
      founding.entries.push_back(
          Entry{static_cast<uint64_t>(i), 1, EntryType::kConfChange, cc.Encode()});
    }
    founding.hard_state = HardState{1, 0, static_cast<uint64_t>(o.nodes)};
    // One more node than the cluster: it starts outside and is added as a
    // learner, promoted, removed and added again by the membership fault.
    if (!o.wal_dir.empty()) {
      run_dir_ = absl::StrCat(o.wal_dir, "/seed-", o.seed);
      std::filesystem::remove_all(run_dir_);
    }
    for (int i = 1; i <= o.nodes + 1; ++i) {
      auto n = std::make_unique<Node>();
      n->id = i;
      if (!run_dir_.empty()) {
        n->disk.wal_dir = absl::StrCat(run_dir_, "/node", i);
        std::filesystem::create_directories(n->disk.wal_dir);
        if (i <= o.nodes) n->disk.Bootstrap(founding);
      } else if (i <= o.nodes) {
        n->disk.synced = founding;
      }
      nodes_.push_back(std::move(n));
      Start(*nodes_.back());
    }
    for (int w = 0; w < o.watchers; ++w) {
      watchers_.push_back(Watcher{1 + Rand(static_cast<uint64_t>(o.nodes)), 1});
    }
  }

  ~Simulation() {
    if (!run_dir_.empty()) std::filesystem::remove_all(run_dir_);
  }

  SimResult Run() {
    faults_active_ = true;
    for (now_ = 0; now_ < opts_.fault_ticks && result_.ok; ++now_) {
      Faults();
      Step();
    }
    faults_active_ = false;
    // Liveness: heal everything and give the cluster time.
    blocked_.clear();
    for (auto& n : nodes_) {
      if (!n->raft) Start(*n);
    }
    int64_t end = opts_.fault_ticks + opts_.liveness_ticks;
    for (; now_ < end && result_.ok; ++now_) Step(/*faults=*/false);
    if (result_.ok) CheckLiveness();
    if (result_.ok) {
      // Operations still waiting keep complete == INT64_MAX: unknown outcome.
      CheckResult lin = CheckLinearizable(history_);
      result_.inconclusive_keys = lin.inconclusive_keys;
      if (!lin.linearizable) {
        Fail(absl::StrCat("history not linearizable for key '", lin.key, "':\n", lin.details));
      }
    }
    result_.history_ops = history_.size();
    return result_;
  }

 private:
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  void Fail(const std::string& what) {
    if (!result_.ok) return;
    result_.ok = false;
    std::string state;
    for (auto& n : nodes_) {
      if (!n->raft) {
        absl::StrAppend(&state, "  node ", n->id, ": down\n");
        continue;
      }
      const Raft& r = *n->raft;
      absl::StrAppend(&state, "  node ", n->id, ": ", RoleName(r.role()), " term ", r.term(),
                      " leader ", r.leader(), " last ", r.log().last_index(), " commit ",
                      r.log().committed(), " applied ", n->applied, " stable ", r.log().stable(),
                      "\n");
      for (const auto& [id, pr] : r.progress()) {
        if (r.role() != Role::kLeader) break;
        absl::StrAppend(&state, "    peer ", id, " match ", pr.match, " next ", pr.next, " state ",
                        static_cast<int>(pr.state), " probe_sent ", pr.probe_sent, " inflight ",
                        pr.inflight.size(), "\n");
      }
    }
    result_.failure = absl::StrCat("seed ", opts_.seed, " at tick ", now_, ": ", what, "\n", state,
                                   "replay: capstan-sim --seed ", opts_.seed);
  }

  void Start(Node& n) {
    if (n.disk.real()) {
      n.disk.Load();
      if (!n.disk.error.empty()) {
        Fail(absl::StrCat("node ", n.id, " cannot recover its WAL: ", n.disk.error));
        return;
      }
    }
    Config cfg;
    cfg.id = n.id;
    cfg.seed = opts_.seed * 1000 + n.id * 7 + result_.crashes;
    cfg.election_tick = 10;
    cfg.heartbeat_tick = 1;
    cfg.max_inflight = 8;
    cfg.lease_reads = opts_.lease_reads;
    n.raft = std::make_unique<Raft>(cfg, n.disk.synced);
    n.raft->set_bug_vote_without_log_check(opts_.bug_vote_without_log_check);
    // The state machine restarts from its snapshot and re-applies the log.
    n.kv = n.disk.snapshot_kv;
    n.applied = n.disk.synced.snapshot.index;
    n.applied_log.clear();
    n.log_base = n.applied + 1;
    n.proposals.clear();
    n.reads.clear();
    n.restart_at = -1;
    if (n.disk.synced.hard_state.term < n.last_term_seen) {
      Fail(absl::StrCat("node ", n.id, " restarted with term ", n.disk.synced.hard_state.term,
                        " after having term ", n.last_term_seen, ": a term went back"));
    }
  }

  // At most a minority down at once, so the cluster can make progress.
  bool CanCrash() const {
    size_t down = 0;
    for (auto& m : nodes_) down += m->raft ? 0 : 1;
    return down < std::max<size_t>(1, (opts_.nodes - 1) / 2);
  }

  void Crash(Node& n) {
    if (!n.raft) return;
    if (opts_.verbose) {
      std::fprintf(stderr, "t=%lld node %llu crashes\n", (long long)now_, (unsigned long long)n.id);
    }
    ++result_.crashes;
    n.raft.reset();
    n.disk.Crash(rng_, opts_.torn_write);
    // The clients of its pending operations never hear back: unknown outcome.
    FreeAll(n.proposals, [](const PendingClientOp& p) { return p.history_index; });
    FreeAll(n.reads, [](const auto& r) { return r.first.history_index; });
    n.proposals.clear();
    n.reads.clear();
    n.restart_at = static_cast<int>(now_ + 5 + Rand(40));
  }

  void Faults() {
    for (auto& n : nodes_) {
      if (!n->raft && n->restart_at >= 0 && now_ >= n->restart_at) Start(*n);
    }
    if (Chance(opts_.crash_per_tick)) {
      if (CanCrash()) Crash(*nodes_[Rand(nodes_.size())]);
    }
    if (Chance(opts_.partition_per_tick)) {
      blocked_.clear();
      if (Chance(0.7) && nodes_.size() > 1) {
        // Split the cluster: a random minority (often holding the leader)
        // loses contact with the rest, in both directions.
        std::vector<uint64_t> ids;
        for (auto& n : nodes_) ids.push_back(n->id);
        std::shuffle(ids.begin(), ids.end(), rng_);
        size_t minority = 1 + Rand(nodes_.size() / 2);
        for (size_t i = 0; i < minority; ++i) {
          for (size_t j = minority; j < ids.size(); ++j) {
            blocked_.insert({ids[i], ids[j]});
            blocked_.insert({ids[j], ids[i]});
          }
        }
      }
    }
    if (Chance(0.01)) ChangeMembership();
    if (Chance(opts_.transfer_per_tick)) TransferLeadership();
    // Client load.
    if (Chance(0.3)) ClientOp();
  }

  // The leader hands over to a random other voter (etcd's MoveLeader).
  void TransferLeadership() {
    for (auto& n : nodes_) {
      if (!n->raft || n->raft->role() != Role::kLeader) continue;
      const auto& voters = n->raft->conf().voters;
      uint64_t to = voters[Rand(voters.size())];
      if (to == n->id) return;
      n->raft->TransferLeader(to);
      ++result_.transfers;
      Process(*n);
      return;
    }
  }

  // Delivers to each watcher what its node applied since, and checks the
  // stream: consecutive indexes (no gap, no duplicate) carrying exactly the
  // committed entries. A node that only has a snapshot past the watcher's
  // position answers "compacted", which skips ahead explicitly.
  void DeliverWatches() {
    for (Watcher& w : watchers_) {
      Node* n = Find(w.node);
      if (n == nullptr || !n->raft) {
        std::vector<uint64_t> up;
        for (auto& m : nodes_) {
          if (m->raft) up.push_back(m->id);
        }
        if (up.empty()) continue;
        w.node = up[Rand(up.size())];
        continue;  // reconnected; events flow from the next tick
      }
      while (w.next <= n->applied && result_.ok) {
        if (w.next < n->log_base) {
          w.next = n->log_base;  // compacted: the client re-watches from here
          continue;
        }
        auto it = n->applied_log.find(w.next);
        if (it == n->applied_log.end()) {
          Fail(absl::StrCat("watcher on node ", n->id, " found no event at index ", w.next,
                            " (a gap)"));
          return;
        }
        auto c = committed_.find(w.next);
        if (c == committed_.end() ||
            (c->second.second != "<snapshot>" && c->second.second != it->second)) {
          Fail(absl::StrCat("watcher on node ", n->id, " got an event at index ", w.next,
                            " that is not the committed entry"));
          return;
        }
        ++w.next;
        ++result_.watch_events;
      }
    }
  }

  // Adds the spare node as a learner, promotes it once it has caught up,
  // removes it, and starts over.
  void ChangeMembership() {
    Node* leader = nullptr;
    for (auto& n : nodes_) {
      if (n->raft && n->raft->role() == Role::kLeader) leader = n.get();
    }
    if (leader == nullptr) return;
    Raft& r = *leader->raft;
    uint64_t spare = nodes_.size();
    const ConfState& conf = r.conf();
    auto has = [](const std::vector<uint64_t>& v, uint64_t id) {
      return std::find(v.begin(), v.end(), id) != v.end();
    };
    ConfChange cc;
    cc.node = spare;
    if (has(conf.voters, spare)) {
      // Not from two voters: the old quorum (both) needs the removed node's
      // vote, so if it was the leader and dies mid hand-over the survivor
      // cannot learn that the removal committed (see docs/raft.md).
      if (conf.voters.size() < 3) return;
      cc.type = ConfChange::Type::kRemove;
    } else if (has(conf.learners, spare)) {
      auto it = r.progress().find(spare);
      if (it == r.progress().end() || it->second.match < r.log().committed()) return;
      cc.type = ConfChange::Type::kAddVoter;
    } else {
      cc.type = ConfChange::Type::kAddLearner;
    }
    if (r.ProposeConfChange(cc).ok()) ++result_.conf_changes;
    Process(*leader);
  }

  // Clients are closed-loop, as in Jepsen: one operation at a time each. A
  // client whose operation timed out moves on; that operation stays open
  // (unknown outcome). This bounds concurrency, which keeps the
  // linearizability search tractable.
  void FreeClient(size_t history_index) {
    client_busy_[history_[history_index].client - 1] = false;
  }
  template <typename Map, typename Index>
  void FreeAll(const Map& pending, Index index_of) {
    for (const auto& [id, p] : pending) FreeClient(index_of(p));
  }

  void ClientOp() {
    Node& n = *nodes_[Rand(nodes_.size())];
    if (!n.raft) return;
    std::vector<size_t> idle;
    for (size_t c = 0; c < client_busy_.size(); ++c) {
      if (!client_busy_[c]) idle.push_back(c);
    }
    if (idle.empty()) return;
    Op op;
    op.client = 1 + idle[Rand(idle.size())];
    op.key = absl::StrCat("k", Rand(3));
    op.invoke = now_;
    op.complete = INT64_MAX;
    std::string id = absl::StrCat("op", history_.size());
    int kind = static_cast<int>(Rand(10));
    if (kind < 4) {
      op.kind = Op::Kind::kRead;
      history_.push_back(op);
      client_busy_[op.client - 1] = true;
      n.raft->ReadIndex(id);
      n.reads[id] = {{history_.size() - 1, now_ + 60}, 0};
      return;
    }
    std::string cmd;
    if (kind < 8) {
      op.kind = Op::Kind::kWrite;
      op.value = absl::StrCat("v", history_.size());
      cmd = absl::StrCat(id, " put ", op.key, " ", op.value);
    } else {
      op.kind = Op::Kind::kCas;
      op.expected = absl::StrCat("v", Rand(history_.size() + 1));
      op.value = absl::StrCat("v", history_.size());
      cmd = absl::StrCat(id, " cas ", op.key, " ", op.expected, " ", op.value);
    }
    if (!n.raft->Propose(cmd).ok()) return;  // refused at once: it never happened
    history_.push_back(op);
    client_busy_[op.client - 1] = true;
    n.proposals[id] = {history_.size() - 1, now_ + 60};
  }

  void Step(bool faults = true) {
    // Deliver what is due.
    std::vector<InFlight> due;
    while (!network_.empty() && network_.begin()->first.first <= now_) {
      due.push_back(std::move(network_.begin()->second));
      network_.erase(network_.begin());
    }
    for (InFlight& f : due) {
      Node* to = Find(f.msg.to);
      bool snapshot = f.msg.type == MsgType::kSnapshot;
      uint64_t from = f.msg.from, dest = f.msg.to;
      if (to == nullptr || !to->raft) {
        if (snapshot) ReportSnapshot(from, dest, true);
        continue;
      }
      to->incoming_snapshot = f.snapshot_kv;
      (void)to->raft->Step(std::move(f.msg));
      Process(*to);
      if (snapshot) ReportSnapshot(from, dest, false);
    }
    for (auto& n : nodes_) {
      if (!n->raft) continue;
      n->raft->Tick();
      Process(*n);
    }
    // Give up on client operations that waited too long: unknown outcome.
    for (auto& n : nodes_) {
      std::erase_if(n->proposals, [&](const auto& p) {
        if (p.second.deadline >= now_) return false;
        FreeClient(p.second.history_index);
        return true;
      });
      std::erase_if(n->reads, [&](const auto& p) {
        if (p.second.first.deadline >= now_) return false;
        FreeClient(p.second.first.history_index);
        return true;
      });
    }
    CheckLeaders();
    DeliverWatches();
    (void)faults;
  }

  // The transport tells the leader how a snapshot send went.
  void ReportSnapshot(uint64_t leader, uint64_t to, bool failed) {
    Node* n = Find(leader);
    if (n == nullptr || !n->raft) return;
    Message st{.type = MsgType::kSnapStatus, .from = to, .reject = failed};
    (void)n->raft->Step(std::move(st));
  }

  Node* Find(uint64_t id) {
    if (id == 0 || id > nodes_.size()) return nullptr;
    return nodes_[id - 1].get();
  }

  void SendToNetwork(Message m) {
    if (blocked_.contains({m.from, m.to}) || Chance(opts_.drop)) {
      if (m.type == MsgType::kSnapshot) ReportSnapshot(m.from, m.to, /*failed=*/true);
      return;
    }
    // Raft's own messages may arrive twice. A forwarded proposal may not: it
    // would apply the client's write twice, and the real transport delivers
    // each message at most once (it drops, never resends, on a broken stream).
    int copies = Chance(opts_.duplicate) && m.type != MsgType::kPropose ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      InFlight f{now_ + 1 + static_cast<int64_t>(Rand(opts_.max_delay)), seq_++, m, nullptr};
      if (m.type == MsgType::kSnapshot) {
        f.snapshot_kv = std::make_shared<const Kv>(Find(m.from)->disk.snapshot_kv);
      }
      network_.emplace(std::make_pair(f.deliver_at, f.seq), std::move(f));
    }
  }

  void Process(Node& n) {
    while (n.raft && n.raft->HasReady()) {
      Ready rd = n.raft->GetReady();
      if (rd.snapshot) {
        if (!n.incoming_snapshot) {
          Fail(absl::StrCat("node ", n.id, " installs a snapshot it never received"));
          return;
        }
        n.disk.pending_snapshot = {*rd.snapshot, *n.incoming_snapshot};
        n.kv = *n.incoming_snapshot;
        n.applied = rd.snapshot->index;
        n.applied_log.clear();
        n.log_base = n.applied + 1;
        committed_.emplace(rd.snapshot->index, std::make_pair(rd.snapshot->term, "<snapshot>"));
      }
      if (!opts_.bug_send_before_persist) {
        // As raft::Node does: a leader's appends and heartbeats leave before
        // its own write; everything else waits for the disk.
        for (Message& m : rd.messages) {
          if (m.type == MsgType::kAppend || m.type == MsgType::kHeartbeat) {
            SendToNetwork(std::move(m));
            m.type = MsgType::kHup;  // sent; skipped below
          }
        }
        std::erase_if(rd.messages, [](const Message& m) { return m.type == MsgType::kHup; });
      }
      n.disk.Write(rd);
      if (faults_active_ && Chance(opts_.crash_in_write) && CanCrash()) {
        // Power fails while the write is in the page cache: part of it may
        // reach the disk, and nothing of this Ready leaves the node.
        Crash(n);
        return;
      }
      if (opts_.bug_send_before_persist) {
        // Broken driver: messages leave before the disk has what they promise.
        for (Message& m : rd.messages) SendToNetwork(std::move(m));
        rd.messages.clear();
        if (Chance(0.5)) n.disk.Sync();
      } else {
        if (rd.must_sync || rd.hard_state) n.disk.Sync();
        for (Message& m : rd.messages) SendToNetwork(std::move(m));
      }
      for (const Entry& e : rd.committed) Apply(n, e);
      for (const ReadState& rs : rd.read_states) {
        auto it = n.reads.find(rs.context);
        if (it != n.reads.end()) it->second.second = rs.index;
      }
      n.raft->Advance(rd);
      ServeReads(n);
      MaybeSnapshot(n);
      if (!n.disk.error.empty()) {
        Fail(absl::StrCat("node ", n.id, " WAL error: ", n.disk.error));
        return;
      }
      if (n.raft->term() > n.last_term_seen) n.last_term_seen = n.raft->term();
      if (n.raft->log().applied() > n.raft->log().committed()) {
        Fail(absl::StrCat("node ", n.id, " applied past its commit index"));
      }
    }
  }

  // Every 40 applied entries a node snapshots its state machine and compacts
  // its log, so lagging and new members need InstallSnapshot.
  void MaybeSnapshot(Node& n) {
    if (!n.raft || n.applied < n.disk.synced.snapshot.index + 40) return;
    if (n.applied > n.raft->log().stable()) return;
    auto term = n.raft->log().Term(n.applied);
    if (!term) return;
    n.disk.Snapshot(SnapshotMeta{n.applied, *term, n.raft->conf()}, n.kv);
    n.raft->Compact(n.applied);
  }

  void ServeReads(Node& n) {
    for (auto it = n.reads.begin(); it != n.reads.end();) {
      uint64_t index = it->second.second;
      if (index == 0 || n.applied < index) {
        ++it;
        continue;
      }
      Op& op = history_[it->second.first.history_index];
      auto kv = n.kv.find(op.key);
      op.output = kv == n.kv.end() ? "" : kv->second;
      if (opts_.verbose) {
        std::fprintf(stderr, "t=%lld node %llu read %s at index %llu (applied %llu) -> '%s'\n",
                     (long long)now_, (unsigned long long)n.id, op.key.c_str(),
                     (unsigned long long)index, (unsigned long long)n.applied, op.output.c_str());
      }
      op.ok = true;
      op.complete = now_;
      FreeClient(it->second.first.history_index);
      it = n.reads.erase(it);
    }
  }

  void Apply(Node& n, const Entry& e) {
    // Committed entries never change: every node must apply the same entry at
    // the same index.
    auto [it, inserted] = committed_.emplace(e.index, std::make_pair(e.term, e.data));
    if (!inserted && it->second.second == "<snapshot>") {
      it->second = {e.term, e.data};  // first time this entry is applied as an entry
    } else if (!inserted && (it->second.first != e.term || it->second.second != e.data)) {
      Fail(absl::StrCat("node ", n.id, " applied a different entry at index ", e.index, " (term ",
                        e.term, " vs ", it->second.first, ")"));
      return;
    }
    if (e.index != n.applied + 1) {
      Fail(absl::StrCat("node ", n.id, " applied index ", e.index, " after ", n.applied));
      return;
    }
    n.applied = e.index;
    n.applied_log[e.index] = e.data;
    result_.committed = std::max<int64_t>(result_.committed, e.index);
    if (e.type == EntryType::kConfChange) {
      ConfChange cc;
      if (!ConfChange::Decode(e.data, &cc)) {
        Fail(absl::StrCat("undecodable conf change at index ", e.index));
        return;
      }
      ConfState cs = n.raft->ApplyConfChange(cc);
      if (opts_.verbose) {
        std::string v;
        for (auto x : cs.voters) absl::StrAppend(&v, x, " ");
        std::string l;
        for (auto x : cs.learners) absl::StrAppend(&l, x, " ");
        std::fprintf(stderr,
                     "t=%lld node %llu applied conf change at %llu: voters [%s] learners [%s]\n",
                     (long long)now_, (unsigned long long)n.id, (unsigned long long)e.index,
                     v.c_str(), l.c_str());
      }
      return;
    }
    if (e.data.empty()) return;
    std::vector<std::string> parts = absl::StrSplit(e.data, ' ');
    const std::string& id = parts[0];
    bool ok = true;
    if (parts[1] == "put") {
      n.kv[parts[2]] = parts[3];
    } else if (parts[1] == "cas") {
      auto cur = n.kv.find(parts[2]);
      ok = cur != n.kv.end() && cur->second == parts[3];
      if (ok) n.kv[parts[2]] = parts[4];
    }
    if (opts_.verbose) {
      std::fprintf(stderr, "t=%lld node %llu applied %llu: %s%s\n", (long long)now_,
                   (unsigned long long)n.id, (unsigned long long)e.index, e.data.c_str(),
                   ok ? "" : " (failed)");
    }
    auto p = n.proposals.find(id);
    if (p != n.proposals.end()) {
      Op& op = history_[p->second.history_index];
      op.ok = ok;
      op.complete = now_;
      FreeClient(p->second.history_index);
      n.proposals.erase(p);
    }
  }

  void CheckLeaders() {
    for (auto& n : nodes_) {
      if (!n->raft || n->raft->role() != Role::kLeader) continue;
      auto [it, inserted] = leaders_.emplace(n->raft->term(), n->id);
      if (inserted) ++result_.leaders_elected;
      if (inserted && opts_.verbose) {
        std::fprintf(stderr, "t=%lld node %llu leads term %llu (last %llu commit %llu)\n",
                     (long long)now_, (unsigned long long)n->id,
                     (unsigned long long)n->raft->term(),
                     (unsigned long long)n->raft->log().last_index(),
                     (unsigned long long)n->raft->log().committed());
      }
      if (it->second != n->id) {
        Fail(absl::StrCat("two leaders in term ", n->raft->term(), ": nodes ", it->second, " and ",
                          n->id));
      }
    }
  }

  void CheckLiveness() {
    // Everyone is up and connected: there must be a leader, and a new write
    // must commit on every node.
    Node* leader = nullptr;
    for (auto& n : nodes_) {
      if (n->raft && n->raft->role() == Role::kLeader) leader = n.get();
    }
    if (leader == nullptr) {
      Fail("no leader after the liveness phase");
      return;
    }
    uint64_t target = leader->raft->log().last_index();
    for (int i = 0; i < 200 && result_.ok; ++i, ++now_) {
      Step(false);
      bool all = true;
      const ConfState& conf = leader->raft->conf();
      for (auto& n : nodes_) {
        bool member = std::count(conf.voters.begin(), conf.voters.end(), n->id) +
                          std::count(conf.learners.begin(), conf.learners.end(), n->id) >
                      0;
        if (member) all &= n->raft && n->applied >= target;
      }
      if (all) {
        // Every watcher on a member has caught up with the converged log (one
        // on a node outside the cluster legitimately sees it no more).
        DeliverWatches();
        for (const Watcher& w : watchers_) {
          bool member = std::count(conf.voters.begin(), conf.voters.end(), w.node) +
                            std::count(conf.learners.begin(), conf.learners.end(), w.node) >
                        0;
          if (member && w.next <= target) {
            Fail(absl::StrCat("a watcher on node ", w.node, " stopped at index ", w.next,
                              " while the log reached ", target));
          }
        }
        return;
      }
    }
    Fail(absl::StrCat("nodes did not converge on index ", target, " after healing"));
  }

  SimOptions opts_;
  std::mt19937_64 rng_;
  int64_t now_ = 0;
  uint64_t seq_ = 0;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::map<std::pair<int64_t, uint64_t>, InFlight> network_;  // by (delivery time, send order)
  std::set<std::pair<uint64_t, uint64_t>> blocked_;
  std::map<uint64_t, uint64_t> leaders_;  // term -> leader
  std::map<uint64_t, std::pair<uint64_t, std::string>> committed_;
  std::vector<Op> history_;
  std::vector<Watcher> watchers_;
  std::string run_dir_;  // real-WAL mode: this run's directories
  bool faults_active_ = false;
  std::vector<bool> client_busy_ = std::vector<bool>(opts_.clients, false);
  SimResult result_;
};

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace capstan::raft::sim
