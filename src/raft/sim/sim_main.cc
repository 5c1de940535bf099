// capstan-sim: runs the Raft simulator for a range of seeds, or replays one.
//   capstan-sim --seed 1234            replay one run (add --verbose)
//   capstan-sim --seeds 100000         run seeds 1..N (the `sim-long` target)
#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "base/logging.h"
#include "raft/sim/simulator.h"

int main(int argc, char** argv) {
  using namespace capstan::raft::sim;
  CLI::App app{"Deterministic simulation of Capstan's Raft core."};
  uint64_t seed = 0;
  uint64_t seeds = 1000;
  SimOptions o;
  app.add_option("--seed", seed, "Replay exactly this seed.");
  app.add_option("--seeds", seeds, "Run seeds 1..N.")->capture_default_str();
  app.add_option("--nodes", o.nodes, "Cluster size.")->capture_default_str();
  app.add_option("--fault-ticks", o.fault_ticks, "Ticks with faults.")->capture_default_str();
  app.add_option("--torn-write", o.torn_write, "Chance a crash keeps part of the unsynced writes.")
      ->capture_default_str();
  app.add_option("--transfer-per-tick", o.transfer_per_tick,
                 "Chance per tick of a leader transfer.")
      ->capture_default_str();
  app.add_option("--crash-in-write", o.crash_in_write, "Chance per Ready of dying mid-write.")
      ->capture_default_str();
  app.add_flag("--lease-reads", o.lease_reads, "Serve reads from the leader's lease.");
  app.add_option("--real-wal", o.wal_dir,
                 "Keep each node's log in the real WAL under this directory (e.g. /dev/shm/sim).");
  app.add_flag("--bug-send-before-persist", o.bug_send_before_persist,
               "Inject the 'vote before persisting' bug.");
  app.add_flag("--verbose", o.verbose, "Log every step.");
  CLI11_PARSE(app, argc, argv);
  capstan::InitLogging(o.verbose ? "debug" : "warn");
  uint64_t first = seed != 0 ? seed : 1, last = seed != 0 ? seed : seeds;
  for (uint64_t s = first; s <= last; ++s) {
    o.seed = s;
    SimResult r = RunSimulation(o);
    if (!r.ok) {
      std::cerr << r.failure << "\n";
      return 1;
    }
    if (r.inconclusive_keys > 0) {
      std::cerr << "seed " << s << ": linearizability search did not finish for "
                << r.inconclusive_keys << " key(s)\n";
      return 1;
    }
    if (seed != 0 || s % 1000 == 0) {
      std::printf("seed %llu ok: committed %lld, leaders %lld, crashes %lld, ops %zu\n",
                  static_cast<unsigned long long>(s), static_cast<long long>(r.committed),
                  static_cast<long long>(r.leaders_elected), static_cast<long long>(r.crashes),
                  r.history_ops);
    }
  }
  std::printf("%llu seeds passed\n", static_cast<unsigned long long>(last - first + 1));
  return 0;
}
