// The epoll engine: edge-triggered readiness, then the system call itself.
// Used where io_uring is unavailable (old kernels, containers whose seccomp
// profile forbids it) and in tests, so both engines stay honest.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "net/io_backend.h"
#include "net/socket.h"

namespace capstan::net {

class EpollBackend final : public IoBackend {
 public:
  EpollBackend(int epfd, int wake_fd) : epfd_(epfd), wake_fd_(wake_fd) {}
  ~EpollBackend() override {
    ::close(wake_fd_);
    ::close(epfd_);
  }

  void Wait(std::chrono::nanoseconds timeout) override {
    epoll_event events[256];
    timespec ts;
    timespec* tsp = nullptr;
    if (timeout.count() >= 0) {
      ts.tv_sec = timeout.count() / 1'000'000'000;
      ts.tv_nsec = timeout.count() % 1'000'000'000;
      tsp = &ts;
    }
    int n = epoll_pwait2(epfd_, events, 256, tsp, nullptr);
    for (int i = 0; i < n; ++i) Dispatch(events[i]);
  }

  void Wake() override {
    uint64_t one = 1;
    // A full counter (EAGAIN) still leaves the fd readable: the loop wakes.
    [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof(one));
  }

  void Attach(Socket* s) override {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = &s->recv_op_;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, s->fd_, &ev);
  }

  void StartReceive(Socket* s) override {
    s->receiving_ = true;
    if (s->readable_) ReadSome(s);
  }

  void StartSend(Socket* s) override {
    s->sending_ = true;
    if (s->writable_) SendSome(s);
  }

  void StartConnect(Socket* s, const sockaddr_storage& addr, socklen_t len) override {
    if (::connect(s->fd_, reinterpret_cast<const sockaddr*>(&addr), len) == 0) {
      s->OnConnected(0);
    } else if (errno == EINPROGRESS) {
      s->connecting_ = true;
    } else {
      s->OnConnected(-errno);
    }
  }

  void Detach(Socket* s) override {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, s->fd_, nullptr);
    s->receiving_ = false;
    s->sending_ = false;
    s->connecting_ = false;
    s->OnDetached();
  }

  bool BeginRelease(Socket* s) override {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, s->fd_, nullptr);
    s->receiving_ = false;
    return true;
  }

  void StartPoll(FdWaiter* w) override {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
    ev.data.ptr = &w->op_;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, w->fd_, &ev) != 0) w->Finish(-errno);
  }

  void CancelPoll(FdWaiter* w) override {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, w->fd_, nullptr);
    w->Finish(-ECANCELED);
  }

  void StartAccept(Listener* l) override {
    auto* op = new IoOp{IoOp::kAccept, l};
    l->accept_op_ = op;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.ptr = op;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, l->fd_, &ev);
    AcceptAll(l);
  }

  void StopAccept(Listener* l) override {
    if (l->accept_op_ == nullptr) return;
    epoll_ctl(epfd_, EPOLL_CTL_DEL, l->fd_, nullptr);
    delete l->accept_op_;
    l->accept_op_ = nullptr;
  }

 private:
  void Dispatch(const epoll_event& ev) {
    auto* op = static_cast<IoOp*>(ev.data.ptr);
    switch (op->kind) {
      case IoOp::kWake: {
        uint64_t value;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_, &value, sizeof(value));
        return;
      }
      case IoOp::kAccept:
        AcceptAll(static_cast<Listener*>(op->owner));
        return;
      case IoOp::kPoll: {
        // One-shot: the fd leaves the set, so it can join it again (as a
        // Socket, or waiting once more).
        auto* w = static_cast<FdWaiter*>(op->owner);
        epoll_ctl(epfd_, EPOLL_CTL_DEL, w->fd_, nullptr);
        w->Finish(static_cast<int>(ev.events));
        return;
      }
      default:
        break;
    }
    auto* s = static_cast<Socket*>(op->owner);
    if (s->detached_) return;  // closed by an earlier event of this batch
    if (ev.events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
      s->writable_ = true;
      if (s->connecting_) {
        s->connecting_ = false;
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(s->fd_, SOL_SOCKET, SO_ERROR, &err, &len);
        s->OnConnected(-err);
        if (err != 0) return;
      } else if (s->sending_) {
        SendSome(s);
        if (s->detached_) return;
      }
    }
    if (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      s->readable_ = true;
      if (ev.events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->peer_done_ = true;
      if (s->receiving_) ReadSome(s);
    }
  }

  void ReadSome(Socket* s) {
    while (s->WantsInput()) {
      std::span<char> space = s->receive_buffer().Reserve(4096);
      ssize_t n = ::read(s->fd_, space.data(), space.size());
      if (n > 0) {
        s->receive_buffer().Commit(static_cast<size_t>(n));
        s->OnReceived(static_cast<size_t>(n));
        // A short read drained the socket: edge-triggered epoll reports the
        // next arrival, so no second read just to see EAGAIN — unless the
        // peer's end was already reported: no edge comes after it, so read
        // on until read() says so.
        if (static_cast<size_t>(n) < space.size() && !s->peer_done_) {
          s->readable_ = false;
          return;
        }
        continue;
      }
      s->receive_buffer().Commit(0);
      if (n == 0) {
        s->receiving_ = false;
        s->OnReceiveEnd(0);
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s->readable_ = false;
        return;
      }
      s->receiving_ = false;
      s->OnReceiveEnd(-errno);
      return;
    }
    s->receiving_ = false;  // paused at the input limit; ReadMore resumes it
  }

  void SendSome(Socket* s) {
    bool splice = true;
    while (!s->output_.empty()) {
      if (splice) {
        Socket::SpliceResult r = s->SendSpliced();
        if (s->detached_) return;  // failed: closed
        if (r == Socket::SpliceResult::kSocketFull) {
          // A short splice left SOCK_NOSPACE set, as EAGAIN does: EPOLLOUT
          // comes when there is room, and continues here.
          s->writable_ = false;
          return;
        }
        splice = false;  // the rest by copy
        if (s->output_.empty()) break;
      }
      // sendmsg is done with the iovecs when it returns: on the stack.
      struct iovec iov[Socket::kMaxIov];
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<size_t>(s->output_.FillIovecs(iov, Socket::kMaxIov));
      ssize_t n = ::sendmsg(s->fd_, &msg, MSG_NOSIGNAL);
      if (n >= 0) {
        s->OnSent(static_cast<size_t>(n));
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s->writable_ = false;  // sending_ stays set: EPOLLOUT continues it
        return;
      }
      s->sending_ = false;
      s->OnSendError(-errno);
      return;
    }
    s->sending_ = false;
  }

  void AcceptAll(Listener* l) {
    while (!l->closed_) {
      int fd = ::accept4(l->fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        l->OnAccepted(fd);
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) l->OnAcceptError(-errno);
      return;
    }
  }

  int epfd_;
  int wake_fd_;
  IoOp wake_op_{IoOp::kWake, nullptr};

 public:
  void RegisterWake() {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &wake_op_;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  }
};

absl::StatusOr<std::unique_ptr<IoBackend>> NewEpollBackend() {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return absl::InternalError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    int err = errno;
    ::close(epfd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(err)));
  }
  auto backend = std::make_unique<EpollBackend>(epfd, wake);
  backend->RegisterWake();
  return backend;
}

}  // namespace capstan::net
