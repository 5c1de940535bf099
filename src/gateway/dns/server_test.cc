#include "gateway/dns/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace capstan::gateway::dns {
namespace {

std::string Wire(std::string_view text) { return NameFromText(text, std::string(1, '\0')).value(); }

constexpr std::string_view kZone = R"(
$ORIGIN example.com.
$TTL 60
@ SOA ns host 1 2 3 4 30
@ NS ns
ns A 192.0.2.1
www A 192.0.2.2
big TXT "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "1123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "2123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "3123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "4123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "5123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
)";

std::shared_ptr<const ZoneSet> Zones(std::string_view text) {
  auto zone = ParseZone(text, "", "t.zone");
  EXPECT_TRUE(zone.ok()) << zone.status();
  auto set = std::make_shared<ZoneSet>();
  set->Add(std::shared_ptr<const Zone>(std::move(zone).value()));
  return set;
}

sockaddr_in Local(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  return a;
}

// One UDP exchange with a bounded wait.
Message AskUdp(int port, const std::string& query) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = Local(port);
  sendto(fd, query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  pollfd p{fd, POLLIN, 0};
  char buf[4096];
  ssize_t n = -1;
  if (poll(&p, 1, 5000) == 1) n = recv(fd, buf, sizeof(buf), 0);
  close(fd);
  EXPECT_GT(n, 0);
  if (n <= 0) return {};
  auto m = ParseMessage(std::string_view(buf, static_cast<size_t>(n)));
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : Message{};
}

// Queries pipelined on one TCP connection; answers in order.
std::vector<Message> AskTcp(int port, const std::vector<std::string>& queries) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = Local(port);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  std::string wire;
  for (const auto& q : queries) {
    wire.push_back(static_cast<char>(q.size() >> 8));
    wire.push_back(static_cast<char>(q.size()));
    wire += q;
  }
  EXPECT_EQ(write(fd, wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  std::string got;
  std::vector<Message> out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (out.size() < queries.size() && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1000) != 1) continue;
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    while (got.size() >= 2) {
      size_t len = (static_cast<uint8_t>(got[0]) << 8) | static_cast<uint8_t>(got[1]);
      if (got.size() < 2 + len) break;
      auto m = ParseMessage(std::string_view(got).substr(2, len));
      EXPECT_TRUE(m.ok()) << m.status();
      out.push_back(m.ok() ? *m : Message{});
      got.erase(0, 2 + len);
    }
  }
  close(fd);
  return out;
}

class DnsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loops_ = net::LoopGroup::Start({.threads = 2, .name = "dns-test"}).value();
    auto server = DnsServer::Start({.host = "127.0.0.1", .port = 0, .udp_threads = 2}, loops_.get(),
                                   Zones(kZone));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }
  void TearDown() override {
    server_.reset();
    loops_->Stop();
  }
  std::unique_ptr<net::LoopGroup> loops_;
  std::unique_ptr<DnsServer> server_;
};

TEST_F(DnsServerTest, AnswersOverUdpAndTcp) {
  Message m = AskUdp(server_->port(), BuildQuery(Wire("www.example.com."), kTypeA, 42));
  EXPECT_EQ(m.id, 42);
  EXPECT_EQ(m.rcode(), kRcodeNoError);
  EXPECT_EQ(m.answers.size(), 1u);
  auto tcp = AskTcp(server_->port(), {BuildQuery(Wire("www.example.com."), kTypeA, 1),
                                      BuildQuery(Wire("nope.example.com."), kTypeA, 2)});
  ASSERT_EQ(tcp.size(), 2u);
  EXPECT_EQ(tcp[0].id, 1);
  EXPECT_EQ(tcp[0].answers.size(), 1u);
  EXPECT_EQ(tcp[1].id, 2);
  EXPECT_EQ(tcp[1].rcode(), kRcodeNxDomain);
  // Counted just after the answer leaves: wait for it, within a bound.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server_->stats().udp_queries < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_GE(server_->stats().udp_queries, 1u);
  EXPECT_EQ(server_->stats().tcp_queries, 2u);
  // The counters on /metrics outlive the server.
  metrics::Registry registry;
  server_->RegisterMetrics(&registry);
  server_.reset();
  std::string page = registry.RenderText();
  EXPECT_NE(page.find("capstan_dns_tcp_queries_total 2"), std::string::npos) << page;
  EXPECT_NE(page.find("capstan_dns_nxdomain_total 1"), std::string::npos) << page;
}

TEST_F(DnsServerTest, TruncatedOverUdpCompleteOverTcp) {
  std::string q = BuildQuery(Wire("big.example.com."), kTypeTXT, 3);
  Message udp = AskUdp(server_->port(), q);
  EXPECT_TRUE(udp.flags & kFlagTC);
  EXPECT_TRUE(udp.answers.empty());
  auto tcp = AskTcp(server_->port(), {q});
  ASSERT_EQ(tcp.size(), 1u);
  EXPECT_FALSE(tcp[0].flags & kFlagTC);
  EXPECT_EQ(tcp[0].answers.size(), 6u);
}

TEST_F(DnsServerTest, NewZonesAnswerTheNextQuery) {
  std::string q = BuildQuery(Wire("new.example.com."), kTypeA, 4);
  EXPECT_EQ(AskUdp(server_->port(), q).rcode(), kRcodeNxDomain);
  server_->SetZones(Zones(std::string(kZone) + "new A 192.0.2.77\n"));
  // Each UDP thread picks the new set up at its next batch; ask enough
  // times that both threads' sockets are reached.
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(AskUdp(server_->port(), q).rcode(), kRcodeNoError);
  }
}

TEST(DnsServerRrl, LimitsABurstFromOneClient) {
  auto loops = net::LoopGroup::Start({.threads = 1, .name = "dns-rrl"}).value();
  DnsServerOptions options{.host = "127.0.0.1", .port = 0, .udp_threads = 1};
  options.rrl = {.responses_per_second = 1, .slip = 2};
  auto server = DnsServer::Start(options, loops.get(), Zones(kZone));
  ASSERT_TRUE(server.ok()) << server.status();
  // 20 queries at once from one address: one token, so at least 10 are
  // limited (refill during the burst is 1 per second), half of those
  // slipped as TC answers.
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = Local((*server)->port());
  std::string q = BuildQuery(Wire("www.example.com."), kTypeA, 9);
  for (int i = 0; i < 20; ++i) {
    sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*server)->stats().udp_queries < 20 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, 50);  // bounded wait for the server's counter
  }
  DnsServerStats stats = (*server)->stats();
  EXPECT_EQ(stats.udp_queries, 20u);
  EXPECT_GE(stats.rrl_dropped + stats.rrl_slipped, 10u);
  EXPECT_GE(stats.rrl_slipped, 5u);
  // What arrived: full answers and TC answers without records.
  int full = 0, truncated = 0;
  char buf[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 200) != 1) break;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    auto m = ParseMessage(std::string_view(buf, static_cast<size_t>(n)));
    ASSERT_TRUE(m.ok());
    if (m->flags & kFlagTC) {
      EXPECT_TRUE(m->answers.empty());
      ++truncated;
    } else {
      ++full;
    }
  }
  close(fd);
  EXPECT_EQ(static_cast<uint64_t>(truncated), stats.rrl_slipped);
  EXPECT_EQ(static_cast<uint64_t>(full), 20 - stats.rrl_dropped - stats.rrl_slipped);
  server->reset();
  loops->Stop();
}

}  // namespace
}  // namespace capstan::gateway::dns
