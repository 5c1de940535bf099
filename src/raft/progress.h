// The leader's view of each member's replication (etcd calls it Progress):
// what is known to match, what to send next, and how many appends are in
// flight, so a slow follower gets a bounded window instead of a flood.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>

namespace capstan::raft {

struct Progress {
  enum class State : uint8_t {
    kProbe,      // next is a guess: one append per heartbeat until it matches
    kReplicate,  // matched: stream appends, up to max_inflight outstanding
    kSnapshot,   // too far behind the log: waiting for a snapshot to land
  };

  uint64_t match = 0;
  uint64_t next = 1;
  State state = State::kProbe;
  bool probe_sent = false;        // kProbe: an append is outstanding
  uint64_t pending_snapshot = 0;  // kSnapshot: the snapshot's index
  bool recent_active = false;     // heard from since the last CheckQuorum
  bool learner = false;
  std::deque<uint64_t> inflight;  // last index of each outstanding append

  void BecomeProbe() {
    state = State::kProbe;
    probe_sent = false;
    inflight.clear();
    if (pending_snapshot != 0)
      next = std::max(match + 1, pending_snapshot + 1);
    else
      next = match + 1;
    pending_snapshot = 0;
  }
  void BecomeReplicate() {
    state = State::kReplicate;
    next = match + 1;
    inflight.clear();
  }
  void BecomeSnapshot(uint64_t index) {
    state = State::kSnapshot;
    pending_snapshot = index;
    inflight.clear();
  }
  // Returns true when `n` moved match forward.
  bool MaybeUpdate(uint64_t n) {
    bool updated = n > match;
    if (updated) {
      match = n;
      probe_sent = false;
    }
    next = std::max(next, n + 1);
    while (!inflight.empty() && inflight.front() <= n) inflight.pop_front();
    return updated;
  }
  // A rejected append at `rejected` (the prev index we sent); `hint` is the
  // follower's last index. Returns false when the rejection is stale.
  bool MaybeDecrTo(uint64_t rejected, uint64_t hint) {
    if (state == State::kReplicate) {
      if (rejected <= match) return false;
      next = match + 1;
      return true;
    }
    if (next == 0 || next - 1 != rejected) return false;
    next = std::max<uint64_t>(1, std::min(rejected, hint + 1));
    probe_sent = false;
    return true;
  }
  bool Paused(size_t max_inflight) const {
    switch (state) {
      case State::kProbe:
        return probe_sent;
      case State::kReplicate:
        return inflight.size() >= max_inflight;
      case State::kSnapshot:
        return true;
    }
    return true;
  }
};

}  // namespace capstan::raft
