// Runs the Raft simulator over many seeds in the default test set (bounded),
// and shows that deliberately injected bugs are caught.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

#include "gtest/gtest.h"
#include "raft/sim/simulator.h"

namespace capstan::raft::sim {
namespace {

int SeedCount(int fallback) {
  const char* env = std::getenv("CAPSTAN_SIM_SEEDS");
  return env != nullptr ? std::atoi(env) : fallback;
}

class SimSeeds : public ::testing::TestWithParam<int> {};

TEST_P(SimSeeds, SafeUnderFaultsAndLiveAfterHealing) {
  int nodes = GetParam();
  int seeds = SeedCount(nodes == 3 ? 1000 : nodes == 5 ? 400 : 100);
  int64_t committed = 0, leaders = 0, crashes = 0, watch_events = 0, transfers = 0;
  for (int seed = 1; seed <= seeds; ++seed) {
    SimOptions o;
    o.seed = static_cast<uint64_t>(seed) * 7919 + nodes;
    o.nodes = nodes;
    SimResult r = RunSimulation(o);
    ASSERT_TRUE(r.ok) << r.failure;
    EXPECT_EQ(r.inconclusive_keys, 0u) << "seed " << o.seed << ": linearizability not decided";
    committed += r.committed;
    leaders += r.leaders_elected;
    crashes += r.crashes;
    watch_events += r.watch_events;
    transfers += r.transfers;
  }
  // The runs must actually exercise something.
  EXPECT_GT(committed, seeds * 20);
  EXPECT_GT(leaders, seeds);
  EXPECT_GT(crashes, 0);
  EXPECT_GT(watch_events, committed) << "watchers must see the committed entries";
  if (nodes > 1) {
    EXPECT_GT(transfers, 0);
  }
  std::cerr << seeds << " seeds: " << committed << " entries committed, " << leaders
            << " leaders elected, " << crashes << " crashes, " << transfers << " transfers, "
            << watch_events << " watch events checked\n";
}

// Lease-based reads (off by default) stay linearizable under the simulator's
// bounded delays (max_delay < lease_margin_ticks).
TEST(Sim, LeaseReadsStayLinearizable) {
  int seeds = SeedCount(200);
  for (int seed = 1; seed <= seeds; ++seed) {
    SimOptions o;
    o.seed = static_cast<uint64_t>(seed) * 104729;
    o.lease_reads = true;
    SimResult r = RunSimulation(o);
    ASSERT_TRUE(r.ok) << r.failure;
    EXPECT_EQ(r.inconclusive_keys, 0u) << "seed " << o.seed;
  }
}

INSTANTIATE_TEST_SUITE_P(ClusterSizes, SimSeeds, ::testing::Values(1, 3, 5));

// The real WAL under the simulator's crashes and torn writes: recovery must
// always produce a log Raft can continue from, and everything stays safe.
TEST(Sim, RealWalSurvivesCrashesAndTornWrites) {
  namespace fs = std::filesystem;
  fs::path root = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  root /= "capstan-sim-" + std::to_string(::getpid());
  int seeds = SeedCount(200);
  int64_t crashes = 0;
  for (int seed = 1; seed <= seeds; ++seed) {
    SimOptions o;
    o.seed = static_cast<uint64_t>(seed) * 31337;
    o.wal_dir = root.string();
    o.crash_per_tick = 0.01;
    o.torn_write = 0.7;
    SimResult r = RunSimulation(o);
    ASSERT_TRUE(r.ok) << r.failure;
    EXPECT_EQ(r.inconclusive_keys, 0u) << "seed " << o.seed;
    crashes += r.crashes;
  }
  fs::remove_all(root);
  EXPECT_GT(crashes, seeds);
}

// The same seed gives the same run.
TEST(Sim, ReplaysExactly) {
  SimOptions o;
  o.seed = 42;
  SimResult a = RunSimulation(o), b = RunSimulation(o);
  EXPECT_EQ(a.committed, b.committed);
  EXPECT_EQ(a.leaders_elected, b.leaders_elected);
  EXPECT_EQ(a.crashes, b.crashes);
  EXPECT_EQ(a.history_ops, b.history_ops);
}

// Runs seeds with a bug switched on until a checker fails; true when caught.
bool Catches(const std::function<void(SimOptions*)>& inject) {
  for (int seed = 1; seed <= 300; ++seed) {
    SimOptions o;
    o.seed = seed;
    o.nodes = 3;
    inject(&o);
    SimResult r = RunSimulation(o);
    if (!r.ok) {
      std::cerr << "caught: " << r.failure << "\n";
      return true;
    }
  }
  return false;
}

// Voting (and acknowledging) before the vote is on disk: a crash forgets the
// vote and the node's term goes back; it can vote twice in one term.
TEST(Sim, CatchesSendingBeforePersisting) {
  EXPECT_TRUE(Catches([](SimOptions* o) {
    o->bug_send_before_persist = true;
    o->crash_per_tick = 0.05;
    o->drop = 0.2;
  })) << "the simulator must catch a driver that sends before persisting";
}

// Granting votes without the up-to-date check lets a stale node lead and
// overwrite committed entries.
TEST(Sim, CatchesVotingWithoutLogCheck) {
  EXPECT_TRUE(Catches([](SimOptions* o) {
    o->bug_vote_without_log_check = true;
    o->crash_per_tick = 0.02;
  })) << "the simulator must catch votes that ignore the candidate's log";
}

}  // namespace
}  // namespace capstan::raft::sim
