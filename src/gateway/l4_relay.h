// The L4 proxy's relay of one connected pair (client socket, upstream
// socket): the copy path, the splice path (l4_splice.h), and the move from
// one to the other. L4Proxy (l4_proxy.h) connects, then hands the pair to
// RelayPair until the connection ends.
//
// Three modes (`splice` of a tcp listener or its cluster):
//  - kCopy (`off`): two Pump coroutines, one per direction; received bytes
//    are cut from one socket's input and written to the other's output as
//    slices; a direction waits for Drained(buffer / 2) when the receiver's
//    output passes `buffer`; exact input limits stop the kernel's reads;
//  - kSplice (`on`): the hand-over at once, before the first byte;
//  - kSpliceAfter (`auto`): the copy path first, and the hand-over once the
//    pair has relayed `splice_after` bytes (both directions together). A
//    short connection (a request and its answer) never pays for splice (two
//    Releases, an epoll set, two pipes: about 15 % more CPU per connection,
//    docs/benchmarks/l4.md); a long one still moves its bulk in the kernel.
//    As HAProxy's `option splice-auto` does for the channels it sees filling
//    their buffers ("fast streamers").
//
// The hand-over: the pumps pause (the one that crosses the threshold
// interrupts the other's read), what either socket received meanwhile is
// moved the copy way, both outputs drain, both sockets are Released, and a
// SpliceRelay owns the two fds. Where that cannot happen (bytes keep coming
// during the hand-over, a FIN came first, no pipe, splice refuses the
// sockets) the pair stays on the copy path (splice_fallbacks). A direction
// that ended (its FIN passed on) before the threshold stays copied: the
// other direction resumes its pump where it paused. Half-close both ways,
// resets, idle timeout and Close hold on every path: no byte is lost or
// reordered across the hand-over (each direction's bytes leave the copy
// path's output before the first splice of that socket).
//
// Thread-safety: loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/metrics.h"
#include "gateway/l4_splice.h"
#include "net/event_loop.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::gateway {

struct RelayPolicy {
  enum class Mode { kCopy, kSplice, kSpliceAfter };
  Mode mode = Mode::kCopy;
  // kSpliceAfter: bytes relayed (both directions) before the hand-over; 0
  // means at once (kSplice).
  uint64_t splice_after = 64 << 10;
  // The copy path's read-ahead per direction (the sockets' input limits
  // and the receiver's output bound).
  size_t buffer_bytes = 64 << 10;
  // Each direction's pipe on the splice path.
  size_t splice_pipe_bytes = 64 << 10;
};

// Where a relay counts: bytes_in client → upstream, bytes_out upstream →
// client; spliced: pairs that ended on the splice path; splice_fallbacks:
// pairs that tried the hand-over and stayed on the copy path. Any may be
// null.
struct RelayCounters {
  metrics::Counter* bytes_in = nullptr;
  metrics::Counter* bytes_out = nullptr;
  metrics::Counter* spliced = nullptr;
  metrics::Counter* splice_fallbacks = nullptr;
};

// A connected pair and what moves it now: held by the connection record,
// so the idle timeout, the endpoint sweep and the shutdown can Close it on
// whichever path it is. Both sockets must be half-close with exact input
// limits of the policy's buffer_bytes (RelaySocketSetup).
struct RelayedPair {
  std::shared_ptr<net::Socket> client;
  std::shared_ptr<net::Socket> upstream;
  // While the splice relay owns the fds (the sockets are released then).
  SpliceRelay* relay = nullptr;
  net::EventLoop::Clock::time_point last_activity{};
  // How the pair ended: whether it went through the hand-over to splice.
  bool spliced = false;

  void Close();
};

// The setup both sockets of a relayed pair start with.
net::SocketSetup RelaySocketSetup(size_t buffer_bytes);

// Relays the pair until both directions have ended or it is closed; both
// sockets are closed on return (the fds too, after a splice relay).
net::Task<void> RelayPair(net::EventLoop* loop, PipePool* pipes, const RelayPolicy& policy,
                          const RelayCounters& counters, RelayedPair* pair);

}  // namespace capstan::gateway
