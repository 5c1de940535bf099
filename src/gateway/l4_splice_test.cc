// SpliceRelay on both engines, over real loopback TCP connections: the
// test's "client" and "origin" ends are plain blocking sockets driven by
// threads; the relay owns the proxy's two ends.
#include "gateway/l4_splice.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <random>
#include <string>
#include <thread>

#include "gateway/l4_test_util.h"
#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::gateway {
namespace {

using net::IoBackendKind;
using net::testing::RunToCompletion;

using l4_test::MakePair;
using l4_test::RandomBytes;
using l4_test::SendAll;
using l4_test::TcpPair;

// Reads until the peer's FIN (or an error / the 10 s read bound), at most
// `chunk` bytes per read: a slow reader.
std::string ReadToEnd(int fd, size_t chunk) {
  std::string out;
  std::string buf(chunk, '\0');
  ssize_t n;
  while ((n = read(fd, buf.data(), chunk)) > 0) out.append(buf.data(), static_cast<size_t>(n));
  return out;
}

class SpliceRelayTest : public net::testing::EngineTest {};

TEST_P(SpliceRelayTest, MovesMegabytesBothWaysToASlowReaderAndPassesEachHalfClose) {
  TcpPair client = MakePair();
  TcpPair origin = MakePair();
  ASSERT_GE(client.proxy, 0);
  ASSERT_GE(origin.proxy, 0);
  // Small kernel buffers on the slow side, so the pipe and the socket
  // really fill and the relay has to wait for the reader.
  int small = 16 << 10;
  setsockopt(origin.app, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  const std::string up = RandomBytes(8 << 20, 1);
  const std::string down = RandomBytes(3 << 20, 2);
  std::string origin_got, client_got;
  // The client sends everything, then its FIN; the origin reads slowly
  // (1000 bytes a read) to the FIN and only then answers and ends: the
  // client's half-close must reach it while the other direction is open.
  std::thread client_sender([&] {
    SendAll(client.app, up);
    shutdown(client.app, SHUT_WR);
  });
  std::thread client_reader([&] { client_got = ReadToEnd(client.app, 65536); });
  std::thread origin_side([&] {
    origin_got = ReadToEnd(origin.app, 1000);
    SendAll(origin.app, down);
    shutdown(origin.app, SHUT_WR);
  });

  metrics::Counter in, out;
  PipePool pool;
  net::EventLoop::Clock::time_point last_activity{};
  SpliceRelay::End end = SpliceRelay::End::kNoPipes;
  SpliceRelay relay(loop_.get(), &pool, 64 << 10, {client.proxy, origin.proxy, &in},
                    {origin.proxy, client.proxy, &out}, &last_activity);
  RunToCompletion(*loop_, [](SpliceRelay* relay, SpliceRelay::End* end) -> net::Task<void> {
    auto run = relay->Run();
    *end = co_await run;
  }(&relay, &end));
  client_sender.join();
  origin_side.join();
  client_reader.join();
  EXPECT_EQ(end, SpliceRelay::End::kDone);
  EXPECT_EQ(origin_got.size(), up.size());
  EXPECT_TRUE(origin_got == up) << "the upstream direction's bytes differ";
  EXPECT_EQ(client_got.size(), down.size());
  EXPECT_TRUE(client_got == down) << "the downstream direction's bytes differ";
  EXPECT_EQ(in.Value(), up.size());
  EXPECT_EQ(out.Value(), down.size());
  EXPECT_EQ(relay.moved(), up.size() + down.size());
  EXPECT_NE(last_activity, net::EventLoop::Clock::time_point{});
  // Both pipes came back empty, for the next connection.
  EXPECT_EQ(pool.spare(), 2u);
  for (int fd : {client.app, client.proxy, origin.app, origin.proxy}) close(fd);
}

TEST_P(SpliceRelayTest, AResetEndsBothDirections) {
  TcpPair client = MakePair();
  TcpPair origin = MakePair();
  ASSERT_GE(client.proxy, 0);
  ASSERT_GE(origin.proxy, 0);
  // The client resets (SO_LINGER 0): the relay ends and the origin is not
  // left waiting.
  linger l{1, 0};
  setsockopt(client.app, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ASSERT_TRUE(SendAll(client.app, "hello"));
  close(client.app);
  metrics::Counter in, out;
  PipePool pool;
  net::EventLoop::Clock::time_point last_activity{};
  SpliceRelay::End end = SpliceRelay::End::kNoPipes;
  SpliceRelay relay(loop_.get(), &pool, 64 << 10, {client.proxy, origin.proxy, &in},
                    {origin.proxy, client.proxy, &out}, &last_activity);
  RunToCompletion(*loop_, [](SpliceRelay* relay, SpliceRelay::End* end) -> net::Task<void> {
    auto run = relay->Run();
    *end = co_await run;
  }(&relay, &end));
  EXPECT_EQ(end, SpliceRelay::End::kDone);
  for (int fd : {client.proxy, origin.app, origin.proxy}) close(fd);
}

TEST_P(SpliceRelayTest, CloseEndsAnIdleRelay) {
  TcpPair client = MakePair();
  TcpPair origin = MakePair();
  ASSERT_GE(client.proxy, 0);
  ASSERT_GE(origin.proxy, 0);
  metrics::Counter in, out;
  PipePool pool;
  net::EventLoop::Clock::time_point last_activity{};
  SpliceRelay::End end = SpliceRelay::End::kNoPipes;
  SpliceRelay relay(loop_.get(), &pool, 64 << 10, {client.proxy, origin.proxy, &in},
                    {origin.proxy, client.proxy, &out}, &last_activity);
  // Nobody sends: the relay waits until the timer closes it (what the idle
  // timeout and the endpoint sweep do).
  net::Timer closer([&relay] { relay.Close(); });
  closer.ArmAfter(loop_.get(), std::chrono::milliseconds(1));
  RunToCompletion(*loop_, [](SpliceRelay* relay, SpliceRelay::End* end) -> net::Task<void> {
    auto run = relay->Run();
    *end = co_await run;
  }(&relay, &end));
  EXPECT_EQ(end, SpliceRelay::End::kDone);
  EXPECT_EQ(relay.moved(), 0u);
  for (int fd : {client.app, client.proxy, origin.app, origin.proxy}) close(fd);
}

TEST_P(SpliceRelayTest, AnFdSpliceCannotReadEndsAsUnsupportedBeforeAnyByteMoved) {
  // An eventfd has no splice_read: EINVAL, which the proxy answers with
  // its copy path.
  int not_a_socket = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
  TcpPair origin = MakePair();
  ASSERT_GE(origin.proxy, 0);
  metrics::Counter in, out;
  PipePool pool;
  net::EventLoop::Clock::time_point last_activity{};
  SpliceRelay::End end = SpliceRelay::End::kDone;
  SpliceRelay relay(loop_.get(), &pool, 64 << 10, {not_a_socket, origin.proxy, &in},
                    {origin.proxy, not_a_socket, &out}, &last_activity);
  RunToCompletion(*loop_, [](SpliceRelay* relay, SpliceRelay::End* end) -> net::Task<void> {
    auto run = relay->Run();
    *end = co_await run;
  }(&relay, &end));
  EXPECT_EQ(end, SpliceRelay::End::kUnsupported);
  EXPECT_EQ(relay.moved(), 0u);
  for (int fd : {not_a_socket, origin.app, origin.proxy}) close(fd);
}

INSTANTIATE_TEST_SUITE_P(Engines, SpliceRelayTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         net::testing::BackendName);

}  // namespace
}  // namespace capstan::gateway
