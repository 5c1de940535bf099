// UdpSocket: a bound UDP socket on an EventLoop that receives and sends
// datagrams in batches (recvmmsg / sendmmsg: one system call for up to
// kBatch datagrams), for servers that answer each datagram on its own (DNS)
// and for any other datagram protocol on the runtime (QUIC, statsd).
//
// Readiness, not completion: a coroutine awaits `Readable()` (or
// `Writable()`) and then takes every waiting datagram with non-blocking
// batch calls until the kernel has no more. The wait goes through the
// loop's I/O engine (FdWaiter: an io_uring poll, or a one-shot epoll
// registration), so a UDP server shares its loop with the TCP and HTTP
// sockets of the same process; once readable, a burst costs one recvmmsg
// per 64 datagrams and no wait at all. A server runs one UdpSocket per loop,
// all bound to the same port with SO_REUSEPORT, so the kernel spreads
// clients across them.
//
//   auto socket = net::UdpSocket::Bind(loop, "127.0.0.1", 5353, /*reuse_port=*/true).value();
//   auto batch = std::make_unique<net::UdpBatch>();
//   while (!socket->closed()) {
//     int n = socket->Receive(batch.get());
//     if (n == 0) {
//       auto readable = socket->Readable();
//       absl::Status st = co_await readable;
//       if (!st.ok()) break;                     // CANCELLED after Close
//       continue;
//     }
//     for (int i = 0; i < n; ++i) batch->SetReply(i, answer, size);
//     socket->Send(batch.get(), n);
//     while (batch->unsent() > 0) {              // the send buffer was full
//       auto writable = socket->Writable();
//       absl::Status room = co_await writable;
//       if (!room.ok()) break;
//       socket->SendMore(batch.get());
//     }
//     if (n == net::UdpBatch::kBatch) {          // more may wait: let the loop's others run
//       auto yield = loop->Yield();
//       co_await yield;
//     }
//   }
//
// Thread-safety: Bind from any thread; everything else on the socket's
// loop thread. One coroutine at a time may await Readable, and one
// Writable.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "net/event_loop.h"
#include "net/socket.h"

namespace capstan::net {

// One batch's datagrams: what was received and the reply to each. About
// 290 KiB: allocate it once per socket, not per batch.
struct UdpBatch {
  static constexpr int kBatch = 64;
  // Datagrams longer than this are cut (and flagged truncated).
  static constexpr size_t kMaxDatagram = 4096;

  // Received datagram i.
  std::string_view datagram(int i) const {
    return {rx[i], static_cast<size_t>(rx_msgs[i].msg_len)};
  }
  bool truncated(int i) const { return (rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0; }
  // When the kernel queued datagram i on the socket (CLOCK_REALTIME, ns),
  // with UdpSocket::EnableArrivalTimes; 0 without.
  int64_t arrival_ns(int i) const;
  const sockaddr_storage& peer(int i) const { return peers[i]; }
  // The reply to datagram i: `size` bytes at `data` (memory that outlives
  // the sending of this batch); size 0 sends nothing.
  void SetReply(int i, const uint8_t* data, size_t size) {
    reply_data[i] = data;
    reply_size[i] = size;
  }
  // Replies that Send / SendMore have not handed to the kernel yet because
  // its buffer was full.
  int unsent() const { return tx_count - tx_next; }
  // Gives up on the unsent replies (the socket closed while waiting).
  void DropUnsent() { tx_next = tx_count; }

  char rx[kBatch][kMaxDatagram];
  sockaddr_storage peers[kBatch];
  iovec rx_iov[kBatch];
  mmsghdr rx_msgs[kBatch];
  // The arrival time's control message (SO_TIMESTAMPNS), when enabled.
  static constexpr size_t kControl = 64;  // >= CMSG_SPACE(sizeof(timespec))
  alignas(cmsghdr) char rx_control[kBatch][kControl];
  const uint8_t* reply_data[kBatch];
  size_t reply_size[kBatch];
  iovec tx_iov[kBatch];
  mmsghdr tx_msgs[kBatch];
  int tx_count = 0;  // replies in tx_msgs
  int tx_next = 0;   // the first not yet sent
};

class UdpSocket {
 public:
  // Binds a numeric host ("127.0.0.1", "::1", "0.0.0.0") and port (0 picks
  // one); the socket's waits run on `loop`.
  static absl::StatusOr<std::unique_ptr<UdpSocket>> Bind(EventLoop* loop, const std::string& host,
                                                         int port, bool reuse_port);
  // REQUIRES: no coroutine awaiting Readable or Writable (Close, then let
  // it see CANCELLED).
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  int port() const { return port_; }
  int fd() const { return fd_; }
  EventLoop* loop() const { return loop_; }
  bool closed() const { return closed_; }

  // co_await socket->Readable(): OK once a datagram is waiting (or the
  // kernel has an error to report for the socket, which the next Receive
  // takes, returning 0); CANCELLED once the socket is closed.
  struct ReadyAwaiter;
  ReadyAwaiter Readable();
  // co_await socket->Writable(): OK once the send buffer has room again
  // (after a Send that left `unsent()` replies); CANCELLED once closed.
  ReadyAwaiter Writable();

  // Receives the datagrams waiting, up to kBatch, without blocking; 0 when
  // none (or after Close). Resets every reply to none.
  int Receive(UdpBatch* batch);
  // Every datagram received from now on carries the time the kernel queued
  // it (UdpBatch::arrival_ns), for measuring how long queries wait before
  // they are read. Costs a timestamp per packet in the kernel and a control
  // message per datagram: for measurement, off by default.
  absl::Status EnableArrivalTimes();
  // Sends the replies set for datagrams [0, n) to their peers, as many per
  // system call as the kernel takes; returns how many it handed to the
  // kernel. Stops when the socket's send buffer is full, leaving `batch->unsent()` for SendMore
  // after Writable (or for the caller to drop). A reply the kernel refuses
  // for its own peer (unreachable, filtered) is skipped.
  int Send(UdpBatch* batch, int n) { return Send(batch, 0, n); }
  // The same for the replies of datagrams [begin, end) only: a server that
  // answers a large batch can send the first answers before computing the
  // rest. REQUIRES: the previous slice is all sent (`unsent() == 0`).
  int Send(UdpBatch* batch, int begin, int end);
  // Continues a Send that stopped at a full buffer; returns how many it
  // handed to the kernel.
  int SendMore(UdpBatch* batch);

  // Ends the socket: waits in flight finish with CANCELLED (in a later
  // turn), Receive and Send do nothing. The fd closes with the object.
  // Loop thread; idempotent.
  void Close();

  struct Wait;  // an FdWaiter that resumes the awaiting coroutine

 private:
  UdpSocket(EventLoop* loop, int fd, int port);
  absl::Status StartWritableWatch();

  EventLoop* loop_;
  int fd_;
  int port_;
  bool closed_ = false;
  bool arrival_times_ = false;
  // Writability through the engine: a private epoll instance that watches
  // the socket for EPOLLOUT (level-triggered) becomes readable exactly when
  // the socket is writable, and an FdWaiter waits for that. Made on the
  // first Writable (a full send buffer is rare for UDP).
  int writable_epoll_fd_ = -1;
  std::unique_ptr<Wait> read_wait_;
  std::unique_ptr<Wait> write_wait_;

 public:
  struct ReadyAwaiter {
    UdpSocket* socket;
    Wait* wait;
    absl::Status error;  // set when the wait cannot even start
    bool await_ready() const noexcept { return socket->closed_ || !error.ok(); }
    void await_suspend(std::coroutine_handle<> h);
    absl::Status await_resume();
  };
};

}  // namespace capstan::net
