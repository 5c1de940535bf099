// The gateway's DNS server, black box: a real `capstan gateway` answering
// dig (and kdig when installed), the same zone file served by NSD and
// compared answer for answer (differential, several hundred queries), and
// the discovery zone following a real `capstan store`'s registry.
// Everything started here is stopped at the end; NSD runs with its own
// configuration in a temporary directory on a port picked here.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gateway/dns/message.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

namespace dns = gateway::dns;

// Names of every kind of answer: data, CNAME chains (in and out of the
// zone, looping, dangling), wildcards, a delegation with glue, empty
// non-terminals, names that do not exist, mixed case.
constexpr std::string_view kZone = R"($ORIGIN example.com.
$TTL 3600
@       IN SOA ns1 hostmaster ( 2024010101 7200 3600 1209600 300 )
@       NS   ns1
@       NS   ns2
@       MX   10 mail
@       MX   20 mail2.example.net.
@       TXT  "v=spf1 -all"
@       A    192.0.2.10
ns1     A    192.0.2.1
ns2     A    192.0.2.2
ns2     AAAA 2001:db8::2
mail    A    192.0.2.3
mail    AAAA 2001:db8::3
www     CNAME web
web     A    192.0.2.4
web     A    192.0.2.5
Mixed   A    192.0.2.6
out     CNAME www.example.net.
chain1  CNAME chain2
chain2  CNAME www
loop1   CNAME loop2
loop2   CNAME loop1
dangling CNAME nothing
*.wild  A    192.0.2.9
*.wild  TXT  "wildcard"
x.y.deep A   192.0.2.11
_http._tcp SRV 0 5 80 web
_sip._udp  SRV 10 60 5060 mail
ptr     PTR  www.example.com.
txt     TXT  "a b" "c\"d" e
sub     NS   ns.sub
ns.sub  A    192.0.2.53
big     TXT  "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "1123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "2123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "3123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "4123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "5123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
)";

std::string Wire(std::string_view text) {
  return dns::NameFromText(text, std::string(1, '\0')).value();
}

// One UDP or TCP exchange with a bounded wait; empty on no answer.
std::string Exchange(int port, const std::string& query, bool tcp) {
  int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return out;
  }
  std::string wire = query;
  if (tcp) {
    wire.insert(0, 1, static_cast<char>(query.size() & 0xff));
    wire.insert(0, 1, static_cast<char>(query.size() >> 8));
  }
  (void)!send(fd, wire.data(), wire.size(), MSG_NOSIGNAL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 500) != 1) continue;
    char buf[65536];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (!tcp) break;
    if (out.size() >= 2) {
      size_t len = (static_cast<uint8_t>(out[0]) << 8) | static_cast<uint8_t>(out[1]);
      if (out.size() >= 2 + len) {
        out = out.substr(2, len);
        break;
      }
    }
  }
  close(fd);
  return out;
}

// A response in a form two servers can be compared on: rcode, the header
// flags, each section's records as text, names lower-cased, records sorted
// within a section (RFC 2181: an RRset has no order; sections may list
// RRsets in any order). OPT is left out (its payload size is each
// server's own choice), and so are EDNS options (NSD adds EDE).
std::string Normalize(const std::string& response) {
  auto m = dns::ParseMessage(response);
  if (!m.ok()) return absl::StrCat("unparseable: ", std::string(m.status().message()));
  auto section = [](const std::vector<dns::ResourceRecord>& rrs) {
    std::vector<std::string> lines;
    for (const auto& rr : rrs) {
      if (rr.type == dns::kTypeOPT) continue;
      std::string rdata = dns::RdataToText(rr.type, rr.rdata);
      if (rr.type == dns::kTypeNS || rr.type == dns::kTypeCNAME || rr.type == dns::kTypeMX ||
          rr.type == dns::kTypeSRV || rr.type == dns::kTypeSOA || rr.type == dns::kTypePTR) {
        std::transform(rdata.begin(), rdata.end(), rdata.begin(), ::tolower);
      }
      lines.push_back(absl::StrCat(dns::NameToText(dns::LowerName(rr.name)), " ", rr.ttl, " ",
                                   dns::TypeName(rr.type), " ", rdata));
    }
    std::sort(lines.begin(), lines.end());
    return absl::StrJoin(lines, "\n    ");
  };
  uint16_t f = m->flags;
  return absl::StrCat("rcode=", m->rcode(), " qr=", (f >> 15) & 1, " aa=", (f >> 10) & 1,
                      " tc=", (f >> 9) & 1, " rd=", (f >> 8) & 1, " ra=", (f >> 7) & 1,
                      "\n  answer:\n    ", section(m->answers), "\n  authority:\n    ",
                      section(m->authority), "\n  additional:\n    ", section(m->additional));
}

class DnsE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("capstan-dns");
    zone_file_ = dir_->path() + "/example.com.zone";
    std::ofstream(zone_file_) << kZone;
  }

  // Starts `capstan gateway` with the DNS flags; returns the DNS port.
  int StartGateway(std::vector<std::string> flags) {
    int port = PickFreePort();
    std::vector<std::string> argv = {CapstanBinary(), "gateway",
                                     "--threads",     "2",
                                     "--dns-listen",  absl::StrCat("127.0.0.1:", port)};
    argv.insert(argv.end(), flags.begin(), flags.end());
    gateway_ = std::make_unique<Process>(argv, dir_->path() + "/gateway.log");
    bool up = Eventually(
        [&] { return gateway_->Log().find("dns listening on port") != std::string::npos; });
    EXPECT_TRUE(up) << gateway_->Log();
    return port;
  }

  std::vector<std::string> Dig(int port, std::vector<std::string> args) {
    std::vector<std::string> argv = {"dig",     "@127.0.0.1", "-p", std::to_string(port),
                                     "+time=2", "+tries=1"};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = RunCommand(argv);
    last_dig_ = r.out + r.err;
    return absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  }

  std::unique_ptr<TempDir> dir_;
  std::string zone_file_;
  std::unique_ptr<Process> gateway_;
  std::string last_dig_;
};

bool Installed(const std::string& tool) {
  return RunCommand({"sh", "-c", "command -v " + tool}).exit_code == 0;
}

TEST_F(DnsE2e, DigSeesTheZone) {
  if (!Installed("dig")) GTEST_SKIP() << "dig is not installed (scripts/install-deps.sh)";
  int port = StartGateway({"--dns-zone", zone_file_});
  EXPECT_EQ(Dig(port, {"+short", "web.example.com", "A"}),
            (std::vector<std::string>{"192.0.2.4", "192.0.2.5"}))
      << last_dig_;
  // Case-insensitive; the question's case is kept in the answer (and, by
  // compression, in names that share its suffix, as NSD does too).
  Dig(port, {"WWW.Example.COM", "A"});
  EXPECT_NE(last_dig_.find("flags: qr aa"), std::string::npos) << last_dig_;
  EXPECT_NE(last_dig_.find("WWW.Example.COM.\t3600\tIN\tCNAME\tweb.Example.COM."),
            std::string::npos)
      << last_dig_;
  // NXDOMAIN with the SOA; REFUSED outside the zone.
  Dig(port, {"nope.example.com", "A"});
  EXPECT_NE(last_dig_.find("status: NXDOMAIN"), std::string::npos) << last_dig_;
  EXPECT_NE(last_dig_.find("300\tIN\tSOA"), std::string::npos) << last_dig_;
  Dig(port, {"example.org", "A"});
  EXPECT_NE(last_dig_.find("status: REFUSED"), std::string::npos) << last_dig_;
  // Too big for 512 bytes without EDNS: TC, then dig retries over TCP.
  Dig(port, {"+noedns", "+ignore", "big.example.com", "TXT"});
  EXPECT_NE(last_dig_.find(" tc"), std::string::npos) << last_dig_;
  std::vector<std::string> big = Dig(port, {"+noedns", "+short", "big.example.com", "TXT"});
  EXPECT_EQ(big.size(), 6u) << last_dig_;
  std::vector<std::string> tcp = Dig(port, {"+tcp", "+short", "_http._tcp.example.com", "SRV"});
  EXPECT_EQ(tcp, (std::vector<std::string>{"0 5 80 web.example.com."})) << last_dig_;
  if (Installed("kdig")) {
    CommandResult k = RunCommand({"kdig", "@127.0.0.1", "-p", std::to_string(port), "+short",
                                  "+time=2", "+retry=0", "mail.example.com", "AAAA"});
    EXPECT_EQ(k.out, "2001:db8::3\n") << k.err;
  }
}

// DNS over UDP runs on the gateway's event loops (no threads of its own):
// one loop answers a burst from several clients, and SIGTERM while queries
// keep arriving ends the process cleanly.
TEST_F(DnsE2e, UdpRunsOnTheGatewaysLoopsAndStopsUnderLoad) {
  int port = PickFreePort();
  gateway_ = std::make_unique<Process>(
      std::vector<std::string>{CapstanBinary(), "gateway", "--threads", "1", "--dns-listen",
                               absl::StrCat("127.0.0.1:", port), "--dns-zone", zone_file_},
      dir_->path() + "/gateway.log");
  ASSERT_TRUE(Eventually([&] {
    return gateway_->Log().find("dns listening on port") != std::string::npos;
  })) << gateway_->Log();
  // 4 clients x 50 queries sent at once, then every answer read.
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  std::vector<int> fds;
  for (int c = 0; c < 4; ++c) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    fds.push_back(fd);
    for (int id = 0; id < 50; ++id) {
      std::string q =
          dns::BuildQuery(Wire("mail.example.com."), dns::kTypeAAAA, static_cast<uint16_t>(id));
      ASSERT_EQ(sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)),
                static_cast<ssize_t>(q.size()));
    }
  }
  for (int fd : fds) {
    std::set<uint16_t> ids;
    char buf[4096];
    while (ids.size() < 50) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 5000) != 1) break;
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      auto m = dns::ParseMessage(std::string_view(buf, static_cast<size_t>(n)));
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(m->answers.size(), 1u);
      ids.insert(m->id);
    }
    EXPECT_EQ(ids.size(), 50u);
    close(fd);
  }
  // The process's threads: the one event loop and library or blocking
  // helpers, none for DNS over UDP (the threads version named them dns-udp).
  std::vector<std::string> names;
  for (const auto& task :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", gateway_->pid(), "/task"))) {
    std::string name;
    std::getline(std::ifstream(task.path() / "comm"), name);
    names.push_back(name);
  }
  EXPECT_EQ(std::count(names.begin(), names.end(), "dns-udp"), 0) << absl::StrJoin(names, ",");
  // SIGTERM while a client keeps sending (bounded): the process exits, 0.
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    std::string q = dns::BuildQuery(Wire("web.example.com."), dns::kTypeA, 1);
    char sink[512];
    for (int i = 0; i < 1'000'000 && !stop.load(); ++i) {
      sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      while (recv(fd, sink, sizeof(sink), 0) > 0) {
      }
    }
    close(fd);
  });
  gateway_->Signal(SIGTERM);
  int status = gateway_->Wait(std::chrono::seconds(15));
  stop = true;
  sender.join();
  ASSERT_NE(status, -1) << "still running 15 s after SIGTERM\n" << gateway_->Log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << gateway_->Log();
}

// NSD serving the same zone file on its own port, with its own files.
class Nsd {
 public:
  Nsd(const TempDir& dir, const std::string& zone_file) {
    port_ = PickFreePort();
    std::string conf = dir.path() + "/nsd.conf";
    std::ofstream(conf) << "server:\n  port: " << port_
                        << "\n  ip-address: 127.0.0.1\n  username: \"\"\n  chroot: \"\"\n"
                        << "  zonesdir: \"" << dir.path() << "\"\n  database: \"\"\n"
                        << "  pidfile: \"" << dir.path() << "/nsd.pid\"\n"
                        << "  xfrdfile: \"" << dir.path() << "/xfrd.state\"\n"
                        << "  xfrdir: \"" << dir.path() << "\"\n"
                        << "  zonelistfile: \"" << dir.path() << "/zone.list\"\n"
                        << "  logfile: \"" << dir.path() << "/nsd.log\"\n"
                        << "  server-count: 1\n  hide-version: yes\n  hide-identity: yes\n"
                        << "  rrl-ratelimit: 0\n"
                        << "remote-control:\n  control-enable: no\n"
                        << "zone:\n  name: example.com\n  zonefile: \"" << zone_file << "\"\n";
    process_ = std::make_unique<Process>(std::vector<std::string>{"nsd", "-d", "-c", conf},
                                         dir.path() + "/nsd.out");
  }
  // NSD forks its server processes: SIGTERM lets the parent stop them.
  ~Nsd() {
    process_->Signal(SIGTERM);
    process_->Wait(std::chrono::seconds(10));
  }
  int port() const { return port_; }
  std::string Log() const { return process_->Log(); }

 private:
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

// Sends every query of a fixed set (names of each kind x types x with and
// without EDNS, over UDP, plus the TCP answers that do not fit UDP) to both
// servers and compares the normalized answers.
void CompareAnswers(int port, int reference_port, const std::string& reference) {
  const std::vector<std::string> names = {
      "example.com.",
      "ns1.example.com.",
      "ns2.example.com.",
      "mail.example.com.",
      "www.example.com.",
      "WwW.ExAmPlE.cOm.",
      "web.example.com.",
      "mixed.example.com.",
      "out.example.com.",
      "chain1.example.com.",
      "loop1.example.com.",
      "dangling.example.com.",
      "a.wild.example.com.",
      "b.c.wild.example.com.",
      "wild.example.com.",
      "deep.example.com.",
      "y.deep.example.com.",
      "x.y.deep.example.com.",
      "_http._tcp.example.com.",
      "_sip._udp.example.com.",
      "_tcp.example.com.",
      "ptr.example.com.",
      "txt.example.com.",
      "sub.example.com.",
      "host.sub.example.com.",
      "ns.sub.example.com.",
      "nope.example.com.",
      "a.b.nope.example.com.",
      "big.example.com.",
      "example.org.",
  };
  const std::vector<uint16_t> types = {dns::kTypeA,   dns::kTypeAAAA,  dns::kTypeNS,
                                       dns::kTypeSOA, dns::kTypeMX,    dns::kTypeTXT,
                                       dns::kTypeSRV, dns::kTypeCNAME, dns::kTypePTR};
  int compared = 0, differences = 0;
  uint16_t id = 1;
  for (const std::string& name : names) {
    for (uint16_t type : types) {
      for (uint16_t edns : {uint16_t{0}, uint16_t{1232}}) {
        std::string q = dns::BuildQuery(Wire(name), type, id++, edns);
        std::string ours = Normalize(Exchange(port, q, false));
        std::string theirs = Normalize(Exchange(reference_port, q, false));
        ++compared;
        if (ours != theirs) {
          ++differences;
          ADD_FAILURE() << name << " " << dns::TypeName(type) << (edns ? " +edns" : "")
                        << "\n ours:   " << ours << "\n " << reference << ": " << theirs;
        }
      }
    }
  }
  // Over TCP as well, for the answers that did not fit UDP.
  for (uint16_t type : {dns::kTypeTXT, dns::kTypeA}) {
    std::string q = dns::BuildQuery(Wire("big.example.com."), type, id++);
    std::string ours = Normalize(Exchange(port, q, true));
    std::string theirs = Normalize(Exchange(reference_port, q, true));
    ++compared;
    if (ours != theirs) {
      ++differences;
      ADD_FAILURE() << "TCP big " << dns::TypeName(type) << "\n ours: " << ours << "\n "
                    << reference << ": " << theirs;
    }
  }
  EXPECT_GE(compared, 200);
  EXPECT_EQ(differences, 0) << differences << " of " << compared << " answers differ";
}

TEST_F(DnsE2e, SighupReloadsTheZoneFilesAllOrNothing) {
  if (!Installed("dig")) GTEST_SKIP() << "dig is not installed (scripts/install-deps.sh)";
  int port = StartGateway({"--dns-zone", zone_file_});
  ASSERT_EQ(Dig(port, {"+short", "web.example.com", "A"}),
            (std::vector<std::string>{"192.0.2.4", "192.0.2.5"}))
      << last_dig_;
  std::string changed(kZone);
  changed.replace(changed.find("192.0.2.4"), 9, "192.0.2.9");
  std::ofstream(zone_file_) << changed;
  gateway_->Signal(SIGHUP);
  ASSERT_TRUE(Eventually([&] {
    return Dig(port, {"+short", "web.example.com", "A"}) ==
           std::vector<std::string>{"192.0.2.9", "192.0.2.5"};
  })) << last_dig_
      << gateway_->Log();
  // A file that does not parse: refused, logged with its line, the zone
  // served before stays.
  std::ofstream(zone_file_) << changed << "broken line here\n";
  gateway_->Signal(SIGHUP);
  ASSERT_TRUE(Eventually([&] {
    return gateway_->Log().find("DNS zone files not reloaded") != std::string::npos;
  })) << gateway_->Log();
  EXPECT_NE(gateway_->Log().find(zone_file_ + ":"), std::string::npos) << gateway_->Log();
  EXPECT_EQ(Dig(port, {"+short", "web.example.com", "A"}),
            (std::vector<std::string>{"192.0.2.9", "192.0.2.5"}))
      << last_dig_;
}

TEST_F(DnsE2e, SameAnswersAsNsd) {
  if (!Installed("nsd")) GTEST_SKIP() << "nsd is not installed (scripts/install-deps.sh)";
  int port = StartGateway({"--dns-zone", zone_file_});
  Nsd nsd(*dir_, zone_file_);
  std::string probe = dns::BuildQuery(Wire("example.com."), dns::kTypeSOA, 1);
  ASSERT_TRUE(Eventually([&] { return !Exchange(nsd.port(), probe, false).empty(); })) << nsd.Log();
  CompareAnswers(port, nsd.port(), "nsd");
}

// Knot answers minimally (no NS in the authority section of positive
// answers): compared with `minimal_responses: true`.
TEST_F(DnsE2e, SameAnswersAsKnotWithMinimalResponses) {
  if (!Installed("knotd")) GTEST_SKIP() << "knotd is not installed (scripts/install-deps.sh)";
  int port = PickFreePort();
  std::string config = dir_->path() + "/gateway.yaml";
  std::ofstream(config) << "dns:\n  listen: 127.0.0.1:" << port << "\n  zones: [" << zone_file_
                        << "]\n  minimal_responses: true\n";
  gateway_ = std::make_unique<Process>(
      std::vector<std::string>{CapstanBinary(), "gateway", "--threads", "2", "--config", config},
      dir_->path() + "/gateway.log");
  ASSERT_TRUE(Eventually([&] {
    return gateway_->Log().find("dns listening on port") != std::string::npos;
  })) << gateway_->Log();
  int knot_port = PickFreePort();
  std::string knot_dir = dir_->path() + "/knot";
  std::filesystem::create_directories(knot_dir);
  std::ofstream(knot_dir + "/knot.conf")
      << "server:\n    rundir: \"" << knot_dir << "\"\n    listen: 127.0.0.1@" << knot_port
      << "\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n"
      << "database:\n    storage: \"" << knot_dir << "\"\n"
      << "log:\n  - target: stderr\n    any: warning\n"
      << "template:\n  - id: default\n    storage: \"" << knot_dir
      << "\"\n    journal-content: none\n    zonefile-sync: -1\n"
      << "zone:\n  - domain: example.com\n    file: \"" << zone_file_ << "\"\n";
  // One process (threads): SIGKILL at the end leaves nothing behind.
  Process knot({"knotd", "-c", knot_dir + "/knot.conf"}, dir_->path() + "/knot.log");
  std::string probe = dns::BuildQuery(Wire("example.com."), dns::kTypeSOA, 1);
  ASSERT_TRUE(Eventually([&] { return !Exchange(knot_port, probe, false).empty(); })) << knot.Log();
  CompareAnswers(port, knot_port, "knot");
}

TEST_F(DnsE2e, DiscoveryZoneFollowsTheRegistry) {
  if (!Installed("dig")) GTEST_SKIP() << "dig is not installed (scripts/install-deps.sh)";
  TempDir data("capstan-dns-store");
  StoreProcess store(StoreProcess::Kind::kCapstan, data.path());
  ASSERT_TRUE(store.Start()) << store.Log();
  int port =
      StartGateway({"--dns-registry", absl::StrCat("store://", store.endpoint(), "/services")});
  auto a_records = [&](const std::string& name) { return Dig(port, {"+short", name, "A"}); };
  EXPECT_TRUE(a_records("echo.svc.capstan").empty());
  // An instance with a lease that is kept alive by nobody: it leaves when
  // the lease expires.
  // 10 s: long enough that a slow (TSan, loaded) gateway sees the instance
  // before its lease runs out.
  CommandResult lease = Etcdctl(store.endpoint(), {"lease", "grant", "10"});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(lease.out, m, std::regex("lease ([0-9a-f]+) granted")))
      << lease.out << lease.err;
  std::string lease_id = m[1];
  auto registered = std::chrono::steady_clock::now();
  ASSERT_EQ(Etcdctl(store.endpoint(), {"put", "--lease=" + lease_id, "services/echo/i1",
                                       R"({"Addr":"10.1.2.3:7000","Metadata":{"zone":"eu"}})"})
                .exit_code,
            0);
  ASSERT_TRUE(Eventually(
      [&] { return a_records("echo.svc.capstan") == std::vector<std::string>{"10.1.2.3"}; },
      std::chrono::seconds(30)))
      << last_dig_;
  // Reported, not asserted (timing depends on the machine): the watch
  // delivers a registration well within the issue's 1 s.
  auto seen_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - registered)
                     .count();
  std::cout << "registration visible to dig after " << seen_ms << " ms\n";
  EXPECT_EQ(Dig(port, {"+short", "echo.svc.capstan", "SRV"}),
            std::vector<std::string>{"0 1 7000 i1.echo.svc.capstan."})
      << last_dig_;
  EXPECT_EQ(Dig(port, {"+short", "i1.echo.svc.capstan", "TXT"}),
            std::vector<std::string>{R"("instance=i1" "addr=10.1.2.3:7000" "zone=eu")"})
      << last_dig_;
  // A key without a lease is not an instance's (nothing would expire it):
  // never served. Then a second instance, with a lease, deregistered
  // explicitly. (Checks name i2's address, not a count: i1's lease may
  // run out meanwhile on a loaded machine.)
  ASSERT_EQ(Etcdctl(store.endpoint(), {"put", "services/echo/stray", "10.9.9.9:7000"}).exit_code,
            0);
  CommandResult lease2 = Etcdctl(store.endpoint(), {"lease", "grant", "600"});
  ASSERT_TRUE(std::regex_search(lease2.out, m, std::regex("lease ([0-9a-f]+) granted")))
      << lease2.out << lease2.err;
  ASSERT_EQ(Etcdctl(store.endpoint(),
                    {"put", "--lease=" + std::string(m[1]), "services/echo/i2", "10.1.2.4:7000"})
                .exit_code,
            0);
  auto has = [](const std::vector<std::string>& records, const std::string& address) {
    return std::find(records.begin(), records.end(), address) != records.end();
  };
  std::vector<std::string> records;
  ASSERT_TRUE(Eventually([&] {
    records = a_records("echo.svc.capstan");
    return has(records, "10.1.2.4");
  })) << last_dig_;
  EXPECT_FALSE(has(records, "10.9.9.9")) << "the lease-less key is left out: " << last_dig_;
  ASSERT_EQ(Etcdctl(store.endpoint(), {"del", "services/echo/i2"}).exit_code, 0);
  ASSERT_TRUE(Eventually([&] { return !has(a_records("echo.svc.capstan"), "10.1.2.4"); }))
      << last_dig_;
  // The lease expires (10 s TTL, never kept alive): the instance goes, and
  // with it the name (the lease-less key does not keep it alive).
  ASSERT_TRUE(Eventually(
      [&] {
        Dig(port, {"echo.svc.capstan", "A"});
        return last_dig_.find("status: NXDOMAIN") != std::string::npos;
      },
      std::chrono::seconds(40)))
      << last_dig_;
}

TEST_F(DnsE2e, ZonesFromTheStore) {
  if (!Installed("dig")) GTEST_SKIP() << "dig is not installed (scripts/install-deps.sh)";
  TempDir data("capstan-dns-store");
  StoreProcess store(StoreProcess::Kind::kCapstan, data.path());
  ASSERT_TRUE(store.Start()) << store.Log();
  int port = PickFreePort();
  std::string config = dir_->path() + "/gateway.yaml";
  std::ofstream(config) << "store: store://" << store.endpoint() << "\n"
                        << "dns:\n  listen: 127.0.0.1:" << port << "\n  zones: [" << zone_file_
                        << "]\n";
  gateway_ = std::make_unique<Process>(
      std::vector<std::string>{CapstanBinary(), "gateway", "--threads", "2", "--config", config},
      dir_->path() + "/gateway.log");
  ASSERT_TRUE(Eventually([&] {
    return gateway_->Log().find("dns listening on port") != std::string::npos;
  })) << gateway_->Log();
  const std::string key = "/capstan/gateway/dns/zones/live.example.";
  ASSERT_EQ(
      Etcdctl(store.endpoint(), {"put", key, "@ 60 SOA ns host 1 2 3 4 5\nwww 60 A 192.0.2.80\n"})
          .exit_code,
      0);
  auto www = [&] { return Dig(port, {"+short", "www.live.example", "A"}); };
  ASSERT_TRUE(Eventually([&] { return www() == std::vector<std::string>{"192.0.2.80"}; }))
      << last_dig_ << gateway_->Log();
  // The file's zone is still served beside it.
  EXPECT_EQ(Dig(port, {"+short", "ns1.example.com", "A"}), std::vector<std::string>{"192.0.2.1"});
  // A document that does not parse is refused with its key and line; the
  // last good version stays.
  ASSERT_EQ(Etcdctl(store.endpoint(), {"put", key, "@ 60 SOA ns host 1 2 3 4 5\nwww A 1.2.3\n"})
                .exit_code,
            0);
  ASSERT_TRUE(Eventually([&] {
    return gateway_->Log().find("refusing a zone document") != std::string::npos;
  })) << gateway_->Log();
  EXPECT_NE(gateway_->Log().find(key + ":2: A: not an IPv4 address"), std::string::npos)
      << gateway_->Log();
  EXPECT_EQ(www(), std::vector<std::string>{"192.0.2.80"});
  // Deleting the document removes the zone.
  ASSERT_EQ(Etcdctl(store.endpoint(), {"del", key}).exit_code, 0);
  ASSERT_TRUE(Eventually([&] {
    Dig(port, {"www.live.example", "A"});
    return last_dig_.find("status: REFUSED") != std::string::npos;
  })) << last_dig_;
}

}  // namespace
}  // namespace capstan::e2e
