#include "net/udp_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::RunToCompletion;

// A plain (blocking) client socket on 127.0.0.1 that talks to `port`.
class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    server_.sin_family = AF_INET;
    server_.sin_port = htons(static_cast<uint16_t>(port));
    server_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  ~Client() { ::close(fd_); }
  void Send(const std::string& datagram) {
    ASSERT_EQ(::sendto(fd_, datagram.data(), datagram.size(), 0,
                       reinterpret_cast<const sockaddr*>(&server_), sizeof(server_)),
              static_cast<ssize_t>(datagram.size()));
  }
  // The next datagram, waiting at most 5 s; empty when none came.
  std::string Receive() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return "";
    char buf[2048];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

 private:
  int fd_;
  sockaddr_in server_{};
};

class UdpSocketTest : public testing::EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto socket = UdpSocket::Bind(loop_.get(), "127.0.0.1", 0, /*reuse_port=*/false);
    ASSERT_TRUE(socket.ok()) << socket.status();
    socket_ = std::move(socket).value();
    batch_ = std::make_unique<UdpBatch>();
  }
  std::unique_ptr<UdpSocket> socket_;
  std::unique_ptr<UdpBatch> batch_;
};

// Echoes each datagram of the batch back to its sender, prefixed with "re:".
void ReplyToAll(UdpBatch* batch, int n, std::vector<std::string>* replies) {
  replies->resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    (*replies)[i] = "re:" + std::string(batch->datagram(i));
    batch->SetReply(i, reinterpret_cast<const uint8_t*>((*replies)[i].data()),
                    (*replies)[i].size());
  }
}

TEST_P(UdpSocketTest, AWaitEndsWhenADatagramArrivesAndTheReplyGoesBack) {
  Client client(socket_->port());
  struct Seen {
    int before = -1, after = -1;
    absl::Status readable = absl::UnknownError("not run");
    std::string datagram;
    int sent = -1;
  } seen;
  RunToCompletion(*loop_,
                  [](EventLoop* loop, UdpSocket* socket, UdpBatch* batch, Client* client,
                     Seen* seen) -> Task<void> {
                    seen->before = socket->Receive(batch);  // nothing yet
                    // Sent only once this coroutine is parked in the wait (timers fire
                    // after the ready coroutines of a turn).
                    Timer send([client] { client->Send("ping"); });
                    send.ArmAfter(loop, std::chrono::milliseconds(0));
                    auto readable = socket->Readable();
                    seen->readable = co_await readable;
                    seen->after = socket->Receive(batch);
                    if (seen->after != 1) co_return;
                    seen->datagram = std::string(batch->datagram(0));
                    std::vector<std::string> replies;
                    ReplyToAll(batch, 1, &replies);
                    seen->sent = socket->Send(batch, 1);
                  }(loop_.get(), socket_.get(), batch_.get(), &client, &seen));
  EXPECT_EQ(seen.before, 0);
  EXPECT_TRUE(seen.readable.ok()) << seen.readable;
  EXPECT_EQ(seen.after, 1);
  EXPECT_EQ(seen.datagram, "ping");
  EXPECT_EQ(seen.sent, 1);
  EXPECT_EQ(client.Receive(), "re:ping");
}

TEST_P(UdpSocketTest, ABurstIsTakenSixtyFourDatagramsPerCall) {
  Client client(socket_->port());
  constexpr int kSent = 100;
  for (int i = 0; i < kSent; ++i) client.Send(absl::StrCat("d", i));
  std::vector<int> batches;
  int sent = 0;
  RunToCompletion(
      *loop_,
      [](UdpSocket* socket, UdpBatch* batch, std::vector<int>* batches, int* sent) -> Task<void> {
        auto readable = socket->Readable();
        if (!(co_await readable).ok()) co_return;
        // Everything already queued comes out in full batches, then 0.
        for (int round = 0; round < 4; ++round) {
          int n = socket->Receive(batch);
          batches->push_back(n);
          if (n == 0) break;
          std::vector<std::string> replies;
          ReplyToAll(batch, n, &replies);
          *sent += socket->Send(batch, n);
          EXPECT_EQ(batch->unsent(), 0);
        }
      }(socket_.get(), batch_.get(), &batches, &sent));
  EXPECT_EQ(batches, (std::vector<int>{64, 36, 0}));
  EXPECT_EQ(sent, kSent);
  std::set<std::string> got;
  for (int i = 0; i < kSent; ++i) got.insert(client.Receive());
  EXPECT_EQ(got.size(), static_cast<size_t>(kSent));
  EXPECT_EQ(got.count("re:d0"), 1u);
  EXPECT_EQ(got.count("re:d99"), 1u);
}

TEST_P(UdpSocketTest, ASliceOfTheBatchIsSentOnItsOwn) {
  Client client(socket_->port());
  for (int i = 0; i < 4; ++i) client.Send(absl::StrCat("d", i));
  std::vector<int> sent;
  RunToCompletion(*loop_,
                  [](UdpSocket* socket, UdpBatch* batch, std::vector<int>* sent) -> Task<void> {
                    auto readable = socket->Readable();
                    if (!(co_await readable).ok()) co_return;
                    int n = socket->Receive(batch);
                    EXPECT_EQ(n, 4);
                    if (n != 4) co_return;
                    std::vector<std::string> replies;
                    ReplyToAll(batch, n, &replies);
                    // Out of order on purpose: each call sends its slice and nothing else.
                    sent->push_back(socket->Send(batch, 1, 3));
                    sent->push_back(socket->Send(batch, 3, 4));
                    sent->push_back(socket->Send(batch, 0, 1));
                  }(socket_.get(), batch_.get(), &sent));
  EXPECT_EQ(sent, (std::vector<int>{2, 1, 1}));
  std::vector<std::string> got;
  for (int i = 0; i < 4; ++i) got.push_back(client.Receive());
  EXPECT_EQ(got, (std::vector<std::string>{"re:d1", "re:d2", "re:d3", "re:d0"}));
}

int64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

TEST_P(UdpSocketTest, ArrivalTimesOnlyWhenEnabled) {
  Client client(socket_->port());
  struct Seen {
    int64_t without = -1, with = -1, sent_at = 0, read_at = 0;
  } seen;
  client.Send("before");
  RunToCompletion(*loop_,
                  [](UdpSocket* socket, UdpBatch* batch, Client* client, Seen* seen) -> Task<void> {
                    auto readable = socket->Readable();
                    if (!(co_await readable).ok()) co_return;
                    if (socket->Receive(batch) != 1) co_return;
                    seen->without = batch->arrival_ns(0);
                    EXPECT_TRUE(socket->EnableArrivalTimes().ok());
                    seen->sent_at = RealtimeNs();
                    client->Send("after");
                    auto again = socket->Readable();
                    if (!(co_await again).ok()) co_return;
                    if (socket->Receive(batch) != 1) co_return;
                    seen->read_at = RealtimeNs();
                    seen->with = batch->arrival_ns(0);
                  }(socket_.get(), batch_.get(), &client, &seen));
  EXPECT_EQ(seen.without, 0);
  // The kernel stamped it between our send and our read.
  EXPECT_GE(seen.with, seen.sent_at);
  EXPECT_LE(seen.with, seen.read_at);
}

TEST_P(UdpSocketTest, RepliesWithNoBytesAreNotSent) {
  Client client(socket_->port());
  client.Send("a");
  client.Send("b");
  int sent = -1;
  RunToCompletion(*loop_, [](UdpSocket* socket, UdpBatch* batch, int* sent) -> Task<void> {
    auto readable = socket->Readable();
    if (!(co_await readable).ok()) co_return;
    int n = socket->Receive(batch);
    EXPECT_EQ(n, 2);
    static const uint8_t kReply[] = {'o', 'k'};
    batch->SetReply(1, kReply, sizeof(kReply));  // datagram 0 gets none
    *sent = socket->Send(batch, n);
  }(socket_.get(), batch_.get(), &sent));
  EXPECT_EQ(sent, 1);
  EXPECT_EQ(client.Receive(), "ok");
}

TEST_P(UdpSocketTest, CloseEndsAWaitInFlightWithCancelled) {
  absl::Status readable, again, writable;
  int received = -1;
  RunToCompletion(
      *loop_,
      [](EventLoop* loop, UdpSocket* socket, UdpBatch* batch, absl::Status* readable,
         absl::Status* again, absl::Status* writable, int* received) -> Task<void> {
        Timer close([socket] { socket->Close(); });
        close.ArmAfter(loop, std::chrono::milliseconds(0));
        auto wait = socket->Readable();
        *readable = co_await wait;  // parked until Close
        auto wait_again = socket->Readable();
        *again = co_await wait_again;  // closed: at once
        auto wait_writable = socket->Writable();
        *writable = co_await wait_writable;
        *received = socket->Receive(batch);
      }(loop_.get(), socket_.get(), batch_.get(), &readable, &again, &writable, &received));
  EXPECT_TRUE(absl::IsCancelled(readable)) << readable;
  EXPECT_TRUE(absl::IsCancelled(again)) << again;
  EXPECT_TRUE(absl::IsCancelled(writable)) << writable;
  EXPECT_EQ(received, 0);
}

TEST_P(UdpSocketTest, WritableEndsAtOnceWhileTheSendBufferHasRoom) {
  absl::Status first, second;
  RunToCompletion(*loop_,
                  [](UdpSocket* socket, absl::Status* first, absl::Status* second) -> Task<void> {
                    // A fresh socket has room: the wait ends at once, and again.
                    auto w1 = socket->Writable();
                    *first = co_await w1;
                    auto w2 = socket->Writable();
                    *second = co_await w2;
                  }(socket_.get(), &first, &second));
  EXPECT_TRUE(first.ok()) << first;
  EXPECT_TRUE(second.ok()) << second;
}

TEST_P(UdpSocketTest, WritableWaitsWhileTheSendBufferIsFull) {
  Client client(socket_->port());
  client.Send("hello");  // for the client's address
  // Fill the send buffer: a corked socket keeps what it is given charged to
  // its buffer until uncorked, so past half of a small buffer the socket is
  // not writable.
  int fd = socket_->fd();
  int small = 1;  // the kernel's minimum, a few KiB
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  int on = 1;
  ASSERT_EQ(setsockopt(fd, IPPROTO_UDP, UDP_CORK, &on, sizeof(on)), 0);
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof(peer);
  char first[16];
  ASSERT_GT(recvfrom(fd, first, sizeof(first), 0, reinterpret_cast<sockaddr*>(&peer), &peer_len),
            0);
  std::string chunk(1000, 'x');
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(sendto(fd, chunk.data(), chunk.size(), MSG_DONTWAIT,
                     reinterpret_cast<sockaddr*>(&peer), peer_len),
              1000);
  }
  pollfd writable_now{fd, POLLOUT, 0};
  ASSERT_EQ(poll(&writable_now, 1, 0), 0) << "the send buffer did not fill";
  struct Seen {
    bool uncorked = false;
    bool uncorked_before_resume = false;
    absl::Status writable = absl::UnknownError("not run");
  } seen;
  RunToCompletion(*loop_, [](EventLoop* loop, UdpSocket* socket, Seen* seen) -> Task<void> {
    // Uncorking sends what is pending and frees the buffer; until then the
    // wait must not end. (A wait that ended at once would resume long
    // before this timer.)
    Timer uncork([socket, seen] {
      int off = 0;
      setsockopt(socket->fd(), IPPROTO_UDP, UDP_CORK, &off, sizeof(off));
      seen->uncorked = true;
    });
    uncork.ArmAfter(loop, std::chrono::milliseconds(50));
    auto writable = socket->Writable();
    seen->writable = co_await writable;
    seen->uncorked_before_resume = seen->uncorked;
  }(loop_.get(), socket_.get(), &seen));
  EXPECT_TRUE(seen.writable.ok()) << seen.writable;
  EXPECT_TRUE(seen.uncorked_before_resume);
  // What was pending left as one datagram.
  EXPECT_GE(client.Receive().size(), 1000u);
}

TEST_P(UdpSocketTest, SocketsOnOnePortWithReusePort) {
  auto a = UdpSocket::Bind(loop_.get(), "127.0.0.1", 0, /*reuse_port=*/true);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = UdpSocket::Bind(loop_.get(), "127.0.0.1", (*a)->port(), /*reuse_port=*/true);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->port(), (*a)->port());
  auto taken = UdpSocket::Bind(loop_.get(), "127.0.0.1", (*a)->port(), /*reuse_port=*/false);
  EXPECT_TRUE(absl::IsUnavailable(taken.status())) << taken.status();
  auto bad = UdpSocket::Bind(loop_.get(), "localhost", 0, false);
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status())) << bad.status();
}

INSTANTIATE_TEST_SUITE_P(Engines, UdpSocketTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

}  // namespace
}  // namespace capstan::net
