// The generated server base class and client, end to end.
#include "capstan/echo.capstan.h"

#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"

namespace capstan::echo {
namespace {

using namespace std::chrono_literals;

class Reverser : public EchoServer {
 public:
  net::Task<absl::Status> Echo(rpc::ServerContext& context, const EchoRequest& request,
                               EchoResponse* response) override {
    std::string s = request.payload();
    response->set_payload(std::string(s.rbegin(), s.rend()));
    co_return absl::OkStatus();
  }
};

class Unimplemented : public EchoServer {};

class CodegenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto group = net::LoopGroup::Start({.name = "client"});
    ASSERT_TRUE(group.ok());
    client_loops_ = std::move(group).value();
  }
  void TearDown() override { client_loops_->Stop(); }

  absl::StatusOr<EchoResponse> CallOnce(int port, std::string payload) {
    return net::BlockOn(client_loops_->loop(0),
                        [](net::EventLoop* loop, int port,
                           std::string payload) -> net::Task<absl::StatusOr<EchoResponse>> {
                          EchoClient client(rpc::Channel::Create(loop, "127.0.0.1", port));
                          EchoRequest request;
                          request.set_payload(payload);
                          co_return co_await client.Echo(request, {.timeout = 2s});
                        }(client_loops_->loop(0), port, std::move(payload)));
  }

  std::unique_ptr<net::LoopGroup> client_loops_;
};

TEST_F(CodegenTest, GeneratedServerAndClientTalk) {
  Reverser service;
  EXPECT_STREQ(EchoServer::kServiceName, "capstan.echo.Echo");
  rpc::Server server({});
  server.AddService(&service);
  ASSERT_TRUE(server.Start().ok());
  auto r = CallOnce(server.port(), "abc");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->payload(), "cba");
  server.Shutdown(1s);
}

TEST_F(CodegenTest, MethodsNotOverriddenAnswerUnimplemented) {
  Unimplemented service;
  rpc::Server server({});
  server.AddService(&service);
  ASSERT_TRUE(server.Start().ok());
  auto r = CallOnce(server.port(), "abc");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  EXPECT_NE(r.status().message().find("capstan.echo.Echo.Echo"), std::string::npos);
  server.Shutdown(1s);
}

}  // namespace
}  // namespace capstan::echo
