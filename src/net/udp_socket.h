// UdpSocket: a bound UDP socket that receives and sends datagrams in
// batches (recvmmsg / sendmmsg: one system call for up to kBatch
// datagrams), for servers that answer each datagram on its own (DNS).
//
// It does not live on an EventLoop: the loop's I/O engines (io_backend.h)
// drive stream sockets only. A server runs one UdpSocket per thread, all
// bound to the same port with SO_REUSEPORT so the kernel spreads clients
// across them, and blocks in Wait between batches; another thread ends the
// wait with a Waker.
//
//   auto socket = net::UdpSocket::Bind("127.0.0.1", 5353, /*reuse_port=*/true).value();
//   auto batch = std::make_unique<net::UdpBatch>();
//   while (socket->Wait(waker, -1)) {
//     int n = socket->Receive(batch.get());
//     for (int i = 0; i < n; ++i) batch->SetReply(i, answer, size);
//     socket->Send(batch.get(), n);
//   }
//
// Thread-safety: a UdpSocket and its batch belong to one thread; Waker's
// Wake may be called from any thread.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace capstan::net {

// One batch's datagrams: what was received and the reply to each.
struct UdpBatch {
  static constexpr int kBatch = 64;
  // Datagrams longer than this are cut (and flagged truncated).
  static constexpr size_t kMaxDatagram = 4096;

  // Received datagram i.
  std::string_view datagram(int i) const {
    return {rx[i], static_cast<size_t>(rx_msgs[i].msg_len)};
  }
  bool truncated(int i) const { return (rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0; }
  const sockaddr_storage& peer(int i) const { return peers[i]; }
  // The reply to datagram i: `size` bytes at `data` (memory that outlives
  // Send); size 0 sends nothing.
  void SetReply(int i, const uint8_t* data, size_t size) {
    reply_data[i] = data;
    reply_size[i] = size;
  }

  char rx[kBatch][kMaxDatagram];
  sockaddr_storage peers[kBatch];
  iovec rx_iov[kBatch];
  mmsghdr rx_msgs[kBatch];
  const uint8_t* reply_data[kBatch];
  size_t reply_size[kBatch];
  iovec tx_iov[kBatch];
  mmsghdr tx_msgs[kBatch];
};

// An eventfd that ends UdpSocket::Wait.
class Waker {
 public:
  static absl::StatusOr<std::unique_ptr<Waker>> Create();
  ~Waker();
  void Wake();
  int fd() const { return fd_; }

 private:
  explicit Waker(int fd) : fd_(fd) {}
  int fd_;
};

class UdpSocket {
 public:
  // Binds a numeric host ("127.0.0.1", "::1", "0.0.0.0") and port (0
  // picks one).
  static absl::StatusOr<std::unique_ptr<UdpSocket>> Bind(const std::string& host, int port,
                                                         bool reuse_port);
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  int port() const { return port_; }
  int fd() const { return fd_; }

  // Blocks until a datagram is waiting (true) or `waker` was woken (false);
  // timeout_ms < 0 waits without a limit (then true on timeout).
  bool Wait(const Waker& waker, int timeout_ms);
  // Receives the datagrams waiting, up to kBatch, without blocking; 0 when
  // none. Resets every reply to none.
  int Receive(UdpBatch* batch);
  // Sends the replies set for datagrams [0, n) to their peers; returns how
  // many left (a full kernel buffer drops the rest, as a UDP server must).
  int Send(UdpBatch* batch, int n);

 private:
  UdpSocket(int fd, int port) : fd_(fd), port_(port) {}
  int fd_;
  int port_;
};

}  // namespace capstan::net
