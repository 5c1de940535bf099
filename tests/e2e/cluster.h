// Multi-member clusters of real `capstan store` processes for black-box
// tests, with a fault-injecting TCP proxy on every directed peer link so a
// test can cut any member (or group) off from the rest and heal it again.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace capstan::e2e {

// Forwards TCP connections from its own port to 127.0.0.1:target. Blocked, it
// cuts the connections it carries and closes new ones at once, which is what
// a broken link looks like to the members on either side.
class FaultProxy {
 public:
  explicit FaultProxy(int target_port);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  void SetBlocked(bool blocked);

 private:
  void AcceptLoop();
  void Pump(int client, int upstream);
  void CutAll();

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> blocked_{false};
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<int> open_fds_;
  std::vector<std::thread> pumps_;
  std::thread acceptor_;
};

// Sanitizer builds run several times slower: CAPSTAN_TEST_TIME_SCALE (set by
// the debug and tsan test presets) stretches Raft timing and client deadlines.
int TimeScale();

struct ClusterOptions {
  int members = 3;
  int heartbeat_ms = 50 * TimeScale();
  int election_ms = 500 * TimeScale();
  std::vector<std::string> extra_flags;
};

class Cluster {
 public:
  Cluster(const std::string& dir, ClusterOptions options = {});
  ~Cluster();

  // Starts every member and waits until they agree on a leader.
  bool Start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // (Re)starts member i; `existing` joins a running cluster instead of
  // founding one. Waits until it answers Maintenance.Status.
  bool StartMember(size_t i, bool existing = false);
  // Adds a slot for a member that is not part of the founding cluster
  // (to be added with MemberAdd and started with StartMember(i, true)).
  size_t AddSlot();
  void Kill(size_t i);
  void Stop(size_t i);
  bool Running(size_t i);

  // The index of the member every running member (except those in `ignore`)
  // names as leader, or -1 when they do not agree before the timeout.
  int WaitForLeader(std::chrono::milliseconds timeout, const std::set<size_t>& ignore = {});
  // The leader member i sees (0: none), from Maintenance.Status.
  uint64_t LeaderSeenBy(size_t i);
  uint64_t MemberId(size_t i);
  int IndexOfId(uint64_t id);

  // Cuts every link between `group` and the other members; Heal restores all.
  void Isolate(const std::set<size_t>& group);
  void Heal();

  size_t size() const { return members_.size(); }
  std::string name(size_t i) const { return "m" + std::to_string(i); }
  std::string endpoint(size_t i) const;
  std::string peer_url(size_t i) const;
  std::string endpoints() const;  // all, comma-separated
  std::string Log(size_t i) const;
  std::string Logs() const;  // every member's log, for failure messages
  const ClusterOptions& options() const { return options_; }

 private:
  struct Member {
    int client_port = 0;
    int peer_port = 0;
    int metrics_port = 0;
    bool founding = true;
    uint64_t id = 0;
    std::unique_ptr<Process> process;
  };
  std::string InitialCluster(bool include_non_founding) const;

  std::string dir_;
  ClusterOptions options_;
  std::vector<Member> members_;
  // links_[i][j]: the proxy member i dials to reach member j.
  std::vector<std::vector<std::unique_ptr<FaultProxy>>> links_;
};

}  // namespace capstan::e2e
