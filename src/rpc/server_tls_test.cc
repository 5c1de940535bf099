// rpc::Server with TLS on its port and rpc::Channel / BalancedChannel with
// TLS to it: unary and streaming calls inside TLS, mTLS accepted and
// refused (with an error that names TLS, not a hang), the client
// certificate's identity as handlers see it, gRPC C++ clients over TLS on
// the same port, certificate reload and the options' checks. The CA and
// certificates are made when the suite starts (net/test_certs.h).
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_join.h"
#include "base/test_dir.h"
#include "capstan/echo.grpc.pb.h"
#include "gtest/gtest.h"
#include "mesh/discovery.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "net/test_certs.h"
#include "net/test_util.h"
#include "rpc/balanced_channel.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/test_streams.h"

namespace capstan::rpc {
namespace {

using echo::Chunk;
using echo::EchoRequest;
using echo::EchoResponse;
using echo::ProduceRequest;
using net::testing::TestCa;
using net::testing::TestCert;
using namespace std::chrono_literals;

constexpr char kEcho[] = "capstan.echo.Echo/Echo";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Answers every call with what the server knows of its caller:
// "tls=1 cn=alice dns=alice.test uri=spiffe://capstan.test/alice".
class WhoAmI : public Service {
 public:
  WhoAmI() : Service("capstan.echo.Echo") {
    AddUnary<EchoRequest, EchoResponse>(
        "Echo",
        [](ServerContext& ctx, const EchoRequest&, EchoResponse* resp) -> net::Task<absl::Status> {
          const net::TlsPeerIdentity& peer = ctx.peer_identity();
          resp->set_payload(absl::StrCat("tls=", ctx.tls() ? 1 : 0, " cn=", peer.common_name,
                                         " dns=", absl::StrJoin(peer.dns_names, ","),
                                         " uri=", absl::StrJoin(peer.uris, ",")));
          resp->set_served_by(ctx.grpc() ? "grpc" : "capstan");
          co_return absl::OkStatus();
        });
  }
};

class ServerTlsTest : public ::testing::TestWithParam<net::IoBackendKind> {
 protected:
  static void SetUpTestSuite() {
    auto dir =
        std::filesystem::temp_directory_path() / absl::StrCat("rpc_server_tls_test_", ::getpid());
    ca_ = new TestCa(dir / "ca");
    other_ca_ = new TestCa(dir / "other");
    server_cert_ = new TestCert(ca_->Issue("rpc.test", {"DNS:rpc.test", "IP:127.0.0.1"}));
    alice_ = new TestCert(
        ca_->Issue("alice", {"DNS:alice.test", "URI:spiffe://capstan.test/alice"}, "alice"));
    // Signed by a CA the server does not trust.
    mallory_ = new TestCert(other_ca_->Issue("mallory", {"DNS:mallory.test"}));
    other_server_ = new TestCert(other_ca_->Issue("rpc.test", {"IP:127.0.0.1"}, "other-server"));
  }
  static void TearDownTestSuite() {
    for (TestCert* c : {server_cert_, alice_, mallory_, other_server_}) delete c;
    delete ca_;
    delete other_ca_;
  }

  void SetUp() override {
    net::LoopGroupOptions client;
    client.name = "client";
    client.loop.backend = GetParam();
    auto group = net::LoopGroup::Start(client);
    ASSERT_TRUE(group.ok()) << group.status();
    client_loops_ = std::move(group).value();
    loop_ = client_loops_->loop(0);
  }
  void TearDown() override {
    net::RunOn(loop_, [this] { channels_.clear(); });
    client_loops_->Stop();
    if (server_) server_->Shutdown(1s);
  }

  static ServerTlsOptions ServerTls(bool require_client_cert, bool client_ca = true) {
    ServerTlsOptions tls;
    tls.cert_file = server_cert_->cert_file;
    tls.key_file = server_cert_->key_file;
    if (client_ca) tls.client_ca_file = ca_->ca_file();
    tls.require_client_cert = require_client_cert;
    return tls;
  }
  // A channel that trusts `ca` and presents `cert` (none when null).
  static ChannelTlsOptions ClientTls(const TestCert* cert, const TestCa* ca = ca_) {
    ChannelTlsOptions tls;
    tls.enabled = true;
    tls.ca_file = ca->ca_file();
    if (cert != nullptr) {
      tls.cert_file = cert->cert_file;
      tls.key_file = cert->key_file;
    }
    return tls;
  }

  void StartServer(ServerTlsOptions tls) {
    ServerOptions options;
    options.threads = 2;
    options.backend = GetParam();
    options.tls = std::move(tls);
    server_ = std::make_unique<Server>(options);
    server_->AddService(&who_);
    server_->AddService(&streams_);
    absl::Status st = server_->Start();
    ASSERT_TRUE(st.ok()) << st;
  }

  std::shared_ptr<Channel> NewChannel(ChannelTlsOptions tls) {
    ChannelOptions options;
    options.tls = std::move(tls);
    return net::RunOn(loop_, [&] {
      channels_.push_back(Channel::Create(loop_, "127.0.0.1", server_->port(), options));
      return channels_.back();
    });
  }

  absl::StatusOr<EchoResponse> Who(const std::shared_ptr<Channel>& channel) {
    return net::BlockOn(loop_, [&]() -> net::Task<absl::StatusOr<EchoResponse>> {
      EchoRequest request;
      co_return co_await channel->Call<EchoRequest, EchoResponse>(kEcho, request, {.timeout = 5s});
    }());
  }

  // A gRPC C++ client over TLS to the server's port.
  std::unique_ptr<echo::Echo::Stub> GrpcStub(const TestCert* cert) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(ca_->ca_file());
    if (cert != nullptr) {
      ssl.pem_cert_chain = ReadFile(cert->cert_file);
      ssl.pem_private_key = ReadFile(cert->key_file);
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("rpc.test");
    grpc_channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                              grpc::SslCredentials(ssl), args);
    return echo::Echo::NewStub(grpc_channel_);
  }

  static TestCa* ca_;
  static TestCa* other_ca_;
  static TestCert* server_cert_;
  static TestCert* alice_;
  static TestCert* mallory_;
  static TestCert* other_server_;

  WhoAmI who_;
  testing::TestStreams streams_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<net::LoopGroup> client_loops_;
  net::EventLoop* loop_ = nullptr;
  std::vector<std::shared_ptr<Channel>> channels_;
  std::shared_ptr<grpc::Channel> grpc_channel_;
};

TestCa* ServerTlsTest::ca_ = nullptr;
TestCa* ServerTlsTest::other_ca_ = nullptr;
TestCert* ServerTlsTest::server_cert_ = nullptr;
TestCert* ServerTlsTest::alice_ = nullptr;
TestCert* ServerTlsTest::mallory_ = nullptr;
TestCert* ServerTlsTest::other_server_ = nullptr;

TEST_P(ServerTlsTest, UnaryOverTlsWithoutClientCertificateHasNoIdentity) {
  StartServer(ServerTls(/*require_client_cert=*/false, /*client_ca=*/false));
  auto reply = Who(NewChannel(ClientTls(nullptr)));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->payload(), "tls=1 cn= dns= uri=");
  EXPECT_EQ(reply->served_by(), "capstan");
}

TEST_P(ServerTlsTest, ClearTextServerSaysNoTls) {
  ServerOptions options;
  server_ = std::make_unique<Server>(options);
  server_->AddService(&who_);
  ASSERT_TRUE(server_->Start().ok());
  auto reply = Who(NewChannel({}));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->payload(), "tls=0 cn= dns= uri=");
}

TEST_P(ServerTlsTest, StreamingOverTls) {
  StartServer(ServerTls(false, false));
  auto channel = NewChannel(ClientTls(nullptr));
  net::BlockOn(loop_, [&]() -> net::Task<void> {
    // Server streaming: every chunk arrives, in order, through TLS records.
    ProduceRequest produce;
    produce.set_count(50);
    produce.set_size(3000);
    auto reader = co_await channel->OpenServerStream<ProduceRequest, Chunk>(
        "capstan.echo.Streams/Produce", produce, {.timeout = 5s});
    Chunk chunk;
    int seen = 0;
    while (co_await reader.Read(&chunk)) {
      EXPECT_EQ(chunk.seq(), seen);
      EXPECT_EQ(chunk.payload().size(), 3000u);
      ++seen;
    }
    absl::Status st = co_await reader.Finish();
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(seen, 50);
    // Bidirectional: each chunk comes back.
    auto stream = co_await channel->OpenBidiStream<Chunk, Chunk>("capstan.echo.Streams/Exchange",
                                                                 {.timeout = 5s});
    for (int i = 0; i < 10; ++i) {
      Chunk out;
      out.set_seq(i);
      out.set_payload(std::string(100, 'x'));
      EXPECT_TRUE(co_await stream.Write(out));
      Chunk back;
      EXPECT_TRUE(co_await stream.Read(&back));
      EXPECT_EQ(back.seq(), i);
    }
    stream.CloseSend();
    absl::Status end = co_await stream.Finish();
    EXPECT_TRUE(end.ok()) << end;
  }());
}

TEST_P(ServerTlsTest, MutualTlsShowsTheClientIdentityToHandlers) {
  StartServer(ServerTls(/*require_client_cert=*/true));
  auto reply = Who(NewChannel(ClientTls(alice_)));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->payload(), "tls=1 cn=alice dns=alice.test uri=spiffe://capstan.test/alice");
}

TEST_P(ServerTlsTest, MutualTlsRefusesAClientWithoutCertificate) {
  StartServer(ServerTls(/*require_client_cert=*/true));
  auto channel = NewChannel(ClientTls(nullptr));
  auto reply = Who(channel);
  ASSERT_FALSE(reply.ok());
  // Refused by the server, said as such: not a deadline (a hang) and not
  // a bare "connection lost".
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
  EXPECT_NE(reply.status().message().find("TLS"), std::string::npos) << reply.status();
  // The server's alert is never garbage (it was once freed under an
  // io_uring send and reached the client as "wrong version number"). It
  // says "certificate required" unless the connection closed before it
  // could leave.
  EXPECT_EQ(reply.status().message().find("wrong version number"), std::string::npos)
      << reply.status();
  EXPECT_TRUE(
      net::testing::Eventually([&] { return server_->stats().tls_handshake_failures >= 1; }));
  EXPECT_EQ(server_->stats().calls_started, 0);
  EXPECT_NE(server_->StatusText().find("client certificates required, handshake failures 1"),
            std::string::npos)
      << server_->StatusText();
}

TEST_P(ServerTlsTest, MutualTlsRefusesACertificateFromAnotherCa) {
  StartServer(ServerTls(/*require_client_cert=*/true));
  auto reply = Who(NewChannel(ClientTls(mallory_)));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
  EXPECT_NE(reply.status().message().find("TLS"), std::string::npos) << reply.status();
  EXPECT_EQ(reply.status().message().find("wrong version number"), std::string::npos)
      << reply.status();
  EXPECT_EQ(server_->stats().calls_started, 0);
}

TEST_P(ServerTlsTest, ClientRefusesAServerItsCaDidNotSign) {
  StartServer(ServerTls(false, false));
  auto reply = Who(NewChannel(ClientTls(nullptr, other_ca_)));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
  EXPECT_NE(reply.status().message().find("TLS handshake failed"), std::string::npos)
      << reply.status();
  EXPECT_NE(reply.status().message().find("certificate verification failed"), std::string::npos)
      << reply.status();
  // Without verification the same server is reached (encryption only).
  ChannelTlsOptions unverified = ClientTls(nullptr, other_ca_);
  unverified.verify = false;
  EXPECT_TRUE(Who(NewChannel(unverified)).ok());
}

TEST_P(ServerTlsTest, ServerNameIsVerified) {
  StartServer(ServerTls(false, false));
  ChannelTlsOptions tls = ClientTls(nullptr);
  tls.server_name = "rpc.test";  // in the certificate
  EXPECT_TRUE(Who(NewChannel(tls)).ok());
  tls.server_name = "elsewhere.test";  // not in it
  auto reply = Who(NewChannel(tls));
  ASSERT_FALSE(reply.ok());
  EXPECT_NE(reply.status().message().find("TLS handshake failed"), std::string::npos)
      << reply.status();
}

TEST_P(ServerTlsTest, OptionalClientCertificate) {
  // A client CA without require_client_cert: a certificate is verified
  // when sent, and a client may send none.
  StartServer(ServerTls(/*require_client_cert=*/false));
  auto anonymous = Who(NewChannel(ClientTls(nullptr)));
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->payload(), "tls=1 cn= dns= uri=");
  auto alice = Who(NewChannel(ClientTls(alice_)));
  ASSERT_TRUE(alice.ok()) << alice.status();
  EXPECT_EQ(alice->payload(), "tls=1 cn=alice dns=alice.test uri=spiffe://capstan.test/alice");
  // One the CA did not sign is still refused.
  EXPECT_FALSE(Who(NewChannel(ClientTls(mallory_))).ok());
}

TEST_P(ServerTlsTest, ASilentServerIsAHandshakeTimeoutNotAHang) {
  // A port that accepts connections (the kernel's backlog) and never says
  // a word: the channel's TLS handshake gives up at its connect timeout.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ChannelOptions options;
  options.tls = ClientTls(nullptr);
  options.connect_timeout = 200ms;
  auto channel = net::RunOn(loop_, [&] {
    channels_.push_back(Channel::Create(loop_, "127.0.0.1", ntohs(addr.sin_port), options));
    return channels_.back();
  });
  auto reply = Who(channel);  // the call itself allows 5 s
  ::close(fd);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
  EXPECT_NE(reply.status().message().find("TLS handshake did not finish in time"),
            std::string::npos)
      << reply.status();
}

TEST_P(ServerTlsTest, ClearTextClientOnTlsPortFails) {
  StartServer(ServerTls(false, false));
  auto reply = Who(NewChannel({}));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
}

TEST_P(ServerTlsTest, GrpcClientsOverTlsOnTheSamePort) {
  StartServer(ServerTls(/*require_client_cert=*/true));
  // gRPC C++ with a client certificate: the handler sees it as over Capstan.
  auto stub = GrpcStub(alice_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  EchoRequest request;
  EchoResponse response;
  grpc::Status st = stub->Echo(&ctx, request, &response);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(response.served_by(), "grpc");
  EXPECT_EQ(response.payload(), "tls=1 cn=alice dns=alice.test uri=spiffe://capstan.test/alice");
  // A Capstan client on the same port at the same time.
  auto reply = Who(NewChannel(ClientTls(alice_)));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->served_by(), "capstan");
  // Server streaming over gRPC inside TLS.
  auto streams = echo::Streams::NewStub(grpc_channel_);
  grpc::ClientContext stream_ctx;
  stream_ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  ProduceRequest produce;
  produce.set_count(20);
  produce.set_size(1000);
  auto reader = streams->Produce(&stream_ctx, produce);
  Chunk chunk;
  int seen = 0;
  while (reader->Read(&chunk)) ++seen;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(seen, 20);
  // Without a client certificate gRPC is refused too.
  auto anonymous = GrpcStub(nullptr);
  grpc::ClientContext refused_ctx;
  refused_ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  EXPECT_EQ(anonymous->Echo(&refused_ctx, request, &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_P(ServerTlsTest, BalancedChannelOverTls) {
  StartServer(ServerTls(/*require_client_cert=*/true));
  BalancedChannelOptions options;
  options.channel.tls = ClientTls(alice_);
  auto endpoint = mesh::ParseEndpoint(absl::StrCat("127.0.0.1:", server_->port())).value();
  auto balanced = net::RunOn(loop_, [&] {
    return BalancedChannel::Create(loop_, mesh::StaticEndpoints({endpoint}), options);
  });
  ASSERT_TRUE(balanced.ok()) << balanced.status();
  auto reply = net::BlockOn(loop_, [&]() -> net::Task<absl::StatusOr<EchoResponse>> {
    EchoRequest request;
    co_return co_await (*balanced)->Call<EchoRequest, EchoResponse>(kEcho, request,
                                                                    {.timeout = 5s});
  }());
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->payload(), "tls=1 cn=alice dns=alice.test uri=spiffe://capstan.test/alice");
  net::RunOn(loop_, [&] { balanced->reset(); });
  // Options that cannot work fail Create, naming the field.
  BalancedChannelOptions bad;
  bad.channel.tls = ClientTls(alice_);
  bad.channel.tls.key_file = "/nonexistent/alice.key";
  auto refused = net::RunOn(loop_, [&] {
    return BalancedChannel::Create(loop_, mesh::StaticEndpoints({endpoint}), bad);
  });
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("tls.key_file"), std::string::npos) << refused.status();
}

TEST_P(ServerTlsTest, CertificateFilesAreReloaded) {
  // The server's files are copies this test replaces with a certificate of
  // another CA: channels opened later trust that CA, not the first.
  auto dir = FreshTestDir("rpc_tls_reload");
  std::filesystem::create_directories(dir);
  std::string cert = (dir / "server.pem").string();
  std::string key = (dir / "server.key").string();
  std::filesystem::copy_file(server_cert_->cert_file, cert);
  std::filesystem::copy_file(server_cert_->key_file, key);
  ServerTlsOptions tls;
  tls.cert_file = cert;
  tls.key_file = key;
  tls.reload_check = 10ms;
  StartServer(tls);
  ASSERT_TRUE(Who(NewChannel(ClientTls(nullptr))).ok());
  // Written aside and renamed over: the server never reads half a file.
  std::filesystem::copy_file(other_server_->cert_file, dir / "new.pem");
  std::filesystem::copy_file(other_server_->key_file, dir / "new.key");
  std::filesystem::rename(dir / "new.key", key);
  std::filesystem::rename(dir / "new.pem", cert);
  EXPECT_TRUE(net::testing::Eventually(
      [&] { return Who(NewChannel(ClientTls(nullptr, other_ca_))).ok(); }));
  EXPECT_FALSE(Who(NewChannel(ClientTls(nullptr))).ok());
  std::filesystem::remove_all(dir);
}

TEST_P(ServerTlsTest, OptionsAreChecked) {
  auto start = [&](ServerTlsOptions tls) {
    ServerOptions options;
    options.tls = std::move(tls);
    Server server(options);
    server.AddService(&who_);
    return server.Start();
  };
  ServerTlsOptions no_key;
  no_key.cert_file = server_cert_->cert_file;
  EXPECT_NE(start(no_key).message().find("tls.key_file"), std::string::npos);
  ServerTlsOptions require_without_ca = ServerTls(true, false);
  EXPECT_NE(start(require_without_ca).message().find("tls.require_client_cert"), std::string::npos);
  ServerTlsOptions missing = ServerTls(false, false);
  missing.cert_file = "/nonexistent/server.pem";
  EXPECT_NE(start(missing).message().find("tls.cert_file"), std::string::npos);
  ServerTlsOptions ca_only;
  ca_only.client_ca_file = ca_->ca_file();
  EXPECT_FALSE(start(ca_only).ok());
  // A channel with a certificate and no key says so on each call.
  StartServer(ServerTls(false, false));
  ChannelTlsOptions half = ClientTls(alice_);
  half.key_file.clear();
  auto reply = Who(NewChannel(half));
  ASSERT_FALSE(reply.ok());
  EXPECT_NE(reply.status().message().find("tls.cert_file and tls.key_file"), std::string::npos)
      << reply.status();
}

// Both engines: TLS records cross io_uring's and epoll's send and receive
// paths differently (an alert sent as the socket fails, above all).
INSTANTIATE_TEST_SUITE_P(Engines, ServerTlsTest,
                         ::testing::Values(net::IoBackendKind::kIoUring,
                                           net::IoBackendKind::kEpoll),
                         [](const auto& info) {
                           return info.param == net::IoBackendKind::kIoUring ? "io_uring" : "epoll";
                         });

}  // namespace
}  // namespace capstan::rpc
