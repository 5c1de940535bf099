// TLS on net::Socket: our client against our server over loopback, and the
// server against `openssl s_client` (a peer we did not write). Certificates
// come from a CA made for the test.
#include "net/tls.h"

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

#include <unistd.h>

#include <filesystem>
#include "gtest/gtest.h"
#include "net/http2.h"
#include "net/socket.h"
#include "net/test_certs.h"
#include "net/test_util.h"
#include "net/wait_group.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::RunToCompletion;
using testing::TestCa;
using testing::TestCert;

class TlsTest : public ::testing::TestWithParam<IoBackendKind> {
 public:
  static void SetUpTestSuite() {
    // Per process (no test is running yet, so not FreshTestDir).
    ca_ = new TestCa(std::filesystem::temp_directory_path() /
                     ("capstan_tls_ca_" + std::to_string(::getpid())));
    default_cert_ = new TestCert(ca_->Issue("default.test", {"DNS:default.test", "IP:127.0.0.1"}));
    b_cert_ = new TestCert(ca_->Issue("b.test", {"DNS:b.test"}));
    wild_cert_ = new TestCert(ca_->Issue("*.wild.test", {"DNS:*.wild.test"}));
  }
  static void TearDownTestSuite() {
    delete wild_cert_;
    delete b_cert_;
    delete default_cert_;
    delete ca_;
  }
  void SetUp() override {
    loop_ = testing::NewLoop(GetParam());
    if (!loop_) GTEST_SKIP() << IoBackendName(GetParam()) << " is not available here";
    TlsServerOptions server;
    server.certificates = {{b_cert_->cert_file, b_cert_->key_file, {"b.test"}},
                           {default_cert_->cert_file, default_cert_->key_file, {}},
                           {wild_cert_->cert_file, wild_cert_->key_file, {"*.wild.test"}}};
    server.alpn = {"h2", "http/1.1"};
    auto s = TlsContext::NewServer(server);
    ASSERT_TRUE(s.ok()) << s.status();
    server_tls_ = *s;
  }
  // (No default argument: GCC 12 cannot build a coroutine that evaluates
  // one made of string literals — "array used as initializer".)
  std::shared_ptr<TlsContext> Client() { return Client({"h2", "http/1.1"}); }
  std::shared_ptr<TlsContext> Http1Client() { return Client({"http/1.1"}); }
  std::shared_ptr<TlsContext> SpdyClient() { return Client({"spdy/3"}); }
  std::shared_ptr<TlsContext> Client(std::vector<std::string> alpn) {
    TlsClientOptions options;
    options.ca_file = ca_->ca_file();
    options.alpn = std::move(alpn);
    auto c = TlsContext::NewClient(options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : nullptr;
  }

  static TestCa* ca_;
  static TestCert* default_cert_;
  static TestCert* b_cert_;
  static TestCert* wild_cert_;
  std::unique_ptr<EventLoop> loop_;
  std::shared_ptr<TlsContext> server_tls_;
};
TestCa* TlsTest::ca_ = nullptr;
TestCert* TlsTest::default_cert_ = nullptr;
TestCert* TlsTest::b_cert_ = nullptr;
TestCert* TlsTest::wild_cert_ = nullptr;

// SNI sent -> the CN of the certificate that must answer it.
const std::vector<std::pair<std::string, std::string>> kSniCases = {{"x.wild.test", "*.wild.test"},
                                                                    {"127.0.0.1", "default.test"}};

struct Connected {
  std::shared_ptr<Socket> client, server;
};

// A TLS connection over loopback: the client sends SNI `server_name`.
Task<Connected> Connect(EventLoop* loop, std::shared_ptr<const TlsContext> server_tls,
                        std::shared_ptr<const TlsContext> client_tls, std::string server_name) {
  Connected c;
  auto listener = Listener::Bind(loop, "127.0.0.1", 0);
  EXPECT_TRUE(listener.ok());
  auto client = co_await Socket::Connect(loop, "127.0.0.1", (*listener)->port());
  EXPECT_TRUE(client.ok());
  auto server = co_await (*listener)->Accept();
  EXPECT_TRUE(server.ok());
  c.client = *client;
  c.server = *server;
  EXPECT_TRUE(c.server->StartTls(server_tls, TlsRole::kServer).ok());
  EXPECT_TRUE(c.client->StartTls(client_tls, TlsRole::kClient, server_name).ok());
  co_return c;
}

// Reads from `s` until `n` bytes are in its input or it fails.
Task<absl::Status> ReadAtLeast(Socket* s, size_t n) {
  while (s->input().size() < n) {
    absl::Status st = co_await s->ReadMore();
    if (!st.ok()) co_return st;
  }
  co_return absl::OkStatus();
}

TEST_P(TlsTest, BytesCrossBothWaysWithSniAlpnAndVerification) {
  RunToCompletion(*loop_, [](TlsTest* t, EventLoop* loop) -> Task<void> {
    Connected c = co_await Connect(loop, t->server_tls_, t->Client(), std::string("b.test"));
    // Writes before the handshake wait for it.
    std::string big(1 << 20, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    c.client->Write(std::string_view(big));
    absl::Status st = co_await ReadAtLeast(c.server.get(), big.size());
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_TRUE(c.server->input().ToString() == big);
    c.server->input().Clear();
    c.server->Write("pong");
    st = co_await ReadAtLeast(c.client.get(), 4);
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(c.client->input().ToString(), "pong");
    EXPECT_EQ(std::string(c.server->tls()->server_name()), "b.test");
    EXPECT_EQ(std::string(c.server->tls()->alpn()), "h2");
    EXPECT_EQ(std::string(c.client->tls()->alpn()), "h2");
    EXPECT_EQ(c.client->tls()->PeerCommonName(), "b.test");  // SNI chose b's certificate
    EXPECT_EQ(std::string(c.client->tls()->version()), "TLSv1.3");
    c.client->Close();
    c.server->Close();
  }(this, loop_.get()));
}

TEST_P(TlsTest, SniPicksWildcardAndDefaultCertificates) {
  RunToCompletion(*loop_, [](TlsTest* t, EventLoop* loop) -> Task<void> {
    for (const auto& [sni, cn] : kSniCases) {
      Connected c = co_await Connect(loop, t->server_tls_, t->Http1Client(), sni);
      c.client->Write("hi");
      absl::Status st = co_await ReadAtLeast(c.server.get(), 2);
      EXPECT_TRUE(st.ok()) << sni << ": " << st << " (client: " << c.client->error() << ")";
      EXPECT_EQ(c.client->tls()->PeerCommonName(), cn) << sni;
      EXPECT_EQ(std::string(c.server->tls()->alpn()), "http/1.1");
      c.client->Close();
      c.server->Close();
    }
  }(this, loop_.get()));
}

TEST_P(TlsTest, AWrongNameFailsVerificationWithAClearError) {
  RunToCompletion(*loop_, [](TlsTest* t, EventLoop* loop) -> Task<void> {
    // The server answers "evil.test" with its default certificate, which
    // does not name it.
    Connected c = co_await Connect(loop, t->server_tls_, t->Client(), std::string("evil.test"));
    c.client->Write("secret");
    absl::Status st = co_await ReadAtLeast(c.client.get(), 1);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("certificate verification failed"), std::string::npos) << st;
    // The server hears the alert and fails too; it never sees the bytes.
    absl::Status server_st = co_await ReadAtLeast(c.server.get(), 1);
    EXPECT_FALSE(server_st.ok());
    EXPECT_EQ(c.server->input().size(), 0u);
    c.client->Close();
    c.server->Close();
  }(this, loop_.get()));
}

TEST_P(TlsTest, NoCommonAlpnProtocolIsRefused) {
  RunToCompletion(*loop_, [](TlsTest* t, EventLoop* loop) -> Task<void> {
    Connected c = co_await Connect(loop, t->server_tls_, t->SpdyClient(), std::string("b.test"));
    c.client->Write("x");
    absl::Status st = co_await ReadAtLeast(c.client.get(), 1);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("tls handshake"), std::string::npos) << st;
    c.client->Close();
    c.server->Close();
  }(this, loop_.get()));
}

TEST_P(TlsTest, Http2RunsOverTls) {
  RunToCompletion(*loop_, [](TlsTest* t, EventLoop* loop) -> Task<void> {
    Connected c = co_await Connect(loop, t->server_tls_, t->Client(), std::string("b.test"));
    struct Hello : Http2Stream {
      void OnEndStream() override {
        HeaderField fields[] = {{":status", "200"}};
        SendHeaders(fields, false);
        Write(Buffer("hello over tls"));
        End();
      }
    };
    struct Server : Http2Session {
      using Http2Session::Http2Session;
      std::shared_ptr<Http2Stream> NewStream(int32_t) override { return std::make_shared<Hello>(); }
    };
    struct Response : Http2Stream {
      explicit Response(WaitGroup* done) : done_(done) {}
      void OnData(std::string_view b) override { body_.append(b); }
      void OnClose(uint32_t) override { done_->Done(); }
      WaitGroup* done_;
      std::string body_;
    };
    auto server = std::make_shared<Server>(Http2Session::Role::kServer, c.server, Http2Options{});
    auto client =
        std::make_shared<Http2Session>(Http2Session::Role::kClient, c.client, Http2Options{});
    EXPECT_TRUE(server->Start());
    EXPECT_TRUE(client->Start());
    WaitGroup running(loop);
    running.Add(2);
    auto drive = [](std::shared_ptr<Http2Session> s, WaitGroup* w) -> Task<void> {
      co_await s->Run();
      w->Done();
    };
    loop->StartOwned(drive(server, &running));
    loop->StartOwned(drive(client, &running));
    WaitGroup done(loop);
    done.Add();
    auto stream = std::make_shared<Response>(&done);
    HeaderField get[] = {
        {":method", "GET"}, {":scheme", "https"}, {":authority", "b.test"}, {":path", "/"}};
    EXPECT_TRUE(client->SubmitRequest(stream, get, true).ok());
    co_await done.Wait();
    EXPECT_EQ(stream->body_, "hello over tls");
    client->Close();
    server->Close();
    co_await running.Wait();
  }(this, loop_.get()));
}

// The server side against OpenSSL's own client: the handshake, ALPN and
// bytes as another implementation sees them.
TEST_P(TlsTest, OpensslClientTalksToTheServer) {
  RunToCompletion(*loop_, [](TlsTest* t, EventLoop* loop) -> Task<void> {
    auto listener = Listener::Bind(loop, "127.0.0.1", 0);
    EXPECT_TRUE(listener.ok());
    int port = (*listener)->port();
    std::string out_file = (ca_->dir() / "s_client.out").string();
    std::string command =
        absl::StrCat("echo ping | timeout 10 openssl s_client -connect 127.0.0.1:", port,
                     " -servername b.test -alpn h2 -verify_return_error -CAfile ", ca_->ca_file(),
                     " -ign_eof > ", out_file, " 2>&1");
    // s_client blocks: run it on a thread while the loop serves.
    std::atomic<bool> client_done{false};
    std::thread client([command, &client_done] {
      (void)std::system(command.c_str());
      client_done = true;
    });
    auto accepted = co_await (*listener)->Accept();
    EXPECT_TRUE(accepted.ok());
    std::shared_ptr<Socket> s = *accepted;
    EXPECT_TRUE(s->StartTls(t->server_tls_, TlsRole::kServer).ok());
    absl::Status st = co_await ReadAtLeast(s.get(), 5);
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(s->input().ToString(), "ping\n");
    s->Write("pong from capstan\n");
    // s_client prints what it got and exits when we close.
    auto drained = co_await s->Drained();
    (void)drained;
    s->Close();
    // The loop must keep turning while s_client ends: with io_uring the
    // close completes on the loop.
    auto give_up = EventLoop::Clock::now() + std::chrono::seconds(15);
    while (!client_done && EventLoop::Clock::now() < give_up) {
      co_await loop->Sleep(std::chrono::milliseconds(1));
    }
    client.join();
    FILE* f = std::fopen(out_file.c_str(), "r");
    std::string output;
    if (f != nullptr) {
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) output.append(buf, n);
      std::fclose(f);
    }
    EXPECT_NE(output.find("pong from capstan"), std::string::npos) << output;
    EXPECT_NE(output.find("ALPN protocol: h2"), std::string::npos) << output;
    EXPECT_NE(output.find("Verify return code: 0 (ok)"), std::string::npos) << output;
  }(this, loop_.get()));
}

// Handshakes with `server_tls` and returns the serial of the certificate the
// server presented ("" when the handshake failed).
Task<std::string> ServedSerial(EventLoop* loop, std::shared_ptr<const TlsContext> server_tls,
                               std::shared_ptr<const TlsContext> client_tls) {
  Connected c = co_await Connect(loop, std::move(server_tls), std::move(client_tls),
                                 std::string("127.0.0.1"));
  c.client->Write("x");
  absl::Status st = co_await ReadAtLeast(c.server.get(), 1);
  std::string serial = st.ok() ? c.client->tls()->PeerSerial() : "";
  c.client->Close();
  c.server->Close();
  co_return serial;
}

std::string RunSerial(EventLoop& loop, Task<std::string> task) {
  std::string out;
  RunToCompletion(loop, [](Task<std::string> t, std::string* out) -> Task<void> {
    std::string serial = co_await std::move(t);
    *out = serial;
  }(std::move(task), &out));
  return out;
}

TEST_P(TlsTest, ReloaderServesReplacedCertificatesAndKeepsTheOldOnBadFiles) {
  std::filesystem::path dir = ca_->dir() / (std::string("reload-") + IoBackendName(GetParam()));
  std::filesystem::create_directories(dir);
  std::string cert = (dir / "server.pem").string(), key = (dir / "server.key").string();
  TestCert first =
      ca_->Issue("first.test", {"IP:127.0.0.1"}, std::string("first-") + IoBackendName(GetParam()));
  TestCert second = ca_->Issue("second.test", {"IP:127.0.0.1"},
                               std::string("second-") + IoBackendName(GetParam()));
  std::filesystem::copy_file(first.cert_file, cert);
  std::filesystem::copy_file(first.key_file, key);
  TlsServerOptions options;
  options.certificates = {{cert, key, {}}};
  options.alpn = {"h2"};
  // A zero interval: every Current() looks at the files, so the test needs
  // no waiting.
  auto reloader = TlsReloader::Create(options, std::chrono::milliseconds(0));
  ASSERT_TRUE(reloader.ok()) << reloader.status();
  TlsContextSource source = (*reloader)->Source();
  auto client = Client({"h2"});

  std::string serial1 = RunSerial(*loop_, ServedSerial(loop_.get(), source(), client));
  ASSERT_FALSE(serial1.empty());
  EXPECT_EQ(RunSerial(*loop_, ServedSerial(loop_.get(), source(), client)), serial1);
  EXPECT_EQ((*reloader)->reloads(), 0u);

  // Half-replaced (the new certificate, the old key): the old pair serves.
  std::filesystem::copy_file(second.cert_file, cert + ".tmp");
  std::filesystem::rename(cert + ".tmp", cert);
  EXPECT_EQ(RunSerial(*loop_, ServedSerial(loop_.get(), source(), client)), serial1);
  EXPECT_EQ((*reloader)->reloads(), 0u);

  // The key arrives: the next connection gets the new certificate.
  std::filesystem::copy_file(second.key_file, key + ".tmp");
  std::filesystem::rename(key + ".tmp", key);
  std::string serial2 = RunSerial(*loop_, ServedSerial(loop_.get(), source(), client));
  EXPECT_FALSE(serial2.empty());
  EXPECT_NE(serial2, serial1);
  EXPECT_EQ((*reloader)->reloads(), 1u);
}

TEST_P(TlsTest, SelfSignedCertificateServesAndVerifiesAgainstItself) {
  std::filesystem::path dir = ca_->dir() / (std::string("self-") + IoBackendName(GetParam()));
  std::filesystem::create_directories(dir);
  SelfSignedOptions self;
  self.cert_file = (dir / "cert.pem").string();
  self.key_file = (dir / "key.pem").string();
  self.hosts = {"127.0.0.1", "localhost"};
  ASSERT_TRUE(WriteSelfSignedCertificate(self).ok());
  EXPECT_EQ(std::filesystem::status(self.key_file).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  TlsServerOptions server;
  server.certificates = {{self.cert_file, self.key_file, {}}};
  auto server_tls = TlsContext::NewServer(server);
  ASSERT_TRUE(server_tls.ok()) << server_tls.status();
  TlsClientOptions trusting;
  trusting.ca_file = self.cert_file;  // trusts exactly this certificate
  auto client = TlsContext::NewClient(trusting);
  ASSERT_TRUE(client.ok()) << client.status();
  std::string serial = RunSerial(*loop_, ServedSerial(loop_.get(), *server_tls, *client));
  EXPECT_FALSE(serial.empty());
  // A second one is another certificate (a new key and serial).
  SelfSignedOptions other = self;
  other.cert_file = (dir / "cert2.pem").string();
  other.key_file = (dir / "key2.pem").string();
  ASSERT_TRUE(WriteSelfSignedCertificate(other).ok());
  server.certificates = {{other.cert_file, other.key_file, {}}};
  auto other_tls = TlsContext::NewServer(server);
  ASSERT_TRUE(other_tls.ok());
  EXPECT_EQ(RunSerial(*loop_, ServedSerial(loop_.get(), *other_tls, *client)), "")
      << "a client trusting the first certificate must refuse the second";
}

INSTANTIATE_TEST_SUITE_P(Engines, TlsTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

}  // namespace
}  // namespace capstan::net
