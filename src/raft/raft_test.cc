// Targeted tests of the Raft core's rules, driven by hand: every message is
// delivered (or dropped) explicitly, and time moves only by Tick().
#include "raft/raft.h"

#include <map>
#include <set>

#include "gtest/gtest.h"

namespace capstan::raft {
namespace {

// A cluster whose network the test controls. Persisting is instantaneous.
class Cluster {
 public:
  explicit Cluster(int n, bool pre_vote = true) {
    ConfState conf;
    for (int i = 1; i <= n; ++i) conf.voters.push_back(i);
    for (int i = 1; i <= n; ++i) {
      Config cfg;
      cfg.id = i;
      cfg.seed = i;
      cfg.pre_vote = pre_vote;
      PersistentState st;
      st.snapshot.conf = conf;
      nodes_[i] = std::make_unique<Raft>(cfg, st);
    }
  }
  Raft& operator[](uint64_t id) { return *nodes_[id]; }

  // Collects every node's Ready; applies committed entries to `applied`.
  void Flush() {
    for (auto& [id, r] : nodes_) {
      while (r->HasReady()) {
        Ready rd = r->GetReady();
        for (auto& m : rd.messages) queue_.push_back(std::move(m));
        for (auto& e : rd.committed) {
          if (!e.data.empty()) applied_[id].push_back(e.data);
        }
        for (auto& rs : rd.read_states) reads_[id].push_back(rs);
        r->Advance(rd);
      }
    }
  }
  // Delivers messages until the network is quiet (or a step limit).
  void Deliver(int max_rounds = 100) {
    for (int round = 0; round < max_rounds; ++round) {
      Flush();
      if (queue_.empty()) return;
      std::vector<Message> batch = std::move(queue_);
      queue_.clear();
      for (auto& m : batch) {
        if (cut_.contains(m.from) || cut_.contains(m.to)) continue;
        if (!nodes_.contains(m.to)) continue;
        (void)nodes_[m.to]->Step(std::move(m));
      }
    }
  }
  void Isolate(uint64_t id) { cut_.insert(id); }
  void Heal() { cut_.clear(); }
  void TickAll(int n) {
    for (int i = 0; i < n; ++i) {
      for (auto& [id, r] : nodes_) {
        if (!cut_.contains(id)) r->Tick();
      }
      Deliver();
    }
  }
  uint64_t Leader() {
    for (auto& [id, r] : nodes_) {
      if (r->role() == Role::kLeader && !cut_.contains(id)) return id;
    }
    return 0;
  }
  std::map<uint64_t, std::vector<std::string>> applied_;
  std::map<uint64_t, std::vector<ReadState>> reads_;

 private:
  std::map<uint64_t, std::unique_ptr<Raft>> nodes_;
  std::vector<Message> queue_;
  std::set<uint64_t> cut_;
};

TEST(Raft, ElectsOneLeaderAndReplicates) {
  Cluster c(3);
  c[1].Campaign();
  c.Deliver();
  ASSERT_EQ(c.Leader(), 1u);
  EXPECT_EQ(c[2].leader(), 1u);
  ASSERT_TRUE(c[1].Propose("a").ok());
  ASSERT_TRUE(c[2].Propose("b").ok()) << "followers forward proposals";
  c.Deliver();
  c.TickAll(1);  // a heartbeat spreads the commit index
  for (uint64_t id : {1, 2, 3}) {
    EXPECT_EQ(c.applied_[id], (std::vector<std::string>{"a", "b"})) << "node " << id;
  }
}

TEST(Raft, ElectionTimeoutStartsAnElection) {
  Cluster c(3);
  c.TickAll(25);  // randomized timeouts lie in [10, 20)
  EXPECT_NE(c.Leader(), 0u);
}

TEST(Raft, PreVoteKeepsAPartitionedNodeFromDisruptingTheCluster) {
  Cluster c(3);
  c[1].Campaign();
  c.Deliver();
  uint64_t term = c[1].term();
  c.Isolate(3);
  for (int i = 0; i < 100; ++i) {
    c[3].Tick();
    c.Deliver();
  }
  EXPECT_EQ(c[3].term(), term) << "pre-votes fail without a quorum, so the term stays";
  c.Heal();
  c.TickAll(3);
  EXPECT_EQ(c.Leader(), 1u);
  EXPECT_EQ(c[1].term(), term) << "rejoining does not depose the leader";
}

TEST(Raft, CheckQuorumMakesAnIsolatedLeaderStepDown) {
  Cluster c(3);
  c[1].Campaign();
  c.Deliver();
  c.Isolate(1);
  for (int i = 0; i < 25; ++i) c[1].Tick();
  EXPECT_NE(c[1].role(), Role::kLeader);
  c.TickAll(40);
  uint64_t leader = c.Leader();
  EXPECT_TRUE(leader == 2 || leader == 3);
}

TEST(Raft, ConflictingUncommittedEntriesAreReplaced) {
  Cluster c(3);
  c[1].Campaign();
  c.Deliver();
  c.Isolate(1);
  ASSERT_TRUE(c[1].Propose("lost").ok());  // never reaches a quorum
  c.Deliver();
  c.TickAll(40);  // 2 or 3 takes over
  uint64_t leader = c.Leader();
  ASSERT_TRUE(leader == 2 || leader == 3);
  ASSERT_TRUE(c[leader].Propose("kept").ok());
  c.Deliver();
  c.Heal();
  c.TickAll(5);
  EXPECT_EQ(c.applied_[1], (std::vector<std::string>{"kept"}));
  EXPECT_EQ(c[1].log().last_index(), c[leader].log().last_index());
}

TEST(Raft, ReadIndexConfirmsLeadershipWithAQuorum) {
  Cluster c(3);
  c[1].Campaign();
  c.Deliver();
  ASSERT_TRUE(c[1].Propose("x").ok());
  c.Deliver();
  c[1].ReadIndex("r1");
  c[2].ReadIndex("r2");  // a follower asks the leader
  c.Deliver();
  ASSERT_EQ(c.reads_[1].size(), 1u);
  EXPECT_EQ(c.reads_[1][0].context, "r1");
  EXPECT_EQ(c.reads_[1][0].index, c[1].log().committed());
  ASSERT_EQ(c.reads_[2].size(), 1u);
  EXPECT_EQ(c.reads_[2][0].context, "r2");

  // Without a quorum there is no answer: the leader might be deposed.
  c.Isolate(2);
  c.Isolate(3);
  c[1].ReadIndex("r3");
  c.Deliver();
  EXPECT_EQ(c.reads_[1].size(), 1u);
}

TEST(Raft, LeadershipTransfer) {
  Cluster c(3);
  c[1].Campaign();
  c.Deliver();
  ASSERT_TRUE(c[1].Propose("x").ok());
  c.Deliver();
  c[1].TransferLeader(3);
  c.Deliver();
  EXPECT_EQ(c.Leader(), 3u);
  EXPECT_GT(c[3].term(), 1u);
}

TEST(Raft, MembershipChangeAddsAndRemovesVoters) {
  Cluster c(3);
  c[1].Campaign();
  c.Deliver();
  c.TickAll(1);
  ConfChange cc{ConfChange::Type::kRemove, 3, ""};
  ASSERT_TRUE(c[1].ProposeConfChange(cc).ok());
  EXPECT_FALSE(c[1].ProposeConfChange({ConfChange::Type::kAddLearner, 4, ""}).ok())
      << "one change at a time";
  c.Deliver();
  // The driver applies the change when the entry commits.
  c[1].ApplyConfChange(cc);
  c[2].ApplyConfChange(cc);
  EXPECT_EQ(c[1].conf().voters, (std::vector<uint64_t>{1, 2}));
  c.Isolate(3);
  ASSERT_TRUE(c[1].Propose("two voters").ok());
  c.Deliver();
  c.TickAll(1);
  EXPECT_EQ(c.applied_[2].back(), "two voters");
}

TEST(Raft, ConfChangeRoundTrips) {
  ConfChange in{ConfChange::Type::kAddLearner, 42, "http://127.0.0.1:2380"};
  ConfChange out;
  ASSERT_TRUE(ConfChange::Decode(in.Encode(), &out));
  EXPECT_EQ(out.type, in.type);
  EXPECT_EQ(out.node, 42u);
  EXPECT_EQ(out.context, in.context);
  EXPECT_FALSE(ConfChange::Decode("x", &out));
}

}  // namespace
}  // namespace capstan::raft
