#include "mesh/endpoint_pool.h"

#include <map>

#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;

// What a caller would send on: here only a record of which endpoint it
// reaches, and a count of connections alive (to see draining).
struct FakeConnection {
  explicit FakeConnection(Endpoint e, int* alive) : endpoint(std::move(e)), alive(alive) {
    ++*alive;
  }
  ~FakeConnection() { --*alive; }
  Endpoint endpoint;
  int* alive;
};

using Pool = EndpointPool<FakeConnection>;

Endpoint At(int port) {
  return {.host = "127.0.0.1", .port = port, .id = "127.0.0.1:" + std::to_string(port)};
}

class EndpointPoolTest : public ::testing::Test {
 protected:
  std::unique_ptr<Pool> NewPool(EndpointPoolOptions options) {
    auto pool = Pool::Create(
        /*loop=*/nullptr, "test", std::move(options),
        [this](const Endpoint& e) { return std::make_shared<FakeConnection>(e, &alive_); },
        &clock_);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return *std::move(pool);
  }
  // Picks `n` times without a call in flight; counts by port.
  static std::map<int, int> PickMany(Pool& pool, int n) {
    std::map<int, int> picked;
    for (int i = 0; i < n; ++i) {
      auto member = pool.Pick(0, {});
      picked[member == nullptr ? 0 : member->endpoint.port]++;
    }
    return picked;
  }

  ManualClock clock_;
  int alive_ = 0;
};

TEST_F(EndpointPoolTest, ARemovedEndpointDrainsUntilItsLastCallEnds) {
  auto pool = NewPool({.balancer = "round_robin"});
  pool->Update({At(1), At(2)});
  EXPECT_EQ(alive_, 2);
  // A call in flight on 1 holds its member.
  std::shared_ptr<Pool::Member> in_flight = pool->members().at("127.0.0.1:1");
  auto start = pool->BeginAttempt(*in_flight);
  FakeConnection* kept = pool->members().at("127.0.0.1:2")->connection.get();

  pool->Update({At(2), At(3)});
  EXPECT_EQ(pool->members().size(), 2u);
  EXPECT_FALSE(pool->members().contains("127.0.0.1:1"));
  EXPECT_EQ(pool->members().at("127.0.0.1:2")->connection.get(), kept)
      << "an endpoint that stays keeps its connection";
  EXPECT_EQ(alive_, 3) << "1 drains: still alive while its call runs";
  EXPECT_EQ(in_flight->connection->endpoint.port, 1);
  std::map<int, int> picked = PickMany(*pool, 10);
  EXPECT_EQ(picked, (std::map<int, int>{{2, 5}, {3, 5}})) << "a drained endpoint gets no new calls";

  pool->EndAttempt(*in_flight, AttemptVerdict::kSuccess, start);
  in_flight.reset();
  EXPECT_EQ(alive_, 2) << "the last call ended: the connection went";
}

TEST_F(EndpointPoolTest, AnEndpointThatMovesGetsANewConnectionAndRecord) {
  auto pool = NewPool({.breaker = {.consecutive_failures = 1}});
  Endpoint e = At(1);
  pool->Update({e});
  auto before = pool->members().at(e.id);
  pool->RecordOutcome(*before, AttemptVerdict::kEndpointFailure);
  e.port = 9;  // same id, another address
  pool->Update({e});
  auto after = pool->members().at(e.id);
  EXPECT_NE(after.get(), before.get());
  EXPECT_EQ(after->connection->endpoint.port, 9);
  EXPECT_EQ(after->breaker.state(), CircuitBreaker::State::kClosed);
}

TEST_F(EndpointPoolTest, PickSkipsOpenBreakersAndEjectedOutliers) {
  auto pool =
      NewPool({.balancer = "round_robin", .breaker = {.consecutive_failures = 2}, .outlier = {}});
  pool->Update({At(1), At(2), At(3)});
  auto one = pool->members().at("127.0.0.1:1");
  auto two = pool->members().at("127.0.0.1:2");
  // Two endpoint failures open 1's breaker; a request failure does not count.
  pool->RecordOutcome(*one, AttemptVerdict::kRequestFailure);
  pool->RecordOutcome(*one, AttemptVerdict::kEndpointFailure);
  EXPECT_EQ(one->breaker.state(), CircuitBreaker::State::kClosed);
  pool->RecordOutcome(*one, AttemptVerdict::kEndpointFailure);
  EXPECT_EQ(one->breaker.state(), CircuitBreaker::State::kOpen);
  // 2 is ejected as an outlier (as the detector would).
  two->outlier.ejected_until = clock_.Now() + 1h;
  EXPECT_TRUE(pool->ejected(*two));

  EXPECT_EQ(PickMany(*pool, 9), (std::map<int, int>{{3, 9}}));

  // Nothing usable: no pick, and the error says why.
  pool->RecordOutcome(*pool->members().at("127.0.0.1:3"), AttemptVerdict::kEndpointFailure);
  pool->RecordOutcome(*pool->members().at("127.0.0.1:3"), AttemptVerdict::kEndpointFailure);
  EXPECT_EQ(pool->Pick(0, {}), nullptr);
  absl::Status none = pool->NoEndpoint("Echo");
  EXPECT_EQ(none.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(none.message().find("all 3 endpoints of test are refusing calls"), std::string::npos)
      << none;
  EXPECT_EQ(pool->stats().no_endpoint, 1u);

  // The open breaker lets a probe through once its open time has passed.
  clock_.Advance(2s);
  auto probe = pool->Pick(0, {});
  ASSERT_NE(probe, nullptr);
  EXPECT_NE(probe->endpoint.port, 2) << "still ejected";
}

TEST_F(EndpointPoolTest, PickAvoidsTriedEndpointsUnlessNoneOtherIsLeft) {
  auto pool = NewPool({.balancer = "round_robin"});
  pool->Update({At(1), At(2)});
  auto one = pool->members().at("127.0.0.1:1");
  for (int i = 0; i < 4; ++i) {
    auto next = pool->Pick(0, {one});
    ASSERT_NE(next, nullptr);
    EXPECT_EQ(next->endpoint.port, 2);
  }
  auto two = pool->members().at("127.0.0.1:2");
  auto again = pool->Pick(0, {one, two});
  ASSERT_NE(again, nullptr) << "every endpoint tried: one of them again";
}

TEST_F(EndpointPoolTest, OutcomesFeedLatencyOnlyWhenTheEndpointAnswered) {
  auto pool = NewPool({});
  pool->Update({At(1)});
  auto one = pool->members().at("127.0.0.1:1");
  auto start = pool->BeginAttempt(*one);
  EXPECT_EQ(one->outstanding, 1);
  pool->EndAttempt(*one, AttemptVerdict::kEndpointFailure, start);
  EXPECT_EQ(one->outstanding, 0);
  EXPECT_EQ(one->ewma_latency_ns, 0) << "a failure is no latency sample";
  EXPECT_EQ(one->failures, 1u);
  EXPECT_EQ(one->outlier.failures, 1u);
  start = pool->BeginAttempt(*one);
  pool->EndAttempt(*one, AttemptVerdict::kSuccess, start);
  EXPECT_GT(one->ewma_latency_ns, 0);
  EXPECT_EQ(one->outlier.successes, 1u);
  EXPECT_EQ(one->calls, 2u);
}

TEST_F(EndpointPoolTest, RetryDecisionsFollowAttemptsBackoffDeadlineAndBudget) {
  auto pool = NewPool({.retry_budget = {.ratio = 0, .min_retries_per_second = 2, .window = 1s},
                       .max_attempts = 3,
                       .initial_retry_backoff = 10ms,
                       .max_retry_backoff = 15ms});
  auto far = PoolClock::now() + 1h;
  EXPECT_FALSE(pool->DecideRetry(1, /*retryable=*/false, false, far).retry);
  // The first retry of a call never processed goes at once.
  RetryDecision first = pool->DecideRetry(1, true, /*not_processed=*/true, far);
  EXPECT_TRUE(first.retry);
  EXPECT_EQ(first.backoff, PoolClock::duration::zero());
  // The second waits 2 x 10 ms, capped at 15, jittered +-50%.
  RetryDecision second = pool->DecideRetry(2, true, true, far);
  EXPECT_TRUE(second.retry);
  EXPECT_GE(second.backoff, 7500us);
  EXPECT_LE(second.backoff, 22500us);
  EXPECT_FALSE(pool->DecideRetry(3, true, true, far).retry) << "max_attempts reached";
  // A back-off that would end past the deadline: no retry (and no budget).
  EXPECT_FALSE(pool->DecideRetry(1, true, false, PoolClock::now() + 1us).retry);
  EXPECT_EQ(pool->stats().budget_refusals, 0u);
  // The budget (2 per second, 2 used) refuses the next.
  RetryDecision refused = pool->DecideRetry(1, true, true, far);
  EXPECT_FALSE(refused.retry);
  EXPECT_TRUE(refused.budget_refused);
  EXPECT_EQ(pool->stats().budget_refusals, 1u);
  clock_.Advance(2s);
  EXPECT_TRUE(pool->DecideRetry(1, true, true, far).retry) << "the window moved on";
}

TEST_F(EndpointPoolTest, HedgeDecisionsFollowTheDelayAttemptsAndBudget) {
  EXPECT_FALSE(NewPool({})->hedging()) << "no hedge delay, no hedging";
  EXPECT_FALSE(NewPool({.max_attempts = 1, .hedge_delay = 5ms})->hedging());
  auto pool = NewPool({.retry_budget = {.ratio = 0, .min_retries_per_second = 1, .window = 1s},
                       .max_attempts = 3,
                       .hedge_delay = 5ms});
  EXPECT_TRUE(pool->hedging());
  EXPECT_TRUE(pool->DecideAnotherAttempt(1));
  EXPECT_FALSE(pool->DecideAnotherAttempt(2)) << "the budget (1 per second) is spent";
  EXPECT_EQ(pool->stats().budget_refusals, 1u);
  clock_.Advance(2s);
  EXPECT_FALSE(pool->DecideAnotherAttempt(3)) << "max_attempts copies already";
  EXPECT_EQ(pool->stats().budget_refusals, 1u) << "not a budget refusal";
  EXPECT_TRUE(pool->DecideAnotherAttempt(2));
}

TEST_F(EndpointPoolTest, NewOptionsApplyToThePicksAfterThemAndBadOnesAreRefused) {
  auto pool = NewPool({.balancer = "round_robin", .max_attempts = 2});
  pool->Update({At(1), At(2)});
  EXPECT_EQ(PickMany(*pool, 4), (std::map<int, int>{{1, 2}, {2, 2}}));
  absl::Status bad = pool->SetOptions({.balancer = "round_robin", .max_attempts = 0});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->options().max_attempts, 2) << "the old options stay";
  EXPECT_EQ(pool->SetOptions({.balancer = "nope"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->balancer_name(), "round_robin");

  ASSERT_TRUE(pool->SetOptions({.balancer = "maglev", .max_attempts = 5}).ok());
  EXPECT_EQ(pool->balancer_name(), "maglev");
  EXPECT_EQ(pool->options().max_attempts, 5);
  EXPECT_EQ(pool->stats().option_changes, 1u);
  // Maglev: one key always reaches the same endpoint (round robin would not).
  auto first = pool->Pick(HashKey("user-7"), {});
  ASSERT_NE(first, nullptr);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pool->Pick(HashKey("user-7"), {}), first);
}

TEST_F(EndpointPoolTest, TimeoutsComeFromTheCallThenThePolicy) {
  auto pool = NewPool({.timeout = 2s, .per_try_timeout = 100ms});
  auto own = PoolClock::now() + 10s;
  EXPECT_EQ(pool->CallDeadline(own), own);
  auto from_policy = pool->CallDeadline(PoolClock::time_point::max());
  EXPECT_LE(from_policy, PoolClock::now() + 2s);
  EXPECT_GT(from_policy, PoolClock::now() + 1s);
  EXPECT_LE(pool->AttemptTimeout(own), 100ms) << "the per-try timeout cuts an attempt";
  auto none = NewPool({});
  EXPECT_EQ(none->CallDeadline(PoolClock::time_point::max()), PoolClock::time_point::max());
  EXPECT_EQ(none->AttemptTimeout(PoolClock::time_point::max()), PoolClock::duration::max());
}

// A call made before the first set waits for it on the pool's loop.
class EndpointPoolLoopTest : public net::testing::EngineTest {};

TEST_P(EndpointPoolLoopTest, ACallWaitsForTheFirstSetAndFailsWithoutOne) {
  int alive = 0;
  auto pool =
      Pool::Create(loop_.get(), "test", {.wait_for_endpoints = 5s}, [&alive](const Endpoint& e) {
        return std::make_shared<FakeConnection>(e, &alive);
      }).value();
  absl::Status admitted;
  net::testing::RunToCompletion(*loop_, [](Pool* pool, absl::Status* out) -> net::Task<void> {
    net::EventLoop* loop = pool->loop();
    // The set arrives after the call started waiting.
    loop->Post([pool] { pool->Update({At(1)}); });
    *out = co_await pool->Admit("Echo", PoolClock::time_point::max());
  }(pool.get(), &admitted));
  EXPECT_TRUE(admitted.ok()) << admitted;
  EXPECT_EQ(pool->stats().calls, 1u);

  auto empty =
      Pool::Create(loop_.get(), "test", {.wait_for_endpoints = 1ms}, [&alive](const Endpoint& e) {
        return std::make_shared<FakeConnection>(e, &alive);
      }).value();
  net::testing::RunToCompletion(*loop_, [](Pool* pool, absl::Status* out) -> net::Task<void> {
    *out = co_await pool->Admit("Echo", PoolClock::time_point::max());
  }(empty.get(), &admitted));
  EXPECT_EQ(admitted.code(), absl::StatusCode::kUnavailable) << admitted;
  EXPECT_NE(admitted.message().find("no endpoints yet for Echo from test"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Engines, EndpointPoolLoopTest,
                         ::testing::Values(net::IoBackendKind::kIoUring,
                                           net::IoBackendKind::kEpoll),
                         net::testing::BackendName);

}  // namespace
}  // namespace capstan::mesh
