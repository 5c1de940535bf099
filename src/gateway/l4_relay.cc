#include "gateway/l4_relay.h"

#include <sys/socket.h>
#include <unistd.h>

#include "base/logging.h"
#include "net/wait_group.h"

namespace capstan::gateway {

namespace {

// How a Pump ended.
enum class PumpEnd {
  kEnded,   // the source's FIN, passed on as shutdown(SHUT_WR) after its bytes
  kClosed,  // a reset, a failed write or Close: both sockets are closed
  kPaused,  // the hand-over to splice asked it to stop; both sockets open
};

// The copy path's share of `auto`: counts what both pumps relay and, once
// it reaches the threshold, stops them for the hand-over. The pump that
// crosses it interrupts the other's read (a pump waiting for bytes that may
// never come would otherwise hold the hand-over).
struct HandOverWatch {
  uint64_t threshold = 0;
  uint64_t relayed = 0;
  bool requested = false;
  net::Socket* sockets[2] = {nullptr, nullptr};

  void Count(size_t n) {
    if (requested) return;
    relayed += n;
    if (relayed < threshold) return;
    requested = true;
    for (net::Socket* s : sockets) s->InterruptRead();
  }
};

void Add(metrics::Counter* counter, uint64_t n) {
  if (counter != nullptr) counter->Inc(n);
}

// Copies `from`'s input to `to` until `from` ends (or `watch` pauses it).
// The peer's FIN (a half-close socket's input_ended) is passed on as
// shutdown(SHUT_WR) once what came before it has left; anything else (a
// reset, a local close) closes both sockets so the other direction ends
// too.
net::Task<void> Pump(net::Socket* from, net::Socket* to, size_t buffer_bytes,
                     metrics::Counter* bytes, net::EventLoop::Clock::time_point* last_activity,
                     HandOverWatch* watch, PumpEnd* end, net::WaitGroup* done) {
  bool peer_finished = false;
  bool paused = false;
  while (true) {
    net::Buffer& in = from->input();
    if (!in.empty() && !to->closed()) {
      size_t n = in.size();
      to->Write(in.Cut(n));
      Add(bytes, n);
      *last_activity = from->loop()->now();
      if (watch != nullptr) watch->Count(n);
      // The receiver is slow: stop reading (the input limit then stops
      // the kernel's reads too) until it has taken half.
      if (to->pending_output() >= buffer_bytes) {
        auto drained = to->Drained(buffer_bytes / 2);
        absl::Status st = co_await drained;
        if (!st.ok()) break;
      }
    }
    if (to->closed()) break;
    if (watch != nullptr && watch->requested) {
      paused = true;
      break;
    }
    auto read = from->ReadMore();
    absl::Status st = co_await read;
    if (!st.ok()) {
      if (!from->input().empty()) continue;  // bytes that came with the end
      if (watch != nullptr && watch->requested && absl::IsAborted(st) && !from->closed()) {
        paused = true;  // the other direction crossed the threshold
        break;
      }
      peer_finished = from->input_ended() && !from->closed();
      break;
    }
  }
  if (paused) {
    *end = PumpEnd::kPaused;
  } else if (peer_finished && !to->closed()) {
    auto drained = to->Drained(0);
    absl::Status st = co_await drained;
    if (st.ok()) {
      ::shutdown(to->fd(), SHUT_WR);
      *end = PumpEnd::kEnded;
    } else {
      from->Close();
      *end = PumpEnd::kClosed;
    }
  } else {
    from->Close();
    to->Close();
    *end = PumpEnd::kClosed;
  }
  done->Done();
}

// Runs the pumps of the directions asked for until each has ended (or
// paused); `ends[0]` is client → upstream, `ends[1]` upstream → client.
net::Task<void> Copy(net::EventLoop* loop, const RelayPolicy& policy, const RelayCounters& counters,
                     RelayedPair* pair, bool client_to_upstream, bool upstream_to_client,
                     HandOverWatch* watch, PumpEnd ends[2]) {
  net::Socket* c = pair->client.get();
  net::Socket* u = pair->upstream.get();
  net::WaitGroup done(loop);
  done.Add((client_to_upstream ? 1 : 0) + (upstream_to_client ? 1 : 0));
  if (upstream_to_client) {
    loop->StartOwned(Pump(u, c, policy.buffer_bytes, counters.bytes_out, &pair->last_activity,
                          watch, &ends[1], &done));
  }
  if (client_to_upstream) {
    loop->StartOwned(Pump(c, u, policy.buffer_bytes, counters.bytes_in, &pair->last_activity, watch,
                          &ends[0], &done));
  }
  auto wait = done.Wait();
  co_await wait;
}

// Moves what `from` received to `to` (the copy path's move, for the bytes
// that came before the splice hand-over).
void MoveInput(net::Socket* from, net::Socket* to, metrics::Counter* bytes,
               net::EventLoop::Clock::time_point* last_activity) {
  net::Buffer& in = from->input();
  if (in.empty() || to->closed()) return;
  size_t n = in.size();
  to->Write(in.Cut(n));
  Add(bytes, n);
  *last_activity = from->loop()->now();
}

// Hand-over attempts before a pair whose sockets never go quiet (a client
// that keeps sending while the upstream keeps answering) stays on the copy
// path.
constexpr int kHandOverAttempts = 4;

std::shared_ptr<net::Socket> Readopt(net::EventLoop* loop, int fd, size_t buffer_bytes) {
  net::SocketSetup setup = RelaySocketSetup(buffer_bytes);
  setup.known_nonblocking = true;  // it was a Socket's: nonblocking, TCP_NODELAY set
  setup.no_delay = false;
  return net::Socket::Adopt(loop, fd, setup);
}

// The splice path of the pair: true when the pair was served (or ended
// during the hand-over), false when it stays on the copy path (the pair's
// sockets are then live Sockets again).
net::Task<bool> SpliceOrStay(net::EventLoop* loop, PipePool* pipes, const RelayPolicy& policy,
                             const RelayCounters& counters, RelayedPair* pair) {
  // No new receive from here on (a limit of 0 and no reader: the engines
  // re-arm none once the one in flight completes), so a stream that keeps
  // coming (the hand-over of `auto` happens mid-transfer) leaves its bytes
  // in the kernel for the splice relay, and the sockets go quiet within an
  // attempt or two. The copy path, if it stays, restores the limit.
  pair->client->set_input_limit(0, /*exact=*/true);
  pair->upstream->set_input_limit(0, /*exact=*/true);
  for (int attempt = 0; attempt < kHandOverAttempts; ++attempt) {
    net::Socket* client = pair->client.get();
    net::Socket* up = pair->upstream.get();
    // What came meanwhile (a request, a greeting, what arrived as the
    // pumps paused) and the PROXY header leave the copy way; the sockets
    // must be quiet to go.
    MoveInput(client, up, counters.bytes_in, &pair->last_activity);
    MoveInput(up, client, counters.bytes_out, &pair->last_activity);
    auto up_drained = up->Drained(0);
    absl::Status st = co_await up_drained;
    if (!st.ok()) co_return true;  // closed: the connection is over
    auto client_drained = client->Drained(0);
    st = co_await client_drained;
    if (!st.ok()) co_return true;
    if (!client->input().empty() || !up->input().empty()) continue;
    // A FIN already: the copy path passes it on.
    if (client->input_ended() || up->input_ended()) break;
    auto release_client = client->Release();
    int client_fd = co_await release_client;
    if (client_fd < 0) {
      if (client->closed()) co_return true;
      continue;  // bytes came meanwhile
    }
    auto release_upstream = up->Release();
    int upstream_fd = co_await release_upstream;
    if (upstream_fd < 0) {
      pair->client = Readopt(loop, client_fd, /*buffer_bytes=*/0);
      if (up->closed()) co_return true;
      continue;
    }
    SpliceRelay relay(loop, pipes, policy.splice_pipe_bytes,
                      {.from = client_fd, .to = upstream_fd, .bytes = counters.bytes_in},
                      {.from = upstream_fd, .to = client_fd, .bytes = counters.bytes_out},
                      &pair->last_activity);
    pair->relay = &relay;
    net::Task<SpliceRelay::End> run = relay.Run();
    SpliceRelay::End end = co_await run;
    pair->relay = nullptr;
    if (end == SpliceRelay::End::kDone) {
      ::close(client_fd);
      ::close(upstream_fd);
      pair->spliced = true;
      Add(counters.spliced, 1);
      co_return true;
    }
    // No pipes, or splice refused these sockets: nothing moved, so the
    // copy path takes over where the hand-over left them.
    CAPSTAN_LOG(debug, "gateway tcp: splice not possible, copying", "reason",
                end == SpliceRelay::End::kNoPipes ? "no pipes" : "splice refused the sockets");
    pair->client = Readopt(loop, client_fd, policy.buffer_bytes);
    pair->upstream = Readopt(loop, upstream_fd, policy.buffer_bytes);
    Add(counters.splice_fallbacks, 1);
    co_return false;
  }
  pair->client->set_input_limit(policy.buffer_bytes, /*exact=*/true);
  pair->upstream->set_input_limit(policy.buffer_bytes, /*exact=*/true);
  Add(counters.splice_fallbacks, 1);
  co_return false;
}

}  // namespace

void RelayedPair::Close() {
  if (client != nullptr) client->Close();
  if (upstream != nullptr) upstream->Close();
  if (relay != nullptr) relay->Close();
}

net::SocketSetup RelaySocketSetup(size_t buffer_bytes) {
  net::SocketSetup setup;
  setup.input_limit = buffer_bytes;
  setup.exact_input_limit = true;
  setup.half_close = true;
  return setup;
}

net::Task<void> RelayPair(net::EventLoop* loop, PipePool* pipes, const RelayPolicy& policy,
                          const RelayCounters& counters, RelayedPair* pair) {
  using Mode = RelayPolicy::Mode;
  bool copy_in = true;   // client → upstream still to copy
  bool copy_out = true;  // upstream → client
  bool splice = policy.mode == Mode::kSplice ||
                (policy.mode == Mode::kSpliceAfter && policy.splice_after == 0);
  if (policy.mode == Mode::kSpliceAfter && !splice) {
    HandOverWatch watch;
    watch.threshold = policy.splice_after;
    watch.sockets[0] = pair->client.get();
    watch.sockets[1] = pair->upstream.get();
    PumpEnd ends[2] = {PumpEnd::kClosed, PumpEnd::kClosed};
    auto copy = Copy(loop, policy, counters, pair, true, true, &watch, ends);
    co_await copy;
    if (ends[0] == PumpEnd::kClosed || ends[1] == PumpEnd::kClosed) {
      pair->Close();
      co_return;
    }
    // Both paused: splice from here. One ended (its FIN passed on) and the
    // other paused: that one goes on copying.
    splice = ends[0] == PumpEnd::kPaused && ends[1] == PumpEnd::kPaused;
    copy_in = ends[0] == PumpEnd::kPaused;
    copy_out = ends[1] == PumpEnd::kPaused;
  }
  if (splice) {
    auto handover = SpliceOrStay(loop, pipes, policy, counters, pair);
    bool served = co_await handover;
    if (served) {
      pair->Close();
      co_return;
    }
  }
  if (copy_in || copy_out) {
    PumpEnd ends[2] = {PumpEnd::kClosed, PumpEnd::kClosed};
    auto copy = Copy(loop, policy, counters, pair, copy_in, copy_out, nullptr, ends);
    co_await copy;
  }
  pair->Close();
}

}  // namespace capstan::gateway
