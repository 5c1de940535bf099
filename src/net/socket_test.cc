#include "net/socket.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::RefusingPort;
using testing::RunToCompletion;

class SocketTest : public testing::EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto l = Listener::Bind(loop_.get(), "127.0.0.1", 0);
    ASSERT_TRUE(l.ok()) << l.status();
    listener_ = std::move(l).value();
  }
  void TearDown() override {
    if (listener_) listener_->Close();
  }
  std::unique_ptr<Listener> listener_;
};

// Echoes every byte back until the peer closes.
Task<void> EchoServer(Listener* listener, int connections) {
  for (int i = 0; i < connections; ++i) {
    auto accepted = co_await listener->Accept();
    if (!accepted.ok()) co_return;
    listener->loop()->Spawn([](std::shared_ptr<Socket> s) -> Task<void> {
      while ((co_await s->ReadMore()).ok()) s->Write(s->input().Cut(s->input().size()));
      s->Close();
    }(std::move(accepted).value()));
  }
}

// Reads until `n` bytes are in s->input() or the socket stops.
Task<absl::Status> ReadAtLeast(Socket* s, size_t n) {
  while (s->input().size() < n) {
    absl::Status st = co_await s->ReadMore();
    if (!st.ok()) co_return st;
  }
  co_return absl::OkStatus();
}

TEST_P(SocketTest, EchoesBytesBack) {
  loop_->Spawn(EchoServer(listener_.get(), 1));
  std::string got;
  RunToCompletion(*loop_, [](EventLoop* loop, int port, std::string* got) -> Task<void> {
    auto s = co_await Socket::Connect(loop, "127.0.0.1", port);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) co_return;
    (*s)->Write("ping");
    EXPECT_TRUE((co_await ReadAtLeast(s->get(), 4)).ok());
    *got = (*s)->input().ToString();
    (*s)->Close();
  }(loop_.get(), listener_->port(), &got));
  EXPECT_EQ(got, "ping");
}

TEST_P(SocketTest, LargeTransfersArriveIntactInBothDirections) {
  loop_->Spawn(EchoServer(listener_.get(), 1));
  std::string payload(8 << 20, '\0');
  std::mt19937 rng(3);
  for (char& c : payload) c = static_cast<char>(rng());
  bool same = false;
  RunToCompletion(
      *loop_, [](EventLoop* loop, int port, const std::string& payload, bool* same) -> Task<void> {
        auto s = co_await Socket::Connect(loop, "127.0.0.1", port);
        if (!s.ok()) co_return;
        // Written in pieces, read concurrently: the echo's input limit and the
        // kernel's buffers both push back.
        for (size_t off = 0; off < payload.size(); off += 100000) {
          (*s)->Write(std::string_view(payload).substr(off, 100000));
          co_await (*s)->Drained(1 << 20);
        }
        EXPECT_TRUE((co_await ReadAtLeast(s->get(), payload.size())).ok());
        *same = (*s)->input().ToString() == payload;
        (*s)->Close();
      }(loop_.get(), listener_->port(), payload, &same));
  EXPECT_TRUE(same);
}

TEST_P(SocketTest, ManyConcurrentConnectionsEachGetTheirOwnBytes) {
  constexpr int kClients = 64;
  loop_->Spawn(EchoServer(listener_.get(), kClients));
  int ok = 0;
  RunToCompletion(*loop_, [](EventLoop* loop, int port, int* ok) -> Task<void> {
    std::vector<std::shared_ptr<Socket>> sockets;
    for (int i = 0; i < kClients; ++i) {
      auto s = co_await Socket::Connect(loop, "127.0.0.1", port);
      if (!s.ok()) co_return;
      sockets.push_back(*s);
    }
    for (int i = 0; i < kClients; ++i) sockets[i]->Write("client-" + std::to_string(i) + ";");
    for (int i = 0; i < kClients; ++i) {
      std::string want = "client-" + std::to_string(i) + ";";
      if ((co_await ReadAtLeast(sockets[i].get(), want.size())).ok() &&
          sockets[i]->input().ToString() == want) {
        ++*ok;
      }
      sockets[i]->Close();
    }
  }(loop_.get(), listener_->port(), &ok));
  EXPECT_EQ(ok, kClients);
}

TEST_P(SocketTest, WritesOfOneTurnLeaveInOneSend) {
  loop_->Spawn(EchoServer(listener_.get(), 1));
  uint64_t sends = 0;
  RunToCompletion(*loop_, [](EventLoop* loop, int port, uint64_t* sends) -> Task<void> {
    auto s = co_await Socket::Connect(loop, "127.0.0.1", port);
    if (!s.ok()) co_return;
    for (int i = 0; i < 100; ++i) (*s)->Write("0123456789");
    EXPECT_TRUE((co_await ReadAtLeast(s->get(), 1000)).ok());
    *sends = (*s)->sends();
    (*s)->Close();
  }(loop_.get(), listener_->port(), &sends));
  EXPECT_EQ(sends, 1u);
}

// A large response built like a cache hit (a small head, then a body that
// is one shared block) leaves in one send when the kernel has room for it:
// one sendmsg (epoll) or one sendmsg submission (io_uring), never split per
// slice or punted. The gateway's 100 KiB hits depend on it
// (docs/benchmarks/cache.md, "where the CPU of a 100 KiB hit goes"). The
// server's send buffer is set explicitly so the room does not depend on the
// machine's tcp_wmem.
TEST_P(SocketTest, LargeResponseOfSharedSlicesLeavesInOneSend) {
  constexpr size_t kBodyBytes = 100 << 10;
  Buffer body;
  std::span<char> space = body.Reserve(kBodyBytes, kBodyBytes);
  for (size_t i = 0; i < kBodyBytes; ++i) space[i] = static_cast<char>('a' + i % 26);
  body.Commit(kBodyBytes);
  const std::string head = "HTTP/1.1 200 OK\r\ncontent-length: 102400\r\n\r\n";
  uint64_t sends = 0;
  std::string got;
  RunToCompletion(
      *loop_,
      [](EventLoop* loop, Listener* listener, const Buffer* body, const std::string* head,
         uint64_t* sends, std::string* got) -> Task<void> {
        auto client = co_await Socket::Connect(loop, "127.0.0.1", listener->port());
        auto server = co_await listener->Accept();
        if (!client.ok() || !server.ok()) co_return;
        int sndbuf = 4 << 20;
        setsockopt((*server)->fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        (*server)->Write(*head);
        (*server)->Write(body->Share());
        co_await (*server)->Drained();
        EXPECT_TRUE((co_await ReadAtLeast(client->get(), head->size() + body->size())).ok());
        *sends = (*server)->sends();
        *got = (*client)->input().ToString();
        (*server)->Close();
        (*client)->Close();
      }(loop_.get(), listener_.get(), &body, &head, &sends, &got));
  EXPECT_EQ(got, head + body.ToString());
  EXPECT_EQ(sends, 1u);
}

TEST_P(SocketTest, PeerCloseEndsTheReaderAfterItsLastBytes) {
  absl::Status end;
  std::string got;
  RunToCompletion(
      *loop_,
      [](EventLoop* loop, Listener* listener, absl::Status* end, std::string* got) -> Task<void> {
        auto client = co_await Socket::Connect(loop, "127.0.0.1", listener->port());
        auto server = co_await listener->Accept();
        if (!client.ok() || !server.ok()) co_return;
        (*server)->Write("last words");
        co_await (*server)->Drained();
        (*server)->Close();
        while (true) {
          absl::Status st = co_await (*client)->ReadMore();
          if (!st.ok()) {
            *end = st;
            break;
          }
        }
        *got = (*client)->input().ToString();
        (*client)->Close();
      }(loop_.get(), listener_.get(), &end, &got));
  EXPECT_EQ(got, "last words");
  EXPECT_EQ(end.code(), absl::StatusCode::kUnavailable) << end;
  EXPECT_NE(end.message().find("closed by peer"), std::string::npos) << end;
}

TEST_P(SocketTest, BytesAndCloseThatArriveTogetherAreBothSeen) {
  // The peer's last bytes and its FIN are queued before the loop first
  // looks: one readiness event reports both, and the reader must still
  // reach the end after a short read of the bytes.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(listener_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::write(fd, "bye", 3), 3);
  ::close(fd);
  absl::Status end;
  std::string got;
  RunToCompletion(
      *loop_,
      [](EventLoop* loop, Listener* listener, absl::Status* end, std::string* got) -> Task<void> {
        auto server = co_await listener->Accept();
        if (!server.ok()) co_return;
        Socket* s = server->get();
        // Bounded: a missed end shows as CANCELLED instead of a hang.
        Timer give_up([s] { s->Close(); });
        give_up.ArmAfter(loop, std::chrono::seconds(5));
        while (true) {
          absl::Status st = co_await s->ReadMore();
          if (!st.ok()) {
            *end = st;
            break;
          }
        }
        *got = s->input().ToString();
        s->Close();
      }(loop_.get(), listener_.get(), &end, &got));
  EXPECT_EQ(got, "bye");
  EXPECT_EQ(end.code(), absl::StatusCode::kUnavailable) << end;
}

TEST_P(SocketTest, AHalfCloseSocketAnswersAfterThePeersFin) {
  // The peer sends its request and shuts its write side (shutdown(SHUT_WR))
  // before the loop first looks: the input ends after the request, and the
  // answer written afterwards still reaches the peer.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(listener_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::write(fd, "question", 8), 8);
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
  absl::Status end;
  bool closed_at_end = true;
  RunToCompletion(*loop_,
                  [](EventLoop* loop, Listener* listener, absl::Status* end,
                     bool* closed_at_end) -> Task<void> {
                    auto server = co_await listener->Accept();
                    if (!server.ok()) co_return;
                    Socket* s = server->get();
                    s->set_half_close(true);
                    Timer give_up([s] { s->Close(); });
                    give_up.ArmAfter(loop, std::chrono::seconds(5));
                    while (true) {
                      absl::Status st = co_await s->ReadMore();
                      if (!st.ok()) {
                        *end = st;
                        break;
                      }
                    }
                    *closed_at_end = s->closed();
                    EXPECT_TRUE(s->input_ended());
                    s->Write(absl::StrCat("answer to ", s->input().ToString()));
                    co_await s->Drained();
                    s->Close();
                  }(loop_.get(), listener_.get(), &end, &closed_at_end));
  EXPECT_EQ(end.code(), absl::StatusCode::kUnavailable) << end;
  EXPECT_FALSE(closed_at_end);
  std::string answer;
  char chunk[64];
  ssize_t n;
  while ((n = ::read(fd, chunk, sizeof(chunk))) > 0) answer.append(chunk, static_cast<size_t>(n));
  ::close(fd);
  EXPECT_EQ(answer, "answer to question");
}

TEST_P(SocketTest, ConnectToAClosedPortFailsWithTheReason) {
  // Not a closed listener's port: a test running in parallel could bind it.
  RefusingPort closed;
  int port = closed.port();
  absl::Status result;
  RunToCompletion(*loop_, [](EventLoop* loop, int port, absl::Status* result) -> Task<void> {
    auto s = co_await Socket::Connect(loop, "127.0.0.1", port);
    *result = s.status();
  }(loop_.get(), port, &result));
  EXPECT_EQ(result.code(), absl::StatusCode::kUnavailable) << result;
  EXPECT_NE(result.message().find("refused"), std::string::npos) << result;
}

TEST_P(SocketTest, InputLimitPausesReceivingUntilTheReaderAsks) {
  constexpr size_t kLimit = 64 * 1024;
  // More than the kernel's socket buffers and io_uring's provided buffers
  // can hold between them, so a pause shows as bytes left in the kernel.
  constexpr size_t kTotal = 48 << 20;
  size_t held_early = 0, held_late = 0;
  size_t received = 0;
  RunToCompletion(*loop_,
                  [](EventLoop* loop, Listener* listener, size_t* held_early, size_t* held_late,
                     size_t* received) -> Task<void> {
                    auto client = co_await Socket::Connect(loop, "127.0.0.1", listener->port());
                    auto server = co_await listener->Accept();
                    if (!client.ok() || !server.ok()) co_return;
                    (*server)->set_input_limit(kLimit);
                    (*client)->Write(std::string(kTotal, 'x'));
                    // Nobody reads on the server: once over the limit, receiving stops.
                    for (int i = 0; i < 10; ++i) co_await loop->Sleep(std::chrono::milliseconds(2));
                    *held_early = (*server)->input().size();
                    for (int i = 0; i < 10; ++i) co_await loop->Sleep(std::chrono::milliseconds(2));
                    *held_late = (*server)->input().size();
                    EXPECT_GT((*client)->pending_output(), 0u);
                    while (*received < kTotal) {
                      if (!(co_await (*server)->ReadMore()).ok()) break;
                      *received += (*server)->input().size();
                      (*server)->input().Clear();
                    }
                    (*client)->Close();
                    (*server)->Close();
                  }(loop_.get(), listener_.get(), &held_early, &held_late, &received));
  EXPECT_GE(held_early, kLimit);
  EXPECT_EQ(held_late, held_early);
  // The overshoot is what arrived within the turn that crossed the limit:
  // never more than the provided-buffer ring (io_uring) or one read (epoll).
  EXPECT_LE(held_early, kLimit + LoopOptions{}.recv_buffer_count * LoopOptions{}.recv_buffer_size);
  EXPECT_EQ(received, kTotal);
}

TEST_P(SocketTest, CloseWakesAWaitingReaderAndFreesTheSocket) {
  std::weak_ptr<Socket> weak;
  absl::Status reader_saw;
  RunToCompletion(*loop_,
                  [](EventLoop* loop, Listener* listener, std::weak_ptr<Socket>* weak,
                     absl::Status* reader_saw) -> Task<void> {
                    auto client = co_await Socket::Connect(loop, "127.0.0.1", listener->port());
                    auto server = co_await listener->Accept();
                    if (!client.ok() || !server.ok()) co_return;
                    *weak = *client;
                    std::shared_ptr<Socket> c = *client;
                    loop->Spawn([](std::shared_ptr<Socket> c, absl::Status* out) -> Task<void> {
                      *out = co_await c->ReadMore();
                    }(c, reader_saw));
                    co_await loop->Yield();
                    c->Close();
                    c.reset();
                    client->reset();
                    // The engine lets go once the cancelled receive comes back.
                    for (int i = 0; i < 100 && !weak->expired(); ++i)
                      co_await loop->Sleep(std::chrono::milliseconds(1));
                    (*server)->Close();
                  }(loop_.get(), listener_.get(), &weak, &reader_saw));
  EXPECT_EQ(reader_saw.code(), absl::StatusCode::kCancelled) << reader_saw;
  EXPECT_TRUE(weak.expired());
}

// A raw client connected to the listener (blocking fd, for the test thread).
int ConnectRaw(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// An FdWaiter whose callback resumes a coroutine.
struct AwaitedWaiter : FdWaiter {
  AwaitedWaiter(EventLoop* loop, int fd)
      : FdWaiter(loop, fd, [](FdWaiter* w, int result) {
          auto* self = static_cast<AwaitedWaiter*>(w);
          self->result = result;
          self->done = true;
          if (self->waiter) self->loop()->Schedule(std::exchange(self->waiter, nullptr));
        }) {}
  bool await_ready() const noexcept { return done; }
  void await_suspend(std::coroutine_handle<> h) { waiter = h; }
  int await_resume() {
    done = false;
    return result;
  }
  int result = 0;
  bool done = false;
  std::coroutine_handle<> waiter;
};

TEST_P(SocketTest, AQuietSocketIsReleasedAsAnFdAndComesBackWhenBytesArrive) {
  int client = ConnectRaw(listener_->port());
  ASSERT_GE(client, 0);
  ASSERT_EQ(::write(client, "one", 3), 3);
  struct Seen {
    std::string first, second;
    int released_fd = -1;
    bool closed_after_release = false;
    int cancelled = 0, ready = 0;
  } seen;
  RunToCompletion(*loop_,
                  [](EventLoop* loop, Listener* listener, int client, Seen* seen) -> Task<void> {
                    auto server = co_await listener->Accept();
                    if (!server.ok()) co_return;
                    std::shared_ptr<Socket> s = *server;
                    if (!(co_await ReadAtLeast(s.get(), 3)).ok()) co_return;
                    seen->first = s->input().ToString();
                    s->input().Consume(3);
                    s->Write("ack");
                    co_await s->Drained();
                    int fd = co_await s->Release();
                    seen->released_fd = fd;
                    seen->closed_after_release = s->closed();
                    s.reset();
                    server->reset();
                    if (fd < 0) co_return;
                    // Waiting, cancelled: the callback says so and the fd stays open.
                    AwaitedWaiter waiter(loop, fd);
                    waiter.Start();
                    waiter.Cancel();
                    seen->cancelled = co_await waiter;
                    // Waiting again: the client's next bytes end the wait...
                    waiter.Start();
                    EXPECT_EQ(::write(client, "two", 3), 3);
                    seen->ready = co_await waiter;
                    // ...and a Socket adopted on the fd reads them.
                    std::shared_ptr<Socket> back = Socket::Adopt(loop, fd);
                    if ((co_await ReadAtLeast(back.get(), 3)).ok())
                      seen->second = back->input().ToString();
                    back->Write("bye");
                    co_await back->Drained();
                    back->Close();
                  }(loop_.get(), listener_.get(), client, &seen));
  EXPECT_EQ(seen.first, "one");
  EXPECT_GE(seen.released_fd, 0);
  EXPECT_TRUE(seen.closed_after_release);
  EXPECT_EQ(seen.cancelled, -ECANCELED);
  EXPECT_GT(seen.ready, 0);
  EXPECT_EQ(seen.second, "two");
  char buf[16];
  std::string got;
  ssize_t n;
  while ((n = ::read(client, buf, sizeof(buf))) > 0) got.append(buf, static_cast<size_t>(n));
  ::close(client);
  // The release closed nothing: the client saw both answers on one connection.
  EXPECT_EQ(got, "ackbye");
}

TEST_P(SocketTest, ASocketWithUnreadBytesIsNotReleased) {
  int client = ConnectRaw(listener_->port());
  ASSERT_GE(client, 0);
  ASSERT_EQ(::write(client, "unread", 6), 6);
  int released = 0;
  bool open_after = false;
  std::string still_there;
  RunToCompletion(*loop_,
                  [](Listener* listener, int* released, bool* open_after,
                     std::string* still_there) -> Task<void> {
                    auto server = co_await listener->Accept();
                    if (!server.ok()) co_return;
                    Socket* s = server->get();
                    if (!(co_await ReadAtLeast(s, 6)).ok()) co_return;
                    *released = co_await s->Release();
                    *open_after = !s->closed();
                    *still_there = s->input().ToString();
                    s->Close();
                  }(listener_.get(), &released, &open_after, &still_there));
  ::close(client);
  EXPECT_EQ(released, -1);
  EXPECT_TRUE(open_after);
  EXPECT_EQ(still_there, "unread");
}

TEST_P(SocketTest, InterruptReadEndsTheWaitAndLeavesTheSocketOpen) {
  int client = ConnectRaw(listener_->port());
  ASSERT_GE(client, 0);
  absl::Status interrupted;
  std::string after;
  RunToCompletion(*loop_,
                  [](EventLoop* loop, Listener* listener, int client, absl::Status* interrupted,
                     std::string* after) -> Task<void> {
                    auto server = co_await listener->Accept();
                    if (!server.ok()) co_return;
                    Socket* s = server->get();
                    Timer interrupt([s] { s->InterruptRead(); });
                    interrupt.ArmAfter(loop, std::chrono::milliseconds(1));
                    *interrupted = co_await s->ReadMore();
                    EXPECT_EQ(::write(client, "late", 4), 4);
                    if ((co_await ReadAtLeast(s, 4)).ok()) *after = s->input().ToString();
                    s->Close();
                  }(loop_.get(), listener_.get(), client, &interrupted, &after));
  ::close(client);
  EXPECT_EQ(interrupted.code(), absl::StatusCode::kAborted) << interrupted;
  EXPECT_EQ(after, "late");
}

TEST_P(SocketTest, ClosingTheListenerEndsAWaitingAccept) {
  absl::Status result;
  RunToCompletion(*loop_, [](EventLoop* loop, Listener* listener, absl::Status* out) -> Task<void> {
    loop->Spawn([](Listener* l) -> Task<void> {
      l->Close();
      co_return;
    }(listener));
    auto s = co_await listener->Accept();
    *out = s.status();
  }(loop_.get(), listener_.get(), &result));
  EXPECT_EQ(result.code(), absl::StatusCode::kCancelled) << result;
}

INSTANTIATE_TEST_SUITE_P(Engines, SocketTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

TEST(ResolveAddressTest, RejectsNamesWithAHint) {
  sockaddr_storage addr;
  socklen_t len;
  EXPECT_TRUE(ResolveAddress("127.0.0.1", 80, &addr, &len).ok());
  EXPECT_TRUE(ResolveAddress("[::1]", 80, &addr, &len).ok());
  absl::Status st = ResolveAddress("example.com", 80, &addr, &len);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("DNS"), std::string::npos);
}

}  // namespace
}  // namespace capstan::net
