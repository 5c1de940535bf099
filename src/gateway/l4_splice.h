// The L4 proxy's splice(2) relay: the bytes of a TCP connection pair move
// socket → pipe → socket inside the kernel and never enter user space.
//
// L4Proxy hands a connection over once both sockets are quiet (their fds
// released from the loop's engine, net::Socket::Release); the relay then
// owns the two fds. Per direction: a pipe (from the loop's net::PipePool, sized
// with F_SETPIPE_SZ), nonblocking splice(SPLICE_F_MOVE|SPLICE_F_NONBLOCK)
// from the source socket into the pipe and from the pipe into the
// destination, retried after every readiness edge of either socket
// (net::FdReadiness) until each call would block. The same semantics as
// the copy path (l4_proxy.h):
//  - a direction reads no further ahead of a slow receiver than its pipe
//    holds (the pipe is the read-ahead bound: `splice_pipe`);
//  - the peer's FIN ends that direction once its pipe is empty, with
//    shutdown(SHUT_WR) on the other socket; the other direction goes on;
//  - a reset, a failed write or Close ends both (the fds close);
//  - bytes are counted as they leave (the listener's byte counters), and
//    every move updates the connection's last activity (idle timeout).
// A first splice that fails with EINVAL (a socket type splice does not
// serve) ends the relay with kUnsupported before any byte moved, so the
// caller can go on with the copy path.
//
// Thread-safety: loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/metrics.h"
#include "net/event_loop.h"
#include "net/fd_readiness.h"
#include "net/pipe_pool.h"
#include "net/task.h"

namespace capstan::gateway {

using net::PipePool;
using net::SplicePipe;

class SpliceRelay {
 public:
  struct Direction {
    int from = -1;
    int to = -1;
    metrics::Counter* bytes = nullptr;  // counts what reached `to`
  };
  enum class End {
    kDone,         // both directions ended (FINs passed on), or a reset / Close
    kUnsupported,  // splice refused these fds (EINVAL) before any byte moved
    kNoPipes,      // no pipes could be made: nothing moved either
  };

  // `client_to_upstream` and `upstream_to_client` name the same two fds.
  // The relay does not own them: the caller closes them after Run.
  SpliceRelay(net::EventLoop* loop, PipePool* pool, size_t pipe_bytes, Direction client_to_upstream,
              Direction upstream_to_client, net::EventLoop::Clock::time_point* last_activity);
  SpliceRelay(const SpliceRelay&) = delete;
  SpliceRelay& operator=(const SpliceRelay&) = delete;

  // Relays until both directions end, a socket fails, or Close.
  net::Task<End> Run();
  // Ends Run soon (idle timeout, endpoint removed, shutdown); the caller
  // closes the fds after Run returns. Any time, also before Run.
  void Close();
  // Bytes moved into the destinations, both directions.
  uint64_t moved() const { return moved_; }

 private:
  struct Flow {
    Direction dir;
    SplicePipe pipe;
    size_t in_pipe = 0;
    bool eof = false;   // the source's FIN was read
    bool shut = false;  // passed on as shutdown(SHUT_WR)
  };
  // One round of splice calls for `flow`: true when something moved or
  // changed. Sets failed_ (or unsupported_) on an error.
  bool Step(Flow& flow);

  net::EventLoop* loop_;
  PipePool* pool_;
  size_t pipe_bytes_;
  Flow flows_[2];
  net::EventLoop::Clock::time_point* last_activity_;
  std::unique_ptr<net::FdReadiness> readiness_;
  bool closed_ = false;
  bool failed_ = false;
  bool unsupported_ = false;
  uint64_t moved_ = 0;
};

}  // namespace capstan::gateway
