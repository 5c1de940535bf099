// A Capstan RPC service (examples/echo, a real `echo_example serve` process)
// called by gRPC clients on the port its Capstan clients use: Python's grpcio
// (tests/e2e/rpc_grpc_client.py: every call shape, deadlines, cancellation,
// status codes, health, reflection) and gRPC C++'s generated stubs, with a
// Capstan client calling in the same test; then the server drains on SIGTERM
// while a gRPC health watcher sees NOT_SERVING.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <regex>

#include "echo_example.capstan.h"
#include "echo_example.grpc.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "rpc/channel.h"

namespace capstan::e2e {
namespace {

using namespace std::chrono_literals;
using examples::CountRequest;
using examples::EchoReply;
using examples::EchoRequest;

class RpcGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("capstan-rpc-grpc");
    server_ = std::make_unique<Process>(
        std::vector<std::string>{ECHO_EXAMPLE_PATH, "serve", "--listen", "127.0.0.1:0",
                                 "--instance", "a", "--threads", "2", "--admin", "127.0.0.1:0"},
        dir_->path() + "/server.log");
    static const std::regex kListening("listening 127\\.0\\.0\\.1:(\\d+)");
    static const std::regex kAdmin("admin 127\\.0\\.0\\.1:(\\d+)");
    std::smatch m;
    ASSERT_TRUE(Eventually(
        [&] {
          std::string log = server_->Log();
          if (!std::regex_search(log, m, kListening)) return false;
          port_ = std::stoi(m[1]);
          if (!std::regex_search(log, m, kAdmin)) return false;
          admin_port_ = std::stoi(m[1]);
          return true;
        },
        20s))
        << server_->Log();
    grpc_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
  }
  void TearDown() override { server_.reset(); }  // SIGKILL if still running

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<Process> server_;
  int port_ = 0;
  int admin_port_ = 0;
  std::shared_ptr<grpc::Channel> grpc_;
};

TEST_F(RpcGrpcTest, PythonGrpcioCallsEveryShape) {
  if (RunCommand({"/usr/bin/python3", "-c", "import grpc"}).exit_code != 0) {
    GTEST_SKIP() << "python3-grpcio is not installed (scripts/install-deps.sh installs it)";
  }
  TempDir work("capstan-rpc-grpc-py");
  CommandResult r = RunCommand(
      {"/usr/bin/python3", CAPSTAN_SOURCE_DIR "/tests/e2e/rpc_grpc_client.py",
       std::to_string(port_), std::to_string(admin_port_), CAPSTAN_SOURCE_DIR, work.path()},
      "", 120s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << server_->Log();
  // Every check ran (a script that stopped early would pass nothing).
  EXPECT_NE(r.out.find("ok test_reflection"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
}

TEST_F(RpcGrpcTest, GrpcCppAndCapstanClientsShareThePort) {
  auto stub = examples::Echo::NewStub(grpc_);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    EchoRequest request;
    request.set_message("from grpc c++");
    EchoReply reply;
    grpc::Status st = stub->Echo(&ctx, request, &reply);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(reply.message(), "from grpc c++");
    EXPECT_GT(reply.deadline_left_ms(), 0);
  }
  {
    grpc::ClientContext ctx;
    CountRequest request;
    request.set_message("n");
    request.set_count(3);
    auto reader = stub->Count(&ctx, request);
    EchoReply reply;
    std::vector<std::string> got;
    while (reader->Read(&reply)) got.push_back(reply.message());
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(got, (std::vector<std::string>{"n 0", "n 1", "n 2"}));
  }
  {
    grpc::ClientContext ctx;
    EchoReply reply;
    auto writer = stub->Collect(&ctx, &reply);
    for (const char* m : {"x", "y"}) {
      EchoRequest request;
      request.set_message(m);
      ASSERT_TRUE(writer->Write(request));
    }
    writer->WritesDone();
    EXPECT_TRUE(writer->Finish().ok());
    EXPECT_EQ(reply.message(), "x y");
  }
  {
    grpc::ClientContext ctx;
    auto stream = stub->Chat(&ctx);
    EchoRequest request;
    request.set_message("ping");
    ASSERT_TRUE(stream->Write(request));
    EchoReply reply;
    ASSERT_TRUE(stream->Read(&reply));
    EXPECT_EQ(reply.message(), "ping");
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 200ms);
    EchoRequest request;
    request.set_sleep_ms(3000);
    EchoReply reply;
    EXPECT_EQ(stub->Echo(&ctx, request, &reply).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // A Capstan client on the same port, while the gRPC connection stays open.
  auto loops = net::LoopGroup::Start({.name = "client"});
  ASSERT_TRUE(loops.ok()) << loops.status();
  net::EventLoop* loop = (*loops)->loop(0);
  auto channel = net::RunOn(loop, [&] { return rpc::Channel::Create(loop, "127.0.0.1", port_); });
  auto reply = net::BlockOn(
      loop, [](std::shared_ptr<rpc::Channel> channel) -> net::Task<absl::StatusOr<EchoReply>> {
        examples::EchoClient echo(channel);
        EchoRequest request;
        request.set_message("from capstan");
        co_return co_await echo.Echo(request, {.timeout = 5s});
      }(channel));
  net::RunOn(loop, [&] { channel.reset(); });
  (*loops)->Stop();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "from capstan");
  EXPECT_EQ(reply->instance(), "a");
}

TEST_F(RpcGrpcTest, AHealthWatcherSeesNotServingWhenTheServerDrains) {
  grpc::GenericStub generic(grpc_);
  grpc::ClientContext ctx;
  grpc::CompletionQueue cq;
  ::grpc::health::v1::HealthCheckRequest request;
  std::string bytes = request.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer send(&slice, 1);
  auto call = generic.PrepareCall(&ctx, "/grpc.health.v1.Health/Watch", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto next = [&](intptr_t want) {
    EXPECT_EQ(cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + 10s),
              grpc::CompletionQueue::GOT_EVENT);
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(next(1));
  call->WriteLast(send, grpc::WriteOptions(), reinterpret_cast<void*>(2));
  ASSERT_TRUE(next(2));
  auto read_status = [&]() -> int {
    grpc::ByteBuffer received;
    call->Read(&received, reinterpret_cast<void*>(3));
    if (!next(3)) return -1;
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(received.Dump(&slices).ok());
    std::string data;
    for (auto& s : slices) data.append(reinterpret_cast<const char*>(s.begin()), s.size());
    ::grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(response.ParseFromString(data));
    return response.status();
  };
  EXPECT_EQ(read_status(), ::grpc::health::v1::HealthCheckResponse::SERVING);
  server_->Signal(SIGTERM);
  EXPECT_EQ(read_status(), ::grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  next(4);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  // The watcher did not hold the drain up: the server exits.
  EXPECT_EQ(server_->Wait(10s), 0) << server_->Log();
}

}  // namespace
}  // namespace capstan::e2e
