// rpc::Server on a caller's LoopGroup (ServerOptions::group): it serves on
// the group's loops, and Shutdown leaves them running but leaves nothing of
// the server on them — no listener, no connection, no handler still running
// — so the caller may destroy the server and then stop the group.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "capstan/echo.pb.h"
#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/test_echo.h"

namespace capstan::rpc {
namespace {

using echo::EchoRequest;
using echo::EchoResponse;
using namespace std::chrono_literals;

// True when a TCP connection to 127.0.0.1:port is accepted.
bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return connected;
}

// True when every loop of the group still runs posted work (bounded: a
// stopped loop fails the test instead of hanging it).
bool GroupRuns(net::LoopGroup* group) {
  for (int i = 0; i < group->size(); ++i) {
    auto ran = std::make_shared<std::promise<void>>();
    std::future<void> done = ran->get_future();
    group->loop(i)->Post([ran] { ran->set_value(); });
    if (done.wait_for(10s) != std::future_status::ready) return false;
  }
  return true;
}

// A unary method whose handler waits at a gate and ignores cancellation:
// the worst case for a server that may not stop its loops.
class HeldService : public Service {
 public:
  HeldService() : Service("capstan.test.Held") {
    AddUnary<EchoRequest, EchoResponse>("Hold",
                                        [this](ServerContext& ctx, const EchoRequest& req,
                                               EchoResponse* resp) -> net::Task<absl::Status> {
                                          started++;
                                          co_await gate.Wait(ctx.loop());
                                          // Touches the call after the wait: a server gone by now
                                          // would show up under ASan.
                                          resp->set_payload(req.payload());
                                          resp->set_served_by(std::string(ctx.method()));
                                          finished = true;
                                          co_return absl::OkStatus();
                                        });
  }
  testing::Gate gate;
  std::atomic<int> started{0};
  std::atomic<bool> finished{false};
};

class SharedLoopsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto group = net::LoopGroup::Start({.threads = 2, .name = "shared"});
    ASSERT_TRUE(group.ok()) << group.status();
    group_ = std::move(group).value();
    auto clients = net::LoopGroup::Start({.threads = 1, .name = "client"});
    ASSERT_TRUE(clients.ok()) << clients.status();
    client_loops_ = std::move(clients).value();
  }
  void TearDown() override {
    net::BlockOn(client_loops_->loop(0), [](std::shared_ptr<Channel>* c) -> net::Task<void> {
      c->reset();
      co_return;
    }(&channel_));
    client_loops_->Stop();
    // The caller's part: the group stops after every server on it.
    group_->Stop();
  }

  std::unique_ptr<Server> StartServer(Service* service) {
    auto server = std::make_unique<Server>(ServerOptions{.group = group_.get()});
    server->AddService(service);
    absl::Status st = server->Start();
    EXPECT_TRUE(st.ok()) << st;
    return server;
  }
  void Connect(int port) {
    net::BlockOn(client_loops_->loop(0),
                 [](std::shared_ptr<Channel>* c, net::EventLoop* loop, int p) -> net::Task<void> {
                   c->reset();
                   *c = Channel::Create(loop, "127.0.0.1", p, {.caller = "shared_loops_test"});
                   co_return;
                 }(&channel_, client_loops_->loop(0), port));
  }
  absl::StatusOr<EchoResponse> Call(const std::string& method, const std::string& payload) {
    EchoRequest req;
    req.set_payload(payload);
    return net::BlockOn(client_loops_->loop(0),
                        channel_->Call<EchoRequest, EchoResponse>(method, req, {}));
  }

  std::unique_ptr<net::LoopGroup> group_;
  std::unique_ptr<net::LoopGroup> client_loops_;
  std::shared_ptr<Channel> channel_;
};

TEST_F(SharedLoopsTest, ServesOnTheGroupAndShutdownLeavesItRunning) {
  testing::TestEcho echo("shared");
  std::unique_ptr<Server> server = StartServer(&echo);
  EXPECT_EQ(server->backend(), group_->backend());
  Connect(server->port());
  // Several calls: the client's connection lands on one of the group's
  // loops (SO_REUSEPORT on each).
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<EchoResponse> r = Call("capstan.echo.Echo/Echo", "hi");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->served_by(), "shared");
  }
  int port = server->port();
  server->Shutdown(1s);
  // The listeners closed although their loops still run.
  EXPECT_FALSE(Accepts(port));
  EXPECT_TRUE(GroupRuns(group_.get()));
  EXPECT_EQ(server->stats().connections, 0);
  server.reset();
  EXPECT_TRUE(GroupRuns(group_.get()));

  // The group serves the next server as well as the first.
  testing::TestEcho again("again");
  std::unique_ptr<Server> next = StartServer(&again);
  Connect(next->port());
  absl::StatusOr<EchoResponse> r = Call("capstan.echo.Echo/Echo", "hi");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->served_by(), "again");
  next->Shutdown(1s);
}

TEST_F(SharedLoopsTest, ShutdownWaitsForAHandlerThatIgnoresCancellation) {
  HeldService held;
  std::unique_ptr<Server> server = StartServer(&held);
  Connect(server->port());
  auto call = std::async(std::launch::async, [&] { return Call("capstan.test.Held/Hold", "x"); });
  auto until = std::chrono::steady_clock::now() + 10s;
  while (held.started.load() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(held.started.load(), 1);
  // No grace: the connection closes at once and the call is cancelled, but
  // its handler is still at the gate.
  std::atomic<bool> returned{false};
  bool finished_when_returned = false;
  std::thread stopper([&] {
    server->Shutdown(0s);
    finished_when_returned = held.finished.load();
    returned = true;
  });
  // The caller hears the connection close (the server is past its grace).
  ASSERT_EQ(call.wait_for(10s), std::future_status::ready);
  EXPECT_FALSE(call.get().ok());
  EXPECT_FALSE(held.finished.load());
  held.gate.Open();
  stopper.join();
  // Shutdown returned only after the handler did: nothing of the server is
  // left on the group's loops, which still run.
  EXPECT_TRUE(returned.load());
  EXPECT_TRUE(finished_when_returned);
  EXPECT_EQ(server->stats().calls_in_flight, 0);
  server.reset();
  EXPECT_TRUE(GroupRuns(group_.get()));
}

TEST_F(SharedLoopsTest, StartFailureOnASharedGroupLeavesItRunning) {
  testing::TestEcho first("first");
  std::unique_ptr<Server> holder = StartServer(&first);
  // The same port without SO_REUSEPORT's help is refused... by a listener
  // that is not ours: bind a plain socket on a port, then ask for it.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  testing::TestEcho second("second");
  Server refused(ServerOptions{.port = ntohs(addr.sin_port), .group = group_.get()});
  refused.AddService(&second);
  EXPECT_FALSE(refused.Start().ok());
  ::close(fd);
  EXPECT_TRUE(GroupRuns(group_.get()));
  // The first server on the group is untouched.
  Connect(holder->port());
  absl::StatusOr<EchoResponse> r = Call("capstan.echo.Echo/Echo", "hi");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->served_by(), "first");
  holder->Shutdown(1s);
}

}  // namespace
}  // namespace capstan::rpc
