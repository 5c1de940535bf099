// capstan gateway as a black box: a real `capstan gateway` process in front
// of Python origins (tests/e2e/gateway_upstream.py), driven by curl and by
// raw sockets for what curl will not send.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gateway_harness.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "net/test_certs.h"

namespace capstan::e2e {
namespace {

TEST(GatewayE2E, QuickStartProxiesWithForwardingHeadersAndKeepsConnectionsAlive) {
  TempDir dir("gw_quick");
  Origin origin(dir, "a");
  GatewayProcess gw(dir, {"--upstream", origin.url()});
  // Two requests on one client connection (curl reuses it), through one
  // pooled upstream connection.
  CommandResult r =
      Curl({"--http1.1", "-H", "Host: shop.example", gw.url("/echo?x=1"), gw.url("/echo?x=2")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"path\": \"/echo?x=1\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"path\": \"/echo?x=2\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[\"x-forwarded-for\", \"127.0.0.1\"]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[\"x-forwarded-proto\", \"http\"]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[\"x-forwarded-host\", \"shop.example\"]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"x-request-id\""), std::string::npos) << r.out;
  // The second request came over the first one's upstream connection.
  EXPECT_NE(r.out.find("\"connection_requests\": 2"), std::string::npos) << r.out;
}

TEST(GatewayE2E, BodiesPassWholeBothWays) {
  TempDir dir("gw_bodies");
  Origin origin(dir, "a");
  GatewayProcess gw(dir, {"--upstream", origin.url()});
  std::string file = dir.path() + "/upload.bin";
  {
    std::ofstream out(file, std::ios::binary);
    for (int i = 0; i < 3 << 20; ++i) out.put(static_cast<char>((i * 13) % 256));
  }
  std::string sha = RunCommand({"sh", "-c", "sha256sum " + file + " | cut -d' ' -f1"}).out;
  sha.erase(sha.find_last_not_of("\n") + 1);
  // Content-Length upload.
  CommandResult r = Curl({"--http1.1", "--data-binary", "@" + file, gw.url("/echo")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"body_length\": 3145728"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(sha), std::string::npos) << r.out;
  // Chunked upload (curl streams it).
  r = Curl({"--http1.1", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + file,
            gw.url("/echo")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(sha), std::string::npos) << r.out;
  // A large response and a chunked one.
  r = Curl({"--http1.1", "-o", dir.path() + "/big.bin", "-w", "%{size_download}",
            gw.url("/big?bytes=5000000")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "5000000");
  r = Curl({"--http1.1", "-i", gw.url("/chunked?n=3")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("chunk 0\nchunk 1\nchunk 2\n"), std::string::npos) << r.out;
  // HEAD has no body.
  r = Curl({"--http1.1", "-I", gw.url("/big?bytes=100")});
  EXPECT_NE(r.out.find("Content-Length: 100"), std::string::npos) << r.out;
}

TEST(GatewayE2E, AmbiguousFramingIsRefusedAndNeverForwarded) {
  TempDir dir("gw_smuggle");
  Origin origin(dir, "a");
  GatewayProcess gw(dir, {"--upstream", origin.url()});
  const std::string smuggled = "GET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
  std::vector<std::string> attacks = {
      // CL.TE
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(5 + smuggled.size()) +
          "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
      // TE.TE with an obfuscated second coding
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n"
      "0\r\n\r\n" +
          smuggled,
      // differing Content-Length
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: " +
          std::to_string(smuggled.size()) + "\r\n\r\n" + smuggled,
      // obs-fold
      "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
      // space before colon
      "GET /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
      // two Host fields
      "GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
  };
  for (const std::string& attack : attacks) {
    std::string answer = RawExchange(gw.port(), attack);
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 400 ")) << attack << "\n---\n" << answer;
    EXPECT_NE(answer.find("connection: close"), std::string::npos) << answer;
  }
  // An unknown version gets 505.
  EXPECT_TRUE(
      RawExchange(gw.port(), "GET / HTTP/2.7\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 505 "));
  // The origin never saw the smuggled path (asked directly, after a request
  // that went through the gateway last).
  CommandResult r = Curl({"--http1.1", gw.url("/echo/after")});
  EXPECT_NE(r.out.find("/echo/after"), std::string::npos) << r.out;
  EXPECT_EQ(origin.Requests().find("smuggled"), std::string::npos) << origin.Requests();
}

TEST(GatewayE2E, UpstreamFailuresGiveTheRightStatus) {
  TempDir dir("gw_faults");
  Origin origin(dir, "a");
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  int dead = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: 127.0.0.1:" << port << "}]\n"
        << "clusters:\n"
        << "  - {name: live, endpoints: [127.0.0.1:" << origin.port() << "]}\n"
        << "  - {name: dead, endpoints: [127.0.0.1:" << dead << "], connect_timeout: 500ms}\n"
        << "virtual_hosts:\n"
        << "  - name: all\n"
        << "    routes:\n"
        << "      - {match: {prefix: /dead}, cluster: dead}\n"
        << "      - {match: {prefix: /slow}, cluster: live, timeout: 300ms}\n"
        << "      - {match: {prefix: /drip}, cluster: live, timeout: 30s, idle_timeout: 300ms}\n"
        << "      - {match: {path: /hello}, direct_response: {status: 200, body: hi}}\n"
        << "      - {match: {prefix: /old/}, redirect: {prefix_rewrite: /new/, status: 308}}\n"
        << "      - {match: {prefix: /}, cluster: live}\n";
  }
  CommandResult valid = RunCommand({CapstanBinary(), "gateway", "--config", config, "--validate"});
  ASSERT_EQ(valid.exit_code, 0) << valid.out << valid.err;
  GatewayProcess gw(dir, {"--config", config});
  auto status = [&](const std::string& path) {
    return Curl({"--http1.1", "-o", "/dev/null", "-w", "%{http_code}", gw.url(path)}).out;
  };
  EXPECT_EQ(status("/dead"), "502");
  EXPECT_EQ(status("/slow?ms=3000"), "504");
  // A response that stops mid-body for longer than the route's idle
  // timeout is cut (its head was sent: the client sees the short body).
  CommandResult drip = Curl({"--http1.1", "-o", "/dev/null", gw.url("/drip?bytes=100000")});
  EXPECT_EQ(drip.exit_code, 18) << drip.err;  // curl: transfer closed with data remaining
  EXPECT_EQ(status("/hello"), "200");
  CommandResult redirect = Curl({"--http1.1", "-i", gw.url("/old/page?q=1")});
  EXPECT_NE(redirect.out.find("HTTP/1.1 308"), std::string::npos) << redirect.out;
  EXPECT_NE(redirect.out.find("location: http://127.0.0.1/new/page?q=1"), std::string::npos)
      << redirect.out;
  EXPECT_EQ(status("/status?code=503"), "503");  // the origin's own 503 passes through
  // An upstream that dies mid-response: the client sees the cut, nothing hangs.
  CommandResult cut = Curl({"--http1.1", "-o", "/dev/null", gw.url("/cut")});
  EXPECT_NE(cut.exit_code, 0);
  EXPECT_NE(cut.exit_code, -1) << "curl hung";
  // The gateway still serves.
  EXPECT_EQ(status("/echo"), "200");
  origin.Kill();
  EXPECT_EQ(status("/echo"), "502");
}

// A cluster's connection limits: at max_connections a request waits for a
// busy connection (max_pending_requests of them at most), and the one past
// that is answered 503 at once with the limit's name.
TEST(GatewayE2E, ClusterOverflowWaitsThenAnswers503NamingTheLimit) {
  TempDir dir("gw_overflow");
  Origin origin(dir, "a");
  int port = PickFreePort();
  std::string config = dir.path() + "/gateway.yaml";
  std::ofstream(config) << "listeners: [{address: 127.0.0.1:" << port << "}]\n"
                        << "clusters:\n"
                        << "  - name: tight\n"
                        << "    endpoints: [127.0.0.1:" << origin.port() << "]\n"
                        << "    connect_timeout: 5s\n"
                        << "    limits: {max_connections: 1, max_pending_requests: 1}\n"
                        << "virtual_hosts:\n"
                        << "  - {name: all, routes: [{match: {prefix: /}, cluster: tight}]}\n";
  // One loop: the limits are per loop.
  GatewayProcess gw(dir, {"--config", config, "--threads", "1"});
  // Three at once, each held 300 ms by the origin: the first has the one
  // connection, the second waits for it (pending, up to connect_timeout:
  // here 5 s), the third overflows.
  CommandResult r =
      Curl({"--parallel", "--parallel-immediate", "--parallel-max", "3", "-o", "/dev/null", "-o",
            "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %header{x-capstan-overflow}\n",
            gw.url("/slow?ms=300"), gw.url("/slow?ms=300"), gw.url("/slow?ms=300")});
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
    lines.emplace_back(absl::StripTrailingAsciiWhitespace(line));
  }
  std::sort(lines.begin(), lines.end());
  ASSERT_EQ(lines.size(), 3u) << r.out << r.err;
  EXPECT_EQ(lines[0], "200") << r.out;
  EXPECT_EQ(lines[1], "200") << r.out;
  EXPECT_EQ(lines[2], "503 max_pending_requests") << r.out;
  // The origin saw two requests on one connection.
  EXPECT_EQ(CountOf(origin.Requests(), "/slow"), 2u);
}

TEST(GatewayE2E, BadConfigurationIsRefusedWithItsLine) {
  TempDir dir("gw_bad");
  std::string config = dir.path() + "/bad.yaml";
  {
    std::ofstream out(config);
    out << "clusters:\n  - name: a\n    endpoints: [127.0.0.1:1]\n    balancr: p2c\n";
  }
  CommandResult r = RunCommand({CapstanBinary(), "gateway", "--config", config, "--validate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad.yaml:4: clusters[0].balancr: unknown option"), std::string::npos)
      << r.err;
}

TEST(GatewayE2E, SigtermDrainsAndExits) {
  TempDir dir("gw_drain");
  Origin origin(dir, "a");
  GatewayProcess gw(dir, {"--upstream", origin.url()});
  // A request in flight when SIGTERM arrives still completes.
  std::thread slow([&] {
    CommandResult r = Curl({"--http1.1", gw.url("/slow?ms=700")});
    EXPECT_EQ(r.out, "slow") << r.err;
  });
  ASSERT_TRUE(Eventually([&] {
    return RunCommand({"sh", "-c",
                       "ss -tn state established '( dport = :" + std::to_string(origin.port()) +
                           " )' | tail -n +2 | wc -l"})
               .out != "0\n";
  }));
  gw.process()->Signal(SIGTERM);
  slow.join();
  EXPECT_GE(gw.process()->Wait(std::chrono::seconds(20)), 0);
}

TEST(GatewayE2E, Http2PriorKnowledgeStreamsBodiesAndLoad) {
  TempDir dir("gw_h2");
  Origin origin(dir, "a");
  GatewayProcess gw(dir, {"--upstream", origin.url()});
  // Prior knowledge, one stream.
  CommandResult r =
      Curl({"--http2-prior-knowledge", "-sS", "-w", "\n%{http_version}", gw.url("/echo?h2=1")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"path\": \"/echo?h2=1\""), std::string::npos) << r.out;
  EXPECT_TRUE(r.out.ends_with("\n2")) << r.out;
  // A request body over HTTP/2 arrives whole.
  std::string file = dir.path() + "/body.bin";
  {
    std::ofstream out(file, std::ios::binary);
    for (int i = 0; i < 2 << 20; ++i) out.put(static_cast<char>((i * 31) % 256));
  }
  std::string sha = RunCommand({"sh", "-c", "sha256sum " + file + " | cut -d' ' -f1"}).out;
  sha.erase(sha.find_last_not_of("\n") + 1);
  r = Curl({"--http2-prior-knowledge", "--data-binary", "@" + file, gw.url("/echo")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(sha), std::string::npos) << r.out;
  // Many streams on one connection (nghttp), a large response among them.
  r = RunCommand({"nghttp", "-n", "-s", "-m", "20", gw.url("/big?bytes=300000")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // h2load: every request answered 2xx.
  r = RunCommand({"h2load", "-n", "400", "-c", "2", "-m", "10", gw.url("/echo")});
  EXPECT_NE(r.out.find("400 succeeded, 0 failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("status codes: 400 2xx"), std::string::npos) << r.out;
}

TEST(GatewayE2E, EtcdctlWorksThroughTheGatewayToAStore) {
  TempDir dir("gw_etcd");
  StoreProcess store(StoreProcess::Kind::kCapstan, dir.path() + "/store");
  ASSERT_TRUE(store.Start()) << store.Log();
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "clusters: [{name: store, endpoints: [\"" << store.endpoint()
        << "\"], protocol: h2}]\n"
        // Watch streams live long: no route timeout.
        << "virtual_hosts: [{name: all, routes: [{cluster: store, timeout: 0s}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  std::string endpoint = "127.0.0.1:" + std::to_string(gw.port());
  CommandResult r = Etcdctl(endpoint, {"put", "greeting", "hello"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Etcdctl(endpoint, {"get", "greeting", "--print-value-only"});
  EXPECT_EQ(r.out, "hello\n") << r.err;
  // A watch stream through the gateway sees a put made directly on the store.
  std::unique_ptr<Process> watch = std::make_unique<Process>(
      std::vector<std::string>{"etcdctl", "--endpoints=" + endpoint, "watch", "w"},
      dir.path() + "/watch.log", std::map<std::string, std::string>{{"ETCDCTL_API", "3"}});
  bool seen = Eventually([&] {
    Etcdctl(store.endpoint(), {"put", "w", "through-the-gateway"});
    return watch->Log().find("through-the-gateway") != std::string::npos;
  });
  EXPECT_TRUE(seen) << watch->Log();
  // A gRPC error status passes through as trailers.
  r = Etcdctl(endpoint, {"lease", "keep-alive", "--once", "12345"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("requested lease not found"), std::string::npos) << r.err;
}

TEST(GatewayE2E, HttpsWithSniAndAlpnServesBothProtocols) {
  TempDir dir("gw_tls");
  net::testing::TestCa ca(std::string(dir.path()) + "/ca");
  net::testing::TestCert cert = ca.Issue("shop.test", {"DNS:shop.test"});
  Origin origin(dir, "a");
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners:\n  - address: \"127.0.0.1:" << port << "\"\n"
        << "    tls: {certificates: [{cert: " << cert.cert_file << ", key: " << cert.key_file
        << "}]}\n"
        << "clusters: [{name: o, endpoints: [\"127.0.0.1:" << origin.port() << "\"]}]\n"
        << "virtual_hosts: [{name: all, routes: [{cluster: o}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  std::string url = "https://shop.test:" + std::to_string(gw.port()) + "/echo";
  std::string resolve = "shop.test:" + std::to_string(gw.port()) + ":127.0.0.1";
  for (std::string version : {"--http1.1", "--http2"}) {
    CommandResult r = Curl(
        {version, "--cacert", ca.ca_file(), "--resolve", resolve, "-w", "\n%{http_version}", url});
    ASSERT_EQ(r.exit_code, 0) << version << ": " << r.err;
    EXPECT_NE(r.out.find("[\"x-forwarded-proto\", \"https\"]"), std::string::npos) << r.out;
    EXPECT_TRUE(r.out.ends_with(version == "--http2" ? "\n2" : "\n1.1")) << r.out;
  }
  // A client that does not trust the CA is refused by its own check.
  CommandResult untrusted = Curl({"--resolve", resolve, url});
  EXPECT_EQ(untrusted.exit_code, 60) << untrusted.err;  // peer certificate cannot be authenticated
}

TEST(GatewayE2E, RoutesAndClustersFollowTheStoreLive) {
  TempDir dir("gw_live");
  Origin a(dir, "a");
  Origin b(dir, "b");
  StoreProcess store(StoreProcess::Kind::kCapstan, dir.path() + "/store");
  ASSERT_TRUE(store.Start()) << store.Log();
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "store: store://" << store.endpoint() << "\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  auto server = [&](const std::string& path) {
    CommandResult r = Curl({"--http1.1", "-sS", gw.url(path)});
    std::smatch m;
    if (std::regex_search(r.out, m, std::regex("\"server\": \"([a-z]+)\""))) return m[1].str();
    return r.out;
  };
  EXPECT_EQ(server("/echo"), "no route\n");
  // A cluster and a route arrive by etcdctl; the gateway follows.
  ASSERT_EQ(Etcdctl(store.endpoint(), {"put", "/capstan/gateway/clusters/web",
                                       "{\"name\": \"web\", \"endpoints\": [\"127.0.0.1:" +
                                           std::to_string(a.port()) + "\"]}"})
                .exit_code,
            0);
  ASSERT_EQ(
      Etcdctl(store.endpoint(), {"put", "/capstan/gateway/routes/site",
                                 "{\"name\": \"site\", \"routes\": [{\"cluster\": \"web\"}]}"})
          .exit_code,
      0);
  EXPECT_TRUE(Eventually([&] { return server("/echo") == "a"; })) << server("/echo");
  // A change of the cluster moves traffic.
  Etcdctl(store.endpoint(),
          {"put", "/capstan/gateway/clusters/web",
           "{\"name\": \"web\", \"endpoints\": [\"127.0.0.1:" + std::to_string(b.port()) + "\"]}"});
  EXPECT_TRUE(Eventually([&] { return server("/echo") == "b"; })) << server("/echo");
  // A bad document is refused, named in the log; the last good one stays.
  Etcdctl(store.endpoint(), {"put", "/capstan/gateway/clusters/web", "{\"name\": \"web\"}"});
  EXPECT_TRUE(Eventually([&] {
    return gw.process()->Log().find("key=/capstan/gateway/clusters/web") != std::string::npos;
  })) << gw.process()->Log();
  EXPECT_EQ(server("/echo"), "b");
  // The store going away leaves the gateway serving what it has.
  store.Kill();
  EXPECT_EQ(server("/echo"), "b");
}

TEST(GatewayE2E, MetricsStatusAndAccessLog) {
  TempDir dir("gw_obs");
  Origin origin(dir, "a");
  std::string config = dir.path() + "/gateway.yaml";
  std::string log = dir.path() + "/access.log";
  int port = PickFreePort();
  int admin = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "admin: 127.0.0.1:" << admin << "\n"
        << "access_log: {path: " << log << "}\n"
        << "clusters: [{name: web, endpoints: [\"127.0.0.1:" << origin.port() << "\"]}]\n"
        << "virtual_hosts: [{name: site, routes: [{name: api, match: {prefix: /echo}, cluster: "
           "web},"
        << " {name: other, direct_response: {status: 404, body: none}}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  for (int i = 0; i < 3; ++i) Curl({"--http1.1", gw.url("/echo?i=" + std::to_string(i))});
  Curl({"--http2-prior-knowledge", gw.url("/nothing")});
  std::string admin_url = "http://127.0.0.1:" + std::to_string(admin);
  CommandResult metrics = Curl({admin_url + "/metrics"});
  EXPECT_NE(metrics.out.find("capstan_gateway_requests_total{route=\"site/api\",code=\"2xx\"} 3"),
            std::string::npos)
      << metrics.out;
  EXPECT_NE(metrics.out.find("capstan_gateway_requests_total{route=\"site/other\",code=\"4xx\"} 1"),
            std::string::npos)
      << metrics.out;
  EXPECT_NE(metrics.out.find("capstan_gateway_upstream_requests_total{cluster=\"web\"} 3"),
            std::string::npos)
      << metrics.out;
  EXPECT_NE(
      metrics.out.find("capstan_gateway_request_duration_seconds_count{route=\"site/api\"} 3"),
      std::string::npos)
      << metrics.out;
  CommandResult status = Curl({admin_url + "/status"});
  EXPECT_NE(status.out.find("\"endpoint\": \"127.0.0.1:" + std::to_string(origin.port()) +
                            "\", \"weight\": 1, \"breaker\": \"closed\""),
            std::string::npos)
      << status.out;
  EXPECT_EQ(Curl({admin_url + "/health"}).out, "ok\n");
  // The access log: one JSON line per request, written off the loops.
  ASSERT_TRUE(Eventually([&] {
    std::ifstream in(log);
    int lines = 0;
    std::string line;
    while (std::getline(in, line)) ++lines;
    return lines == 4;
  }));
  std::ifstream in(log);
  std::string first;
  std::getline(in, first);
  EXPECT_NE(first.find("\"method\": \"GET\""), std::string::npos) << first;
  EXPECT_NE(first.find("\"status\": 200"), std::string::npos) << first;
  EXPECT_NE(first.find("\"route\": \"site/api\""), std::string::npos) << first;
  EXPECT_NE(first.find("\"upstream\": \"127.0.0.1:"), std::string::npos) << first;
  EXPECT_NE(first.find("\"request_id\": \""), std::string::npos) << first;
}

// Reads one response with a Content-Length body from a blocking socket.
std::string ReadOneResponse(int fd) {
  std::string in;
  char buf[4096];
  size_t head_end;
  while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return in;
    in.append(buf, static_cast<size_t>(n));
  }
  static const std::regex kLength("content-length: ([0-9]+)", std::regex::icase);
  std::smatch m;
  std::string head = in.substr(0, head_end);
  size_t length = std::regex_search(head, m, kLength) ? std::stoul(m[1]) : 0;
  while (in.size() < head_end + 4 + length) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  return in;
}

TEST(GatewayE2E, IdleConnectionsAreParkedAndComeBackOnTheirNextRequest) {
  TempDir dir("gw_park");
  Origin origin(dir, "a");
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  int admin = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port
        << "\", limits: {idle_park_after: 50ms, idle_timeout: 30s}},\n"
        << "            {name: short, address: \"127.0.0.1:0\",\n"
        << "             limits: {idle_park_after: 50ms, idle_timeout: 500ms}}]\n"
        << "admin: 127.0.0.1:" << admin << "\n"
        << "clusters: [{name: web, endpoints: [\"127.0.0.1:" << origin.port() << "\"]}]\n"
        << "virtual_hosts: [{name: site, routes: [{match: {prefix: /echo}, cluster: web}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config, "--threads", "1"});
  std::string admin_url = "http://127.0.0.1:" + std::to_string(admin);
  auto gauge = [&](const std::string& name) {
    std::string metrics = Curl({admin_url + "/metrics"}).out;
    std::smatch m;
    if (!std::regex_search(metrics, m, std::regex("\n" + name + " ([0-9]+)"))) return -1;
    return std::stoi(m[1]);
  };
  int fd = ConnectLoopback(port);
  ASSERT_GE(fd, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  auto ask = [&](int n) {
    std::string request = "GET /echo?n=" + std::to_string(n) + " HTTP/1.1\r\nHost: site\r\n\r\n";
    (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    return ReadOneResponse(fd);
  };
  std::string first = ask(1);
  EXPECT_NE(first.find("HTTP/1.1 200"), std::string::npos) << first;
  // Idle past idle_park_after: the gateway keeps the connection as a bare
  // fd, still open and counted.
  ASSERT_TRUE(Eventually([&] { return gauge("capstan_gateway_parked_connections") == 1; }));
  EXPECT_EQ(gauge("capstan_gateway_downstream_connections"), 1);
  // The next request on the same connection brings it back and is answered
  // whole; then it parks again.
  std::string second = ask(2);
  EXPECT_NE(second.find("HTTP/1.1 200"), std::string::npos) << second;
  EXPECT_NE(second.find("\"path\": \"/echo?n=2\""), std::string::npos) << second;
  ASSERT_TRUE(Eventually([&] { return gauge("capstan_gateway_parked_connections") == 1; }));
  // Pipelined requests arriving while parked: both answered, in order.
  std::string two =
      "GET /echo?n=3 HTTP/1.1\r\nHost: site\r\n\r\n"
      "GET /echo?n=4 HTTP/1.1\r\nHost: site\r\n\r\n";
  (void)!send(fd, two.data(), two.size(), MSG_NOSIGNAL);
  std::string third = ReadOneResponse(fd);
  std::string fourth = ReadOneResponse(fd);
  EXPECT_NE(third.find("\"path\": \"/echo?n=3\""), std::string::npos) << third;
  EXPECT_NE(fourth.find("\"path\": \"/echo?n=4\""), std::string::npos) << fourth;
  ASSERT_TRUE(Eventually([&] { return gauge("capstan_gateway_parked_connections") == 1; }));
  // The client leaving while parked: the gateway lets go of it.
  close(fd);
  ASSERT_TRUE(Eventually([&] { return gauge("capstan_gateway_downstream_connections") == 0; }));
  EXPECT_EQ(gauge("capstan_gateway_parked_connections"), 0);

  // The idle timeout still holds for a parked connection: the second
  // listener's (500ms) closes it, and the client sees the end.
  std::smatch m;
  std::string log = gw.process()->Log();
  std::string::const_iterator from = log.cbegin();
  std::vector<int> ports;
  static const std::regex kListening("listening on port ([0-9]+)");
  while (std::regex_search(from, log.cend(), m, kListening)) {
    ports.push_back(std::stoi(m[1]));
    from = m.suffix().first;
  }
  ASSERT_EQ(ports.size(), 2u) << log;
  fd = ConnectLoopback(ports[1]);
  ASSERT_GE(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_NE(ask(5).find("HTTP/1.1 200"), std::string::npos);
  char byte;
  EXPECT_EQ(read(fd, &byte, 1), 0);  // closed by the gateway, not timed out (-1)
  close(fd);
  ASSERT_TRUE(Eventually([&] { return gauge("capstan_gateway_downstream_connections") == 0; }));
  EXPECT_EQ(gauge("capstan_gateway_parked_connections"), 0);
}

TEST(GatewayE2E, WebSocketUpgradeBecomesATunnel) {
  TempDir dir("gw_ws");
  Origin origin(dir, "a");
  GatewayProcess gw(dir, {"--upstream", origin.url()});
  // A WebSocket client (RFC 6455 handshake and masked frames) in Python.
  std::string client = R"PY(
import base64, os, socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk: sys.exit("closed during the handshake: %r" % head)
    head += chunk
print(head.split(b"\r\n")[0].decode())
for text in ["one", "two", "x" * 300]:
    data, mask = text.encode(), os.urandom(4)
    n = len(data)
    hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
    h = s.recv(2, socket.MSG_WAITALL)
    n = h[1] & 0x7f
    if n == 126: n = struct.unpack(">H", s.recv(2, socket.MSG_WAITALL))[0]
    print(s.recv(n, socket.MSG_WAITALL).decode()[:40])
s.sendall(b"\x88\x80" + os.urandom(4))
)PY";
  CommandResult r = RunCommand({"python3", "-c", client, std::to_string(gw.port())});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out,
            "HTTP/1.1 101 Switching Protocols\na:one\na:two\na:" + std::string(38, 'x') + "\n")
      << r.err;
}

TEST(GatewayE2E, FailingHealthChecksTakeAnEndpointOutOfRotation) {
  TempDir dir("gw_health");
  Origin good(dir, "good");
  Origin sick(dir, "sick");
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  int admin = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "admin: 127.0.0.1:" << admin << "\n"
        << "clusters:\n  - name: web\n    endpoints: [\"127.0.0.1:" << good.port()
        << "\", \"127.0.0.1:" << sick.port() << "\"]\n"
        << "    health_check: {path: /health, interval: 100ms, timeout: 1s, "
           "unhealthy_threshold: 2, healthy_threshold: 1}\n"
        << "virtual_hosts: [{name: all, routes: [{cluster: web}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  std::string admin_url = "http://127.0.0.1:" + std::to_string(admin) + "/status";
  // The checker marks the sick endpoint unhealthy...
  ASSERT_TRUE(Eventually([&] {
    return Curl({admin_url})
               .out.find("\"127.0.0.1:" + std::to_string(sick.port()) +
                         "\", \"weight\": 1, \"breaker\": \"closed\", \"healthy\": "
                         "false") != std::string::npos;
  })) << Curl({admin_url}).out;
  // ... and from then on every request goes to the good one (round robin
  // would otherwise alternate).
  for (int i = 0; i < 10; ++i) {
    CommandResult r = Curl({"--http1.1", gw.url("/echo")});
    EXPECT_NE(r.out.find("\"server\": \"good\""), std::string::npos) << i << ": " << r.out;
  }
}

TEST(GatewayE2E, TlsToUpstreamsIsVerified) {
  TempDir dir("gw_up_tls");
  net::testing::TestCa ca(std::string(dir.path()) + "/ca");
  net::testing::TestCert cert = ca.Issue("origin.test", {"DNS:origin.test"});
  // The origin: another gateway answering over TLS by itself.
  std::string origin_config = dir.path() + "/origin.yaml";
  int origin_port = PickFreePort();
  {
    std::ofstream out(origin_config);
    out << "listeners:\n  - address: \"127.0.0.1:" << origin_port << "\"\n"
        << "    tls: {certificates: [{cert: " << cert.cert_file << ", key: " << cert.key_file
        << "}]}\n"
        << "virtual_hosts: [{name: all, routes: [{direct_response: {status: 200, body: "
           "\"secret origin\"}}]}]\n";
  }
  TempDir origin_dir("gw_up_tls_origin");
  GatewayProcess origin(origin_dir, {"--config", origin_config});
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  auto write = [&](const std::string& server_name) {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "clusters: [{name: o, endpoints: [\"127.0.0.1:" << origin_port << "\"], tls: true, "
        << "tls_ca_file: " << ca.ca_file() << ", tls_server_name: " << server_name << "}]\n"
        << "virtual_hosts: [{name: all, routes: [{cluster: o}]}]\n";
  };
  write("origin.test");
  {
    GatewayProcess gw(dir, {"--config", config});
    CommandResult r = Curl({"--http1.1", gw.url("/")});
    EXPECT_EQ(r.out, "secret origin") << r.err;
  }
  // A name the certificate does not carry: refused (502), never sent.
  write("impostor.test");
  TempDir dir2("gw_up_tls_bad");
  GatewayProcess gw(dir2, {"--config", config});
  CommandResult r = Curl({"--http1.1", "-o", "/dev/null", "-w", "%{http_code}", gw.url("/")});
  EXPECT_EQ(r.out, "502");
}

// A certificate's serial number (openssl's "serial=..." line): it tells two
// certificates for one name apart.
std::string SerialOf(const std::string& cert_file) {
  return RunCommand({"openssl", "x509", "-noout", "-serial", "-in", cert_file}).out;
}

// The serial of the certificate a TLS listener on `port` serves for `name`.
std::string ServedSerial(int port, const std::string& name) {
  return RunCommand({"sh", "-c",
                     "echo | openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                         " -servername " + name + " 2>/dev/null | openssl x509 -noout -serial"})
      .out;
}

TEST(GatewayE2E, SighupReloadsCertificatesWithoutARestart) {
  TempDir dir("gw_cert_reload");
  net::testing::TestCa ca(std::string(dir.path()) + "/ca");
  net::testing::TestCert first = ca.Issue("shop.test", {"DNS:shop.test"}, "first");
  net::testing::TestCert second = ca.Issue("shop.test", {"DNS:shop.test"}, "second");
  std::string cert = dir.path() + "/live.pem", key = dir.path() + "/live.key";
  auto install = [&](const net::testing::TestCert& c) {
    ASSERT_EQ(RunCommand({"cp", c.cert_file, cert}).exit_code, 0);
    ASSERT_EQ(RunCommand({"cp", c.key_file, key}).exit_code, 0);
  };
  install(first);
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners:\n  - address: \"127.0.0.1:" << port << "\"\n"
        << "    tls: {certificates: [{cert: " << cert << ", key: " << key << "}]}\n"
        << "virtual_hosts: [{name: all, routes: [{direct_response: {status: 200, body: ok}}]}]\n"
        << "certificate_check_interval: 0\n";  // the signal alone
  }
  GatewayProcess gw(dir, {"--config", config});
  auto served_serial = [&] { return ServedSerial(gw.port(), "shop.test"); };
  EXPECT_EQ(served_serial(), SerialOf(first.cert_file));
  install(second);
  gw.process()->Signal(SIGHUP);
  EXPECT_TRUE(Eventually([&] { return served_serial() == SerialOf(second.cert_file); }))
      << served_serial();
}

// Renewed certificate files are picked up without a signal: the gateway
// looks at them every certificate_check_interval. A half-written renewal
// (the certificate before its key) is refused and the old pair kept.
TEST(GatewayE2E, ChangedCertificateFilesAreServedWithoutASignal) {
  TempDir dir("gw_cert_watch");
  net::testing::TestCa ca(std::string(dir.path()) + "/ca");
  net::testing::TestCert first = ca.Issue("shop.test", {"DNS:shop.test"}, "first");
  net::testing::TestCert second = ca.Issue("shop.test", {"DNS:shop.test"}, "second");
  std::string cert = dir.path() + "/live.pem", key = dir.path() + "/live.key";
  ASSERT_EQ(RunCommand({"cp", first.cert_file, cert}).exit_code, 0);
  ASSERT_EQ(RunCommand({"cp", first.key_file, key}).exit_code, 0);
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  std::ofstream(config) << "listeners:\n  - address: \"127.0.0.1:" << port << "\"\n"
                        << "    tls: {certificates: [{cert: " << cert << ", key: " << key << "}]}\n"
                        << "virtual_hosts: [{name: all, routes: [{direct_response: "
                        << "{status: 200, body: ok}}]}]\n"
                        << "certificate_check_interval: 100ms\n";
  GatewayProcess gw(dir, {"--config", config});
  auto served_serial = [&] { return ServedSerial(gw.port(), "shop.test"); };
  EXPECT_EQ(served_serial(), SerialOf(first.cert_file));
  // The new certificate alone: it does not match the key, so the reload is
  // refused and the first pair still served.
  ASSERT_EQ(RunCommand({"cp", second.cert_file, cert}).exit_code, 0);
  EXPECT_TRUE(Eventually([&] {
    return gw.process()->Log().find("certificate reload refused") != std::string::npos;
  })) << gw.process()->Log();
  EXPECT_EQ(served_serial(), SerialOf(first.cert_file));
  // Then its key: the renewal is complete and served.
  ASSERT_EQ(RunCommand({"cp", second.key_file, key}).exit_code, 0);
  EXPECT_TRUE(Eventually([&] { return served_serial() == SerialOf(second.cert_file); }))
      << served_serial();
}

// Maglev on a cookie: one session's requests go to one endpoint, and
// different sessions spread over the endpoints.
TEST(GatewayE2E, MaglevOnACookieKeepsASessionOnOneEndpoint) {
  TempDir dir("gw_maglev_cookie");
  Origin a(dir, "a");
  Origin b(dir, "b");
  Origin c(dir, "c");
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  std::ofstream(config) << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
                        << "clusters: [{name: web, balancer: maglev, hash_on: \"cookie:session\", "
                        << "endpoints: [" << a.address() << ", " << b.address() << ", "
                        << c.address() << "]}]\n"
                        << "virtual_hosts: [{name: all, routes: [{match: {prefix: /}, "
                        << "cluster: web}]}]\n";
  GatewayProcess gw(dir, {"--config", config});
  auto server_for = [&](const std::string& cookie) {
    std::string out =
        Curl({"--http1.1", "-H", "Cookie: theme=dark; session=" + cookie, gw.url("/echo")}).out;
    std::smatch m;
    return std::regex_search(out, m, std::regex("\"server\": \"([a-z]+)\"")) ? m[1].str() : out;
  };
  std::set<std::string> servers;
  for (int session = 0; session < 12; ++session) {
    std::string key = "user-" + std::to_string(session);
    std::string first = server_for(key);
    for (int again = 0; again < 3; ++again) EXPECT_EQ(server_for(key), first) << key;
    servers.insert(first);
  }
  // 12 sessions over 3 endpoints: all on one would be (1/3)^11.
  EXPECT_GE(servers.size(), 2u);
}

TEST(GatewayE2E, RetriesOnGatewayErrorsGoToAnotherEndpoint) {
  TempDir dir("gw_retry_status");
  Origin good(dir, "good");
  Origin sick(dir, "sick");
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "clusters: [{name: web, endpoints: [\"127.0.0.1:" << good.port()
        << "\", \"127.0.0.1:" << sick.port() << "\"], outlier_detection: false}]\n"
        << "virtual_hosts: [{name: all, routes: [\n"
        << "  {match: {prefix: /retried}, prefix_rewrite: /flaky, cluster: web,"
        << "   retry: {on: [gateway-error], attempts: 2}},\n"
        << "  {match: {prefix: /per-try}, prefix_rewrite: /stall, cluster: web, timeout: 3s,"
        << "   retry: {on: [gateway-error], attempts: 2, per_try_timeout: 300ms}},\n"
        << "  {match: {prefix: /plain}, prefix_rewrite: /flaky, cluster: web}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  auto code = [&](const std::string& path) {
    return Curl({"--http1.1", "-o", "/dev/null", "-w", "%{http_code}", gw.url(path)}).out;
  };
  // Without the policy, round robin hands the sick origin's 503s through.
  int plain_503 = 0;
  for (int i = 0; i < 8; ++i) plain_503 += code("/plain") == "503";
  EXPECT_GT(plain_503, 0);
  // With it, a 503 is retried on the other endpoint: every answer is 200.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(code("/retried"), "200") << i;
  // An attempt that does not answer within per_try_timeout is retried as a
  // 504 would be: the stalled origin never holds a request to the route's
  // whole timeout.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(code("/per-try"), "200") << i;
}

// h2c upgrade (RFC 7540 §3.2), as curl --http2 asks for it on http://: a
// request without a body switches the connection to HTTP/2 and is answered
// as its stream 1; one with a body is answered over HTTP/1.1. Either way
// the Upgrade is this hop's business and never reaches the origin (it
// could otherwise answer 101 to a request it did not get).
TEST(GatewayE2E, H2cUpgradeSwitchesToHttp2AndIsNotForwarded) {
  TempDir dir("gw_h2c_upgrade");
  Origin origin(dir, "a");
  GatewayProcess gw(dir, {"--upstream", origin.url()});
  CommandResult r = Curl({"--http2", "-w", "\n%{http_version}", gw.url("/echo?via=upgrade")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.ends_with("\n2")) << r.out;
  EXPECT_NE(r.out.find("/echo?via=upgrade"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"upgrade\""), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("http2-settings"), std::string::npos) << r.out;
  // Two requests on one connection: the upgraded stream 1, then stream 3
  // over the same HTTP/2 connection.
  CommandResult two = Curl({"--http2", "-w", "%{http_version} %{num_connects}\n", "-o", "/dev/null",
                            gw.url("/echo/1"), "-o", "/dev/null", gw.url("/echo/2")});
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(two.out, "2 1\n2 0\n") << two.out;
  // With a body: answered over HTTP/1.1, the body whole at the origin.
  CommandResult post =
      Curl({"--http2", "-d", "hello-body", "-w", "\n%{http_version}", gw.url("/echo")});
  ASSERT_EQ(post.exit_code, 0) << post.err;
  EXPECT_TRUE(post.out.ends_with("\n1.1")) << post.out;
  EXPECT_NE(post.out.find("\"body_length\": 10,"), std::string::npos) << post.out;
  EXPECT_EQ(post.out.find("http2-settings"), std::string::npos) << post.out;
  // A bad HTTP2-Settings value closes the connection after the 101.
  std::string bad =
      RawExchange(gw.port(),
                  "GET /echo/bad-settings HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
                  "HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: !!!\r\n\r\n");
  EXPECT_TRUE(bad.starts_with("HTTP/1.1 101")) << bad;
  EXPECT_EQ(CountOf(origin.Requests(), "/echo/bad-settings"), 0u);
}

}  // namespace
}  // namespace capstan::e2e
