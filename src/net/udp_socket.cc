#include "net/udp_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace capstan::net {

// One wait of a coroutine on the socket's fd (or, for writability, on the
// private epoll fd). The engine runs the callback at the end of a turn, not
// inside its completion loop, so resuming the coroutine there is safe and
// saves the extra turn a Schedule would cost.
struct UdpSocket::Wait final : FdWaiter {
  Wait(EventLoop* loop, int fd) : FdWaiter(loop, fd, &Wait::OnReady) {}
  static void OnReady(FdWaiter* waiter, int result) {
    auto* self = static_cast<Wait*>(waiter);
    self->result = result;
    if (std::coroutine_handle<> h = std::exchange(self->awaiting, nullptr)) h.resume();
  }
  std::coroutine_handle<> awaiting;
  int result = 0;
};

UdpSocket::UdpSocket(EventLoop* loop, int fd, int port)
    : loop_(loop), fd_(fd), port_(port), read_wait_(std::make_unique<Wait>(loop, fd)) {}

absl::StatusOr<std::unique_ptr<UdpSocket>> UdpSocket::Bind(EventLoop* loop, const std::string& host,
                                                           int port, bool reuse_port) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("UDP listen address '", host, "': expected a numeric IPv4 or IPv6 address"));
  }
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  int one = 1;
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("SO_REUSEPORT: ", std::strerror(err)));
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot bind UDP ", host, ":", port, ": ", std::strerror(err)));
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  int bound_port = family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port)
                                     : ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  return std::unique_ptr<UdpSocket>(new UdpSocket(loop, fd, bound_port));
}

UdpSocket::~UdpSocket() {
  // The engine still holds a waiter that is waiting: Close first, and let
  // the awaiting coroutine see CANCELLED.
  assert(!read_wait_->waiting());
  assert(write_wait_ == nullptr || !write_wait_->waiting());
  if (writable_epoll_fd_ >= 0) close(writable_epoll_fd_);
  close(fd_);
}

UdpSocket::ReadyAwaiter UdpSocket::Readable() { return ReadyAwaiter{this, read_wait_.get(), {}}; }

UdpSocket::ReadyAwaiter UdpSocket::Writable() {
  absl::Status st = closed_ ? absl::OkStatus() : StartWritableWatch();
  return ReadyAwaiter{this, write_wait_.get(), std::move(st)};
}

absl::Status UdpSocket::StartWritableWatch() {
  if (writable_epoll_fd_ >= 0) return absl::OkStatus();
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return absl::InternalError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  epoll_event ev{};
  ev.events = EPOLLOUT;  // level-triggered: readable for as long as there is room
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd_, &ev) != 0) {
    int err = errno;
    close(epfd);
    return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(err)));
  }
  writable_epoll_fd_ = epfd;
  write_wait_ = std::make_unique<Wait>(loop_, epfd);
  return absl::OkStatus();
}

void UdpSocket::ReadyAwaiter::await_suspend(std::coroutine_handle<> h) {
  wait->awaiting = h;
  wait->Start();
}

absl::Status UdpSocket::ReadyAwaiter::await_resume() {
  if (!error.ok()) return error;
  if (socket->closed_) return absl::CancelledError("UDP socket closed");
  if (wait->result < 0) {
    return absl::InternalError(absl::StrCat("UDP wait: ", std::strerror(-wait->result)));
  }
  return absl::OkStatus();
}

void UdpSocket::Close() {
  if (closed_) return;
  closed_ = true;
  read_wait_->Cancel();
  if (write_wait_ != nullptr) write_wait_->Cancel();
}

static_assert(UdpBatch::kControl >= CMSG_SPACE(sizeof(timespec)));

int64_t UdpBatch::arrival_ns(int i) const {
  const msghdr& h = rx_msgs[i].msg_hdr;
  if (h.msg_control == nullptr) return 0;
  for (const cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr;
       c = CMSG_NXTHDR(const_cast<msghdr*>(&h), const_cast<cmsghdr*>(c))) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
      timespec ts;
      std::memcpy(&ts, CMSG_DATA(c), sizeof(ts));
      return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
    }
  }
  return 0;
}

absl::Status UdpSocket::EnableArrivalTimes() {
  int one = 1;
  if (setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) != 0) {
    return absl::InternalError(absl::StrCat("SO_TIMESTAMPNS: ", std::strerror(errno)));
  }
  arrival_times_ = true;
  return absl::OkStatus();
}

int UdpSocket::Receive(UdpBatch* b) {
  b->tx_count = 0;
  b->tx_next = 0;
  if (closed_) return 0;
  for (int i = 0; i < UdpBatch::kBatch; ++i) {
    b->rx_iov[i] = {b->rx[i], UdpBatch::kMaxDatagram};
    msghdr& h = b->rx_msgs[i].msg_hdr;
    h = {};
    h.msg_name = &b->peers[i];
    h.msg_namelen = sizeof(sockaddr_storage);
    h.msg_iov = &b->rx_iov[i];
    h.msg_iovlen = 1;
    if (arrival_times_) {
      h.msg_control = b->rx_control[i];
      h.msg_controllen = UdpBatch::kControl;
    }
    b->rx_msgs[i].msg_len = 0;
    b->reply_size[i] = 0;
  }
  while (true) {
    int n = recvmmsg(fd_, b->rx_msgs, UdpBatch::kBatch, MSG_DONTWAIT, nullptr);
    if (n < 0 && errno == EINTR) continue;
    // EAGAIN: nothing waiting. Another error (an ICMP report queued for
    // the socket) is taken by this call; the caller waits again.
    return n < 0 ? 0 : n;
  }
}

int UdpSocket::Send(UdpBatch* b, int begin, int end) {
  assert(b->unsent() == 0);
  int m = 0;
  for (int i = begin; i < end; ++i) {
    if (b->reply_size[i] == 0) continue;
    b->tx_iov[m] = {const_cast<uint8_t*>(b->reply_data[i]), b->reply_size[i]};
    msghdr& h = b->tx_msgs[m].msg_hdr;
    h = {};
    h.msg_name = &b->peers[i];
    h.msg_namelen = b->rx_msgs[i].msg_hdr.msg_namelen;
    h.msg_iov = &b->tx_iov[m];
    h.msg_iovlen = 1;
    ++m;
  }
  b->tx_count = m;
  b->tx_next = 0;
  return SendMore(b);
}

int UdpSocket::SendMore(UdpBatch* b) {
  if (closed_) return 0;
  int sent = 0;
  while (b->tx_next < b->tx_count) {
    int r = sendmmsg(fd_, b->tx_msgs + b->tx_next, static_cast<unsigned>(b->tx_count - b->tx_next),
                     MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;  // the buffer is full: wait
      // An error of this datagram's own (an unreachable or filtered peer,
      // ENOBUFS from a full device queue):
      // skip it and carry on with the rest.
      ++b->tx_next;
      continue;
    }
    if (r == 0) break;
    b->tx_next += r;
    sent += r;
  }
  return sent;
}

}  // namespace capstan::net
