#include "net/fd_readiness.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace capstan::net {

absl::StatusOr<std::unique_ptr<FdReadiness>> FdReadiness::Create(EventLoop* loop) {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return absl::InternalError(absl::StrCat("epoll_create1: ", strerror(errno)));
  return std::unique_ptr<FdReadiness>(new FdReadiness(loop, epfd));
}

FdReadiness::FdReadiness(EventLoop* loop, int epfd)
    : loop_(loop), epfd_(epfd), waiter_(loop, epfd, this) {}

FdReadiness::~FdReadiness() { ::close(epfd_); }

absl::Status FdReadiness::Watch(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return absl::InternalError(absl::StrCat("epoll_ctl(ADD): ", strerror(errno)));
  }
  return absl::OkStatus();
}

void FdReadiness::Unwatch(int fd) { epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr); }

void FdReadiness::WaitAwaiter::await_suspend(std::coroutine_handle<> h) {
  self->resumer_ = h;
  self->waiter_.Start();
}

absl::Status FdReadiness::WaitAwaiter::await_resume() {
  if (self->interrupted_) return absl::CancelledError("readiness wait interrupted");
  if (self->result_ < 0) {
    return absl::InternalError(absl::StrCat("waiting for readiness: ", strerror(-self->result_)));
  }
  return absl::OkStatus();
}

void FdReadiness::Interrupt() {
  interrupted_ = true;
  waiter_.Cancel();  // nothing when not waiting
}

void FdReadiness::OnSetReady(FdWaiter* waiter, int result) {
  FdReadiness* self = static_cast<SetWaiter*>(waiter)->owner;
  if (result > 0) {
    // Take the set's edges so it stops being readable until the next one.
    // What they were does not matter: the owner retries every call.
    epoll_event events[64];
    while (epoll_wait(self->epfd_, events, 64, 0) == 64) {
    }
    ++self->wakeups_;
  }
  self->result_ = result == -ECANCELED ? 0 : result;
  if (self->resumer_) self->loop_->Schedule(std::exchange(self->resumer_, nullptr));
}

}  // namespace capstan::net
