// The gateway's L4 (TCP) proxy as a black box: a real `capstan gateway`
// with `tcp_listeners:` in front of Python TCP origins
// (tests/e2e/gateway_tcp_origin.py: a greeting line naming the origin, then
// an echo; "EOF NAME" after the client's end of sending), driven by raw
// sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gateway_harness.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

std::string TcpOriginScript() {
  return std::string(CAPSTAN_SOURCE_DIR) + "/tests/e2e/gateway_tcp_origin.py";
}

// A Python TCP origin (see the script's docstring).
class TcpOrigin {
 public:
  TcpOrigin(const TempDir& dir, const std::string& name, bool shut_first = false) {
    std::vector<std::string> argv = {"python3", TcpOriginScript(), name};
    if (shut_first) argv.push_back("--shut-first");
    process_ = std::make_unique<Process>(argv, dir.path() + "/" + name + ".log");
    bool up = Eventually([&] {
      std::smatch m;
      std::string log = process_->Log();
      static const std::regex kPort("port ([0-9]+)");
      if (!std::regex_search(log, m, kPort)) return false;
      port_ = std::stoi(m[1]);
      return true;
    });
    EXPECT_TRUE(up) << process_->Log();
  }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  Process* process() { return process_.get(); }

 private:
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

// A client connection with every read bounded (5 s without a byte).
class Client {
 public:
  explicit Client(int port) : fd_(ConnectLoopback(port)) {
    timeval tv{5, 0};
    if (fd_ >= 0) setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  int fd() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

  bool Send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  void ShutWrite() { shutdown(fd_, SHUT_WR); }
  // Up to and including '\n'; what came before an end or a timeout else.
  std::string ReadLine() {
    std::string line;
    char c;
    while (read(fd_, &c, 1) == 1) {
      line.push_back(c);
      if (c == '\n') break;
    }
    return line;
  }
  std::string ReadExactly(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = read(fd_, out.data() + got, n - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
    return out;
  }
  // Everything until the peer's end (or a 5 s silence: `ended` false then).
  std::string ReadToEnd(bool* ended = nullptr) {
    std::string out;
    char buf[65536];
    ssize_t n;
    while ((n = read(fd_, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    if (ended != nullptr) *ended = n == 0 || (n < 0 && errno == ECONNRESET);
    return out;
  }
  int local_port() const {
    sockaddr_in a{};
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  }

 private:
  int fd_;
};

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

struct L4Setup {
  std::vector<std::string> endpoints;
  std::string balancer = "round_robin";
  std::string listener_extra;  // more fields of the tcp listener, YAML flow style
  std::string cluster_extra;   // more fields of cluster "c", YAML flow style
};

// A gateway config: one HTTP listener (the harness waits for it), an admin
// endpoint, and one tcp listener on `tcp_port` to cluster "c", forwarding
// with `splice` (on, off) .
std::string L4Config(int tcp_port, int admin_port, const std::string& splice, const L4Setup& s) {
  std::string endpoints;
  for (const auto& e : s.endpoints) endpoints += (endpoints.empty() ? "" : ", ") + e;
  return "listeners: [{address: 127.0.0.1:0}]\n"
         "admin: 127.0.0.1:" +
         std::to_string(admin_port) +
         "\n"
         "clusters:\n"
         "  - {name: c, balancer: " +
         s.balancer + ", endpoints: [" + endpoints + "]" +
         (s.cluster_extra.empty() ? "" : ", " + s.cluster_extra) +
         "}\n"
         "tcp_listeners:\n"
         "  - {name: t, address: 127.0.0.1:" +
         std::to_string(tcp_port) + ", cluster: c, splice: " + splice +
         (s.listener_extra.empty() ? "" : ", " + s.listener_extra) + "}\n";
}

class L4Gateway {
 public:
  L4Gateway(const TempDir& dir, std::string splice, const L4Setup& setup)
      : dir_(dir), splice_(std::move(splice)) {
    tcp_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    config_ = dir.path() + "/gateway.yaml";
    Write(setup);
    gw_ = std::make_unique<GatewayProcess>(dir, std::vector<std::string>{"--config", config_});
  }
  void Write(const L4Setup& setup) {
    std::ofstream(config_) << L4Config(tcp_port_, admin_port_, splice_, setup);
  }
  // Rewrites the file and asks for a reload; waits until the log says so.
  bool Reload(const L4Setup& setup) {
    size_t before = CountOf(gw_->process()->Log(), "configuration reloaded");
    Write(setup);
    gw_->process()->Signal(SIGHUP);
    return Eventually(
        [&] { return CountOf(gw_->process()->Log(), "configuration reloaded") > before; });
  }
  int port() const { return tcp_port_; }
  std::string Metrics() const { return HttpCall(admin_port_, "GET", "/metrics").body; }
  GatewayProcess& process() { return *gw_; }

 private:
  const TempDir& dir_;
  std::string splice_;
  int tcp_port_ = 0;
  int admin_port_ = 0;
  std::string config_;
  std::unique_ptr<GatewayProcess> gw_;
};

// Every test runs on each data path: `splice: off` (the loop's buffers),
// `splice: on` (splice(2) through pipes, l4_splice.h) and `splice: auto`
// (the buffers for the first 64 KiB, then the hand-over to splice in the
// middle of the stream: l4_relay.h).
class GatewayL4E2E : public ::testing::TestWithParam<std::string> {};

// The value of a metric line that starts with `series` (0 when absent).
double MetricValue(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return 0;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST_P(GatewayL4E2E, ForwardsMegabytesBothWaysAndPassesTheClientsHalfClose) {
  TempDir dir("gw_l4_bytes");
  TcpOrigin origin(dir, "a");
  L4Gateway gw(dir, GetParam(), {.endpoints = {origin.address()}});
  Client c(gw.port());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.ReadLine(), "ORIGIN a\n");
  // 4 MiB out while reading the echo (a sender thread: neither side may
  // wait for the other's buffers), then our end of sending: the origin
  // sees EOF and still answers, and we get that answer.
  std::string data = RandomBytes(4 << 20, 7);
  std::thread sender([&] {
    c.Send(data);
    c.ShutWrite();
  });
  bool ended = false;
  std::string back = c.ReadToEnd(&ended);
  sender.join();
  EXPECT_TRUE(ended);
  ASSERT_EQ(back.size(), data.size() + std::string("EOF a\n").size());
  EXPECT_TRUE(back.compare(0, data.size(), data) == 0) << "echo differs";
  EXPECT_EQ(back.substr(data.size()), "EOF a\n");
  std::string m = gw.Metrics();
  EXPECT_GE(MetricValue(m, "capstan_gateway_tcp_bytes_total{listener=\"t\",direction=\"in\"}"),
            static_cast<double>(data.size()));
  EXPECT_GE(MetricValue(m, "capstan_gateway_tcp_connections_total{listener=\"t\"}"), 1);
}

// Which path carried the bytes shows in the counters: with splice on or
// auto (past 64 KiB), the connection went through the splice relay (and
// did not fall back); with it off, never. 24 MiB each way against a reader taking 4 KiB at a time,
// so the pipes and socket buffers fill and drain many times.
TEST_P(GatewayL4E2E, MovesALargeTransferToASlowReaderOnTheConfiguredPath) {
  TempDir dir("gw_l4_slow_reader");
  TcpOrigin origin(dir, "a");
  L4Gateway gw(dir, GetParam(), {.endpoints = {origin.address()}});
  {
    Client c(gw.port());
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c.ReadLine(), "ORIGIN a\n");
    std::string data = RandomBytes(24 << 20, 11);
    std::thread sender([&] {
      c.Send(data);
      c.ShutWrite();
    });
    std::string back;
    char buf[4096];
    ssize_t n;
    while ((n = read(c.fd(), buf, sizeof(buf))) > 0) back.append(buf, static_cast<size_t>(n));
    sender.join();
    size_t same = 0;
    while (same < back.size() && same < data.size() && back[same] == data[same]) ++same;
    ASSERT_EQ(back.size(), data.size() + std::string("EOF a\n").size())
        << "first difference at " << same << ", ends with "
        << back.substr(back.size() >= 6 ? back.size() - 6 : 0)
        << "\norigin: " << origin.process()->Log()
        << "\ngateway: " << gw.process().process()->Log();
    EXPECT_TRUE(back.compare(0, data.size(), data) == 0) << "echo differs";
    EXPECT_EQ(back.substr(data.size()), "EOF a\n");
  }
  const std::string spliced = "capstan_gateway_tcp_spliced_total{listener=\"t\"}";
  const std::string fallbacks = "capstan_gateway_tcp_splice_fallbacks_total{listener=\"t\"}";
  if (GetParam() != "off") {
    // Counted when the connection ends (the gateway sees both FINs).
    std::string m;
    EXPECT_TRUE(Eventually([&] {
      m = gw.Metrics();
      return MetricValue(m, spliced) >= 1;
    })) << m;
    EXPECT_EQ(MetricValue(m, fallbacks), 0);
  } else {
    std::string m = gw.Metrics();
    EXPECT_EQ(MetricValue(m, spliced), 0);
    EXPECT_EQ(MetricValue(m, fallbacks), 0);
  }
  std::string m = gw.Metrics();
  EXPECT_GE(MetricValue(m, "capstan_gateway_tcp_bytes_total{listener=\"t\",direction=\"in\"}"),
            static_cast<double>(24 << 20));
  EXPECT_GE(MetricValue(m, "capstan_gateway_tcp_bytes_total{listener=\"t\",direction=\"out\"}"),
            static_cast<double>(24 << 20));
}

TEST_P(GatewayL4E2E, PassesTheUpstreamsHalfCloseAndKeepsForwardingTheClientsBytes) {
  TempDir dir("gw_l4_upstream_half");
  TcpOrigin origin(dir, "a", /*shut_first=*/true);
  L4Gateway gw(dir, GetParam(), {.endpoints = {origin.address()}});
  Client c(gw.port());
  ASSERT_TRUE(c.ok());
  // The origin's greeting, then its end of sending...
  bool ended = false;
  EXPECT_EQ(c.ReadToEnd(&ended), "ORIGIN a\n");
  EXPECT_TRUE(ended);
  // ...while our side still sends, and all of it arrives.
  std::string data = RandomBytes(1 << 20, 3);
  ASSERT_TRUE(c.Send(data));
  c.ShutWrite();
  EXPECT_TRUE(Eventually([&] {
    return origin.process()->Log().find("received 1048576 bytes") != std::string::npos;
  })) << origin.process()->Log();
}

TEST_P(GatewayL4E2E, RetriesAFailedConnectOnAnotherEndpoint) {
  TempDir dir("gw_l4_retry");
  TcpOrigin origin(dir, "a");
  int dead = PickFreePort();  // nothing listens there
  L4Gateway gw(dir, GetParam(),
               {.endpoints = {"127.0.0.1:" + std::to_string(dead), origin.address()},
                .listener_extra = "connect_attempts: 2"});
  // Round robin sends some connections to the dead endpoint first: each
  // still reaches the origin.
  for (int i = 0; i < 6; ++i) {
    Client c(gw.port());
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c.ReadLine(), "ORIGIN a\n") << "connection " << i;
  }
  EXPECT_GE(MetricValue(gw.Metrics(), "capstan_gateway_tcp_connect_failures_total{listener=\"t\"}"),
            1);
}

TEST_P(GatewayL4E2E, TcpHealthChecksMarkAnEndpointThatRefusesConnections) {
  TempDir dir("gw_l4_health");
  TcpOrigin origin(dir, "a");
  int dead = PickFreePort();  // nothing listens there
  int tcp_port = PickFreePort();
  int admin_port = PickFreePort();
  std::string config = dir.path() + "/gateway.yaml";
  std::ofstream(config) << "listeners: [{address: 127.0.0.1:0}]\n"
                        << "admin: 127.0.0.1:" << admin_port << "\n"
                        << "clusters:\n  - {name: c, endpoints: [127.0.0.1:" << dead << ", "
                        << origin.address() << "],\n"
                        << "     health_check: {type: tcp, interval: 100ms, timeout: 500ms, "
                           "unhealthy_threshold: 1, healthy_threshold: 1}}\n"
                        << "tcp_listeners: [{address: 127.0.0.1:" << tcp_port
                        << ", cluster: c, splice: " << GetParam() << "}]\n";
  GatewayProcess gw(dir, {"--config", config});
  std::regex dead_unhealthy("\"endpoint\": \"127\\.0\\.0\\.1:" + std::to_string(dead) +
                            "\"[^}]*\"healthy\": false");
  std::regex origin_healthy("\"endpoint\": \"127\\.0\\.0\\.1:" + std::to_string(origin.port()) +
                            "\"[^}]*\"healthy\": true");
  std::string status;
  EXPECT_TRUE(Eventually([&] {
    status = HttpCall(admin_port, "GET", "/status").body;
    return std::regex_search(status, dead_unhealthy);
  })) << status;
  EXPECT_TRUE(std::regex_search(status, origin_healthy)) << status;
  // Connections go to the healthy endpoint only.
  for (int i = 0; i < 4; ++i) {
    Client c(tcp_port);
    EXPECT_EQ(c.ReadLine(), "ORIGIN a\n");
  }
}

TEST_P(GatewayL4E2E, ClosesAnIdleConnection) {
  TempDir dir("gw_l4_idle");
  TcpOrigin origin(dir, "a");
  L4Gateway gw(dir, GetParam(),
               {.endpoints = {origin.address()}, .listener_extra = "idle_timeout: 300ms"});
  Client c(gw.port());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.ReadLine(), "ORIGIN a\n");
  bool ended = false;
  EXPECT_EQ(c.ReadToEnd(&ended), "");  // nothing more, then the gateway's close
  EXPECT_TRUE(ended);
  EXPECT_GE(MetricValue(gw.Metrics(),
                        "capstan_gateway_tcp_closed_total{listener=\"t\",reason=\"idle_timeout\"}"),
            1);
}

TEST_P(GatewayL4E2E, RefusesConnectionsPastTheListenersLimit) {
  TempDir dir("gw_l4_limit");
  TcpOrigin origin(dir, "a");
  L4Gateway gw(dir, GetParam(),
               {.endpoints = {origin.address()}, .listener_extra = "max_connections: 2"});
  auto first = std::make_unique<Client>(gw.port());
  Client second(gw.port());
  EXPECT_EQ(first->ReadLine(), "ORIGIN a\n");
  EXPECT_EQ(second.ReadLine(), "ORIGIN a\n");
  {
    Client third(gw.port());  // accepted by the kernel, closed by the gateway
    bool ended = false;
    EXPECT_EQ(third.ReadToEnd(&ended), "");
    EXPECT_TRUE(ended);
  }
  EXPECT_GE(MetricValue(gw.Metrics(), "capstan_gateway_tcp_refused_total{listener=\"t\"}"), 1);
  // One goes: there is room again.
  first.reset();
  EXPECT_TRUE(Eventually([&] {
    Client again(gw.port());
    return again.ReadLine() == "ORIGIN a\n";
  }));
}

TEST_P(GatewayL4E2E, RefusesConnectionsPastTheClustersLimit) {
  TempDir dir("gw_l4_cluster_limit");
  TcpOrigin origin(dir, "a");
  L4Gateway gw(dir, GetParam(),
               {.endpoints = {origin.address()}, .cluster_extra = "limits: {max_connections: 1}"});
  auto first = std::make_unique<Client>(gw.port());
  EXPECT_EQ(first->ReadLine(), "ORIGIN a\n");
  {
    Client second(gw.port());  // the listener has room, the cluster has not
    bool ended = false;
    EXPECT_EQ(second.ReadToEnd(&ended), "");
    EXPECT_TRUE(ended);
  }
  EXPECT_GE(MetricValue(gw.Metrics(),
                        "capstan_gateway_tcp_closed_total{listener=\"t\",reason="
                        "\"cluster_max_connections\"}"),
            1);
  EXPECT_EQ(MetricValue(gw.Metrics(), "capstan_gateway_tcp_refused_total{listener=\"t\"}"), 0);
  // The first connection still works, and when it goes there is room again.
  ASSERT_TRUE(first->Send("ping\n"));
  EXPECT_EQ(first->ReadLine(), "ping\n");
  first.reset();
  EXPECT_TRUE(Eventually([&] {
    Client again(gw.port());
    return again.ReadLine() == "ORIGIN a\n";
  }));
}

TEST_P(GatewayL4E2E, SendsProxyProtocolV1) {
  TempDir dir("gw_l4_ppv1");
  TcpOrigin origin(dir, "a");
  L4Gateway gw(dir, GetParam(),
               {.endpoints = {origin.address()}, .listener_extra = "proxy_protocol: v1"});
  Client c(gw.port());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.ReadLine(), "ORIGIN a\n");
  // The origin echoes what it received first: the header.
  EXPECT_EQ(c.ReadLine(), "PROXY TCP4 127.0.0.1 127.0.0.1 " + std::to_string(c.local_port()) + " " +
                              std::to_string(gw.port()) + "\r\n");
  ASSERT_TRUE(c.Send("hello"));
  EXPECT_EQ(c.ReadExactly(5), "hello");
}

TEST_P(GatewayL4E2E, SendsProxyProtocolV2) {
  TempDir dir("gw_l4_ppv2");
  TcpOrigin origin(dir, "a");
  L4Gateway gw(dir, GetParam(),
               {.endpoints = {origin.address()}, .listener_extra = "proxy_protocol: v2"});
  Client c(gw.port());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.ReadLine(), "ORIGIN a\n");
  std::string header = c.ReadExactly(28);
  ASSERT_EQ(header.size(), 28u);
  EXPECT_EQ(header.substr(0, 12), std::string("\r\n\r\n\0\r\nQUIT\n", 12));
  EXPECT_EQ(header.substr(12, 4), std::string("\x21\x11\x00\x0c", 4));
  EXPECT_EQ(header.substr(16, 8), std::string("\x7f\x00\x00\x01\x7f\x00\x00\x01", 8));
  int source_port = (static_cast<uint8_t>(header[24]) << 8) | static_cast<uint8_t>(header[25]);
  int destination_port = (static_cast<uint8_t>(header[26]) << 8) | static_cast<uint8_t>(header[27]);
  EXPECT_EQ(source_port, c.local_port());
  EXPECT_EQ(destination_port, gw.port());
}

TEST_P(GatewayL4E2E, MaglevKeepsOneClientAddressOnOneEndpoint) {
  TempDir dir("gw_l4_maglev");
  TcpOrigin a(dir, "a");
  TcpOrigin b(dir, "b");
  L4Gateway gw(dir, GetParam(), {.endpoints = {a.address(), b.address()}, .balancer = "maglev"});
  std::set<std::string> seen;
  for (int i = 0; i < 10; ++i) {
    Client c(gw.port());
    ASSERT_TRUE(c.ok());
    seen.insert(c.ReadLine());
  }
  // Every connection comes from 127.0.0.1 (on both loops): one endpoint.
  EXPECT_EQ(seen.size(), 1u);
}

TEST_P(GatewayL4E2E, EstablishedConnectionsSurviveAnEndpointSetChange) {
  TempDir dir("gw_l4_tracking");
  TcpOrigin a(dir, "a");
  TcpOrigin b(dir, "b");
  L4Gateway gw(dir, GetParam(), {.endpoints = {a.address(), b.address()}});
  std::vector<std::unique_ptr<Client>> on_a, on_b;
  for (int i = 0; i < 20; ++i) {
    auto c = std::make_unique<Client>(gw.port());
    ASSERT_TRUE(c->ok());
    std::string who = c->ReadLine();
    if (who == "ORIGIN a\n") {
      on_a.push_back(std::move(c));
    } else {
      ASSERT_EQ(who, "ORIGIN b\n");
      on_b.push_back(std::move(c));
    }
  }
  ASSERT_FALSE(on_a.empty());
  ASSERT_FALSE(on_b.empty());
  // b leaves the cluster (file reload).
  ASSERT_TRUE(gw.Reload({.endpoints = {a.address()}})) << gw.process().process()->Log();
  // Connections to b end...
  for (auto& c : on_b) {
    bool ended = false;
    EXPECT_EQ(c->ReadToEnd(&ended), "");
    EXPECT_TRUE(ended);
  }
  // ...those to a go on, both ways.
  for (size_t i = 0; i < on_a.size(); ++i) {
    std::string ping = "ping " + std::to_string(i) + "\n";
    ASSERT_TRUE(on_a[i]->Send(ping));
    EXPECT_EQ(on_a[i]->ReadLine(), ping);
  }
  // New connections all go to a.
  for (int i = 0; i < 4; ++i) {
    Client c(gw.port());
    EXPECT_EQ(c.ReadLine(), "ORIGIN a\n");
  }
  EXPECT_GE(MetricValue(gw.Metrics(),
                        "capstan_gateway_tcp_closed_total{listener=\"t\",reason="
                        "\"endpoint_removed\"}"),
            static_cast<double>(on_b.size()));
}

TEST_P(GatewayL4E2E, AnEndpointLeavingTheRegistryEndsOnlyItsConnections) {
  TempDir dir("gw_l4_registry");
  TcpOrigin a(dir, "a");
  TcpOrigin b(dir, "b");
  StoreProcess store(StoreProcess::Kind::kCapstan, dir.path() + "/store");
  ASSERT_TRUE(store.Start()) << store.Log();
  for (TcpOrigin* o : {&a, &b}) {
    std::string id = o == &a ? "a" : "b";
    ASSERT_EQ(Etcdctl(store.endpoint(),
                      {"put", "services/tcp/" + id, "{\"Addr\":\"" + o->address() + "\"}"})
                  .exit_code,
              0);
  }
  int tcp_port = PickFreePort();
  int admin_port = PickFreePort();
  std::string config = dir.path() + "/gateway.yaml";
  std::ofstream(config) << "listeners: [{address: 127.0.0.1:0}]\n"
                        << "admin: 127.0.0.1:" << admin_port << "\n"
                        << "clusters:\n  - {name: c, balancer: round_robin, discovery: \"store://"
                        << store.endpoint() << "/services/tcp\"}\n"
                        << "tcp_listeners: [{name: t, address: 127.0.0.1:" << tcp_port
                        << ", cluster: c, splice: " << GetParam() << "}]\n";
  GatewayProcess gw(dir, {"--config", config});
  // Connections until both endpoints hold some (the first ones may find no
  // endpoint yet: closed without a greeting). Bounded in time as well as
  // count: on a loaded machine the registry's first answer can take longer
  // than 200 such quick refusals.
  std::vector<std::unique_ptr<Client>> on_a, on_b;
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (int i = 0; i < 20000 && std::chrono::steady_clock::now() < give_up &&
                  (on_a.size() < 5 || on_b.size() < 5);
       ++i) {
    auto c = std::make_unique<Client>(tcp_port);
    std::string who = c->ReadLine();
    if (who == "ORIGIN a\n") on_a.push_back(std::move(c));
    if (who == "ORIGIN b\n") on_b.push_back(std::move(c));
  }
  ASSERT_GE(on_a.size(), 5u);
  ASSERT_GE(on_b.size(), 5u);
  // b leaves the registry: the source's update reaches every loop.
  ASSERT_EQ(Etcdctl(store.endpoint(), {"del", "services/tcp/b"}).exit_code, 0);
  for (auto& c : on_b) {
    bool ended = false;
    EXPECT_EQ(c->ReadToEnd(&ended), "");
    EXPECT_TRUE(ended);
  }
  for (size_t i = 0; i < on_a.size(); ++i) {
    std::string ping = "still here " + std::to_string(i) + "\n";
    ASSERT_TRUE(on_a[i]->Send(ping));
    EXPECT_EQ(on_a[i]->ReadLine(), ping);
  }
  std::string metrics = HttpCall(admin_port, "GET", "/metrics").body;
  EXPECT_GE(MetricValue(metrics,
                        "capstan_gateway_tcp_closed_total{listener=\"t\",reason="
                        "\"endpoint_removed\"}"),
            static_cast<double>(on_b.size()));
}

INSTANTIATE_TEST_SUITE_P(DataPaths, GatewayL4E2E, ::testing::Values("off", "on", "auto"),
                         [](const auto& info) { return "splice_" + info.param; });

}  // namespace
}  // namespace capstan::e2e
