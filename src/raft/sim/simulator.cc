#include "raft/sim/simulator.h"

#include <algorithm>
#include <climits>
#include <deque>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace capstan::raft::sim {
namespace {

// What a node has on disk. `synced` survives a crash; `pending` does not.
struct Disk {
  PersistentState synced;
  std::optional<HardState> pending_hs;
  std::vector<Entry> pending_entries;  // replace synced.entries from [0].index on
  void Write(const Ready& rd) {
    if (rd.hard_state) pending_hs = rd.hard_state;
    if (!rd.entries.empty()) {
      // A later write of the same indexes replaces an earlier pending one.
      uint64_t from = rd.entries.front().index;
      while (!pending_entries.empty() && pending_entries.back().index >= from) {
        pending_entries.pop_back();
      }
      pending_entries.insert(pending_entries.end(), rd.entries.begin(), rd.entries.end());
    }
  }
  void Sync() {
    if (pending_hs) synced.hard_state = *pending_hs;
    pending_hs.reset();
    if (!pending_entries.empty()) {
      uint64_t from = pending_entries.front().index;
      auto& e = synced.entries;
      while (!e.empty() && e.back().index >= from) e.pop_back();
      e.insert(e.end(), pending_entries.begin(), pending_entries.end());
      pending_entries.clear();
    }
  }
  void Crash() {
    pending_hs.reset();
    pending_entries.clear();
  }
};

struct PendingClientOp {
  size_t history_index;
  int64_t deadline;
};

struct Node {
  uint64_t id;
  std::unique_ptr<Raft> raft;  // null while crashed
  Disk disk;
  std::map<std::string, std::string> kv;  // the replicated state machine
  uint64_t applied = 0;
  uint64_t last_term_seen = 0;
  // Client ops this node proposed, by op id, and reads waiting for an index.
  std::map<std::string, PendingClientOp> proposals;
  std::map<std::string, std::pair<PendingClientOp, uint64_t>> reads;  // ctx -> (op, index)
  int restart_at = -1;
};

struct InFlight {
  int64_t deliver_at;
  uint64_t seq;
  Message msg;
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& o) : opts_(o), rng_(o.seed) {
    ConfState conf;
    for (int i = 1; i <= o.nodes; ++i) conf.voters.push_back(i);
    for (int i = 1; i <= o.nodes; ++i) {
      auto n = std::make_unique<Node>();
      n->id = i;
      n->disk.synced.snapshot.conf = conf;
      nodes_.push_back(std::move(n));
      Start(*nodes_.back());
    }
  }

  SimResult Run() {
    for (now_ = 0; now_ < opts_.fault_ticks && result_.ok; ++now_) {
      Faults();
      Step();
    }
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
    result_.failure = absl::StrCat("seed ", opts_.seed, " at tick ", now_, ": ", what, "\n",
                                   state, "replay: capstan-sim --seed ", opts_.seed);
  }

  void Start(Node& n) {
    Config cfg;
    cfg.id = n.id;
    cfg.seed = opts_.seed * 1000 + n.id * 7 + result_.crashes;
    cfg.election_tick = 10;
    cfg.heartbeat_tick = 1;
    cfg.max_inflight = 8;
    n.raft = std::make_unique<Raft>(cfg, n.disk.synced);
    n.raft->set_bug_vote_without_log_check(opts_.bug_vote_without_log_check);
    // The state machine restarts empty and re-applies the committed log.
    n.kv.clear();
    n.applied = 0;
    n.proposals.clear();
    n.reads.clear();
    n.restart_at = -1;
    if (n.disk.synced.hard_state.term < n.last_term_seen) {
      Fail(absl::StrCat("node ", n.id, " restarted with term ", n.disk.synced.hard_state.term,
                        " after having term ", n.last_term_seen, ": a term went back"));
    }
  }

  void Crash(Node& n) {
    if (!n.raft) return;
    ++result_.crashes;
    n.raft.reset();
    n.disk.Crash();
    // The clients of its pending operations never hear back: unknown outcome.
    n.proposals.clear();
    n.reads.clear();
    n.restart_at = static_cast<int>(now_ + 5 + Rand(40));
  }

  void Faults() {
    for (auto& n : nodes_) {
      if (!n->raft && n->restart_at >= 0 && now_ >= n->restart_at) Start(*n);
    }
    if (Chance(opts_.crash_per_tick)) {
      // At most a minority down at once, so the cluster can make progress.
      size_t down = 0;
      for (auto& n : nodes_) down += n->raft ? 0 : 1;
      if (down < std::max<size_t>(1, (nodes_.size() - 1) / 2)) Crash(*nodes_[Rand(nodes_.size())]);
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
    // Client load.
    if (Chance(0.3)) ClientOp();
  }

  void ClientOp() {
    Node& n = *nodes_[Rand(nodes_.size())];
    if (!n.raft) return;
    Op op;
    op.client = 1 + Rand(opts_.clients);
    op.key = absl::StrCat("k", Rand(3));
    op.invoke = now_;
    op.complete = INT64_MAX;
    std::string id = absl::StrCat("op", history_.size());
    int kind = static_cast<int>(Rand(10));
    if (kind < 4) {
      op.kind = Op::Kind::kRead;
      history_.push_back(op);
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
    history_.push_back(op);
    if (n.raft->Propose(cmd).ok()) {
      n.proposals[id] = {history_.size() - 1, now_ + 60};
    }
  }

  void Step(bool faults = true) {
    // Deliver what is due.
    std::vector<Message> due;
    for (auto it = network_.begin(); it != network_.end();) {
      if (it->deliver_at <= now_) {
        due.push_back(std::move(it->msg));
        it = network_.erase(it);
      } else {
        ++it;
      }
    }
    for (Message& m : due) {
      Node* to = Find(m.to);
      if (to == nullptr || !to->raft) continue;
      (void)to->raft->Step(std::move(m));
      Process(*to);
    }
    for (auto& n : nodes_) {
      if (!n->raft) continue;
      n->raft->Tick();
      Process(*n);
    }
    // Give up on client operations that waited too long: unknown outcome.
    for (auto& n : nodes_) {
      std::erase_if(n->proposals, [&](const auto& p) { return p.second.deadline < now_; });
      std::erase_if(n->reads, [&](const auto& p) { return p.second.first.deadline < now_; });
    }
    CheckLeaders();
    (void)faults;
  }

  Node* Find(uint64_t id) {
    if (id == 0 || id > nodes_.size()) return nullptr;
    return nodes_[id - 1].get();
  }

  void SendToNetwork(Message m) {
    if (blocked_.contains({m.from, m.to}) || Chance(opts_.drop)) return;
    int copies = Chance(opts_.duplicate) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      network_.push_back({now_ + 1 + static_cast<int64_t>(Rand(opts_.max_delay)), seq_++, m});
    }
  }

  void Process(Node& n) {
    while (n.raft && n.raft->HasReady()) {
      Ready rd = n.raft->GetReady();
      n.disk.Write(rd);
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
      if (n.raft->term() > n.last_term_seen) n.last_term_seen = n.raft->term();
      if (n.raft->log().applied() > n.raft->log().committed()) {
        Fail(absl::StrCat("node ", n.id, " applied past its commit index"));
      }
    }
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
      op.ok = true;
      op.complete = now_;
      it = n.reads.erase(it);
    }
  }

  void Apply(Node& n, const Entry& e) {
    // Committed entries never change: every node must apply the same entry at
    // the same index.
    auto [it, inserted] = committed_.emplace(e.index, std::make_pair(e.term, e.data));
    if (!inserted && (it->second.first != e.term || it->second.second != e.data)) {
      Fail(absl::StrCat("node ", n.id, " applied a different entry at index ", e.index,
                        " (term ", e.term, " vs ", it->second.first, ")"));
      return;
    }
    if (e.index != n.applied + 1) {
      Fail(absl::StrCat("node ", n.id, " applied index ", e.index, " after ", n.applied));
      return;
    }
    n.applied = e.index;
    result_.committed = std::max<int64_t>(result_.committed, e.index);
    if (e.type != EntryType::kNormal || e.data.empty()) return;
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
    auto p = n.proposals.find(id);
    if (p != n.proposals.end()) {
      Op& op = history_[p->second.history_index];
      op.ok = ok;
      op.complete = now_;
      n.proposals.erase(p);
    }
  }

  void CheckLeaders() {
    for (auto& n : nodes_) {
      if (!n->raft || n->raft->role() != Role::kLeader) continue;
      auto [it, inserted] = leaders_.emplace(n->raft->term(), n->id);
      if (inserted) ++result_.leaders_elected;
      if (it->second != n->id) {
        Fail(absl::StrCat("two leaders in term ", n->raft->term(), ": nodes ", it->second,
                          " and ", n->id));
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
      for (auto& n : nodes_) all &= n->raft && n->applied >= target;
      if (all) return;
    }
    Fail(absl::StrCat("nodes did not converge on index ", target, " after healing"));
  }

  SimOptions opts_;
  std::mt19937_64 rng_;
  int64_t now_ = 0;
  uint64_t seq_ = 0;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::deque<InFlight> network_;
  std::set<std::pair<uint64_t, uint64_t>> blocked_;
  std::map<uint64_t, uint64_t> leaders_;  // term -> leader
  std::map<uint64_t, std::pair<uint64_t, std::string>> committed_;
  std::vector<Op> history_;
  SimResult result_;
};

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace capstan::raft::sim
