#include "rpc/balanced_channel.h"

#include <future>
#include <map>
#include <thread>

#include "capstan/echo.capstan.h"
#include "gtest/gtest.h"
#include "mesh/discovery_hub.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "net/test_util.h"
#include "rpc/test_echo.h"

namespace capstan::rpc {
namespace {

using echo::EchoRequest;
using echo::EchoResponse;
using testing::TestEcho;
using namespace std::chrono_literals;
using Client = echo::EchoClientT<BalancedChannel>;

// A source the test feeds by hand.
class ManualSource : public mesh::EndpointSource {
 public:
  void Start(mesh::EndpointsCallback on_update) override { *callback_ = std::move(on_update); }
  std::string Describe() const override { return "manual"; }
  // Stays valid after the source moves into the channel.
  std::shared_ptr<mesh::EndpointsCallback> callback() const { return callback_; }

 private:
  std::shared_ptr<mesh::EndpointsCallback> callback_ = std::make_shared<mesh::EndpointsCallback>();
};

mesh::Endpoint Local(int port) {
  return mesh::ParseEndpoint("127.0.0.1:" + std::to_string(port)).value();
}

class BalancedChannelTest : public ::testing::TestWithParam<net::IoBackendKind> {
 protected:
  void SetUp() override {
    net::LoopGroupOptions options;
    options.loop.backend = GetParam();
    options.name = "client";
    auto group = net::LoopGroup::Start(options);
    ASSERT_TRUE(group.ok()) << group.status();
    loops_ = std::move(group).value();
    loop_ = loops_->loop(0);
  }
  void TearDown() override {
    net::RunOn(loop_, [this] { channel_.reset(); });
    loops_->Stop();
    for (auto& s : servers_) s->Shutdown(1s);
  }

  // Services live in the fixture, so they outlive the servers (stopped in
  // TearDown) that call them.
  TestEcho& NewService(const std::string& name) {
    services_.push_back(std::make_unique<TestEcho>(name));
    return *services_.back();
  }

  // Starts a server for `service` and returns its endpoint.
  mesh::Endpoint Serve(TestEcho* service) {
    ServerOptions options;
    options.threads = 1;
    options.backend = GetParam();
    servers_.push_back(std::make_unique<Server>(options));
    servers_.back()->AddService(service);
    EXPECT_TRUE(servers_.back()->Start().ok());
    return Local(servers_.back()->port());
  }

  void Connect(std::unique_ptr<mesh::EndpointSource> source, BalancedChannelOptions options) {
    auto channel = net::RunOn(loop_, [&] {
      return BalancedChannel::Create(loop_, std::move(source), std::move(options));
    });
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *std::move(channel);
  }

  absl::StatusOr<EchoResponse> Echo(CallOptions options = {}, std::string payload = "x") {
    return net::BlockOn(loop_,
                        [](std::shared_ptr<BalancedChannel> channel, CallOptions options,
                           std::string payload) -> net::Task<absl::StatusOr<EchoResponse>> {
                          Client client(std::move(channel));
                          EchoRequest request;
                          request.set_payload(payload);
                          co_return co_await client.Echo(request, std::move(options));
                        }(channel_, std::move(options), std::move(payload)));
  }

  BalancedChannelStats Stats() {
    return net::RunOn(loop_, [&] { return channel_->stats(); });
  }
  std::vector<BalancedEndpointInfo> Endpoints() {
    return net::RunOn(loop_, [&] { return channel_->Endpoints(); });
  }

  std::vector<std::unique_ptr<TestEcho>> services_;
  std::vector<std::unique_ptr<Server>> servers_;
  std::unique_ptr<net::LoopGroup> loops_;
  net::EventLoop* loop_ = nullptr;
  std::shared_ptr<BalancedChannel> channel_;
};

TEST_P(BalancedChannelTest, GeneratedClientSpreadsCallsOverEveryEndpoint) {
  TestEcho& a = NewService("a");
  TestEcho& b = NewService("b");
  TestEcho& c = NewService("c");
  Connect(mesh::StaticEndpoints({Serve(&a), Serve(&b), Serve(&c)}), {.balancer = "round_robin"});
  std::map<std::string, int> served;
  for (int i = 0; i < 30; ++i) {
    auto r = Echo({.timeout = 2s});
    ASSERT_TRUE(r.ok()) << r.status();
    served[r->served_by()]++;
  }
  EXPECT_EQ(served, (std::map<std::string, int>{{"a", 10}, {"b", 10}, {"c", 10}}));
  EXPECT_EQ(Stats().retries, 0u);
}

TEST_P(BalancedChannelTest, CallsFailOverFromADeadEndpointAndItsBreakerOpens) {
  TestEcho& a = NewService("a");
  TestEcho& b = NewService("b");
  net::testing::RefusingPort refusing;  // held for the whole test
  mesh::Endpoint dead = Local(refusing.port());
  Connect(mesh::StaticEndpoints({Serve(&a), dead, Serve(&b)}),
          {.balancer = "round_robin", .breaker = {.consecutive_failures = 3}});
  for (int i = 0; i < 30; ++i) {
    auto r = Echo({.timeout = 2s});
    ASSERT_TRUE(r.ok()) << "call " << i << ": " << r.status();
  }
  EXPECT_GE(Stats().retries, 1u) << "the dead endpoint's turns were retried elsewhere";
  for (const auto& e : Endpoints()) {
    if (e.endpoint.id == dead.id) {
      EXPECT_STREQ(e.breaker, "open");
      EXPECT_GE(e.failures, 3u);
      EXPECT_LE(e.failures, 4u) << "an open breaker keeps calls away";
    } else {
      EXPECT_STREQ(e.breaker, "closed");
    }
  }
  EXPECT_EQ(a.calls + b.calls, 30);
}

TEST_P(BalancedChannelTest, StreamsAreBalancedAndOpenPastADeadEndpoint) {
  TestEcho& a = NewService("a");
  TestEcho& b = NewService("b");
  net::testing::RefusingPort refusing;  // held for the whole test
  Connect(mesh::StaticEndpoints({Serve(&a), Local(refusing.port()), Serve(&b)}),
          {.balancer = "round_robin"});
  std::map<std::string, int> served;
  for (int i = 0; i < 12; ++i) {
    auto answers = net::BlockOn(
        loop_,
        [](std::shared_ptr<BalancedChannel> channel) -> net::Task<absl::StatusOr<std::string>> {
          EchoRequest request;
          request.set_payload("s");
          auto reader = co_await channel->OpenServerStream<EchoRequest, EchoResponse>(
              "capstan.echo.Echo/Stream", request, {.timeout = 2s});
          std::string by;
          EchoResponse response;
          while (co_await reader.Read(&response)) by += response.served_by();
          absl::Status st = co_await reader.Finish();
          if (!st.ok()) co_return st;
          co_return by;
        }(channel_));
    ASSERT_TRUE(answers.ok()) << "stream " << i << ": " << answers.status();
    ASSERT_EQ(answers->size(), 3u);
    served[answers->substr(0, 1)]++;
  }
  EXPECT_GE(served["a"], 4);
  EXPECT_GE(served["b"], 4);
  EXPECT_EQ(a.calls + b.calls, 12);
  EXPECT_GE(Stats().retries, 1u) << "the dead endpoint's turns were opened elsewhere";
}

TEST_P(BalancedChannelTest, AnEmptySetFailsFastAndAFirstSetIsWaitedFor) {
  auto manual = std::make_unique<ManualSource>();
  auto feed = manual->callback();
  Connect(std::move(manual), {.wait_for_endpoints = 10s});
  TestEcho& a = NewService("a");
  mesh::Endpoint endpoint = Serve(&a);
  // A call made before the source answers waits for its first set.
  auto pending = std::async(std::launch::async, [&] { return Echo({.timeout = 5s}); });
  while (Stats().calls == 0) std::this_thread::yield();
  EXPECT_EQ(a.calls, 0);
  (*feed)({endpoint});
  auto r = pending.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->served_by(), "a");

  (*feed)({});
  auto none = Echo({.timeout = 5s});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(none.status().message().find("no endpoints"), std::string::npos) << none.status();
}

TEST_P(BalancedChannelTest, ACallInFlightOnARemovedEndpointStillGetsItsAnswer) {
  TestEcho& a = NewService("a");
  TestEcho& b = NewService("b");
  mesh::Endpoint ea = Serve(&a), eb = Serve(&b);
  auto manual = std::make_unique<ManualSource>();
  auto feed = manual->callback();
  Connect(std::move(manual), {.balancer = "round_robin"});
  (*feed)({ea});
  a.extra_delay_us = 300'000;
  auto slow = std::async(std::launch::async, [&] { return Echo({.timeout = 5s}); });
  // Once the call is on a, take a out of the set.
  while (a.calls.load() == 0) std::this_thread::yield();
  (*feed)({eb});
  auto r = slow.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->served_by(), "a");
  auto next = Echo({.timeout = 2s});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->served_by(), "b");
  EXPECT_EQ(Endpoints().size(), 1u);
}

TEST_P(BalancedChannelTest, AFailureAfterSendingIsRetriedOnlyForIdempotentMethods) {
  TestEcho& bad = NewService("bad");
  TestEcho& good = NewService("good");
  bad.forced_failure = static_cast<int>(absl::StatusCode::kUnavailable);
  // Round robin starts at a fixed place: find out which endpoint comes first.
  Connect(mesh::StaticEndpoints({Serve(&bad), Serve(&good)}),
          {.balancer = "round_robin", .breaker = {.consecutive_failures = 1000}});
  int failed = 0;
  for (int i = 0; i < 4; ++i) failed += Echo({.timeout = 2s}).ok() ? 0 : 1;
  EXPECT_EQ(failed, 2) << "every call that reached 'bad' failed: it ran, so no retry";
  EXPECT_EQ(Stats().retries, 0u);
  int bad_before = bad.calls;
  for (int i = 0; i < 4; ++i) {
    auto r = Echo({.timeout = 2s, .idempotent = true});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->served_by(), "good");
  }
  EXPECT_GE(bad.calls - bad_before, 2);
  EXPECT_EQ(Stats().retries, static_cast<uint64_t>(bad.calls - bad_before))
      << "each call that reached 'bad' was retried once, on 'good'";
}

TEST_P(BalancedChannelTest, ShedCallsAreRetriedWithinTheRetryBudget) {
  TestEcho& a = NewService("a");
  TestEcho& b = NewService("b");
  a.forced_failure = b.forced_failure = static_cast<int>(absl::StatusCode::kResourceExhausted);
  Connect(mesh::StaticEndpoints({Serve(&a), Serve(&b)}),
          {.breaker = {.consecutive_failures = 1'000'000, .min_calls_for_rate = 1'000'000},
           .retry_budget = {.ratio = 0.1, .min_retries_per_second = 0},
           .initial_retry_backoff = 1ms});
  for (int i = 0; i < 100; ++i) {
    auto r = Echo({.timeout = 2s});
    ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  }
  BalancedChannelStats s = Stats();
  EXPECT_LE(s.retries, 10u) << "at most 10% extra load";
  EXPECT_GE(s.retries, 9u);
  EXPECT_EQ(a.calls + b.calls, 100 + static_cast<int>(s.retries));
  EXPECT_GE(s.budget_refusals, 85u);
}

TEST_P(BalancedChannelTest, ASlowAnswerIsHedgedToAnotherEndpoint) {
  TestEcho& slow = NewService("slow");
  TestEcho& fast = NewService("fast");
  // 'slow' answers nothing until the end: every call it gets must be
  // hedged, and won by 'fast', however long 'fast' takes.
  testing::Gate held;
  slow.hold = &held;
  Connect(mesh::StaticEndpoints({Serve(&slow), Serve(&fast)}),
          {.balancer = "round_robin", .max_attempts = 2, .hedge_delay = 20ms});
  for (int i = 0; i < 4; ++i) {
    auto r = Echo({.timeout = 10s});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->served_by(), "fast");
  }
  int hedged = static_cast<int>(Stats().hedges);
  EXPECT_EQ(hedged, slow.calls.load()) << "each call that went to 'slow' was hedged";
  EXPECT_GE(hedged, 1);
  // The losing copies were cancelled: 'slow' has read their CANCELs while
  // they are still held, and its handlers see it when they wake.
  EXPECT_TRUE(net::testing::Eventually([&] { return slow.HeldCancelled() == hedged; }));
  held.Open();
  EXPECT_TRUE(net::testing::Eventually([&] { return slow.cancelled.load() == hedged; }));
  slow.hold = nullptr;
}

TEST_P(BalancedChannelTest, TheDeadlineBoundsEveryAttempt) {
  TestEcho& a = NewService("a");
  TestEcho& b = NewService("b");
  // Neither answers before the call has ended: it can only end at its
  // deadline (a call that waited for them would never return).
  testing::Gate held;
  a.hold = b.hold = &held;
  Connect(mesh::StaticEndpoints({Serve(&a), Serve(&b)}), {.hedge_delay = 10ms});
  auto r = Echo({.timeout = 100ms});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  held.Open();
  a.hold = b.hold = nullptr;
}

TEST_P(BalancedChannelTest, ChannelsOfOneTargetShareTheHubsSource) {
  TestEcho& a = NewService("a");
  mesh::Endpoint endpoint = Serve(&a);
  mesh::DiscoveryHub hub;
  std::string target = "static:///" + endpoint.id;
  auto source = hub.Source(target);
  ASSERT_TRUE(source.ok()) << source.status();
  Connect(*std::move(source), {});
  auto other = net::RunOn(loop_, [&] {
    return BalancedChannel::Create(loop_, hub.Source(target).value(), {}).value();
  });
  EXPECT_EQ(hub.sources(), 1u);
  auto r = Echo({.timeout = 2s});
  ASSERT_TRUE(r.ok()) << r.status();
  auto r2 = net::BlockOn(
      loop_,
      [](std::shared_ptr<BalancedChannel> channel) -> net::Task<absl::StatusOr<EchoResponse>> {
        Client client(std::move(channel));
        co_return co_await client.Echo(EchoRequest(), {.timeout = 2s});
      }(other));
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(a.calls, 2);
  net::RunOn(loop_, [&] {
    other.reset();
    channel_.reset();
  });
  EXPECT_EQ(hub.sources(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, BalancedChannelTest,
                         ::testing::Values(net::IoBackendKind::kIoUring,
                                           net::IoBackendKind::kEpoll),
                         [](const auto& info) {
                           return info.param == net::IoBackendKind::kIoUring ? "io_uring" : "epoll";
                         });

}  // namespace
}  // namespace capstan::rpc
