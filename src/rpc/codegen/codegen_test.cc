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

// Echo served from the request's serialized bytes: answers them as the
// payload (so the caller can compare them with what it sent), or fails when
// they do not start with EchoRequest.payload's tag.
class BytesEcho : public EchoServer {
 public:
  BytesEcho() {
    SetUnaryBytesHandler<EchoResponse>("Echo",
                                       [](rpc::ServerContext&, const net::Buffer& request,
                                          EchoResponse* response) -> net::Task<absl::Status> {
                                         std::string bytes;
                                         for (size_t i = 0; i < request.slice_count(); ++i)
                                           bytes += request.slice(i);
                                         if (bytes.empty() || bytes[0] != '\x0a') {
                                           co_return absl::InvalidArgumentError("no payload first");
                                         }
                                         response->set_payload(bytes);
                                         co_return absl::OkStatus();
                                       });
  }
  bool typed_handler_ran = false;
  net::Task<absl::Status> Echo(rpc::ServerContext&, const EchoRequest&, EchoResponse*) override {
    typed_handler_ran = true;
    co_return absl::InternalError("the typed handler ran");
  }
};

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

// A generated method replaced by a bytes handler: it gets the request exactly
// as serialized (here large enough to arrive in several slices), answers a
// typed response, and its errors reach the caller; the typed override never runs.
TEST_F(CodegenTest, ABytesHandlerReplacesTheGeneratedOneAndSeesTheSerializedRequest) {
  BytesEcho service;
  rpc::Server server({});
  server.AddService(&service);
  ASSERT_TRUE(server.Start().ok());
  for (size_t size : {size_t{3}, size_t{300000}}) {
    std::string payload(size, 'p');
    payload[size / 2] = 'q';
    EchoRequest request;
    request.set_payload(payload);
    auto r = CallOnce(server.port(), payload);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->payload(), request.SerializeAsString()) << size;
  }
  auto empty = CallOnce(server.port(), "");  // an empty message: no bytes at all
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument) << empty.status();
  EXPECT_EQ(empty.status().message(), "no payload first");
  EXPECT_FALSE(service.typed_handler_ran);
  server.Shutdown(1s);
}

// Streaming methods a subclass leaves alone end their stream UNIMPLEMENTED.
TEST_F(CodegenTest, StreamingMethodsNotOverriddenAnswerUnimplemented) {
  StreamsServer service;
  EXPECT_STREQ(StreamsServer::kServiceName, "capstan.echo.Streams");
  rpc::Server server({});
  server.AddService(&service);
  ASSERT_TRUE(server.Start().ok());
  auto statuses =
      net::BlockOn(client_loops_->loop(0),
                   [](net::EventLoop* loop, int port) -> net::Task<std::vector<absl::Status>> {
                     StreamsClient client(rpc::Channel::Create(loop, "127.0.0.1", port));
                     std::vector<absl::Status> out;
                     auto produce = co_await client.Produce(ProduceRequest(), {.timeout = 2s});
                     Chunk chunk;
                     bool got = co_await produce.Read(&chunk);
                     absl::Status produced = co_await produce.Finish();
                     out.push_back(got ? absl::InternalError("a chunk arrived") : produced);
                     auto consume = co_await client.Consume({.timeout = 2s});
                     co_await consume.Write(Chunk());
                     out.push_back((co_await consume.Finish()).status());
                     auto exchange = co_await client.Exchange({.timeout = 2s});
                     out.push_back(co_await exchange.Finish());
                     co_return out;
                   }(client_loops_->loop(0), server.port()));
  ASSERT_EQ(statuses.size(), 3u);
  const char* methods[] = {"Produce", "Consume", "Exchange"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(statuses[i].code(), absl::StatusCode::kUnimplemented) << statuses[i];
    EXPECT_NE(statuses[i].message().find(std::string("capstan.echo.Streams.") + methods[i]),
              std::string::npos)
        << statuses[i];
  }
  server.Shutdown(1s);
}

}  // namespace
}  // namespace capstan::echo
