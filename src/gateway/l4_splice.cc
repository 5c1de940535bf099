#include "gateway/l4_splice.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

namespace capstan::gateway {

namespace {

constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
// Rounds of splice calls per wake-up before the relay lets the loop's
// other work run (a fast pair never has to wait, so without a bound it
// would hold the loop).
constexpr int kRoundsPerTurn = 16;

// Resumes the coroutine in the loop's next turn, after this turn's I/O.
struct NextTurn {
  net::EventLoop* loop;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const {
    net::EventLoop* l = loop;
    l->AtTurnEnd([l, h] { l->Schedule(h); });
  }
  void await_resume() const noexcept {}
};

}  // namespace

// ---- SpliceRelay

SpliceRelay::SpliceRelay(net::EventLoop* loop, PipePool* pool, size_t pipe_bytes,
                         Direction client_to_upstream, Direction upstream_to_client,
                         net::EventLoop::Clock::time_point* last_activity)
    : loop_(loop), pool_(pool), pipe_bytes_(pipe_bytes), last_activity_(last_activity) {
  flows_[0].dir = client_to_upstream;
  flows_[1].dir = upstream_to_client;
}

void SpliceRelay::Close() {
  closed_ = true;
  if (readiness_ != nullptr) readiness_->Interrupt();
}

bool SpliceRelay::Step(Flow& flow) {
  bool progress = false;
  // Source → pipe, as far as the pipe has room.
  if (!flow.eof && flow.in_pipe < flow.pipe.capacity) {
    ssize_t n = ::splice(flow.dir.from, nullptr, flow.pipe.write_fd, nullptr,
                         flow.pipe.capacity - flow.in_pipe, kSpliceFlags);
    if (n > 0) {
      flow.in_pipe += static_cast<size_t>(n);
      progress = true;
    } else if (n == 0) {
      flow.eof = true;
      progress = true;
    } else if (errno == EINVAL && moved_ == 0 && flows_[0].in_pipe == 0 && flows_[1].in_pipe == 0) {
      unsupported_ = true;
      return false;
    } else if (errno != EAGAIN && errno != EINTR) {
      // A reset, or a pipe full of fragments (EAGAIN too): only a real
      // error ends the connection.
      failed_ = true;
      return false;
    }
  }
  // Pipe → destination.
  if (flow.in_pipe > 0) {
    ssize_t n =
        ::splice(flow.pipe.read_fd, nullptr, flow.dir.to, nullptr, flow.in_pipe, kSpliceFlags);
    if (n > 0) {
      flow.in_pipe -= static_cast<size_t>(n);
      moved_ += static_cast<uint64_t>(n);
      if (flow.dir.bytes != nullptr) flow.dir.bytes->Inc(static_cast<uint64_t>(n));
      *last_activity_ = loop_->now();
      progress = true;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      failed_ = true;  // EPIPE, ECONNRESET: the destination is gone
      return false;
    }
  }
  // The source's FIN, once everything before it has left.
  if (flow.eof && flow.in_pipe == 0 && !flow.shut) {
    ::shutdown(flow.dir.to, SHUT_WR);
    flow.shut = true;
    progress = true;
  }
  return progress;
}

net::Task<SpliceRelay::End> SpliceRelay::Run() {
  if (closed_) co_return End::kDone;
  auto readiness = net::FdReadiness::Create(loop_);
  if (!readiness.ok()) co_return End::kNoPipes;
  if (!pool_->Get(pipe_bytes_, &flows_[0].pipe)) co_return End::kNoPipes;
  if (!pool_->Get(pipe_bytes_, &flows_[1].pipe)) {
    pool_->Put(std::exchange(flows_[0].pipe, SplicePipe{}), /*empty=*/true);
    co_return End::kNoPipes;
  }
  readiness_ = std::move(readiness).value();
  End end = End::kDone;
  int client_fd = flows_[0].dir.from;
  int upstream_fd = flows_[0].dir.to;
  if (!readiness_->Watch(client_fd).ok() || !readiness_->Watch(upstream_fd).ok()) {
    end = End::kNoPipes;
  } else {
    while (!closed_) {
      bool progress = true;
      for (int round = 0; progress && round < kRoundsPerTurn; ++round) {
        progress = Step(flows_[0]);
        if (failed_ || unsupported_) break;
        progress = Step(flows_[1]) || progress;
        if (failed_ || unsupported_) break;
      }
      if (unsupported_) {
        end = End::kUnsupported;
        break;
      }
      if (failed_ || (flows_[0].shut && flows_[1].shut)) break;
      if (progress) {
        // Out of rounds with more to do: the loop's other work first.
        co_await NextTurn{loop_};
        continue;
      }
      auto wait = readiness_->Wait();
      absl::Status st = co_await wait;
      if (!st.ok()) break;
    }
  }
  readiness_->Unwatch(client_fd);
  readiness_->Unwatch(upstream_fd);
  for (Flow& flow : flows_) {
    pool_->Put(std::exchange(flow.pipe, SplicePipe{}), flow.in_pipe == 0);
    flow.in_pipe = 0;
  }
  co_return end;
}

}  // namespace capstan::gateway
