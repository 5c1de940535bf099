// The io_uring engine. Per loop: one ring set up for a single issuer with
// deferred task work (completions are reaped only when the loop asks, so
// the kernel never interrupts the loop thread), one multishot accept per
// listener, one multishot receive per socket drawing from a ring of
// provided buffers, and one sendmsg in flight per socket. A turn's sends and
// the wait for the next completions are one io_uring_enter.
//
// Where the kernel lacks a feature the engine steps down: no provided-buffer
// ring or multishot receive -> one receive at a time into a socket's own
// scratch buffer; no single-issuer/deferred task work -> a plain ring.
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/io_backend.h"
#include "net/socket.h"

namespace capstan::net {

namespace {
constexpr int kBufferGroup = 1;

// An accept armed on the ring; outlives its Listener until the kernel hands
// the record back (a cancel completes asynchronously).
struct AcceptOp : IoOp {
  explicit AcceptOp(Listener* l) : IoOp{IoOp::kAccept, l} {}
  bool stopped = false;
};
}  // namespace

class UringBackend final : public IoBackend {
 public:
  explicit UringBackend(const LoopOptions& options) : options_(options) {}

  ~UringBackend() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
    // The ring is gone, so no completion will come for what was in flight:
    // let go of the sockets it kept alive.
    std::vector<std::shared_ptr<Socket>> release;
    for (Socket* s : busy_) {
      s->ops_in_flight_ = 0;
      release.push_back(std::move(s->self_while_busy_));
    }
    busy_.clear();
    release.clear();
    if (buf_ring_ != nullptr) munmap(buf_ring_, buf_ring_bytes_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    for (AcceptOp* op : accept_ops_) delete op;
  }

  absl::Status Init() {
    io_uring_params params{};
    params.flags =
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
    params.cq_entries = options_.ring_entries * 4;
    params.flags |= IORING_SETUP_CQSIZE;
    int r = io_uring_queue_init_params(options_.ring_entries, &ring_, &params);
    if (r == -EINVAL) {
      // Kernels before 6.1: no deferred task work.
      params = {};
      params.flags = IORING_SETUP_CQSIZE;
      params.cq_entries = options_.ring_entries * 4;
      r = io_uring_queue_init_params(options_.ring_entries, &ring_, &params);
      disabled_until_run_ = false;
    } else {
      disabled_until_run_ = true;
    }
    if (r < 0) return absl::UnavailableError(absl::StrCat("io_uring_setup: ", std::strerror(-r)));
    ring_ready_ = true;
    if (!(params.features & IORING_FEAT_NODROP) || !(params.features & IORING_FEAT_FAST_POLL)) {
      return absl::UnavailableError("io_uring lacks NODROP/FAST_POLL (kernel older than 5.7)");
    }
    io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
    bool ops_ok = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_SENDMSG) &&
                  io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                  io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
                  io_uring_opcode_supported(probe, IORING_OP_CONNECT) &&
                  io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL) &&
                  io_uring_opcode_supported(probe, IORING_OP_READ);
    if (probe != nullptr) io_uring_free_probe(probe);
    if (!ops_ok) return absl::UnavailableError("io_uring lacks socket operations");
    wake_fd_ = eventfd(0, EFD_CLOEXEC);
    if (wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
    SetUpBufferRing();
    ArmWake();
    return absl::OkStatus();
  }

  bool uses_provided_buffers() const override { return multishot_receive_; }
  int busy_sockets() const override {
    int closing = 0;
    for (const Socket* s : busy_) closing += s->closed_ ? 1 : 0;
    return closing;
  }

  void OnLoopThread() override {
    if (disabled_until_run_) {
      // The thread that enables the ring becomes its single issuer.
      // (liburing 2.3 declares io_uring_enable_rings but does not export it.)
      syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
      disabled_until_run_ = false;
    }
  }

  void Wait(std::chrono::nanoseconds timeout) override {
    if (timeout.count() == 0) {
      io_uring_submit_and_get_events(&ring_);
    } else {
      io_uring_cqe* cqe = nullptr;
      __kernel_timespec ts;
      __kernel_timespec* tsp = nullptr;
      if (timeout.count() > 0) {
        ts.tv_sec = timeout.count() / 1'000'000'000;
        ts.tv_nsec = timeout.count() % 1'000'000'000;
        tsp = &ts;
      }
      io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
    }
    // Handlers may submit (re-arm, cancel) while we walk the queue; the CQ
    // is sized at 4x the SQ and the kernel holds overflow (NODROP).
    while (true) {
      unsigned head;
      unsigned count = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        Dispatch(cqe->user_data, cqe->res, cqe->flags);
        ++count;
      }
      if (count == 0) break;
      io_uring_cq_advance(&ring_, count);
    }
  }

  void Wake() override {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof(one));
  }

  void Attach(Socket* s) override {}

  void StartReceive(Socket* s) override {
    if (s->receiving_ || s->closed_) return;
    s->receiving_ = true;
    s->cancel_requested_ = false;
    io_uring_sqe* sqe = GetSqe();
    if (multishot_receive_ && !s->exact_input_limit_) {
      io_uring_prep_recv_multishot(sqe, s->fd_, nullptr, 0, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = kBufferGroup;
    } else if (multishot_receive_) {
      // One provided buffer per submission: the input limit holds.
      io_uring_prep_recv(sqe, s->fd_, nullptr, 0, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = kBufferGroup;
    } else {
      if (!s->recv_scratch_) s->recv_scratch_.reset(new char[kScratchSize]);
      io_uring_prep_recv(sqe, s->fd_, s->recv_scratch_.get(), kScratchSize, 0);
    }
    io_uring_sqe_set_data(sqe, &s->recv_op_);
    Busy(s);
  }

  // A multishot receive delivers whatever the kernel holds for the socket
  // (its receive buffer: megabytes on loopback) before a cancel submitted
  // after the first completion takes effect; cancelled now, before the
  // peer has been sent anything to answer, it re-arms one buffer at a time.
  void InputLimitBecameExact(Socket* s) override {
    if (multishot_receive_) CancelReceive(s);
  }

  void CancelReceive(Socket* s) {
    if (s->cancel_requested_) return;
    s->cancel_requested_ = true;
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(&s->recv_op_), 0);
    io_uring_sqe_set_data64(sqe, 0);
  }

  void StartSend(Socket* s) override {
    Socket::SpliceResult spliced = s->SendSpliced();
    if (s->closed_ || s->output_.empty()) return;
    s->sending_ = true;
    if (spliced == Socket::SpliceResult::kSocketFull) {
      // Splice the rest too once there is room, rather than let a sendmsg
      // copy it (a slow reader's large body would otherwise go mostly by
      // copy).
      io_uring_sqe* sqe = GetSqe();
      io_uring_prep_poll_add(sqe, s->fd_, POLLOUT);
      io_uring_sqe_set_data(sqe, &s->writable_op_);
      Busy(s);
      return;
    }
    SubmitSendmsg(s);
  }

  // The output by sendmsg (a copy), from the socket's send state.
  void SubmitSendmsg(Socket* s) {
    s->sending_ = true;
    if (s->send_state_ == nullptr) {
      if (free_send_states_.empty()) {
        s->send_state_ = std::make_unique<Socket::SendState>();
      } else {
        s->send_state_ = std::move(free_send_states_.back());
        free_send_states_.pop_back();
      }
    }
    Socket::SendState& st = *s->send_state_;
    st.msg = {};
    st.msg.msg_iov = st.iov;
    st.msg.msg_iovlen = static_cast<size_t>(s->output_.FillIovecs(st.iov, Socket::kMaxIov));
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_sendmsg(sqe, s->fd_, &st.msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data(sqe, &s->send_op_);
    Busy(s);
  }

  void StartConnect(Socket* s, const sockaddr_storage& addr, socklen_t len) override {
    s->connect_state_ = std::make_unique<Socket::ConnectState>(Socket::ConnectState{addr, len});
    s->connecting_ = true;
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_connect(sqe, s->fd_, reinterpret_cast<sockaddr*>(&s->connect_state_->addr),
                          s->connect_state_->len);
    io_uring_sqe_set_data(sqe, &s->connect_op_);
    Busy(s);
  }

  void Detach(Socket* s) override {
    if (s->ops_in_flight_ == 0) {
      s->OnDetached();
      return;
    }
    // Everything of this socket still on the ring comes back (cancelled or
    // done); the last completion finishes the detach.
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_cancel_fd(sqe, s->fd_, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, 0);
  }

  bool BeginRelease(Socket* s) override {
    if (s->ops_in_flight_ == 0) return true;
    if (s->receiving_) CancelReceive(s);
    return false;
  }

  void StartPoll(FdWaiter* w) override {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_poll_add(sqe, w->fd_, POLLIN | POLLRDHUP);
    io_uring_sqe_set_data(sqe, &w->op_);
  }

  void CancelPoll(FdWaiter* w) override {
    // The poll then completes with -ECANCELED (or with what beat this).
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_poll_remove(sqe, reinterpret_cast<uint64_t>(&w->op_));
    io_uring_sqe_set_data64(sqe, 0);
  }

  void StartAccept(Listener* l) override {
    auto* op = new AcceptOp(l);
    accept_ops_.insert(op);
    l->accept_op_ = op;
    ArmAccept(op, l->fd_);
  }

  void StopAccept(Listener* l) override {
    auto* op = static_cast<AcceptOp*>(l->accept_op_);
    if (op == nullptr) return;
    l->accept_op_ = nullptr;
    op->stopped = true;
    op->owner = nullptr;
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(static_cast<IoOp*>(op)), 0);
    io_uring_sqe_set_data64(sqe, 0);
  }

 private:
  static constexpr size_t kScratchSize = 16 * 1024;

  io_uring_sqe* GetSqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void Busy(Socket* s) {
    if (s->ops_in_flight_++ == 0) {
      s->self_while_busy_ = s->shared_from_this();
      busy_.insert(s);
    }
  }

  // Drops one in-flight count; the socket may be freed on return.
  void Done(Socket* s) {
    if (--s->ops_in_flight_ > 0) return;
    if (s->releasing_) s->OnReleaseReady();
    if (s->closed_ && !s->detached_) s->OnDetached();
    busy_.erase(s);
    std::shared_ptr<Socket> release = std::move(s->self_while_busy_);
  }

  void SetUpBufferRing() {
    unsigned count = options_.recv_buffer_count;
    if (count == 0 || (count & (count - 1)) != 0 || count > 32768) return;
    buf_ring_bytes_ = count * sizeof(io_uring_buf);
    void* mem =
        mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) return;
    buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(mem);
    reg.ring_entries = count;
    reg.bgid = kBufferGroup;
    if (io_uring_register_buf_ring(&ring_, &reg, 0) != 0) {
      munmap(mem, buf_ring_bytes_);
      buf_ring_ = nullptr;
      return;
    }
    buffers_.resize(static_cast<size_t>(count) * options_.recv_buffer_size);
    io_uring_buf_ring_init(buf_ring_);
    for (unsigned i = 0; i < count; ++i) {
      io_uring_buf_ring_add(buf_ring_, BufferAt(i), options_.recv_buffer_size,
                            static_cast<unsigned short>(i), io_uring_buf_ring_mask(count),
                            static_cast<int>(i));
    }
    io_uring_buf_ring_advance(buf_ring_, static_cast<int>(count));
    multishot_receive_ = true;
  }

  char* BufferAt(unsigned id) {
    return buffers_.data() + static_cast<size_t>(id) * options_.recv_buffer_size;
  }

  void RecycleBuffer(unsigned id) {
    io_uring_buf_ring_add(buf_ring_, BufferAt(id), options_.recv_buffer_size,
                          static_cast<unsigned short>(id),
                          io_uring_buf_ring_mask(options_.recv_buffer_count), 0);
    io_uring_buf_ring_advance(buf_ring_, 1);
  }

  void ArmWake() {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof(wake_value_), 0);
    io_uring_sqe_set_data(sqe, &wake_op_);
  }

  void ArmAccept(AcceptOp* op, int fd) {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data(sqe, static_cast<IoOp*>(op));
  }

  void Dispatch(uint64_t user_data, int res, uint32_t flags) {
    if (user_data == 0) return;  // a cancel request's own completion
    auto* op = reinterpret_cast<IoOp*>(user_data);
    switch (op->kind) {
      case IoOp::kWake:
        ArmWake();
        return;
      case IoOp::kAccept:
        OnAccept(static_cast<AcceptOp*>(op), res, flags);
        return;
      case IoOp::kReceive:
        OnReceive(static_cast<Socket*>(op->owner), res, flags);
        return;
      case IoOp::kSend:
        OnSend(static_cast<Socket*>(op->owner), res);
        return;
      case IoOp::kWritable: {
        auto* s = static_cast<Socket*>(op->owner);
        s->sending_ = false;
        if (!s->closed_) {
          if (res >= 0) {
            // Writable, or an error the send will report.
            if (!s->output_.empty()) StartSend(s);
          } else if (res != -ECANCELED) {
            s->OnSendError(res);
          }
        }
        Done(s);
        return;
      }
      case IoOp::kPoll:
        static_cast<FdWaiter*>(op->owner)->Finish(res);
        return;
      case IoOp::kConnect: {
        auto* s = static_cast<Socket*>(op->owner);
        s->connecting_ = false;
        s->connect_state_.reset();
        s->OnConnected(res);
        Done(s);
        return;
      }
    }
  }

  void OnAccept(AcceptOp* op, int res, uint32_t flags) {
    auto* l = static_cast<Listener*>(op->owner);
    if (res >= 0) {
      if (l != nullptr) {
        l->OnAccepted(res);
      } else {
        ::close(res);
      }
    } else if (res != -ECANCELED && l != nullptr) {
      l->OnAcceptError(res);
    }
    if (flags & IORING_CQE_F_MORE) return;
    if (op->stopped || l == nullptr) {
      accept_ops_.erase(op);
      delete op;
      return;
    }
    ArmAccept(op, l->fd_);
  }

  void OnReceive(Socket* s, int res, uint32_t flags) {
    bool more = flags & IORING_CQE_F_MORE;
    if (res > 0) {
      const char* data;
      if (flags & IORING_CQE_F_BUFFER) {
        data = BufferAt(flags >> IORING_CQE_BUFFER_SHIFT);
      } else {
        data = s->recv_scratch_.get();
      }
      if (!s->closed_) {
        s->receive_buffer().Append(std::string_view(data, static_cast<size_t>(res)));
        s->OnReceived(static_cast<size_t>(res));
      }
      if (flags & IORING_CQE_F_BUFFER) RecycleBuffer(flags >> IORING_CQE_BUFFER_SHIFT);
      if (!more && s->exact_input_limit_ && !s->closed_ &&
          static_cast<size_t>(res) == options_.recv_buffer_size) {
        // One buffer per submission would cost a loop turn per 16 KiB; the
        // buffer came back full, so the socket likely holds more: read it
        // now, straight into the input, up to the limit.
        ReadUpToLimit(s);
      }
      if (more && !s->closed_ && !s->WantsInput()) {
        // Input is at its limit and nobody reads: pause the receive.
        CancelReceive(s);
      }
    } else if (res == 0) {
      if (!s->closed_) s->OnReceiveEnd(0);
    } else if (res == -EINVAL && multishot_receive_ && !more && s->receives_ == 0) {
      // The kernel has buffer rings but no multishot receive (5.19).
      multishot_receive_ = false;
    } else if (res != -ECANCELED && res != -ENOBUFS && res != -EINTR && res != -EAGAIN) {
      if (!s->closed_) s->OnReceiveEnd(res);
    }
    if (more) return;
    s->receiving_ = false;
    // Errors and the peer's close have closed the socket by now; what is left
    // (our own pause cancelled, buffers ran out, single-shot receive done)
    // re-arms when someone wants bytes.
    bool rearm = !s->closed_ && s->WantsInput();
    if (rearm) StartReceive(s);
    Done(s);
  }

  // For a socket whose input limit is exact: recv(2) without waiting until
  // the kernel has nothing more or the input is at its limit.
  void ReadUpToLimit(Socket* s) {
    constexpr size_t kChunk = 64 << 10;
    while (!s->closed_ && !s->input_ended_ && s->input_.size() < s->input_limit_) {
      size_t room = std::min(kChunk, s->input_limit_ - s->input_.size());
      std::span<char> space = s->receive_buffer().Reserve(room);
      if (space.size() > room) space = space.first(room);
      ssize_t n = ::recv(s->fd_, space.data(), space.size(), MSG_DONTWAIT);
      if (n > 0) {
        s->receive_buffer().Commit(static_cast<size_t>(n));
        s->OnReceived(static_cast<size_t>(n));
        if (static_cast<size_t>(n) < space.size()) return;
        continue;
      }
      s->receive_buffer().Commit(0);
      if (n == 0) {
        s->OnReceiveEnd(0);
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        s->OnReceiveEnd(-errno);
      }
      return;
    }
  }

  void OnSend(Socket* s, int res) {
    s->sending_ = false;
    if (res >= 0) {
      if (!s->closed_) {
        s->OnSent(static_cast<size_t>(res));
        // What was written while this send was in flight leaves now.
        if (!s->output_.empty()) StartSend(s);
      }
    } else if (res == -EAGAIN && !s->closed_) {
      // Not an error: a send the kernel polled once and that would still
      // block is punted to its worker threads, where the socket's
      // O_NONBLOCK answers EAGAIN (a slow reader with a full send buffer).
      // Wait for room, then send again: a POLLOUT poll linked before the
      // sendmsg (its own completion is ignored, like a cancel's); both in
      // one submission, or the link would not hold.
      if (io_uring_sq_space_left(&ring_) < 2) io_uring_submit(&ring_);
      io_uring_sqe* poll = GetSqe();
      io_uring_prep_poll_add(poll, s->fd_, POLLOUT);
      poll->flags |= IOSQE_IO_LINK;
      io_uring_sqe_set_data64(poll, 0);
      SubmitSendmsg(s);
    } else if (res != -ECANCELED && !s->closed_) {
      s->OnSendError(res);
    }
    // Nothing in flight: the iovecs go back to the loop's list.
    if (!s->sending_ && s->send_state_ != nullptr) {
      if (free_send_states_.size() < kMaxFreeSendStates) {
        free_send_states_.push_back(std::move(s->send_state_));
      } else {
        s->send_state_.reset();
      }
    }
    Done(s);
  }

  LoopOptions options_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool disabled_until_run_ = false;
  bool multishot_receive_ = false;
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  std::vector<char> buffers_;
  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;
  IoOp wake_op_{IoOp::kWake, nullptr};
  absl::flat_hash_set<AcceptOp*> accept_ops_;
  absl::flat_hash_set<Socket*> busy_;  // with I/O on the ring (kept alive by it)
  // Send states of sockets with nothing in flight, for the next send.
  static constexpr size_t kMaxFreeSendStates = 256;
  std::vector<std::unique_ptr<Socket::SendState>> free_send_states_;
};

absl::StatusOr<std::unique_ptr<IoBackend>> NewUringBackend(const LoopOptions& options) {
  auto backend = std::make_unique<UringBackend>(options);
  RETURN_IF_ERROR(backend->Init());
  return backend;
}

}  // namespace capstan::net
