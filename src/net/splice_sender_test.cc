#include "net/splice_sender.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "net/socket.h"
#include "net/test_util.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::RunToCompletion;

// splice(2) raises SIGPIPE on a closed peer; the path is on only where it
// is ignored, as in capstan (base/signals.h).
class IgnoreSigpipe : public ::testing::Environment {
 public:
  void SetUp() override { ::signal(SIGPIPE, SIG_IGN); }
};
const auto* const kIgnoreSigpipe = ::testing::AddGlobalTestEnvironment(new IgnoreSigpipe);

std::string Pattern(size_t n, char first) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(first + i % 23);
  return s;
}

Buffer Mapped(const std::string& bytes) { return Buffer::MappedCopy(Buffer(bytes)); }

// A connected TCP pair on 127.0.0.1: `sender` nonblocking, `receiver`
// blocking.
struct TcpPair {
  int sender = -1;
  int receiver = -1;
  TcpPair() {
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(::listen(listener, 1), 0);
    EXPECT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    receiver = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(receiver, reinterpret_cast<sockaddr*>(&addr), len), 0);
    sender = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ::close(listener);
  }
  ~TcpPair() {
    ::close(sender);
    ::close(receiver);
  }
  // The sender's send buffer and the receiver's receive buffer.
  void SetBufferSizes(int bytes) const {
    ::setsockopt(sender, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    ::setsockopt(receiver, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
  std::string Read(size_t n) const {
    std::string got(n, '\0');
    size_t have = 0;
    while (have < n) {
      ssize_t r = ::recv(receiver, got.data() + have, n - have, 0);
      if (r <= 0) break;
      have += static_cast<size_t>(r);
    }
    got.resize(have);
    return got;
  }
  // Bytes waiting, without blocking.
  size_t Queued() const {
    char scratch[4096];
    size_t total = 0;
    while (true) {
      ssize_t r = ::recv(receiver, scratch, sizeof(scratch), MSG_DONTWAIT);
      if (r <= 0) return total;
      total += static_cast<size_t>(r);
    }
  }
};

TEST(MappedCopyTest, IsOneMappedSliceWithTheSameBytes) {
  Buffer parts;
  parts.Append(Pattern(5000, 'a'));
  parts.Append(Buffer(Pattern(200000, 'A')));
  Buffer mapped = Buffer::MappedCopy(parts);
  ASSERT_EQ(mapped.slice_count(), 1u);
  EXPECT_TRUE(mapped.slice_mapped(0));
  EXPECT_EQ(mapped.ToString(), parts.ToString());
  EXPECT_FALSE(parts.slice_mapped(0));
  // Shares of it are of the same block.
  Buffer range = mapped.ShareRange(100, 1000);
  EXPECT_TRUE(range.slice_mapped(0));
  EXPECT_EQ(range.ToString(), parts.ToString().substr(100, 1000));
  // Nothing is ever appended into a mapped block: the copy is exactly full.
  mapped.Append("tail");
  EXPECT_EQ(mapped.slice_count(), 2u);
  EXPECT_FALSE(mapped.slice_mapped(1));
  EXPECT_TRUE(Buffer::MappedCopy(Buffer()).empty());
}

TEST(SpliceSenderTest, WantsLargeMappedSlicesAndTheRestOfOne) {
  EXPECT_FALSE(SpliceSender::Wants(Buffer(Pattern(SpliceSender::kMinSliceBytes * 2, 'a'))));
  Buffer small_after_head("head");
  small_after_head.Append(Mapped(Pattern(SpliceSender::kMinSliceBytes - 1, 'a')));
  EXPECT_FALSE(SpliceSender::Wants(small_after_head));
  Buffer large_after_head("head");
  large_after_head.Append(Mapped(Pattern(SpliceSender::kMinSliceBytes, 'a')));
  EXPECT_TRUE(SpliceSender::Wants(large_after_head));
  // What is left of a body the socket took only part of goes on as it began.
  large_after_head.Consume(4 + SpliceSender::kMinSliceBytes - 100);
  EXPECT_TRUE(SpliceSender::Wants(large_after_head));
}

TEST(SpliceSenderTest, NotMadeWhileSigpipeKillsTheProcess) {
  ::signal(SIGPIPE, SIG_DFL);
  EXPECT_EQ(SpliceSender::Create(), nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  EXPECT_NE(SpliceSender::Create(), nullptr);
}

TEST(SpliceSenderTest, SendsHeadAndMappedBodyAndLeavesTheRestToTheCaller) {
  auto sender = SpliceSender::Create();
  ASSERT_NE(sender, nullptr);
  TcpPair pair;
  const std::string head = "HTTP/1.1 200 OK\r\ncontent-length: 300000\r\n\r\n";
  const std::string body = Pattern(300000, 'a');
  Buffer out(head);
  out.Append(Mapped(body));
  out.Append("next response's head");
  uint64_t before = SpliceSender::ProcessBytes();
  bool full = true;
  ssize_t sent = sender->Send(pair.sender, out, &full);
  ASSERT_EQ(sent, static_cast<ssize_t>(head.size() + body.size()));
  EXPECT_FALSE(full);  // it stopped where this path's part of the output ends
  EXPECT_EQ(pair.Read(head.size() + body.size()), head + body);
  EXPECT_EQ(SpliceSender::ProcessBytes() - before, head.size() + body.size());
}

// A body larger than the pipe goes in rounds.
TEST(SpliceSenderTest, BodyLargerThanThePipeGoesInRounds) {
  auto sender = SpliceSender::Create();
  ASSERT_NE(sender, nullptr);
  TcpPair pair;
  pair.SetBufferSizes(16 << 20);
  const std::string body = Pattern(3 * SpliceSender::kPipeBytes + 12345, 'A');
  std::string got;
  Buffer out = Mapped(body);
  size_t offset = 0;
  // The receiver may be slower than the sender: each call sends what the
  // socket takes (bounded: every call but the last moves bytes or the
  // reader drains).
  for (int calls = 0; offset < body.size() && calls < 10000; ++calls) {
    Buffer rest = out.ShareRange(offset, body.size() - offset);
    ssize_t sent = sender->Send(pair.sender, rest);
    ASSERT_GE(sent, 0);
    offset += static_cast<size_t>(sent);
    if (sent == 0) got += pair.Read(1);  // make room
  }
  ASSERT_EQ(offset, body.size());
  got += pair.Read(body.size() - got.size());
  EXPECT_EQ(got, body);
}

// The socket takes part; the rest stays the caller's and the pipe is empty
// again: the next socket gets exactly its own bytes.
TEST(SpliceSenderTest, APartialSendLeavesNothingInThePipe) {
  auto sender = SpliceSender::Create();
  ASSERT_NE(sender, nullptr);
  TcpPair slow;
  slow.SetBufferSizes(16 << 10);
  const std::string body = Pattern(900000, 'a');
  Buffer out("head ");
  out.Append(Mapped(body));
  bool full = false;
  ssize_t sent = sender->Send(slow.sender, out, &full);
  ASSERT_GE(sent, 0);
  EXPECT_LT(static_cast<size_t>(sent), out.size());
  EXPECT_TRUE(full);
  EXPECT_EQ(slow.Read(static_cast<size_t>(sent)), out.ToString().substr(0, sent));
  EXPECT_EQ(slow.Queued(), 0u);

  TcpPair next;
  const std::string other = Pattern(100000, 'K');
  Buffer second = Mapped(other);
  ASSERT_EQ(sender->Send(next.sender, second), static_cast<ssize_t>(other.size()));
  EXPECT_EQ(next.Read(other.size()), other);
  EXPECT_EQ(next.Queued(), 0u);
}

// The point of a mapped block: once handed to the kernel, its bytes stay
// what they were even after the Buffer is gone and the address space is
// reused.
TEST(SpliceSenderTest, BytesInFlightOutliveTheBuffer) {
  auto sender = SpliceSender::Create();
  ASSERT_NE(sender, nullptr);
  TcpPair pair;
  pair.SetBufferSizes(4 << 20);
  const std::string body = Pattern(512 << 10, 'a');
  ssize_t sent;
  {
    Buffer out = Mapped(body);
    sent = sender->Send(pair.sender, out);
  }  // unmapped here, with the bytes still in the sockets' queues
  ASSERT_GT(sent, 0);
  // New mapped blocks of the same size, alive while the bytes are read: the
  // kernel is likely to hand out the same addresses, and blocks that were
  // pooled or reused would hand out the same pages — either way they are
  // written with other bytes now.
  std::vector<Buffer> others;
  for (int i = 0; i < 4; ++i) others.push_back(Mapped(std::string(body.size(), 'X')));
  EXPECT_EQ(pair.Read(static_cast<size_t>(sent)), body.substr(0, static_cast<size_t>(sent)));
}

TEST(SpliceSenderTest, AClosedPeerIsAnError) {
  auto sender = SpliceSender::Create();
  ASSERT_NE(sender, nullptr);
  TcpPair pair;
  ::close(pair.receiver);
  pair.receiver = ::socket(AF_INET, SOCK_STREAM, 0);  // for the destructor
  Buffer out = Mapped(Pattern(200000, 'a'));
  // The first send may still be taken (the reset comes back with it).
  ssize_t result = sender->Send(pair.sender, out);
  for (int i = 0; i < 100 && result >= 0; ++i) result = sender->Send(pair.sender, out);
  EXPECT_LT(result, 0);
  EXPECT_TRUE(result == -EPIPE || result == -ECONNRESET) << result;
}

// Through a Socket, on both engines: a mapped body leaves by splice, bytes
// in order with what is written before and after it; with the loop's
// option off, by copy.
class SocketSpliceTest : public ::testing::TestWithParam<IoBackendKind> {
 protected:
  // Returns what the client received; *spliced: the bytes the process sent
  // by splice meanwhile (the test's only sender).
  // buffer_bytes: when not 0, the server's send buffer and the client's
  // receive buffer, so the socket takes the body a piece at a time.
  std::string Exchange(bool splice_mapped, const std::string& head, const std::string& body,
                       const std::string& tail, uint64_t* spliced, int buffer_bytes = 0) {
    LoopOptions options;
    options.splice_mapped = splice_mapped;
    auto loop = testing::NewLoop(GetParam(), options);
    if (loop == nullptr) return "no loop";
    auto listener = Listener::Bind(loop.get(), "127.0.0.1", 0);
    if (!listener.ok()) return "no listener";
    std::string got;
    size_t want = head.size() + body.size() + tail.size();
    uint64_t before = SpliceSender::ProcessBytes();
    RunToCompletion(
        *loop,
        [](EventLoop* loop, Listener* listener, Buffer mapped, const std::string* head,
           const std::string* tail, size_t want, int buffer_bytes, std::string* got) -> Task<void> {
          auto client = co_await Socket::Connect(loop, "127.0.0.1", listener->port());
          auto server = co_await listener->Accept();
          if (!client.ok() || !server.ok()) co_return;
          if (buffer_bytes != 0) {
            ::setsockopt((*server)->fd(), SOL_SOCKET, SO_SNDBUF, &buffer_bytes,
                         sizeof(buffer_bytes));
            ::setsockopt((*client)->fd(), SOL_SOCKET, SO_RCVBUF, &buffer_bytes,
                         sizeof(buffer_bytes));
          }
          (*server)->Write(*head);
          (*server)->Write(std::move(mapped));
          (*server)->Write(*tail);
          while ((*client)->input().size() < want) {
            absl::Status read = co_await (*client)->ReadMore();
            if (!read.ok()) break;
          }
          co_await (*server)->Drained();
          *got = (*client)->input().ToString();
          (*server)->Close();
          (*client)->Close();
        }(loop.get(), listener->get(), Mapped(body), &head, &tail, want, buffer_bytes, &got));
    *spliced = SpliceSender::ProcessBytes() - before;
    (*listener)->Close();
    return got;
  }
};

TEST_P(SocketSpliceTest, MappedBodyLeavesWithoutACopyInOrder) {
  const std::string head = "HTTP/1.1 200 OK\r\ncontent-length: 250000\r\n\r\n";
  const std::string body = Pattern(250000, 'a');
  const std::string tail = "HTTP/1.1 304 Not Modified\r\n\r\n";
  uint64_t spliced = 0;
  EXPECT_EQ(Exchange(true, head, body, tail, &spliced), head + body + tail);
  EXPECT_EQ(spliced, head.size() + body.size());
  EXPECT_EQ(Exchange(false, head, body, tail, &spliced), head + body + tail);
  EXPECT_EQ(spliced, 0u);
}

// A body the socket takes a piece at a time (small buffers: a slow reader)
// goes on by splice once there is room again, not by the engine's copy.
TEST_P(SocketSpliceTest, TheRestOfABodyTheSocketTookPartOfIsSplicedToo) {
  const std::string head = "HTTP/1.1 200 OK\r\ncontent-length: 2000000\r\n\r\n";
  const std::string body = Pattern(2000000, 'k');
  const std::string tail = "HTTP/1.1 304 Not Modified\r\n\r\n";
  uint64_t spliced = 0;
  EXPECT_EQ(Exchange(true, head, body, tail, &spliced, 16384), head + body + tail);
  EXPECT_EQ(spliced, head.size() + body.size());
}

INSTANTIATE_TEST_SUITE_P(Engines, SocketSpliceTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

}  // namespace
}  // namespace capstan::net
