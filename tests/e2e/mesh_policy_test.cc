// The proxyless mesh end to end: a service's policy document written into a
// real `capstan store` with etcdctl changes a running BalancedChannel's
// attempts and balancer without a restart; a bad document is refused and
// the last good policy stays; deleting it returns the channel to its own
// options.
#include <set>

#include "capstan/echo.capstan.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "mesh/policy.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "net/test_util.h"
#include "rpc/balanced_channel.h"
#include "rpc/test_echo.h"

namespace capstan::e2e {
namespace {

using namespace std::chrono_literals;
using echo::EchoRequest;
using echo::EchoResponse;
using rpc::testing::TestEcho;

constexpr char kKey[] = "/capstan/mesh/policies/echo";
// Breakers and outlier ejection stay out of the way: the dead endpoint keeps
// its turns, so what happens to them shows the attempts in force.
constexpr char kPatient[] =
    R"("circuit_breaker": {"consecutive_failures": 1000000, "min_calls_for_rate": 1000000},
       "outlier": {"enabled": false})";

class MeshPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("capstan-mesh-policy");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
    auto loops = net::LoopGroup::Start({.name = "client"});
    ASSERT_TRUE(loops.ok()) << loops.status();
    loops_ = *std::move(loops);
    loop_ = loops_->loop(0);
    for (TestEcho* service : {&a_, &b_}) {
      servers_.push_back(std::make_unique<rpc::Server>(rpc::ServerOptions{.threads = 1}));
      servers_.back()->AddService(service);
      ASSERT_TRUE(servers_.back()->Start().ok());
    }
    auto store = client::Client::Connect({.endpoints = {store_->endpoint()}, .timeout = 3000ms});
    ASSERT_TRUE(store.ok()) << store.status();
    watcher_ = mesh::PolicyWatcher::Start(std::shared_ptr<client::Client>(*std::move(store)),
                                          {.retry = 200ms});
  }
  void TearDown() override {
    if (channel_) net::RunOn(loop_, [this] { channel_.reset(); });
    if (loops_) loops_->Stop();
    watcher_.reset();
    for (auto& s : servers_) s->Shutdown(1s);
  }

  mesh::Endpoint Local(int port) {
    return mesh::ParseEndpoint("127.0.0.1:" + std::to_string(port)).value();
  }

  // Outcomes of `n` calls with one key: the servers that answered, and how
  // many calls failed.
  std::pair<std::set<std::string>, int> Calls(int n) {
    std::set<std::string> served;
    int failed = 0;
    for (int i = 0; i < n; ++i) {
      auto r = net::BlockOn(loop_,
                            [](std::shared_ptr<rpc::BalancedChannel> channel)
                                -> net::Task<absl::StatusOr<EchoResponse>> {
                              echo::EchoClientT<rpc::BalancedChannel> client(std::move(channel));
                              co_return co_await client.Echo(
                                  EchoRequest(), {.timeout = 5s, .hash = mesh::HashKey("user-42")});
                            }(channel_));
      if (r.ok()) {
        served.insert(r->served_by());
      } else {
        ++failed;
      }
    }
    return {served, failed};
  }

  mesh::EndpointPoolOptions Policy() {
    return net::RunOn(loop_, [this] { return channel_->policy(); });
  }
  uint64_t Retries() {
    return net::RunOn(loop_, [this] { return channel_->stats().retries; });
  }

  void Put(const std::string& document) {
    CommandResult r = Etcdctl(store_->endpoint(), {"put", kKey, document});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  TestEcho a_{"a"};
  TestEcho b_{"b"};
  std::vector<std::unique_ptr<rpc::Server>> servers_;
  std::unique_ptr<mesh::PolicyWatcher> watcher_;
  std::unique_ptr<net::LoopGroup> loops_;
  net::EventLoop* loop_ = nullptr;
  std::shared_ptr<rpc::BalancedChannel> channel_;
};

TEST_F(MeshPolicyTest, ADocumentInTheStoreChangesARunningChannelsAttemptsAndBalancer) {
  net::testing::RefusingPort dead;  // held for the whole test
  auto source = mesh::StaticEndpoints(
      {Local(servers_[0]->port()), Local(dead.port()), Local(servers_[1]->port())});
  auto channel = net::RunOn(loop_, [&] {
    auto c = rpc::BalancedChannel::Create(
        loop_, std::move(source),
        {.balancer = "round_robin",
         .breaker = {.consecutive_failures = 1'000'000, .min_calls_for_rate = 1'000'000},
         .outlier = {.enabled = false},
         .max_attempts = 1});
    if (c.ok()) (*c)->FollowPolicy(*watcher_, "echo");
    return c;
  });
  ASSERT_TRUE(channel.ok()) << channel.status();
  channel_ = *std::move(channel);

  // The channel's own options: one attempt, so the dead endpoint's turns
  // fail; round robin spreads one key over both servers.
  auto [served, failed] = Calls(6);
  EXPECT_EQ(failed, 2) << "one turn in three is the dead endpoint's, not retried";
  EXPECT_EQ(served, (std::set<std::string>{"a", "b"}));

  // A policy with two attempts: the dead turns are retried elsewhere.
  Put(std::string(R"({"balancer": "round_robin", "max_attempts": 2, )") + kPatient + "}");
  ASSERT_TRUE(Eventually([&] { return Policy().max_attempts == 2; })) << "policy not applied";
  uint64_t retries_before = Retries();
  std::tie(served, failed) = Calls(6);
  EXPECT_EQ(failed, 0);
  // (At least two dead turns in six calls; retries move round robin on too.)
  EXPECT_GE(Retries() - retries_before, 2u);

  // Another balancer: maglev sends one key to one server.
  Put(std::string(R"({"balancer": "maglev", "max_attempts": 2, )") + kPatient + "}");
  ASSERT_TRUE(Eventually([&] { return Policy().balancer == "maglev"; })) << "policy not applied";
  std::tie(served, failed) = Calls(6);
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(served.size(), 1u) << "consistent hashing on the call's key";

  // A bad document is refused; the last good policy stays.
  uint64_t refused_before = watcher_->refused();
  Put(R"({"balancer": "maglev", "max_attempts": 0})");
  ASSERT_TRUE(Eventually([&] { return watcher_->refused() == refused_before + 1; }));
  EXPECT_EQ(Policy().balancer, "maglev");
  EXPECT_EQ(Policy().max_attempts, 2);

  // Deleting the document returns the channel to its own options.
  CommandResult del = Etcdctl(store_->endpoint(), {"del", kKey});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  ASSERT_TRUE(Eventually([&] { return Policy().max_attempts == 1; }));
  EXPECT_EQ(Policy().balancer, "round_robin");
}

}  // namespace
}  // namespace capstan::e2e
