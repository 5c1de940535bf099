// A Capstan RPC server reached by gRPC C++ clients on the port its own
// clients use: every call shape, metadata, deadlines, cancellation, status
// codes, the limits and interceptors, the health service — and a Capstan
// client on the same port in the same tests.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <future>
#include <thread>

#include "capstan/echo.grpc.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "net/test_util.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/test_echo.h"
#include "rpc/test_streams.h"

namespace capstan::rpc {
namespace {

using echo::Chunk;
using echo::EchoRequest;
using echo::EchoResponse;
using net::testing::Eventually;
using namespace std::chrono_literals;

std::chrono::system_clock::time_point In(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

// Counts the calls it sees by protocol; refuses calls whose metadata says
// "refuse".
class ProtocolCounter : public ServerInterceptor {
 public:
  absl::Status Before(ServerContext& context) override {
    (context.grpc() ? grpc_calls : capstan_calls)++;
    context.AddTrailer("X-Served-Over", context.grpc() ? "grpc" : "capstan");
    if (context.Metadata("refuse") == "yes") return absl::PermissionDeniedError("refused by test");
    return absl::OkStatus();
  }
  void After(ServerContext&, absl::StatusCode code, Clock::duration) override { after++; }
  std::atomic<int> grpc_calls{0};
  std::atomic<int> capstan_calls{0};
  std::atomic<int> after{0};
};

class ServerGrpcTest : public ::testing::Test {
 protected:
  void Start(ServerOptions options) {
    options.threads = 2;
    server_ = std::make_unique<Server>(options);
    server_->AddService(&echo_);
    server_->AddService(&streams_);
    counter_ = std::make_shared<ProtocolCounter>();
    server_->AddInterceptor(counter_);
    ASSERT_TRUE(server_->Start().ok());
    grpc_channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                        grpc::InsecureChannelCredentials());
    echo_stub_ = echo::Echo::NewStub(grpc_channel_);
    streams_stub_ = echo::Streams::NewStub(grpc_channel_);
    auto group = net::LoopGroup::Start({.name = "client"});
    ASSERT_TRUE(group.ok()) << group.status();
    client_loops_ = std::move(group).value();
    loop_ = client_loops_->loop(0);
    channel_ = Channel::Create(loop_, "127.0.0.1", server_->port());
  }
  void SetUp() override { Start({}); }
  void TearDown() override {
    net::RunOn(loop_, [this] { channel_.reset(); });
    client_loops_->Stop();
    if (server_) server_->Shutdown(1s);
  }

  // A unary call over Capstan's own protocol.
  template <typename Request, typename Response>
  absl::StatusOr<Response> CapstanCall(std::string method, Request request) {
    return net::BlockOn(loop_,
                        [](std::shared_ptr<Channel> ch, std::string method,
                           Request request) -> net::Task<absl::StatusOr<Response>> {
                          co_return co_await ch->Call<Request, Response>(method, request, {});
                        }(channel_, std::move(method), std::move(request)));
  }

  testing::TestEcho echo_{"one"};
  testing::TestStreams streams_;
  std::shared_ptr<ProtocolCounter> counter_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> grpc_channel_;
  std::unique_ptr<echo::Echo::Stub> echo_stub_;
  std::unique_ptr<echo::Streams::Stub> streams_stub_;
  std::unique_ptr<net::LoopGroup> client_loops_;
  net::EventLoop* loop_ = nullptr;
  std::shared_ptr<Channel> channel_;
};

TEST_F(ServerGrpcTest, UnaryOverBothProtocolsOnOnePortWithMetadataAndDeadline) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("caller", "grpc-client");
  ctx.set_deadline(In(5000ms));
  EchoRequest request;
  request.set_payload("over grpc");
  EchoResponse response;
  grpc::Status st = echo_stub_->Echo(&ctx, request, &response);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(response.payload(), "over grpc");
  EXPECT_EQ(response.served_by(), "one");
  EXPECT_EQ(response.caller(), "grpc-client");
  // ServerContext::AddTrailer reaches the gRPC client's trailing metadata
  // (the name in lower case, as HTTP/2 wants).
  auto trailer = ctx.GetServerTrailingMetadata().find("x-served-over");
  ASSERT_NE(trailer, ctx.GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(trailer->second.data(), trailer->second.size()), "grpc");
  // grpc-timeout became the handler's deadline (the client rounds the
  // timeout it sends up to a coarser unit: it may exceed 5 s a little).
  EXPECT_GT(response.deadline_left_us(), 0);
  EXPECT_LE(response.deadline_left_us(), 6'000'000);

  request.set_payload("over capstan");
  auto capstan = CapstanCall<EchoRequest, EchoResponse>("capstan.echo.Echo/Echo", request);
  ASSERT_TRUE(capstan.ok()) << capstan.status();
  EXPECT_EQ(capstan->payload(), "over capstan");

  // Without a deadline the handler sees none.
  grpc::ClientContext no_deadline;
  ASSERT_TRUE(echo_stub_->Echo(&no_deadline, request, &response).ok());
  EXPECT_EQ(response.deadline_left_us(), -1);
  EXPECT_EQ(counter_->grpc_calls.load(), 2);
  EXPECT_EQ(counter_->capstan_calls.load(), 1);
  // One connection of each protocol.
  EXPECT_EQ(server_->stats().connections, 2);
}

TEST_F(ServerGrpcTest, HandlerErrorsKeepTheirCodeAndMessage) {
  for (int code : {3, 5, 7, 9, 13, 14}) {
    grpc::ClientContext ctx;
    EchoRequest request;
    request.set_fail_code(code);
    EchoResponse response;
    grpc::Status st = echo_stub_->Echo(&ctx, request, &response);
    EXPECT_EQ(static_cast<int>(st.error_code()), code);
    EXPECT_EQ(st.error_message(), "asked to fail");
  }
}

TEST_F(ServerGrpcTest, AnInterceptorRefusalReachesTheGrpcClient) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("refuse", "yes");
  EchoResponse response;
  grpc::Status st = echo_stub_->Echo(&ctx, EchoRequest(), &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(st.error_message(), "refused by test");
  // A trailers-only answer carries the handler's trailers too.
  EXPECT_EQ(ctx.GetServerTrailingMetadata().count("x-served-over"), 1u);
  EXPECT_EQ(echo_.calls.load(), 0);
  EXPECT_TRUE(Eventually([&] { return counter_->after.load() == 1; }));
}

TEST_F(ServerGrpcTest, DeadlineExceededCancelsTheHandler) {
  testing::Gate gate;
  echo_.hold = &gate;
  grpc::ClientContext ctx;
  ctx.set_deadline(In(300ms));
  EchoResponse response;
  grpc::Status st = echo_stub_->Echo(&ctx, EchoRequest(), &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server's own timer ended the call: its handler sees it cancelled.
  EXPECT_TRUE(Eventually([&] { return echo_.HeldCancelled() == 1; }));
  gate.Open();
  EXPECT_TRUE(Eventually([&] { return server_->stats().calls_in_flight == 0; }));
}

TEST_F(ServerGrpcTest, ClientCancellationReachesTheHandler) {
  testing::Gate gate;
  echo_.hold = &gate;
  grpc::ClientContext ctx;
  auto done = std::async(std::launch::async, [&] {
    EchoResponse response;
    return echo_stub_->Echo(&ctx, EchoRequest(), &response);
  });
  ASSERT_TRUE(Eventually([&] { return echo_.calls.load() == 1; }));
  EXPECT_EQ(echo_.HeldCancelled(), 0);
  ctx.TryCancel();
  EXPECT_EQ(done.get().error_code(), grpc::StatusCode::CANCELLED);
  // RST_STREAM reached the handler's context.
  EXPECT_TRUE(Eventually([&] { return echo_.HeldCancelled() == 1; }));
  gate.Open();
  EXPECT_TRUE(Eventually([&] { return echo_.cancelled.load() == 1; }));
}

TEST_F(ServerGrpcTest, ServerStreamingInOrderThenTheStatus) {
  grpc::ClientContext ctx;
  echo::ProduceRequest request;
  request.set_count(300);
  request.set_size(16 << 10);  // 4.8 MB: past the call's output high mark
  request.set_fail_code(static_cast<int>(absl::StatusCode::kAborted));
  auto reader = streams_stub_->Produce(&ctx, request);
  Chunk chunk;
  int64_t next = 0;
  while (reader->Read(&chunk)) {
    EXPECT_EQ(chunk.seq(), next);
    EXPECT_EQ(chunk.payload().size(), 16u << 10);
    next++;
  }
  grpc::Status st = reader->Finish();
  EXPECT_EQ(next, 300);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(st.error_message(), "asked to fail");
}

TEST_F(ServerGrpcTest, ClientStreamingSumsWhatWasSent) {
  grpc::ClientContext ctx;
  echo::StreamSummary summary;
  auto writer = streams_stub_->Consume(&ctx, &summary);
  for (int i = 0; i < 50; ++i) {
    Chunk chunk;
    chunk.set_seq(i);
    chunk.set_payload(std::string(1000, 'c'));
    ASSERT_TRUE(writer->Write(chunk));
  }
  ASSERT_TRUE(writer->WritesDone());
  grpc::Status st = writer->Finish();
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(summary.chunks(), 50);
  EXPECT_EQ(summary.bytes(), 50'000);
  EXPECT_EQ(summary.seq_sum(), 49 * 50 / 2);
}

TEST_F(ServerGrpcTest, BidiEchoesEachMessageAsItArrives) {
  grpc::ClientContext ctx;
  auto stream = streams_stub_->Exchange(&ctx);
  for (int i = 0; i < 20; ++i) {
    Chunk chunk;
    chunk.set_seq(i);
    ASSERT_TRUE(stream->Write(chunk));
    Chunk back;
    ASSERT_TRUE(stream->Read(&back));  // answered before the next is sent
    EXPECT_EQ(back.seq(), i);
  }
  ASSERT_TRUE(stream->WritesDone());
  Chunk none;
  EXPECT_FALSE(stream->Read(&none));
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(streams_.exchanges_ended.load(), 1);
}

TEST_F(ServerGrpcTest, CancellingABidiStreamEndsTheHandlersReads) {
  grpc::ClientContext ctx;
  auto stream = streams_stub_->Exchange(&ctx);
  Chunk chunk;
  ASSERT_TRUE(stream->Write(chunk));
  ASSERT_TRUE(stream->Read(&chunk));
  ctx.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return streams_.exchanges_ended.load() == 1; }));
}

TEST_F(ServerGrpcTest, HealthCheckOverBothProtocols) {
  ::grpc::health::v1::HealthCheckRequest request;
  request.set_service("capstan.echo.Streams");
  auto capstan =
      CapstanCall<::grpc::health::v1::HealthCheckRequest, ::grpc::health::v1::HealthCheckResponse>(
          "grpc.health.v1.Health/Check", request);
  ASSERT_TRUE(capstan.ok()) << capstan.status();
  EXPECT_EQ(capstan->status(), ::grpc::health::v1::HealthCheckResponse::SERVING);
  request.set_service("no.such.Service");
  capstan =
      CapstanCall<::grpc::health::v1::HealthCheckRequest, ::grpc::health::v1::HealthCheckResponse>(
          "grpc.health.v1.Health/Check", request);
  EXPECT_EQ(capstan.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerGrpcTest, UnknownMethodIsUnimplemented) {
  grpc::GenericStub generic(grpc_channel_);
  grpc::ClientContext ctx;
  grpc::Slice empty(std::string{});
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/capstan.echo.Echo/Nope", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status st) { done.set_value(st); });
  grpc::Status st = done.get_future().get();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(st.error_message().find("Nope"), std::string::npos) << st.error_message();
}

class ServerGrpcQueueLimitTest : public ServerGrpcTest {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.grpc_max_queued_bytes = 64 << 10;
    Start(options);
  }
};

TEST_F(ServerGrpcQueueLimitTest, AClientFarAheadOfTheHandlersReadsIsStopped) {
  testing::Gate gate;
  streams_.hold_consume = &gate;
  grpc::ClientContext ctx;
  echo::StreamSummary summary;
  auto writer = streams_stub_->Consume(&ctx, &summary);
  // 160 KB inside HTTP/2's 1 MiB window, none of it read by the handler.
  // Writes may start failing once the server ended the call.
  for (int i = 0; i < 10; ++i) {
    Chunk chunk;
    chunk.set_seq(i);
    chunk.set_payload(std::string(16 << 10, 'q'));
    if (!writer->Write(chunk)) break;
  }
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("ahead of the handler's reads"), std::string::npos)
      << st.error_message();
  gate.Open();
  EXPECT_TRUE(Eventually([&] { return server_->stats().calls_in_flight == 0; }));
}

class ServerGrpcLimitsTest : public ServerGrpcTest {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.max_concurrency["capstan.echo.Echo/Echo"] = 1;
    Start(options);
  }
};

TEST_F(ServerGrpcLimitsTest, MaxConcurrencyShedsGrpcCallsToo) {
  testing::Gate gate;
  echo_.hold = &gate;
  grpc::ClientContext first;
  auto held = std::async(std::launch::async, [&] {
    EchoResponse response;
    return echo_stub_->Echo(&first, EchoRequest(), &response);
  });
  ASSERT_TRUE(Eventually([&] { return echo_.calls.load() == 1; }));
  grpc::ClientContext second;
  EchoResponse response;
  grpc::Status st = echo_stub_->Echo(&second, EchoRequest(), &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("max_concurrency 1 reached"), std::string::npos)
      << st.error_message();
  // A Capstan call is counted against the same cap.
  auto capstan = CapstanCall<EchoRequest, EchoResponse>("capstan.echo.Echo/Echo", EchoRequest());
  EXPECT_EQ(capstan.status().code(), absl::StatusCode::kResourceExhausted);
  gate.Open();
  EXPECT_TRUE(held.get().ok());
  EXPECT_EQ(server_->stats().calls_shed, 2);
}

}  // namespace
}  // namespace capstan::rpc
