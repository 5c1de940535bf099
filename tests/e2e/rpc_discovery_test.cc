// The RPC framework's discovery end to end: three instances of the example
// service (examples/echo, real processes) register in a real `capstan
// store`; a client finds them through the registry and balances across
// them; one is killed with SIGKILL and one stopped with SIGTERM while calls
// continue.
#include <signal.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "client/client.h"
#include "echo_example.capstan.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "mesh/registry.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "rpc/balanced_channel.h"

namespace capstan::e2e {
namespace {

using namespace std::chrono_literals;
using examples::EchoReply;
using examples::EchoRequest;

constexpr int kTtlSeconds = 2;
constexpr char kPrefix[] = "services/echo";

struct Instance {
  std::string name;
  std::unique_ptr<Process> process;
  int port = 0;
};

class RpcDiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("capstan-rpc-discovery");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
    auto loops = net::LoopGroup::Start({.name = "client"});
    ASSERT_TRUE(loops.ok()) << loops.status();
    loops_ = *std::move(loops);
    loop_ = loops_->loop(0);
  }
  void TearDown() override {
    if (channel_) net::RunOn(loop_, [this] { channel_.reset(); });
    if (loops_) loops_->Stop();
    instances_.clear();  // SIGKILLs what is left
  }

  // Starts `echo_example serve` and waits for its "listening" line.
  Instance& StartInstance(const std::string& name, std::vector<std::string> extra = {}) {
    Instance inst;
    inst.name = name;
    std::string log = dir_->path() + "/" + name + ".log";
    std::vector<std::string> argv{
        ECHO_EXAMPLE_PATH, "serve", "--store", store_->endpoint(),         "--prefix", kPrefix,
        "--instance",      name,    "--ttl",   std::to_string(kTtlSeconds)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    inst.process = std::make_unique<Process>(argv, log);
    std::smatch m;
    static const std::regex kListening("listening 127\\.0\\.0\\.1:(\\d+)");
    bool up = Eventually(
        [&] {
          std::string text = inst.process->Log();
          if (!std::regex_search(text, m, kListening)) return false;
          inst.port = std::stoi(m[1]);
          return true;
        },
        20s);
    EXPECT_TRUE(up) << name << " did not start: " << inst.process->Log();
    instances_.push_back(std::move(inst));
    return instances_.back();
  }

  void ConnectClient(std::string balancer) {
    auto store = client::Client::Connect({.endpoints = {store_->endpoint()}, .timeout = 3000ms});
    ASSERT_TRUE(store.ok()) << store.status();
    auto source = mesh::StoreEndpoints(std::shared_ptr<client::Client>(*std::move(store)), kPrefix,
                                       {.retry = 200ms});
    auto channel = net::RunOn(loop_, [&] {
      return rpc::BalancedChannel::Create(loop_, std::move(source), {.balancer = balancer});
    });
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *std::move(channel);
  }

  absl::StatusOr<EchoReply> Echo(std::chrono::milliseconds timeout, uint32_t sleep_ms = 0) {
    return net::BlockOn(
        loop_,
        [](std::shared_ptr<rpc::BalancedChannel> channel, std::chrono::milliseconds timeout,
           uint32_t sleep_ms) -> net::Task<absl::StatusOr<EchoReply>> {
          examples::EchoClientT<rpc::BalancedChannel> echo(channel);
          EchoRequest request;
          request.set_message("ping");
          request.set_sleep_ms(sleep_ms);
          co_return co_await echo.Echo(request, {.timeout = timeout, .idempotent = true});
        }(channel_, timeout, sleep_ms));
  }

  std::set<std::string> EndpointIds() {
    return net::RunOn(loop_, [this] {
      std::set<std::string> ids;
      for (const auto& e : channel_->Endpoints()) ids.insert(e.endpoint.id);
      return ids;
    });
  }

  std::set<std::string> RegistryKeys() {
    CommandResult r = Etcdctl(store_->endpoint(), {"get", "--prefix", "--keys-only", kPrefix});
    std::set<std::string> keys;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty()) keys.insert(line);
    }
    return keys;
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::vector<Instance> instances_;
  std::unique_ptr<net::LoopGroup> loops_;
  net::EventLoop* loop_ = nullptr;
  std::shared_ptr<rpc::BalancedChannel> channel_;
};

TEST_F(RpcDiscoveryTest, ClientBalancesAcrossRegisteredInstancesAndSurvivesOneBeingKilled) {
  for (const char* name : {"a", "b", "c"}) StartInstance(name);
  ASSERT_EQ(instances_.size(), 3u);
  // Registered as etcd's naming layout: etcdctl sees them.
  EXPECT_EQ(RegistryKeys(),
            (std::set<std::string>{"services/echo/a", "services/echo/b", "services/echo/c"}));
  CommandResult value =
      Etcdctl(store_->endpoint(), {"get", "--print-value-only", "services/echo/a"});
  EXPECT_NE(value.out.find("\"Addr\":\"127.0.0.1:" + std::to_string(instances_[0].port) + "\""),
            std::string::npos)
      << value.out;

  ConnectClient("round_robin");
  ASSERT_TRUE(Eventually([&] { return EndpointIds().size() == 3; }));
  std::map<std::string, int> served;
  for (int i = 0; i < 30; ++i) {
    auto r = Echo(2s);
    ASSERT_TRUE(r.ok()) << r.status();
    served[r->instance()]++;
  }
  EXPECT_EQ(served, (std::map<std::string, int>{{"a", 10}, {"b", 10}, {"c", 10}}));

  // SIGKILL b: no deregistration; its lease must run out.
  auto killed_at = std::chrono::steady_clock::now();
  instances_[1].process->Signal(SIGKILL);
  ASSERT_NE(instances_[1].process->Wait(10s), -1);
  served.clear();
  int calls_while_b_listed = 0;
  for (int i = 0; i < 60 || EndpointIds().count("b") != 0; ++i) {
    ASSERT_LT(std::chrono::steady_clock::now() - killed_at, 20s) << "b never left the set";
    if (EndpointIds().count("b") != 0) calls_while_b_listed++;
    auto r = Echo(2s);
    ASSERT_TRUE(r.ok()) << "call " << i << " after the kill: " << r.status();
    served[r->instance()]++;
  }
  auto left_after = std::chrono::steady_clock::now() - killed_at;
  EXPECT_EQ(served.count("b"), 0u);
  EXPECT_GT(served["a"], 0);
  EXPECT_GT(served["c"], 0);
  EXPECT_GT(calls_while_b_listed, 0)
      << "the failover (b still listed, calls retried) was exercised";
  // Gone within its lease TTL (plus the store's expiry check and the watch).
  EXPECT_LE(left_after, std::chrono::seconds(kTtlSeconds) + 1500ms)
      << std::chrono::duration_cast<std::chrono::milliseconds>(left_after).count() << " ms";
  EXPECT_EQ(RegistryKeys(), (std::set<std::string>{"services/echo/a", "services/echo/c"}));
  std::printf("killed instance left the client's set after %lld ms (lease TTL %d s)\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(left_after).count()),
              kTtlSeconds);

  // SIGTERM c: it deregisters at once (well before its TTL), then drains.
  auto stopped_at = std::chrono::steady_clock::now();
  instances_[2].process->Signal(SIGTERM);
  ASSERT_TRUE(Eventually([&] { return EndpointIds().size() == 1; }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - stopped_at, std::chrono::seconds(kTtlSeconds))
      << "a clean stop revokes the lease instead of waiting for it";
  EXPECT_EQ(instances_[2].process->Wait(10s), 0) << instances_[2].process->Log();
  for (int i = 0; i < 10; ++i) {
    auto r = Echo(2s);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->instance(), "a");
  }
}

TEST_F(RpcDiscoveryTest, DeadlinesAreHonouredAndReachTheServer) {
  StartInstance("a");
  ConnectClient("p2c");
  auto ok = Echo(5s);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_GT(ok->deadline_left_ms(), 3000) << "the server saw the caller's deadline";
  EXPECT_LE(ok->deadline_left_ms(), 5000);

  auto start = std::chrono::steady_clock::now();
  auto late = Echo(200ms, /*sleep_ms=*/3000);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_LT(took, 2s) << "the call ended at its deadline, not when the server answered";
}

TEST_F(RpcDiscoveryTest, TheAdminEndpointServesMetricsAndStatusToCurl) {
  Instance& a = StartInstance("a", {"--admin", "127.0.0.1:0"});
  std::smatch m;
  std::string log = a.process->Log();
  ASSERT_TRUE(std::regex_search(log, m, std::regex("admin 127\\.0\\.0\\.1:(\\d+)"))) << log;
  std::string base = "http://127.0.0.1:" + m[1].str();
  ConnectClient("p2c");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Echo(2s).ok());

  CommandResult metrics = RunCommand({"curl", "-sf", base + "/metrics"});
  ASSERT_EQ(metrics.exit_code, 0) << metrics.err;
  EXPECT_NE(
      metrics.out.find(
          R"(capstan_rpc_server_handled_total{method="capstan.examples.Echo/Echo",code="OK"} 5)"),
      std::string::npos)
      << metrics.out;
  CommandResult status = RunCommand({"curl", "-sf", base + "/status"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("capstan.examples.Echo/Echo"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("connections 1,"), std::string::npos) << status.out;
}

// Issue 20, "one way to log": the example's log lines (written by the rpc
// server it links) are in the store's logfmt, not spdlog's default
// "[date] [info] ..." pattern.
TEST_F(RpcDiscoveryTest, TheExampleLogsInTheStoresLogfmt) {
  Instance& a = StartInstance("a");
  ASSERT_TRUE(Eventually([&] {
    return a.process->Log().find("rpc server listening") != std::string::npos;
  })) << a.process->Log();
  std::istringstream lines(a.process->Log());
  static const std::regex kLogfmt(R"(^ts=\d{4}-\d\d-\d\dT[0-9:.]+Z level=[a-z]+ msg=.*)");
  int logged = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("msg=") == std::string::npos) continue;  // the stdout lines
    EXPECT_TRUE(std::regex_match(line, kLogfmt)) << line;
    ++logged;
  }
  EXPECT_GE(logged, 1);
}

TEST_F(RpcDiscoveryTest, TheExampleClientFindsTheServiceThroughTheStore) {
  StartInstance("a");
  StartInstance("b");
  CommandResult r = RunCommand({ECHO_EXAMPLE_PATH, "call", "--target",
                                "store://" + store_->endpoint() + "/" + kPrefix, "--count", "6",
                                "--balancer", "round_robin"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("calls=6 failed=0 served: a=3 b=3"), std::string::npos) << r.out;

  CommandResult bad = RunCommand({ECHO_EXAMPLE_PATH, "call", "--target", "store://nowhere"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("expected static:///"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace capstan::e2e
