// A Capstan RPC service (examples/echo, a real `echo_example serve` process)
// with TLS on its port and client certificates required: Python's grpcio
// over TLS (tests/e2e/rpc_grpc_tls_client.py: mTLS calls of three shapes,
// the client's verified CN as the handler saw it, refusals) and Capstan's
// own client (`echo_example call --tls-...`, a BalancedChannel) on the same
// port. The CA and certificates are made by the test (openssl).
#include <regex>

#include "gtest/gtest.h"
#include "harness.h"
#include "net/test_certs.h"

namespace capstan::e2e {
namespace {

using namespace std::chrono_literals;
using net::testing::TestCa;
using net::testing::TestCert;

class RpcTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("capstan-rpc-tls");
    ca_ = std::make_unique<TestCa>(dir_->path() + "/ca");
    other_ca_ = std::make_unique<TestCa>(dir_->path() + "/other-ca");
    server_cert_ = ca_->Issue("rpc.test", {"DNS:rpc.test", "IP:127.0.0.1"});
    alice_ = ca_->Issue("alice", {"DNS:alice.test"});
    server_ = std::make_unique<Process>(
        std::vector<std::string>{
            ECHO_EXAMPLE_PATH, "serve", "--listen", "127.0.0.1:0", "--instance", "a", "--threads",
            "2", "--tls-cert-file", server_cert_.cert_file, "--tls-key-file", server_cert_.key_file,
            "--tls-client-ca-file", ca_->ca_file(), "--tls-require-client-cert"},
        dir_->path() + "/server.log");
    static const std::regex kListening("listening 127\\.0\\.0\\.1:(\\d+)");
    std::smatch m;
    ASSERT_TRUE(Eventually(
        [&] {
          std::string log = server_->Log();
          if (!std::regex_search(log, m, kListening)) return false;
          port_ = std::stoi(m[1]);
          return true;
        },
        20s))
        << server_->Log();
  }
  void TearDown() override { server_.reset(); }  // SIGKILL if still running

  CommandResult Call(std::vector<std::string> tls_flags) {
    std::vector<std::string> argv = {
        ECHO_EXAMPLE_PATH, "call", "--target",     absl::StrCat("static:///127.0.0.1:", port_),
        "--count",         "3",    "--timeout-ms", "5000"};
    argv.insert(argv.end(), tls_flags.begin(), tls_flags.end());
    return RunCommand(argv, "", 60s);
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<TestCa> ca_;
  std::unique_ptr<TestCa> other_ca_;
  TestCert server_cert_;
  TestCert alice_;
  std::unique_ptr<Process> server_;
  int port_ = 0;
};

TEST_F(RpcTlsTest, PythonGrpcioOverMutualTls) {
  if (RunCommand({"/usr/bin/python3", "-c", "import grpc"}).exit_code != 0) {
    GTEST_SKIP() << "python3-grpcio is not installed (scripts/install-deps.sh installs it)";
  }
  TempDir work("capstan-rpc-tls-py");
  CommandResult r =
      RunCommand({"/usr/bin/python3", CAPSTAN_SOURCE_DIR "/tests/e2e/rpc_grpc_tls_client.py",
                  std::to_string(port_), ca_->ca_file(), alice_.cert_file, alice_.key_file,
                  other_ca_->ca_file(), "rpc.test", CAPSTAN_SOURCE_DIR, work.path()},
                 "", 120s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << server_->Log();
  // Every check ran (a script that stopped early would pass nothing).
  EXPECT_NE(r.out.find("ok test_unary_sees_the_client_certificate"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ok test_clear_text_refused"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
}

TEST_F(RpcTlsTest, CapstanClientOverMutualTls) {
  CommandResult ok = Call({"--tls-ca-file", ca_->ca_file(), "--tls-cert-file", alice_.cert_file,
                           "--tls-key-file", alice_.key_file});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err << server_->Log();
  EXPECT_NE(ok.out.find("calls=3 failed=0"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("peer=alice"), std::string::npos) << ok.out;
  // No client certificate: refused, and the error says TLS.
  CommandResult anonymous = Call({"--tls-ca-file", ca_->ca_file()});
  EXPECT_EQ(anonymous.exit_code, 1) << anonymous.out << anonymous.err;
  EXPECT_NE(anonymous.out.find("calls=3 failed=3"), std::string::npos) << anonymous.out;
  EXPECT_NE(anonymous.out.find("TLS"), std::string::npos) << anonymous.out;
  // A server its CA did not sign: the handshake fails on the client.
  CommandResult untrusted = Call({"--tls-ca-file", other_ca_->ca_file(), "--tls-cert-file",
                                  alice_.cert_file, "--tls-key-file", alice_.key_file});
  EXPECT_EQ(untrusted.exit_code, 1) << untrusted.out << untrusted.err;
  EXPECT_NE(untrusted.out.find("certificate verification failed"), std::string::npos)
      << untrusted.out;
}

}  // namespace
}  // namespace capstan::e2e
