// A deterministic simulation of a Raft cluster: N nodes of the real core in
// one thread, over a simulated network (delay, reorder, drop, duplicate,
// partition), simulated disks (writes are lost on a crash unless synced) and a
// simulated clock, with every choice drawn from one seed. A client model
// issues reads (ReadIndex), writes and compare-and-sets against a replicated
// key-value map; checkers assert Raft's safety properties as the run goes and
// linearizability of the recorded history at the end.
//
// A run has a fault phase (crashes, partitions, lossy network) and then a
// liveness phase (everything healed: a leader must emerge and commit).
// The same seed replays the same run exactly: `capstan-sim --seed N`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "raft/raft.h"
#include "raft/sim/linearizability.h"

namespace capstan::raft::sim {

struct SimOptions {
  uint64_t seed = 1;
  int nodes = 3;
  int fault_ticks = 600;     // ticks with faults
  int liveness_ticks = 300;  // ticks after healing, to converge and commit
  int clients = 4;
  double drop = 0.05;  // per message
  double duplicate = 0.02;
  int max_delay = 3;  // ticks
  double crash_per_tick = 0.004;
  double partition_per_tick = 0.01;
  double transfer_per_tick = 0.003;  // the leader hands over to a random voter
  double torn_write = 0.5;           // a crash keeps a random prefix of unsynced writes
  double crash_in_write = 0.002;     // per Ready: the node dies between its write and fsync
  bool lease_reads = false;          // leader answers reads from its lease
  int watchers = 3;
  // Non-empty: every node keeps its log in the real WAL (src/raft/wal.h) in a
  // directory under this one, and a crash cuts each segment back to what was
  // fsynced plus, for a torn write, part of the rest; restart runs the WAL's
  // real recovery. Empty: a model of the disk in memory (faster).
  std::string wal_dir;
  // Deliberate bugs, to show the checkers catch them.
  bool bug_send_before_persist = false;  // votes/acks sent before the disk has them
  bool bug_vote_without_log_check = false;
  bool verbose = false;
};

struct SimResult {
  bool ok = true;
  std::string failure;  // what broke, with the seed to replay
  int64_t committed = 0;
  int64_t leaders_elected = 0;
  int64_t crashes = 0;
  int64_t conf_changes = 0;
  size_t history_ops = 0;
  size_t inconclusive_keys = 0;  // keys the linearizability search could not finish
  int64_t watch_events = 0;      // events delivered to watchers and checked
  int64_t transfers = 0;
};

SimResult RunSimulation(const SimOptions& options);

}  // namespace capstan::raft::sim
