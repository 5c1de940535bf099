// LoopGroup: N event loops, each on its own thread (thread-per-core). A
// server listens on every loop with SO_REUSEPORT, so the kernel spreads
// connections and a connection never leaves the loop that accepted it.
//
//   auto group = net::LoopGroup::Start({.threads = 2}).value();
//   group->loop(0)->Post(...);
//   group->Stop();   // stops and joins every loop
//
// Sharing: servers that take a caller's group (rpc::ServerOptions::group,
// net::HttpServerOptions::group, gateway::Gateway::Start, the store's
// StoreServerConfig::client_group) run their listeners and connections on
// its loops and, when they stop, close them and wait for their coroutines
// without stopping the group. The caller stops the group after every server
// on it has stopped (`capstan dev` runs all of its servers on one group).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "net/event_loop.h"

namespace capstan::net {

struct LoopGroupOptions {
  int threads = 1;
  LoopOptions loop;
  // Thread names are "<name>-<i>".
  std::string name = "loop";
};

class LoopGroup {
 public:
  static absl::StatusOr<std::unique_ptr<LoopGroup>> Start(const LoopGroupOptions& options);
  ~LoopGroup() { Stop(); }
  LoopGroup(const LoopGroup&) = delete;
  LoopGroup& operator=(const LoopGroup&) = delete;

  int size() const { return static_cast<int>(loops_.size()); }
  EventLoop* loop(int i) const { return loops_[static_cast<size_t>(i)].get(); }
  IoBackendKind backend() const { return loops_.front()->backend(); }
  // A loop for a server that runs on one loop only (net::HttpServer): each
  // call the next, so several such servers spread over the group. Any
  // thread.
  EventLoop* PickLoop() {
    size_t next = next_loop_.fetch_add(1, std::memory_order_relaxed);
    return loops_[next % loops_.size()].get();
  }
  // Stops every loop and joins its thread. Idempotent.
  void Stop();

 private:
  LoopGroup() = default;
  std::vector<std::unique_ptr<EventLoop>> loops_;
  std::vector<std::thread> threads_;
  std::atomic<size_t> next_loop_{0};
};

}  // namespace capstan::net
