// Drives `capstan store` with the real etcdctl (Debian's etcd-client) through
// every command a user of etcd relies on.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "diff_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

class EtcdctlTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer({}); }
  void StartServer(std::vector<std::string> extra) {
    server_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_.path() + "/data",
                                             std::move(extra));
    ASSERT_TRUE(server_->Start()) << server_->Log();
  }
  void TearDown() override {
    if (HasFailure() && server_) std::cerr << "server log:\n" << server_->Log() << "\n";
  }
  CommandResult Ctl(const std::vector<std::string>& args, const std::string& input = "") {
    return Etcdctl(server_->endpoint(), args, input);
  }
  std::string Ok(const std::vector<std::string>& args, const std::string& input = "") {
    auto r = Ctl(args, input);
    EXPECT_EQ(r.exit_code, 0) << "etcdctl " << ::testing::PrintToString(args) << "\n" << r.err;
    return r.out;
  }

  TempDir dir_{"capstan-etcdctl"};
  std::unique_ptr<StoreProcess> server_;
};

TEST_F(EtcdctlTest, PutGetDeleteWithOptions) {
  EXPECT_EQ(Ok({"put", "a", "1"}), "OK\n");
  EXPECT_EQ(Ok({"put", "b", "2"}), "OK\n");
  EXPECT_EQ(Ok({"put", "c", "3"}), "OK\n");
  EXPECT_EQ(Ok({"put", "a", "10"}), "OK\n");
  EXPECT_EQ(Ok({"get", "a"}), "a\n10\n");
  EXPECT_THAT(Ok({"get", "a", "-w", "json"}),
              ContainsRegex("\"revision\":5.*\"create_revision\":2,\"mod_revision\":5,"
                            "\"version\":2"));
  EXPECT_EQ(Ok({"get", "a", "--rev=2"}), "a\n1\n");
  EXPECT_EQ(Ok({"get", "a", "--prefix", "--keys-only"}), "a\n\n");
  EXPECT_EQ(Ok({"get", "b", "--from-key", "--print-value-only"}), "2\n3\n");
  EXPECT_EQ(Ok({"get", "a", "z", "--limit=2", "--print-value-only"}), "10\n2\n");
  EXPECT_EQ(Ok({"get", "a", "z", "--sort-by=MODIFY", "--order=DESCEND", "--print-value-only"}),
            "10\n3\n2\n");
  EXPECT_THAT(Ok({"get", "a", "z", "--limit=1", "-w", "json"}),
              ContainsRegex("\"more\":true,\"count\":3"));
  EXPECT_EQ(Ok({"put", "a", "11", "--prev-kv"}), "OK\na\n10\n");
  EXPECT_EQ(Ok({"del", "a", "c", "--prev-kv"}), "2\na\n11\nb\n2\n");
  EXPECT_EQ(Ok({"get", "", "--prefix", "--print-value-only"}), "3\n");
  EXPECT_EQ(Ok({"del", "nothing"}), "0\n");
}

TEST_F(EtcdctlTest, PutFlagsAndErrors) {
  Ok({"put", "k", "v"});
  EXPECT_EQ(Ok({"put", "k", "--ignore-value"}), "OK\n");
  EXPECT_EQ(Ok({"get", "k", "--print-value-only"}), "v\n");
  auto r = Ctl({"put", "missing", "--ignore-value"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("etcdserver: key not found"));
  r = Ctl({"put", "k", "v", "--lease=1234"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("etcdserver: requested lease not found"));
}

TEST_F(EtcdctlTest, TxnFromStdin) {
  Ok({"put", "user", "alice"});
  std::string out =
      Ok({"txn"}, "value(\"user\") = \"alice\"\n\nput user bob\nget user\n\nput user carol\n\n");
  EXPECT_EQ(out, "SUCCESS\n\nOK\n\nuser\nbob\n");
  out = Ok({"txn"}, "value(\"user\") = \"alice\"\n\nput user bob\n\nget user\n\n");
  EXPECT_EQ(out, "FAILURE\n\nuser\nbob\n");
  out = Ok({"txn"}, "mod(\"user\") > \"0\"\nversion(\"user\") = \"2\"\n\ndel user\n\n\n");
  EXPECT_EQ(out, "SUCCESS\n\n1\n");
  auto r = Ctl({"txn"}, "\nput k 1\nput k 2\n\n\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("etcdserver: duplicate key given in txn request"));
}

TEST_F(EtcdctlTest, WatchLiveAndFromHistory) {
  Ok({"put", "w/old", "0"});
  std::string log = dir_.path() + "/watch.log";
  Process watcher({"etcdctl", "--endpoints=" + server_->endpoint(), "watch", "w/", "--prefix",
                   "--rev=1", "--prev-kv"},
                  log);
  ASSERT_TRUE(Eventually([&] { return watcher.Log().find("w/old") != std::string::npos; }));
  Ok({"put", "w/a", "1"});
  Ok({"put", "w/a", "2"});
  Ok({"del", "w/a"});
  Ok({"put", "other", "x"});
  ASSERT_TRUE(Eventually([&] {
    auto l = watcher.Log();
    return std::count(l.begin(), l.end(), '\n') >= 16;
  })) << watcher.Log();
  EXPECT_EQ(watcher.Log(),
            "PUT\nw/old\n0\n"
            "PUT\nw/a\n1\n"
            "PUT\nw/a\n1\nw/a\n2\n"
            "DELETE\nw/a\n2\nw/a\n\n");
}

TEST_F(EtcdctlTest, LeasesAttachExpireAndRevoke) {
  std::string out = Ok({"lease", "grant", "100"});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("lease ([0-9a-f]+) granted with TTL\\(100s\\)")))
      << out;
  std::string id = m[1];
  Ok({"put", "leased", "v", "--lease=" + id});
  EXPECT_THAT(Ok({"lease", "timetolive", id, "--keys"}),
              ContainsRegex("granted with TTL\\(100s\\), remaining\\(9[0-9]s\\), attached "
                            "keys\\(\\[leased\\]\\)"));
  EXPECT_THAT(Ok({"lease", "list"}), HasSubstr(id));
  EXPECT_THAT(Ok({"lease", "keep-alive", "--once", id}), HasSubstr("keepalived with TTL(100)"));
  EXPECT_THAT(Ok({"lease", "revoke", id}), HasSubstr("revoked"));
  EXPECT_EQ(Ok({"get", "leased"}), "");
  EXPECT_THAT(Ok({"lease", "timetolive", id}), HasSubstr("already expired"));

  // Expiry: the minimum TTL is 2s (etcd's, from the election timeout).
  out = Ok({"lease", "grant", "1"});
  ASSERT_TRUE(std::regex_search(out, m, std::regex("lease ([0-9a-f]+) granted with TTL\\(2s\\)")))
      << out;
  Ok({"put", "short", "v", "--lease=" + std::string(m[1])});
  EXPECT_TRUE(Eventually([&] { return Ok({"get", "short"}).empty(); }, std::chrono::seconds(10)));
}

TEST_F(EtcdctlTest, LockIsExclusive) {
  // The holder marks the critical section; the second locker must only ever
  // see it finished.
  std::string ep = server_->endpoint();
  std::string ctl = "ETCDCTL_API=3 etcdctl --endpoints=" + ep;
  Process holder({"etcdctl", "--endpoints=" + ep, "lock", "mutex", "--", "sh", "-c",
                  ctl + " put owner inside && sleep 1 && " + ctl + " put owner released"},
                 dir_.path() + "/holder.log");
  ASSERT_TRUE(Eventually([&] {
    return Ok({"get", "owner", "--print-value-only"}) == "inside\n";
  })) << holder.Log();
  std::string out = Ok({"lock", "mutex", "--", "sh", "-c", ctl + " get owner --print-value-only"});
  EXPECT_THAT(out, HasSubstr("released")) << "the lock was held twice at once";
  EXPECT_EQ(holder.Wait(std::chrono::seconds(10)), 0);
  EXPECT_EQ(Ok({"get", "mutex/", "--prefix"}), "") << "both locks released";
}

TEST_F(EtcdctlTest, ElectionCampaignObserveAndResign) {
  auto elect = [&](const std::vector<std::string>& args, const std::string& log) {
    std::vector<std::string> argv = {"etcdctl", "--endpoints=" + server_->endpoint(), "elect"};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<Process>(argv, dir_.path() + "/" + log);
  };
  auto alice = elect({"election", "alice"}, "alice.log");
  ASSERT_TRUE(Eventually([&] { return alice->Log().find("alice") != std::string::npos; }))
      << alice->Log();
  EXPECT_THAT(alice->Log(), ContainsRegex("^election/[0-9a-f]+\nalice\n$"));
  auto observer = elect({"-l", "election"}, "observe.log");
  ASSERT_TRUE(Eventually([&] { return observer->Log().find("alice") != std::string::npos; }));
  auto bob = elect({"election", "bob"}, "bob.log");
  ASSERT_TRUE(Eventually([&] {
    // Keys sort by lease ID, so either order is right.
    auto v = Ok({"get", "election/", "--prefix", "--print-value-only"});
    return v == "alice\nbob\n" || v == "bob\nalice\n";
  })) << "bob waits in line";
  EXPECT_EQ(bob->Log(), "") << "bob must not lead while alice does";
  alice->Signal(SIGINT);  // etcdctl resigns on interrupt
  EXPECT_EQ(alice->Wait(std::chrono::seconds(10)), 0);
  EXPECT_TRUE(Eventually([&] { return bob->Log().find("bob") != std::string::npos; }))
      << bob->Log();
  EXPECT_TRUE(Eventually([&] { return observer->Log().find("bob") != std::string::npos; }))
      << observer->Log();
}

TEST_F(EtcdctlTest, CompactionMakesOldRevisionsUnreadable) {
  for (int i = 0; i < 5; ++i) Ok({"put", "k", std::to_string(i)});
  EXPECT_EQ(Ok({"compaction", "4"}), "compacted revision 4\n");
  auto r = Ctl({"get", "k", "--rev=3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("etcdserver: mvcc: required revision has been compacted"));
  EXPECT_EQ(Ok({"get", "k", "--rev=4", "--print-value-only"}), "2\n");
  r = Ctl({"compaction", "100"});
  EXPECT_THAT(r.err, HasSubstr("etcdserver: mvcc: required revision is a future revision"));
  EXPECT_EQ(Ok({"compaction", "--physical", "5"}), "compacted revision 5\n");
}

TEST_F(EtcdctlTest, MaintenanceCommands) {
  Ok({"put", "k", "v"});
  std::string status = Ok({"endpoint", "status", "-w", "table"});
  EXPECT_THAT(status, HasSubstr(server_->endpoint()));
  EXPECT_THAT(status, HasSubstr("3.5.17"));
  auto health = Ctl({"endpoint", "health"});
  EXPECT_EQ(health.exit_code, 0);
  EXPECT_THAT(health.out + health.err, HasSubstr("is healthy"));
  EXPECT_THAT(Ok({"member", "list"}), HasSubstr("started, e2e"));
  EXPECT_EQ(Ok({"alarm", "list"}), "");
  EXPECT_THAT(Ok({"defrag"}), HasSubstr("Finished defragmenting"));
  EXPECT_THAT(Ok({"endpoint", "hashkv"}), HasSubstr(server_->endpoint()));
  std::string snap = dir_.path() + "/snap.db";
  EXPECT_THAT(Ok({"snapshot", "save", snap}), HasSubstr("Snapshot saved"));
  EXPECT_EQ(std::filesystem::file_size(snap) % 512, 32u) << "tar archive plus sha256 trailer";
  auto tar = RunCommand({"tar", "-tf", snap});
  EXPECT_THAT(tar.out, HasSubstr("CURRENT"));
}

TEST_F(EtcdctlTest, DataAndLeasesSurviveRestart) {
  Ok({"put", "durable", "yes"});
  std::string out = Ok({"lease", "grant", "300"});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("lease ([0-9a-f]+)")));
  Ok({"put", "leased", "v", "--lease=" + std::string(m[1])});
  server_->Stop();
  StartServer({});
  EXPECT_EQ(Ok({"get", "durable", "--print-value-only"}), "yes\n");
  EXPECT_THAT(Ok({"lease", "timetolive", m[1], "--keys"}), HasSubstr("attached keys([leased])"));
  EXPECT_THAT(Ok({"get", "durable", "-w", "json"}), HasSubstr("\"revision\":3"));
}

class QuotaTest : public EtcdctlTest {
 protected:
  void SetUp() override { StartServer({"--quota-backend-bytes=200000"}); }
};

TEST_F(QuotaTest, NoSpaceAlarmAllowsOnlyReadsAndDeletes) {
  std::string big(50000, 'x');
  CommandResult r;
  for (int i = 0; i < 20; ++i) {
    r = Ctl({"put", "big" + std::to_string(i), big});
    if (r.exit_code != 0) break;
  }
  ASSERT_NE(r.exit_code, 0) << "the quota must be hit";
  EXPECT_THAT(r.err, HasSubstr("etcdserver: mvcc: database space exceeded"));
  EXPECT_TRUE(Eventually([&] {
    return Ok({"alarm", "list"}).find("NOSPACE") != std::string::npos;
  }));
  r = Ctl({"put", "small", "v"});
  EXPECT_THAT(r.err, HasSubstr("database space exceeded"));
  EXPECT_EQ(Ok({"get", "big0", "--keys-only"}), "big0\n\n");
  EXPECT_THAT(Ok({"del", "big", "--prefix"}), ContainsRegex("[0-9]+\n"));
  EXPECT_THAT(Ok({"alarm", "disarm"}), HasSubstr("NOSPACE"));
}

TEST_F(EtcdctlTest, MetricsAndHealthOverHttp) {
  Ok({"put", "k", "v"});
  std::string base = "http://127.0.0.1:" + std::to_string(server_->metrics_port());
  auto metrics = RunCommand({"curl", "-sf", base + "/metrics"});
  EXPECT_EQ(metrics.exit_code, 0);
  EXPECT_THAT(metrics.out,
              HasSubstr("# TYPE capstan_store_revision gauge\ncapstan_store_revision 2"));
  EXPECT_THAT(metrics.out, HasSubstr("capstan_wal_fsync_duration_seconds_bucket"));
  auto health = RunCommand({"curl", "-sf", base + "/health"});
  EXPECT_EQ(health.out, "{\"health\":\"true\",\"reason\":\"\"}");
  EXPECT_NE(RunCommand({"curl", "-sf", base + "/nope"}).exit_code, 0);
}

class ProgressNotifyTest : public EtcdctlTest {
 protected:
  void SetUp() override { StartServer({"--experimental-watch-progress-notify-interval=200ms"}); }
};

TEST_F(ProgressNotifyTest, QuietWatchersGetProgressNotifications) {
  // etcdctl 3.4 cannot ask for progress_notify, so this one speaks gRPC directly.
  Ok({"put", "quiet", "1"});
  Stubs stubs(server_->endpoint());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stubs.watch->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  req.mutable_create_request()->set_key("quiet");
  req.mutable_create_request()->set_progress_notify(true);
  ASSERT_TRUE(stream->Write(req));
  etcdserverpb::WatchResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(resp.created());
  int64_t id = resp.watch_id();
  ASSERT_TRUE(stream->Read(&resp)) << "no progress notification within the deadline";
  EXPECT_FALSE(resp.created());
  EXPECT_EQ(resp.events_size(), 0);
  EXPECT_EQ(resp.watch_id(), id);
  EXPECT_EQ(resp.header().revision(), 2);
  ctx.TryCancel();
}

TEST(StoreConfigFile, FileSettingsApplyAndFlagsOverrideThem) {
  TempDir dir("capstan-config");
  int port = PickFreePort();
  std::string cfg = dir.path() + "/store.yaml";
  {
    std::ofstream f(cfg);
    f << "name: from-file\n"
      << "data-dir: " << dir.path() << "/data\n"
      << "listen-client-urls: [http://127.0.0.1:" << port << "]\n"
      << "max-txn-ops: 3\n";
  }
  Process server({CapstanBinary(), "store", "--config-file", cfg, "--max-txn-ops", "4"},
                 dir.path() + "/log");
  std::string ep = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(Eventually([&] {
    return Etcdctl(ep, {"member", "list"}).exit_code == 0;
  })) << server.Log();
  EXPECT_THAT(Etcdctl(ep, {"member", "list"}).out, HasSubstr("from-file"));
  std::string four = "\nput a 1\nput b 1\nput c 1\nput d 1\n\n\n";
  EXPECT_EQ(Etcdctl(ep, {"txn"}, four).exit_code, 0) << "the flag (4) overrides the file (3)";
  std::string five = "\nput a 1\nput b 1\nput c 1\nput d 1\nput e 1\n\n\n";
  EXPECT_THAT(Etcdctl(ep, {"txn"}, five).err, HasSubstr("too many operations in txn request"));

  std::ofstream(dir.path() + "/bad.yaml") << "name: [unclosed\n";
  auto r = RunCommand({CapstanBinary(), "store", "--config-file", dir.path() + "/bad.yaml"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("bad.yaml"));
}

TEST(StoreFlags, BadFlagsSayWhatIsWrong) {
  auto r = RunCommand({CapstanBinary(), "store", "--listen-client-urls", "https://127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  // An https:// URL needs a certificate (etcd's message, naming the flags).
  EXPECT_THAT(r.err, HasSubstr("TLS key/cert (--cert-file, --key-file) must be provided"));
  r = RunCommand({CapstanBinary(), "store", "--election-timeout", "100"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("should be at least 5 times --heartbeat-interval"));
  r = RunCommand({CapstanBinary(), "store", "--client-threads", "-1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--client-threads must be between 0"));
  r = RunCommand({CapstanBinary(), "store", "--no-such-flag"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err + r.out, HasSubstr("--no-such-flag"));
  r = RunCommand({CapstanBinary(), "store", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--quota-backend-bytes"));
}

}  // namespace
}  // namespace capstan::e2e
