#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "capstan/echo.pb.h"
#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/test_util.h"
#include "net/wait_group.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/test_echo.h"

namespace capstan::rpc {
namespace {

using echo::EchoRequest;
using echo::EchoResponse;
using testing::TestEcho;
using namespace std::chrono_literals;

class RpcTest : public ::testing::TestWithParam<net::IoBackendKind> {
 protected:
  void SetUp() override {
    server_ = StartServer(&service_);
    net::LoopGroupOptions options;
    options.loop.backend = GetParam();
    options.name = "client";
    auto group = net::LoopGroup::Start(options);
    ASSERT_TRUE(group.ok()) << group.status();
    client_loops_ = std::move(group).value();
    loop_ = client_loops_->loop(0);
    channel_ = Channel::Create(loop_, "127.0.0.1", server_->port(), {.caller = "rpc_test"});
  }
  void TearDown() override {
    net::BlockOn(loop_, [](std::shared_ptr<Channel>* c) -> net::Task<void> {
      c->reset();
      co_return;
    }(&channel_));
    client_loops_->Stop();
    if (server_) server_->Shutdown(1s);
  }

  std::unique_ptr<Server> StartServer(Service* service, int threads = 2) {
    ServerOptions options;
    options.threads = threads;
    options.backend = GetParam();
    auto server = std::make_unique<Server>(options);
    server->AddService(service);
    absl::Status st = server->Start();
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(server->backend(), GetParam());
    return server;
  }

  absl::StatusOr<EchoResponse> Echo(const EchoRequest& req, CallOptions options = {}) {
    return net::BlockOn(
        loop_, channel_->Call<EchoRequest, EchoResponse>("capstan.echo.Echo/Echo", req, options));
  }

  TestEcho service_{"a"};
  std::unique_ptr<Server> server_;
  std::unique_ptr<net::LoopGroup> client_loops_;
  net::EventLoop* loop_ = nullptr;
  std::shared_ptr<Channel> channel_;
};

TEST_P(RpcTest, UnaryCallReturnsTheHandlersAnswer) {
  EchoRequest req;
  req.set_payload("hello");
  auto resp = Echo(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->payload(), "hello");
  EXPECT_EQ(resp->served_by(), "a");
  EXPECT_EQ(resp->caller(), "rpc_test");
  EXPECT_EQ(resp->deadline_left_us(), -1);
}

TEST_P(RpcTest, LargeMessagesCrossInBothDirections) {
  EchoRequest req;
  req.set_payload(std::string(3 << 20, 'q'));
  auto resp = Echo(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->payload(), req.payload());
}

// Echoes the payload (a call's index) once the gate of that index is open;
// the last call's gate is never waited on. Handlers run on the server's
// loop, the gates are opened from the client's.
class GatedEcho : public Service {
 public:
  GatedEcho(std::vector<testing::Gate>* gates, int calls) : Service("capstan.echo.Echo") {
    AddUnary<EchoRequest, EchoResponse>(
        "Echo",
        [gates, calls](ServerContext& ctx, const EchoRequest& req,
                       EchoResponse* resp) -> net::Task<absl::Status> {
          int index = std::stoi(req.payload());
          if (index < calls - 1) co_await (*gates)[index].Wait(ctx.loop());
          resp->set_payload(req.payload());
          co_return absl::OkStatus();
        });
  }
};

TEST_P(RpcTest, ConcurrentCallsShareOneConnectionAndFinishOutOfOrder) {
  constexpr int kCalls = 50;
  // Call i is answered only after call i + 1 was: the answers must arrive in
  // the reverse of the order the calls were sent, on one connection, which
  // only works if a pending call does not hold up the ones behind it.
  std::vector<testing::Gate> gates(kCalls);
  GatedEcho gated(&gates, kCalls);
  auto server = StartServer(&gated);
  auto ch = Channel::Create(loop_, "127.0.0.1", server->port(), {.caller = "rpc_test"});
  std::vector<std::string> order;
  std::vector<absl::Status> statuses(kCalls);
  net::BlockOn(
      loop_,
      [](std::shared_ptr<Channel> ch, std::vector<testing::Gate>* gates,
         std::vector<std::string>* order, std::vector<absl::Status>* statuses) -> net::Task<void> {
        net::WaitGroup done(ch->loop());
        for (int i = 0; i < kCalls; ++i) {
          done.Add();
          ch->loop()->Spawn([](std::shared_ptr<Channel> ch, std::vector<testing::Gate>* gates,
                               int i, std::vector<std::string>* order, absl::Status* status,
                               net::WaitGroup* done) -> net::Task<void> {
            EchoRequest req;
            req.set_payload(std::to_string(i));
            // The deadline only bounds a broken run; no answer depends on it.
            auto r = co_await ch->Call<EchoRequest, EchoResponse>("capstan.echo.Echo/Echo", req,
                                                                  {.timeout = 60s});
            *status = r.status();
            if (r.ok()) order->push_back(r->payload());
            // Whatever the outcome, let the call before this one finish.
            if (i > 0) (*gates)[i - 1].Open();
            done->Done();
          }(ch, gates, i, order, &(*statuses)[i], &done));
        }
        co_await done.Wait();
      }(ch, &gates, &order, &statuses));
  for (const auto& st : statuses) EXPECT_TRUE(st.ok()) << st;
  std::vector<std::string> reversed;
  for (int i = kCalls - 1; i >= 0; --i) reversed.push_back(std::to_string(i));
  EXPECT_EQ(order, reversed);
  EXPECT_EQ(server->stats().connections, 1);
  EXPECT_EQ(server->stats().calls_started, kCalls);
  net::BlockOn(loop_, [](std::shared_ptr<Channel> c) -> net::Task<void> {
    c->Close();
    co_return;
  }(std::move(ch)));
  server->Shutdown(1s);
}

TEST_P(RpcTest, UnknownMethodsAreUnimplemented) {
  auto r = net::BlockOn(
      loop_, channel_->Call<EchoRequest, EchoResponse>("capstan.echo.Echo/Nope", EchoRequest()));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  EXPECT_NE(r.status().message().find("Nope"), std::string::npos);
}

TEST_P(RpcTest, HandlerErrorsReachTheCallerWithCodeAndMessage) {
  EchoRequest req;
  req.set_fail_code(static_cast<int>(absl::StatusCode::kFailedPrecondition));
  auto r = Echo(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "asked to fail");
}

TEST_P(RpcTest, ASlowHandlerMeetsTheCallersDeadline) {
  // The handler answers only after the call has returned: the call can
  // only end at its deadline (one that waited for the handler would hang).
  testing::Gate held;
  service_.hold = &held;
  auto r = Echo(EchoRequest(), {.timeout = 50ms});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  held.Open();
  service_.hold = nullptr;
  // The connection stays usable; a late answer for the dead call is dropped.
  auto ok = Echo(EchoRequest(), {.timeout = 1s});
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST_P(RpcTest, TheHandlerSeesTheCallersDeadline) {
  auto r = Echo(EchoRequest(), {.timeout = 800ms});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->deadline_left_us(), 0);
  EXPECT_LE(r->deadline_left_us(), 800'000);
}

// Creates, on the serving loop, the channel a forwarding handler calls through.
class MakeDownstream : public Service {
 public:
  MakeDownstream(std::shared_ptr<Channel>* out, int port) : Service("capstan.echo.Setup") {
    AddUnary<EchoRequest, EchoResponse>("Make",
                                        [out, port](ServerContext& ctx, const EchoRequest&,
                                                    EchoResponse*) -> net::Task<absl::Status> {
                                          *out = Channel::Create(ctx.loop(), "127.0.0.1", port);
                                          co_return absl::OkStatus();
                                        });
    // Channels die on their own loop.
    AddUnary<EchoRequest, EchoResponse>(
        "Drop",
        [out](ServerContext&, const EchoRequest&, EchoResponse*) -> net::Task<absl::Status> {
          out->reset();
          co_return absl::OkStatus();
        });
  }
};

TEST_P(RpcTest, DeadlinesPropagateThroughAServerToItsOwnCalls) {
  // client -> front (forwards with parent = its ServerContext) -> back.
  TestEcho back_service("b");
  auto back = StartServer(&back_service, 1);
  std::shared_ptr<Channel> downstream;
  TestEcho front_service("front", &downstream);
  MakeDownstream setup(&downstream, back->port());
  auto front = std::make_unique<Server>(ServerOptions{.threads = 1, .backend = GetParam()});
  front->AddService(&front_service);
  front->AddService(&setup);
  ASSERT_TRUE(front->Start().ok());
  auto front_channel = Channel::Create(loop_, "127.0.0.1", front->port());
  auto call = [&](const EchoRequest& req, CallOptions options) {
    return net::BlockOn(loop_, front_channel->Call<EchoRequest, EchoResponse>(
                                   "capstan.echo.Echo/Echo", req, options));
  };
  auto made = net::BlockOn(loop_, front_channel->Call<EchoRequest, EchoResponse>(
                                      "capstan.echo.Setup/Make", EchoRequest()));
  ASSERT_TRUE(made.ok()) << made.status();

  EchoRequest req;
  req.set_payload("through");
  req.set_call_downstream(true);
  auto r = call(req, {.timeout = 300ms});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->served_by(), "b");
  EXPECT_EQ(r->payload(), "through");
  // The back saw (what was left of) the client's deadline.
  EXPECT_GT(r->deadline_left_us(), 0);
  EXPECT_LE(r->deadline_left_us(), 300'000);
  // Without a deadline at the client there is none at the back either.
  auto unbounded = call(req, {});
  ASSERT_TRUE(unbounded.ok()) << unbounded.status();
  EXPECT_EQ(unbounded->deadline_left_us(), -1);
  // The trace context the client sent reaches the back through the front.
  EchoRequest trace;
  trace.set_payload("traceparent");
  trace.set_call_downstream(true);
  constexpr char kTrace[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  auto traced = call(trace, {.timeout = 2s, .metadata = {{"traceparent", kTrace}}});
  ASSERT_TRUE(traced.ok()) << traced.status();
  EXPECT_EQ(traced->payload(), kTrace);

  ASSERT_TRUE(net::BlockOn(loop_, front_channel->Call<EchoRequest, EchoResponse>(
                                      "capstan.echo.Setup/Drop", EchoRequest()))
                  .ok());
  net::BlockOn(loop_, [](std::shared_ptr<Channel>* c) -> net::Task<void> {
    c->reset();
    co_return;
  }(&front_channel));
  front->Shutdown(1s);
  back->Shutdown(1s);
}

TEST_P(RpcTest, AnEndpointThatIsDownFailsFastAsNotProcessed) {
  // Held refusing for the whole test: a stopped server's port could be bound
  // again by a test running in parallel.
  net::testing::RefusingPort down;
  auto ch = Channel::Create(loop_, "127.0.0.1", down.port());
  CallResult first = net::BlockOn(loop_, ch->CallBytes("capstan.echo.Echo/Echo", net::Buffer()));
  EXPECT_EQ(first.status.code(), absl::StatusCode::kUnavailable) << first.status;
  EXPECT_TRUE(first.not_processed);
  // Within the back-off the channel does not even try.
  CallResult second = net::BlockOn(loop_, ch->CallBytes("capstan.echo.Echo/Echo", net::Buffer()));
  EXPECT_NE(second.status.message().find("next attempt in"), std::string::npos) << second.status;
  net::BlockOn(loop_, [](std::shared_ptr<Channel> c) -> net::Task<void> {
    c->Close();
    co_return;
  }(std::move(ch)));
}

// Regression: calls waiting behind a connect that their own deadline cut
// short used to be told "connected" with no connection.
TEST_P(RpcTest, CallsWaitingOnAConnectThatTimesOutFailWithTheirDeadline) {
  // A listener that never accepts, its queue full: new handshakes hang.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 0), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    fillers.push_back(c);
  }
  auto ch = Channel::Create(loop_, "127.0.0.1", ntohs(addr.sin_port));
  std::vector<absl::Status> results(3);
  net::BlockOn(
      loop_,
      [](std::shared_ptr<Channel> ch, std::vector<absl::Status>* results) -> net::Task<void> {
        net::WaitGroup done(ch->loop());
        for (auto& result : *results) {
          done.Add();
          ch->loop()->Spawn([](std::shared_ptr<Channel> ch, absl::Status* out,
                               net::WaitGroup* done) -> net::Task<void> {
            CallResult r =
                co_await ch->CallBytes("capstan.echo.Echo/Echo", net::Buffer(), {.timeout = 100ms});
            *out = r.status;
            done->Done();
          }(ch, &result, &done));
        }
        co_await done.Wait();
        ch->Close();
      }(std::move(ch), &results));
  for (const auto& st : results) {
    EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  }
  for (int c : fillers) ::close(c);
  ::close(fd);
}

TEST_P(RpcTest, ShutdownLetsCallsInFlightFinishAndRefusesNewOnes) {
  ASSERT_TRUE(Echo(EchoRequest()).ok());  // connected
  // The call is held at the server until the shutdown has begun, so it is
  // in flight through the drain however slowly anything runs.
  testing::Gate held;
  service_.hold = &held;
  EchoRequest slow;
  slow.set_payload("finished");
  std::promise<absl::StatusOr<EchoResponse>> result;
  loop_->Spawn([](std::shared_ptr<Channel> ch, EchoRequest req,
                  std::promise<absl::StatusOr<EchoResponse>>* out) -> net::Task<void> {
    out->set_value(co_await ch->Call<EchoRequest, EchoResponse>("capstan.echo.Echo/Echo", req));
  }(channel_, slow, &result));
  ASSERT_TRUE(net::testing::Eventually([&] { return server_->stats().calls_in_flight == 1; }));
  std::thread shutdown([this] { server_->Shutdown(30s); });
  // The shutdown has begun once the client is refused: an unknown method
  // (not held) is UNIMPLEMENTED before and UNAVAILABLE after GOAWAY.
  EXPECT_TRUE(net::testing::Eventually([&] {
    auto r = net::BlockOn(loop_, channel_->Call<EchoRequest, EchoResponse>(
                                     "capstan.echo.Echo/Nope", EchoRequest(), {.timeout = 5s}));
    return r.status().code() == absl::StatusCode::kUnavailable;
  }));
  EXPECT_EQ(server_->stats().calls_in_flight, 1) << "the held call is still running";
  held.Open();
  shutdown.join();
  service_.hold = nullptr;
  auto r = result.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->payload(), "finished");
  auto after = Echo(EchoRequest());
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
}

TEST_P(RpcTest, GarbageClosesOnlyThatConnection) {
  net::BlockOn(loop_, [](net::EventLoop* loop, int port) -> net::Task<void> {
    auto s = co_await net::Socket::Connect(loop, "127.0.0.1", port);
    if (!s.ok()) co_return;
    (*s)->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // The server hangs up on us.
    while ((co_await (*s)->ReadMore()).ok()) {
    }
    (*s)->Close();
  }(loop_, server_->port()));
  EXPECT_EQ(server_->stats().protocol_errors, 1);
  auto r = Echo(EchoRequest());
  EXPECT_TRUE(r.ok()) << r.status();
}

INSTANTIATE_TEST_SUITE_P(
    Engines, RpcTest, ::testing::Values(net::IoBackendKind::kIoUring, net::IoBackendKind::kEpoll),
    [](const auto& info) {
      return std::string(info.param == net::IoBackendKind::kIoUring ? "io_uring" : "epoll");
    });

}  // namespace
}  // namespace capstan::rpc
