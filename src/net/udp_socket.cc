#include "net/udp_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace capstan::net {

absl::StatusOr<std::unique_ptr<Waker>> Waker::Create() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  return std::unique_ptr<Waker>(new Waker(fd));
}

Waker::~Waker() { close(fd_); }

void Waker::Wake() {
  uint64_t one = 1;
  ssize_t n = write(fd_, &one, sizeof(one));
  (void)n;  // a full counter still wakes the reader
}

absl::StatusOr<std::unique_ptr<UdpSocket>> UdpSocket::Bind(const std::string& host, int port,
                                                           bool reuse_port) {
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
  return std::unique_ptr<UdpSocket>(new UdpSocket(fd, bound_port));
}

UdpSocket::~UdpSocket() { close(fd_); }

bool UdpSocket::Wait(const Waker& waker, int timeout_ms) {
  pollfd fds[2] = {{fd_, POLLIN, 0}, {waker.fd(), POLLIN, 0}};
  while (true) {
    int n = poll(fds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (fds[1].revents != 0) return false;
    return true;
  }
}

int UdpSocket::Receive(UdpBatch* b) {
  for (int i = 0; i < UdpBatch::kBatch; ++i) {
    b->rx_iov[i] = {b->rx[i], UdpBatch::kMaxDatagram};
    msghdr& h = b->rx_msgs[i].msg_hdr;
    h = {};
    h.msg_name = &b->peers[i];
    h.msg_namelen = sizeof(sockaddr_storage);
    h.msg_iov = &b->rx_iov[i];
    h.msg_iovlen = 1;
    b->rx_msgs[i].msg_len = 0;
    b->reply_size[i] = 0;
  }
  while (true) {
    int n = recvmmsg(fd_, b->rx_msgs, UdpBatch::kBatch, MSG_DONTWAIT, nullptr);
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? 0 : n;
  }
}

int UdpSocket::Send(UdpBatch* b, int n) {
  int m = 0;
  for (int i = 0; i < n; ++i) {
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
  int sent = 0;
  while (sent < m) {
    int r = sendmmsg(fd_, b->tx_msgs + sent, static_cast<unsigned>(m - sent), MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      // EAGAIN (the socket buffer is full) or an unreachable peer: drop
      // this datagram and carry on with the rest.
      ++sent;
      continue;
    }
    sent += r;
    if (r == 0) break;
  }
  return sent;
}

}  // namespace capstan::net
