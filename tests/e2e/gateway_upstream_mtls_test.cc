// The gateway as a TLS client with a certificate of its own: a cluster's
// tls_cert_file/tls_key_file reach an HTTPS origin that requires a client
// certificate (tests/e2e/gateway_mtls_origin.py, Python's ssl, which
// answers with the CN it verified); without them the origin refuses the
// handshake and the gateway answers 502. A real `capstan gateway`, driven
// by curl; the CA and certificates are made by the test (openssl).
#include <fstream>

#include "gateway_harness.h"
#include "net/test_certs.h"

namespace capstan::e2e {
namespace {

TEST(GatewayUpstreamMtlsE2E, ClusterClientCertificateReachesAnOriginThatRequiresOne) {
  TempDir dir("gw_up_mtls");
  net::testing::TestCa ca(std::string(dir.path()) + "/ca");
  net::testing::TestCert origin_cert = ca.Issue("origin.test", {"DNS:origin.test"});
  net::testing::TestCert client_cert = ca.Issue("gateway-client", {"DNS:gateway.test"});
  net::testing::TestCa other_ca(std::string(dir.path()) + "/other-ca");
  net::testing::TestCert stranger = other_ca.Issue("stranger", {"DNS:stranger.test"});

  Process origin({"python3", CAPSTAN_SOURCE_DIR "/tests/e2e/gateway_mtls_origin.py",
                  origin_cert.cert_file, origin_cert.key_file, ca.ca_file()},
                 dir.path() + "/origin.log");
  int origin_port = 0;
  ASSERT_TRUE(Eventually([&] {
    std::smatch m;
    std::string log = origin.Log();
    if (!std::regex_search(log, m, std::regex("port ([0-9]+)"))) return false;
    origin_port = std::stoi(m[1]);
    return true;
  })) << origin.Log();

  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  // `client` is extra cluster options: the client certificate, or none.
  auto write = [&](const std::string& client) {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "clusters: [{name: o, endpoints: [\"127.0.0.1:" << origin_port << "\"], tls: true, "
        << "tls_ca_file: " << ca.ca_file() << ", tls_server_name: origin.test" << client << "}]\n"
        << "virtual_hosts: [{name: all, routes: [{cluster: o}]}]\n";
  };
  write(", tls_cert_file: " + client_cert.cert_file + ", tls_key_file: " + client_cert.key_file);
  {
    GatewayProcess gw(dir, {"--config", config});
    CommandResult r = Curl({"--http1.1", gw.url("/")});
    // The origin verified the gateway's certificate and names it.
    EXPECT_EQ(r.out, "client cn=gateway-client") << r.err << gw.process()->Log();
  }
  // No client certificate: the origin refuses the handshake; 502.
  write("");
  {
    TempDir gw_dir("gw_up_mtls_none");
    GatewayProcess gw(gw_dir, {"--config", config});
    CommandResult r = Curl({"--http1.1", "-o", "/dev/null", "-w", "%{http_code}", gw.url("/")});
    EXPECT_EQ(r.out, "502");
  }
  // A certificate from a CA the origin does not trust: refused too.
  write(", tls_cert_file: " + stranger.cert_file + ", tls_key_file: " + stranger.key_file);
  {
    TempDir gw_dir("gw_up_mtls_stranger");
    GatewayProcess gw(gw_dir, {"--config", config});
    CommandResult r = Curl({"--http1.1", "-o", "/dev/null", "-w", "%{http_code}", gw.url("/")});
    EXPECT_EQ(r.out, "502");
  }
  // A key that is not the certificate's: the gateway refuses to start,
  // naming the files.
  write(", tls_cert_file: " + client_cert.cert_file + ", tls_key_file: " + stranger.key_file);
  CommandResult bad = RunCommand({CapstanBinary(), "gateway", "--config", config});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE((bad.out + bad.err).find("does not match"), std::string::npos) << bad.out << bad.err;
}

}  // namespace
}  // namespace capstan::e2e
