// Server governance: concurrency limits, interceptors, metrics, /status.
#include <future>
#include <mutex>
#include <regex>

#include "capstan/echo.pb.h"
#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"
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

constexpr char kEcho[] = "capstan.echo.Echo/Echo";

class GovernanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto group = net::LoopGroup::Start({.name = "client"});
    ASSERT_TRUE(group.ok()) << group.status();
    loops_ = *std::move(group);
    loop_ = loops_->loop(0);
  }
  void TearDown() override {
    net::RunOn(loop_, [this] { channel_.reset(); });
    loops_->Stop();
    if (server_) server_->Shutdown(2s);
  }

  void StartServer(ServerOptions options) {
    options.threads = 1;
    server_ = std::make_unique<Server>(std::move(options));
    server_->AddService(&service_);
    for (auto& i : interceptors_) server_->AddInterceptor(i);
    ASSERT_TRUE(server_->Start().ok());
    channel_ = Channel::Create(loop_, "127.0.0.1", server_->port());
  }

  // Sends `n` calls at once; returns their statuses in the order they
  // finished. The service holds every call it admits until `open_after`
  // calls have finished: only calls answered without running (shed) can be
  // among those, and if they queued behind the admitted ones the burst would
  // end at the calls' deadline instead.
  std::vector<absl::Status> Burst(int n, size_t open_after) {
    testing::Gate gate;
    service_.hold = &gate;
    std::vector<absl::Status> finished = net::BlockOn(
        loop_,
        [](net::EventLoop* loop, std::shared_ptr<Channel> channel, int n, size_t open_after,
           testing::Gate* gate) -> net::Task<std::vector<absl::Status>> {
          std::vector<absl::Status> finished;
          net::WaitGroup done(loop);
          auto one = [](std::shared_ptr<Channel> channel, size_t open_after, testing::Gate* gate,
                        std::vector<absl::Status>* out, net::WaitGroup* done) -> net::Task<void> {
            auto r = co_await channel->Call<EchoRequest, EchoResponse>(kEcho, EchoRequest(),
                                                                       {.timeout = 10s});
            out->push_back(r.status());
            if (out->size() == open_after) gate->Open();
            done->Done();
          };
          for (int i = 0; i < n; ++i) {
            done.Add();
            loop->StartOwned(one(channel, open_after, gate, &finished, &done));
          }
          co_await done.Wait();
          co_return finished;
        }(loop_, channel_, n, open_after, &gate));
    gate.Open();  // in case fewer than `open_after` calls finished early
    service_.hold = nullptr;
    return finished;
  }

  absl::StatusOr<EchoResponse> Echo(EchoRequest req, MetadataList metadata = {}) {
    return net::BlockOn(loop_, channel_->Call<EchoRequest, EchoResponse>(
                                   kEcho, req, {.timeout = 5s, .metadata = std::move(metadata)}));
  }

  TestEcho service_{"a"};
  std::vector<std::shared_ptr<ServerInterceptor>> interceptors_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<net::LoopGroup> loops_;
  net::EventLoop* loop_ = nullptr;
  std::shared_ptr<Channel> channel_;
};

TEST_F(GovernanceTest, AHardLimitShedsTheCallsOverItAtOnce) {
  StartServer({.adaptive_concurrency_limit = false, .max_concurrency = {{kEcho, 2}}});
  std::vector<absl::Status> finished = Burst(10, /*open_after=*/8);
  ASSERT_EQ(finished.size(), 10u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(finished[i].code(), absl::StatusCode::kResourceExhausted) << i << ": " << finished[i];
    EXPECT_NE(finished[i].message().find("max_concurrency 2 reached"), std::string::npos);
  }
  // The refused calls were answered before the two admitted ones finished:
  // nothing queued behind them.
  EXPECT_TRUE(finished[8].ok()) << finished[8];
  EXPECT_TRUE(finished[9].ok()) << finished[9];
  EXPECT_EQ(service_.calls, 2);
  EXPECT_EQ(server_->stats().calls_shed, 8);
}

TEST_F(GovernanceTest, TheAdaptiveLimitIsOnByDefaultAndSheds) {
  StartServer({.adaptive_limit = {.initial_limit = 4, .min_limit = 4, .max_limit = 4}});
  std::vector<absl::Status> finished = Burst(12, /*open_after=*/8);
  int shed = 0, ok = 0;
  for (const auto& st : finished) {
    if (st.code() == absl::StatusCode::kResourceExhausted) {
      ++shed;
      EXPECT_NE(st.message().find("adaptive concurrency limit 4 reached"), std::string::npos) << st;
    }
    ok += st.ok();
  }
  EXPECT_EQ(ok, 4);
  EXPECT_EQ(shed, 8);
  EXPECT_EQ(service_.calls, 4);
}

TEST_F(GovernanceTest, AnUnknownMethodInTheLimitsIsRefusedAtStart) {
  Server server({.max_concurrency = {{"capstan.echo.Echo/Nope", 1}}});
  server.AddService(&service_);
  absl::Status st = server.Start();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("capstan.echo.Echo/Echo"), std::string::npos)
      << "lists the methods it has: " << st;
}

// Records its calls; refuses those without the right token when asked to.
class RecordingInterceptor : public ServerInterceptor {
 public:
  RecordingInterceptor(std::string name, std::vector<std::string>* log, bool check_token)
      : name_(std::move(name)), log_(log), check_token_(check_token) {}
  absl::Status Before(ServerContext& context) override {
    log_->push_back(name_ + ".before " + std::string(context.method()));
    if (check_token_ && context.Metadata("token") != "secret") {
      return absl::UnauthenticatedError("missing or wrong token");
    }
    return absl::OkStatus();
  }
  void After(ServerContext& context, absl::StatusCode code, Clock::duration) override {
    log_->push_back(name_ + ".after " + absl::StatusCodeToString(code));
  }

 private:
  std::string name_;
  std::vector<std::string>* log_;
  bool check_token_;
};

TEST_F(GovernanceTest, InterceptorsWrapTheHandlerInOrderAndMayRefuse) {
  std::vector<std::string> log;  // written on the server's one loop, read after calls end
  interceptors_.push_back(std::make_shared<RecordingInterceptor>("outer", &log, false));
  interceptors_.push_back(std::make_shared<RecordingInterceptor>("auth", &log, true));
  StartServer({});
  auto ok = Echo(EchoRequest(), {{"token", "secret"}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto refused = Echo(EchoRequest());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(service_.calls, 1) << "the refused call never reached the handler";
  server_->Shutdown(2s);  // every After has run
  EXPECT_EQ(log, (std::vector<std::string>{
                     "outer.before capstan.echo.Echo/Echo", "auth.before capstan.echo.Echo/Echo",
                     "auth.after OK", "outer.after OK", "outer.before capstan.echo.Echo/Echo",
                     "auth.before capstan.echo.Echo/Echo", "auth.after UNAUTHENTICATED",
                     "outer.after UNAUTHENTICATED"}));
}

TEST_F(GovernanceTest, PerMethodMetricsAndTheStatusPageCountCalls) {
  StartServer({});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Echo(EchoRequest()).ok());
  EchoRequest failing;
  failing.set_fail_code(static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(Echo(failing).status().code(), absl::StatusCode::kNotFound);

  std::string text = server_->metrics().RenderText();
  EXPECT_NE(
      text.find(R"(capstan_rpc_server_handled_total{method="capstan.echo.Echo/Echo",code="OK"} 3)"),
      std::string::npos)
      << text;
  EXPECT_NE(
      text.find(
          R"(capstan_rpc_server_handled_total{method="capstan.echo.Echo/Echo",code="NOT_FOUND"} 1)"),
      std::string::npos);
  EXPECT_NE(
      text.find(R"(capstan_rpc_server_handling_seconds_count{method="capstan.echo.Echo/Echo"} 4)"),
      std::string::npos);
  EXPECT_NE(
      text.find(R"(capstan_rpc_server_concurrency_limit{method="capstan.echo.Echo/Echo"} 50)"),
      std::string::npos)
      << "the default adaptive limit, one loop";

  std::string status = server_->StatusText();
  EXPECT_NE(status.find("capstan.echo.Echo/Echo"), std::string::npos) << status;
  EXPECT_NE(status.find("connections 1,"), std::string::npos) << status;
  // The method's row: 4 calls, 1 error, none in flight.
  EXPECT_TRUE(std::regex_search(status, std::regex(R"(Echo/Echo\s+4\s+1\s+0\s+50 adapt)")))
      << status;
  EXPECT_TRUE(std::regex_search(status, std::regex(R"(127\.0\.0\.1:\d+\s+\d+\s+4\s+0)")))
      << "the connection, its 4 calls and none in flight:\n"
      << status;
}

}  // namespace
}  // namespace capstan::rpc
