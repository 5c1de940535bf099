#include "gateway/dns/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
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
    auto server = DnsServer::Start({.host = "127.0.0.1", .port = 0, .udp_sockets = 2}, loops_.get(),
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
  DnsServerOptions options{.host = "127.0.0.1", .port = 0, .udp_sockets = 1};
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

// Holds a loop's thread until released (bounded), so datagrams queue up
// on its socket meanwhile.
class LoopBlocker {
 public:
  explicit LoopBlocker(net::EventLoop* loop) {
    loop->Post([this] {
      std::unique_lock lock(mu_);
      blocked_ = true;
      cv_.notify_all();
      cv_.wait_for(lock, std::chrono::seconds(10), [this] { return released_; });
      left_ = true;
      cv_.notify_all();
    });
    std::unique_lock lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(5), [this] { return blocked_; }));
  }
  // Waits (bounded) for the loop to have left the blocker: the posted task
  // uses this object until then (TSan saw the stack reused under it).
  ~LoopBlocker() {
    Release();
    std::unique_lock lock(mu_);
    EXPECT_TRUE(
        cv_.wait_for(lock, std::chrono::seconds(15), [this] { return left_ || !blocked_; }));
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool blocked_ = false;
  bool released_ = false;
  bool left_ = false;
};

// Waits (bounded) until the server has counted `n` UDP queries.
bool WaitForUdpQueries(const DnsServer& server, uint64_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.stats().udp_queries < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  return server.stats().udp_queries >= n;
}

// Every datagram waiting on fd (each wait bounded), parsed, by id.
std::map<uint16_t, Message> ReceiveAnswers(int fd, size_t want) {
  std::map<uint16_t, Message> got;
  char buf[4096];
  while (got.size() < want) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) break;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    auto m = ParseMessage(std::string_view(buf, static_cast<size_t>(n)));
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) got[m->id] = *m;
  }
  return got;
}

TEST(DnsServerUdp, AQueuedBurstIsAnsweredInBatchesOfSixtyFourEachAnswerInItsOwnSlot) {
  auto loops = net::LoopGroup::Start({.threads = 1, .name = "dns-burst"}).value();
  auto server = DnsServer::Start({.host = "127.0.0.1", .port = 0}, loops.get(), Zones(kZone));
  ASSERT_TRUE(server.ok()) << server.status();
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = Local((*server)->port());
  // Three kinds interleaved, so a slot answered from another query's
  // buffer would show: an A record, a TXT set too large for 512 bytes (TC,
  // no records) and the same set asked with EDNS0 room for it (complete).
  constexpr int kQueries = 130;
  {
    LoopBlocker blocker(loops->loop(0));
    for (int id = 0; id < kQueries; ++id) {
      std::string q = id % 3 == 0   ? BuildQuery(Wire("www.example.com."), kTypeA, id)
                      : id % 3 == 1 ? BuildQuery(Wire("big.example.com."), kTypeTXT, id)
                                    : BuildQuery(Wire("big.example.com."), kTypeTXT, id, 1232);
      ASSERT_EQ(sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)),
                static_cast<ssize_t>(q.size()));
    }
  }
  std::map<uint16_t, Message> got = ReceiveAnswers(fd, kQueries);
  close(fd);
  ASSERT_EQ(got.size(), static_cast<size_t>(kQueries));
  for (const auto& [id, m] : got) {
    SCOPED_TRACE(id);
    EXPECT_EQ(m.rcode(), kRcodeNoError);
    if (id % 3 == 0) {
      EXPECT_FALSE(m.flags & kFlagTC);
      EXPECT_EQ(m.answers.size(), 1u);
    } else if (id % 3 == 1) {
      EXPECT_TRUE(m.flags & kFlagTC);
      EXPECT_TRUE(m.answers.empty());
    } else {
      EXPECT_FALSE(m.flags & kFlagTC);
      EXPECT_EQ(m.answers.size(), 6u);
    }
  }
  ASSERT_TRUE(WaitForUdpQueries(**server, kQueries));
  DnsServerStats stats = (*server)->stats();
  EXPECT_EQ(stats.udp_queries, static_cast<uint64_t>(kQueries));
  // All were queued when the loop came back: 64 + 64 + 2.
  EXPECT_EQ(stats.udp_batches, 3u);
  EXPECT_EQ(stats.truncated, static_cast<uint64_t>((kQueries + 1) / 3));
  server->reset();
  loops->Stop();
}

// Every datagram waiting on fd (each wait bounded), parsed, in arrival order.
std::vector<Message> ReceiveInOrder(int fd, size_t want) {
  std::vector<Message> got;
  char buf[4096];
  while (got.size() < want) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) break;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    auto m = ParseMessage(std::string_view(buf, static_cast<size_t>(n)));
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) got.push_back(*m);
  }
  return got;
}

class DnsServerSliceTest : public ::testing::TestWithParam<int> {};

// A burst of more than two batches from one client, queued while the loop
// is held: every query is answered, and in the order it was asked, whatever
// the slice the answers go out in (1: one sendmmsg per answer; 7: slices
// that do not divide 64; 64: the whole batch at once).
TEST_P(DnsServerSliceTest, ABurstLargerThanABatchIsAllAnsweredInOrder) {
  auto loops = net::LoopGroup::Start({.threads = 1, .name = "dns-slice"}).value();
  DnsServerOptions options{.host = "127.0.0.1", .port = 0};
  options.udp_answer_slice = GetParam();
  auto server = DnsServer::Start(options, loops.get(), Zones(kZone));
  ASSERT_TRUE(server.ok()) << server.status();
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = Local((*server)->port());
  constexpr int kQueries = 150;  // 64 + 64 + 22, within the socket's receive buffer
  {
    LoopBlocker blocker(loops->loop(0));
    for (int id = 0; id < kQueries; ++id) {
      std::string q = id % 2 == 0 ? BuildQuery(Wire("www.example.com."), kTypeA, id)
                                  : BuildQuery(Wire("nope.example.com."), kTypeA, id);
      ASSERT_EQ(sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)),
                static_cast<ssize_t>(q.size()));
    }
  }
  std::vector<Message> got = ReceiveInOrder(fd, kQueries);
  close(fd);
  ASSERT_EQ(got.size(), static_cast<size_t>(kQueries));
  for (int i = 0; i < kQueries; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got[i].id, i);
    EXPECT_EQ(got[i].rcode(), i % 2 == 0 ? kRcodeNoError : kRcodeNxDomain);
    EXPECT_EQ(got[i].answers.size(), i % 2 == 0 ? 1u : 0u);
  }
  ASSERT_TRUE(WaitForUdpQueries(**server, kQueries));
  EXPECT_EQ((*server)->stats().udp_batches, 3u);
  EXPECT_EQ((*server)->udp_latency().count, 0u);  // not asked for
  server->reset();
  loops->Stop();
}

INSTANTIATE_TEST_SUITE_P(Slices, DnsServerSliceTest, ::testing::Values(1, 7, 16, 64));

TEST(DnsServerUdp, AnswerSliceOutsideOneToSixtyFourIsRefused) {
  auto loops = net::LoopGroup::Start({.threads = 1, .name = "dns-slice-bad"}).value();
  for (int slice : {0, 65}) {
    DnsServerOptions options{.host = "127.0.0.1", .port = 0};
    options.udp_answer_slice = slice;
    auto server = DnsServer::Start(options, loops.get(), Zones(kZone));
    ASSERT_FALSE(server.ok());
    EXPECT_NE(server.status().message().find("udp_answer_slice"), std::string::npos);
  }
  loops->Stop();
}

// udp_latency_metrics: queries held in the socket while the loop is busy
// show that wait in the socket part (at least as long as the loop was held,
// by construction), every query is counted once, and /metrics has the
// quantiles.
// The kernel turns its packet timestamps on for the first socket that asks
// a moment later (a deferred static-key switch); until then a datagram is
// stamped when it is read. Opens a socket that asks, and returns it once a
// datagram read 5 ms after it was sent carries its arrival time (bounded):
// keep it open while measuring.
int ArrivalTimesLive() {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  int one = 1;
  EXPECT_EQ(setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)), 0);
  sockaddr_in self = Local(0);
  bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof(self));
  socklen_t len = sizeof(self);
  getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len);
  for (int attempt = 0; attempt < 200; ++attempt) {
    sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&self), sizeof(self));
    auto sent = std::chrono::system_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the age to see
    char data[8];
    alignas(cmsghdr) char control[64];
    iovec iov{data, sizeof(data)};
    msghdr h{};
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = control;
    h.msg_controllen = sizeof(control);
    if (recvmsg(fd, &h, 0) < 0) break;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPNS) continue;
      timespec ts;
      std::memcpy(&ts, CMSG_DATA(c), sizeof(ts));
      auto stamped = std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(
              std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
      if (stamped <= sent) return fd;  // stamped on arrival, not when read
    }
  }
  ADD_FAILURE() << "the kernel's packet timestamps did not come on";
  return fd;
}

TEST(DnsServerUdp, LatencyMetricsSplitTheWaitInTheSocketFromTheServersWork) {
  int timestamps_on = ArrivalTimesLive();
  auto loops = net::LoopGroup::Start({.threads = 1, .name = "dns-latency"}).value();
  DnsServerOptions options{.host = "127.0.0.1", .port = 0};
  options.udp_latency_metrics = true;
  auto server = DnsServer::Start(options, loops.get(), Zones(kZone));
  ASSERT_TRUE(server.ok()) << server.status();
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = Local((*server)->port());
  constexpr int kQueries = 80;
  constexpr auto kHeld = std::chrono::milliseconds(20);
  {
    LoopBlocker blocker(loops->loop(0));
    for (int id = 0; id < kQueries; ++id) {
      std::string q = BuildQuery(Wire("www.example.com."), kTypeA, id);
      ASSERT_EQ(sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)),
                static_cast<ssize_t>(q.size()));
    }
    // The quantity measured, not a synchronization: the loop stays held
    // (at least) this long after the last query was queued.
    std::this_thread::sleep_for(kHeld);
  }
  EXPECT_EQ(ReceiveAnswers(fd, kQueries).size(), static_cast<size_t>(kQueries));
  close(fd);
  ASSERT_TRUE(WaitForUdpQueries(**server, kQueries));
  DnsUdpLatency l = (*server)->udp_latency();
  EXPECT_EQ(l.count, static_cast<uint64_t>(kQueries));
  const double held_us = std::chrono::duration<double, std::micro>(kHeld).count();
  EXPECT_GE(l.socket_wait_p50, held_us);
  EXPECT_GE(l.socket_wait_p99, l.socket_wait_p50);
  EXPECT_GE(l.socket_wait_p999, l.socket_wait_p99);
  EXPECT_GT(l.in_server_p50, 0);
  EXPECT_GE(l.in_server_p999, l.in_server_p99);
  metrics::Registry registry;
  (*server)->RegisterMetrics(&registry);
  std::string page = registry.RenderText();
  EXPECT_NE(page.find("capstan_dns_udp_latency_microseconds{part=\"socket\",quantile=\"0.99\"}"),
            std::string::npos)
      << page;
  EXPECT_NE(page.find("capstan_dns_udp_latency_microseconds{part=\"server\",quantile=\"0.5\"}"),
            std::string::npos);
  server->reset();
  loops->Stop();
  close(timestamps_on);
}

TEST_F(DnsServerTest, ManyClientsManyQueriesEveryOneAnswered) {
  // Waves of 5 queries from each of 16 clients: 80 in flight at most, well
  // within one socket's receive buffer (about 256 small datagrams by
  // default), so none may be lost.
  constexpr int kClients = 16, kWaves = 10, kPerWave = 5;
  std::vector<int> fds;
  for (int c = 0; c < kClients; ++c) fds.push_back(socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in a = Local(server_->port());
  for (int wave = 0; wave < kWaves; ++wave) {
    for (int fd : fds) {
      for (int i = 0; i < kPerWave; ++i) {
        int id = wave * kPerWave + i;
        std::string q = BuildQuery(Wire(id % 2 == 0 ? "www.example.com." : "nope.example.com."),
                                   kTypeA, static_cast<uint16_t>(id));
        sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      }
    }
    for (int fd : fds) {
      std::map<uint16_t, Message> got = ReceiveAnswers(fd, kPerWave);
      ASSERT_EQ(got.size(), static_cast<size_t>(kPerWave)) << "wave " << wave;
      for (const auto& [id, m] : got) {
        EXPECT_EQ(m.rcode(), id % 2 == 0 ? kRcodeNoError : kRcodeNxDomain) << id;
      }
    }
  }
  for (int fd : fds) close(fd);
  constexpr uint64_t kTotal = kClients * kWaves * kPerWave;
  ASSERT_TRUE(WaitForUdpQueries(*server_, kTotal));
  EXPECT_EQ(server_->stats().udp_queries, kTotal);
  EXPECT_EQ(server_->stats().nxdomain, kTotal / 2);
}

TEST(DnsServerUdp, StopWhileQueriesAreInFlightClosesEverySocketAndLeavesTheLoopsServing) {
  auto loops = net::LoopGroup::Start({.threads = 2, .name = "dns-stop"}).value();
  auto server = DnsServer::Start({.host = "127.0.0.1", .port = 0}, loops.get(), Zones(kZone));
  ASSERT_TRUE(server.ok()) << server.status();
  int port = (*server)->port();
  // A client that keeps sending (bounded) until told to stop, from several
  // source ports so both loops' sockets are busy.
  std::atomic<bool> stop_sending{false};
  std::thread sender([port, &stop_sending] {
    std::vector<int> fds;
    for (int i = 0; i < 8; ++i) fds.push_back(socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0));
    sockaddr_in a = Local(port);
    std::string q = BuildQuery(Wire("www.example.com."), kTypeA, 7);
    char sink[512];
    for (int i = 0; i < 2'000'000 && !stop_sending.load(); ++i) {
      int fd = fds[static_cast<size_t>(i) % fds.size()];
      sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      while (recv(fd, sink, sizeof(sink), 0) > 0) {
      }
    }
    for (int fd : fds) close(fd);
  });
  ASSERT_TRUE(WaitForUdpQueries(**server, 1000));
  (*server)->Stop();
  uint64_t at_stop = (*server)->stats().udp_queries;
  // Every UDP socket is closed: the port binds without SO_REUSEPORT.
  int probe = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = Local(port);
  EXPECT_EQ(bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  close(probe);
  stop_sending = true;
  sender.join();
  EXPECT_EQ((*server)->stats().udp_queries, at_stop);
  (*server)->Stop();  // idempotent
  server->reset();
  // The loops were left running and serve a new server.
  auto again = DnsServer::Start({.host = "127.0.0.1", .port = 0}, loops.get(), Zones(kZone));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(AskUdp((*again)->port(), BuildQuery(Wire("www.example.com."), kTypeA, 5)).id, 5);
  again->reset();
  loops->Stop();
}

}  // namespace
}  // namespace capstan::gateway::dns
