// Real 3-member `capstan store` clusters: etcdctl against every member, the
// leader killed with SIGKILL under write load (history checked for
// linearizability, no acknowledged write lost), partitions through the
// fault-injecting proxies, membership changes and full restarts.
#include <signal.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "cluster.h"
#include "diff_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "raft/sim/linearizability.h"

namespace capstan::e2e {
namespace {

using namespace etcdserverpb;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

std::string HexId(uint64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%llx", static_cast<unsigned long long>(id));
  return buf;
}

std::string OkCtl(const std::string& endpoints, const std::vector<std::string>& args) {
  auto r = Etcdctl(endpoints, args);
  EXPECT_EQ(r.exit_code, 0) << "etcdctl " << args[0] << ": " << r.err;
  return r.out;
}

// Member lists are served from each member's applied state, which may trail
// the member that made a change by a moment.
::testing::AssertionResult EventuallyListed(const std::string& endpoint, const std::string& want,
                                            bool present = true) {
  std::string last;
  bool ok = Eventually([&] {
    last = Etcdctl(endpoint, {"member", "list"}).out;
    return (last.find(want) != std::string::npos) == present;
  });
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "member list on " << endpoint << (present ? " lacks " : " still has ") << want << ":\n"
         << last;
}

grpc::Status Put(Stubs& s, const std::string& k, const std::string& v, int64_t* rev = nullptr,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout * TimeScale());
  PutRequest req;
  req.set_key(k);
  req.set_value(v);
  PutResponse resp;
  grpc::Status st = s.kv->Put(&ctx, req, &resp);
  if (st.ok() && rev != nullptr) *rev = resp.header().revision();
  return st;
}

grpc::Status Get(Stubs& s, const std::string& k, bool serializable, RangeResponse* resp,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout * TimeScale());
  RangeRequest req;
  req.set_key(k);
  req.set_serializable(serializable);
  return s.kv->Range(&ctx, req, resp);
}

std::string Value(Stubs& s, const std::string& k, bool serializable) {
  RangeResponse resp;
  if (!Get(s, k, serializable, &resp).ok() || resp.kvs_size() == 0) return "";
  return resp.kvs(0).value();
}

TEST(ClusterTest, EtcdctlWorksAgainstEveryMember) {
  TempDir dir("capstan-cluster-ctl");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();

  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(OkCtl(c.endpoint(i), {"put", "key" + std::to_string(i), "from-" + c.name(i)}),
              "OK\n");
  }
  // Linearizable reads on any member see every acknowledged write at once.
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(OkCtl(c.endpoint(i), {"get", "key", "--prefix", "--print-value-only"}),
              "from-m0\nfrom-m1\nfrom-m2\n")
        << "member " << i;
  }
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_TRUE(EventuallyListed(c.endpoint(1), "started, " + c.name(i) + ", " + c.peer_url(i) +
                                                    ", http://" + c.endpoint(i) + ", false"));
  }
  // Each member learns the others' client URLs as it applies their
  // publications: member 2's list may lag member 1's by a moment.
  std::string status;
  EXPECT_TRUE(Eventually([&] {
    status = OkCtl(c.endpoint(2), {"endpoint", "status", "--cluster"});
    for (size_t i = 0; i < c.size(); ++i) {
      if (status.find(c.endpoint(i)) == std::string::npos) return false;
    }
    return true;
  })) << status;
  int leader = c.WaitForLeader(std::chrono::seconds(5));
  ASSERT_GE(leader, 0);
  size_t follower = (static_cast<size_t>(leader) + 1) % c.size();
  size_t other = (static_cast<size_t>(leader) + 2) % c.size();

  // A watch on a follower sees a put made through another member.
  Process watch({"etcdctl", "--endpoints=" + c.endpoint(follower), "watch", "watched"},
                dir.path() + "/watch.log", {{"ETCDCTL_API", "3"}});
  ASSERT_TRUE(Eventually([&] {
    OkCtl(c.endpoint(other), {"put", "watched", "hello"});
    return watch.Log().find("hello") != std::string::npos;
  }));

  // Leases: granted on one follower, kept alive through another, attached keys
  // visible everywhere, revoked through the leader.
  std::string grant = OkCtl(c.endpoint(follower), {"lease", "grant", "30"});
  std::string lease = grant.substr(6, grant.find(' ', 6) - 6);
  OkCtl(c.endpoint(follower), {"put", "leased", "v", "--lease=" + lease});
  EXPECT_THAT(OkCtl(c.endpoint(other), {"lease", "keep-alive", "--once", lease}),
              HasSubstr("keepalived with TTL(30)"));
  EXPECT_THAT(OkCtl(c.endpoint(other), {"lease", "timetolive", lease, "--keys"}),
              HasSubstr("attached keys([leased])"));
  OkCtl(c.endpoint(static_cast<size_t>(leader)), {"lease", "revoke", lease});
  EXPECT_EQ(OkCtl(c.endpoint(follower), {"get", "leased"}), "");

  // Txn and compaction go through the log from a follower.
  EXPECT_THAT(Etcdctl(c.endpoint(follower), {"txn"},
                      "value(\"key0\") = \"from-m0\"\n\nput key0 changed\n\n\n")
                  .out,
              HasSubstr("SUCCESS"));
  EXPECT_EQ(OkCtl(c.endpoint(other), {"get", "key0", "--print-value-only"}), "changed\n");

  // Leadership moves where it is told.
  std::string target = HexId(c.MemberId(follower));
  EXPECT_THAT(OkCtl(c.endpoint(static_cast<size_t>(leader)), {"move-leader", target}),
              HasSubstr("Leadership transferred"));
  EXPECT_EQ(c.WaitForLeader(std::chrono::seconds(5)), static_cast<int>(follower));
}

int64_t CountPrefix(Stubs& s, const std::string& prefix, bool serializable) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  RangeRequest req;
  req.set_key(prefix);
  std::string end = prefix;
  end.back()++;
  req.set_range_end(end);
  req.set_count_only(true);
  req.set_serializable(serializable);
  RangeResponse resp;
  if (!s.kv->Range(&ctx, req, &resp).ok()) return -1;
  return resp.count();
}

TEST(ClusterTest, LeaderKilledUnderWriteLoadLosesNothingAndStaysLinearizable) {
  TempDir dir("capstan-cluster-kill");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  int leader = c.WaitForLeader(std::chrono::seconds(5));
  ASSERT_GE(leader, 0);

  std::mutex mu;
  std::vector<raft::sim::Op> history;
  std::vector<std::string> acked;  // unique keys whose put was acknowledged
  std::atomic<bool> stop{false};
  auto t0 = Clock::now();
  auto now = [&] {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
  };
  std::vector<std::thread> clients;
  // A failed ASSERT returns early: the clients stop and are joined on every
  // way out (a joinable std::thread destroyed would terminate the test).
  struct JoinClients {
    std::atomic<bool>& stop;
    std::vector<std::thread>& clients;
    ~JoinClients() {
      stop = true;
      for (auto& t : clients) {
        if (t.joinable()) t.join();
      }
    }
  } join_clients{stop, clients};
  for (int cl = 0; cl < 6; ++cl) {
    clients.emplace_back([&, cl] {
      std::mt19937 rng(static_cast<uint32_t>(cl));
      size_t member = static_cast<size_t>(cl) % c.size();
      auto stubs = std::make_unique<Stubs>(c.endpoint(member));
      int seq = 0;
      while (!stop) {
        unsigned dice = rng() % 4;
        grpc::Status st;
        if (dice < 2) {
          std::string key = "u-" + std::to_string(cl) + "-" + std::to_string(seq++);
          st = Put(*stubs, key, "v", nullptr, std::chrono::seconds(3));
          if (st.ok()) {
            std::lock_guard<std::mutex> lock(mu);
            acked.push_back(key);
          }
        } else {
          raft::sim::Op op;
          op.client = static_cast<uint64_t>(cl);
          op.key = "reg" + std::to_string(rng() % 3);
          op.invoke = now();
          if (dice == 2) {
            op.kind = raft::sim::Op::Kind::kWrite;
            op.value = "c" + std::to_string(cl) + "-" + std::to_string(seq++);
            st = Put(*stubs, op.key, op.value, nullptr, std::chrono::seconds(3));
            op.ok = st.ok();
            // A failed write may still have happened: its outcome is unknown.
            op.complete = st.ok() ? now() : INT64_MAX;
          } else {
            op.kind = raft::sim::Op::Kind::kRead;
            RangeResponse resp;
            st = Get(*stubs, op.key, false, &resp, std::chrono::seconds(3));
            op.complete = now();
            op.ok = st.ok();
            if (resp.kvs_size() > 0) op.output = resp.kvs(0).value();
          }
          if (op.kind == raft::sim::Op::Kind::kWrite || op.ok) {
            std::lock_guard<std::mutex> lock(mu);
            history.push_back(op);
          }
        }
        if (!st.ok()) {
          // That member may be the dead one: go to the next.
          member = (member + 1) % c.size();
          stubs = std::make_unique<Stubs>(c.endpoint(member));
        }
      }
    });
  }
  // Generous: under TSan on a loaded CI machine 200 writes (with an
  // election after start) took longer than the default 10 s.
  auto wait_for_acks = [&](size_t n) {
    return Eventually(
        [&] {
          std::lock_guard<std::mutex> lock(mu);
          return acked.size() >= n;
        },
        std::chrono::seconds(60));
  };
  ASSERT_TRUE(wait_for_acks(200)) << c.Logs();
  size_t acked_before_kill;
  {
    std::lock_guard<std::mutex> lock(mu);
    acked_before_kill = acked.size();
  }
  auto killed_at = Clock::now();
  c.Kill(static_cast<size_t>(leader));
  int new_leader = c.WaitForLeader(std::chrono::seconds(15), {static_cast<size_t>(leader)});
  auto failover = Clock::now() - killed_at;
  ASSERT_GE(new_leader, 0) << c.Logs();
  EXPECT_NE(new_leader, leader);
  auto failover_ms = std::chrono::duration_cast<std::chrono::milliseconds>(failover).count();
  std::cerr << "new leader " << failover_ms << " ms after SIGKILL (election timeout "
            << c.options().election_ms << " ms)\n";
  // "About two election timeouts"; the bound leaves room for a loaded CI machine.
  EXPECT_LE(failover_ms, 6 * c.options().election_ms);
  ASSERT_TRUE(wait_for_acks(acked_before_kill + 200)) << "writes did not resume\n" << c.Logs();
  stop = true;
  for (auto& t : clients) t.join();
  clients.clear();

  ASSERT_TRUE(c.StartMember(static_cast<size_t>(leader))) << c.Log(static_cast<size_t>(leader));
  ASSERT_GE(c.WaitForLeader(std::chrono::seconds(10)), 0);
  for (size_t i = 0; i < c.size(); ++i) {
    Stubs stubs(c.endpoint(i));
    ASSERT_TRUE(Eventually([&] {
      return CountPrefix(stubs, "u-", false) >= static_cast<int64_t>(acked.size());
    })) << "member "
        << i << " is missing acknowledged writes";
    for (const std::string& key : acked) {
      RangeResponse resp;
      ASSERT_TRUE(Get(stubs, key, true, &resp).ok());
      ASSERT_EQ(resp.kvs_size(), 1) << "member " << i << " lost acknowledged write " << key;
    }
  }
  auto result = raft::sim::CheckLinearizable(history);
  EXPECT_TRUE(result.linearizable) << result.key << "\n" << result.details;
  EXPECT_EQ(result.inconclusive_keys, 0u);
  std::cerr << acked.size() << " unique writes acknowledged, " << history.size()
            << " register operations checked\n";
}

TEST(ClusterTest, IsolatedLeaderStepsDownAndTheMajorityCarriesOn) {
  TempDir dir("capstan-cluster-partition");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  size_t old_leader = static_cast<size_t>(c.WaitForLeader(std::chrono::seconds(5)));
  Stubs isolated(c.endpoint(old_leader));
  ASSERT_TRUE(Put(isolated, "before", "1").ok());

  c.Isolate({old_leader});
  int leader = c.WaitForLeader(std::chrono::seconds(10), {old_leader});
  ASSERT_GE(leader, 0) << c.Logs();
  ASSERT_NE(static_cast<size_t>(leader), old_leader);
  // CheckQuorum: the cut-off leader notices it leads no one and steps down.
  EXPECT_TRUE(Eventually([&] { return c.LeaderSeenBy(old_leader) != c.MemberId(old_leader); }))
      << c.Log(old_leader);

  Stubs majority(c.endpoint(static_cast<size_t>(leader)));
  ASSERT_TRUE(Put(majority, "during", "2").ok());
  EXPECT_FALSE(Put(isolated, "lost", "x", nullptr, std::chrono::seconds(2)).ok())
      << "a minority must not commit writes";
  RangeResponse resp;
  EXPECT_FALSE(Get(isolated, "during", false, &resp, std::chrono::seconds(2)).ok())
      << "a minority must not serve linearizable reads";
  EXPECT_EQ(Value(isolated, "before", true), "1") << "serializable reads are served locally";
  EXPECT_EQ(Value(isolated, "during", true), "") << "the minority cannot have the new write";

  c.Heal();
  EXPECT_TRUE(Eventually([&] { return Value(isolated, "during", true) == "2"; }))
      << c.Log(old_leader);
  EXPECT_GE(c.WaitForLeader(std::chrono::seconds(10)), 0);
  EXPECT_EQ(Value(isolated, "lost", false), "") << "the write the minority refused never appears";
  EXPECT_TRUE(Put(isolated, "after", "3").ok());
}

TEST(ClusterTest, IsolatedFollowerFallsBehindAndCatchesUp) {
  TempDir dir("capstan-cluster-follower");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  size_t leader = static_cast<size_t>(c.WaitForLeader(std::chrono::seconds(5)));
  size_t follower = (leader + 1) % c.size();
  c.Isolate({follower});
  Stubs majority(c.endpoint(leader));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Put(majority, "k" + std::to_string(i), "v").ok());
  Stubs cut(c.endpoint(follower));
  EXPECT_EQ(CountPrefix(cut, "k", true), 0);
  RangeResponse resp;
  EXPECT_FALSE(Get(cut, "k1", false, &resp, std::chrono::seconds(2)).ok());
  // The cut-off follower's pre-votes never disturb the majority's leader.
  EXPECT_EQ(c.LeaderSeenBy(leader), c.MemberId(leader));
  c.Heal();
  EXPECT_TRUE(Eventually([&] { return CountPrefix(cut, "k", true) == 50; })) << c.Log(follower);
  EXPECT_EQ(c.WaitForLeader(std::chrono::seconds(5)), static_cast<int>(leader))
      << "healing a follower must not cost the leader its place";
}

TEST(ClusterTest, FollowerFarBehindCatchesUpFromASnapshot) {
  TempDir dir("capstan-cluster-snapshot");
  ClusterOptions options;
  options.extra_flags = {"--snapshot-count", "100", "--experimental-snapshot-catchup-entries",
                         "20"};
  Cluster c(dir.path(), options);
  ASSERT_TRUE(c.Start()) << c.Logs();
  size_t leader = static_cast<size_t>(c.WaitForLeader(std::chrono::seconds(5)));
  size_t follower = (leader + 1) % c.size();
  Stubs cut(c.endpoint(follower));
  ASSERT_TRUE(Put(cut, "k000", "first").ok());
  // A watcher on the follower must see every event across the snapshot, in order.
  Process watch({"etcdctl", "--endpoints=" + c.endpoint(follower), "watch", "--prefix", "k"},
                dir.path() + "/watch.log", {{"ETCDCTL_API", "3"}});
  ASSERT_TRUE(Eventually([&] {
    return Put(cut, "k000", "first").ok() && watch.Log().find("first") != std::string::npos;
  }));

  c.Isolate({follower});
  Stubs majority(c.endpoint(leader));
  char key[16];
  for (int i = 1; i <= 400; ++i) {
    std::snprintf(key, sizeof(key), "k%03d", i);
    ASSERT_TRUE(Put(majority, key, "v" + std::to_string(i)).ok());
  }
  ASSERT_TRUE(Eventually([&] {
    return c.Log(leader).find("raft log compacted") != std::string::npos;
  })) << c.Log(leader);
  c.Heal();
  ASSERT_TRUE(
      Eventually([&] { return CountPrefix(cut, "k", true) == 401; }, std::chrono::seconds(20)))
      << c.Log(follower);
  // Readers see the restored keys as soon as the database is swapped, a moment
  // before the restore finishes and logs; await the line rather than race it.
  EXPECT_TRUE(Eventually([&] {
    return c.Log(follower).find("restored from snapshot") != std::string::npos;
  })) << c.Log(follower);
  EXPECT_EQ(Value(cut, "k400", false), "v400");
  ASSERT_TRUE(Eventually([&] { return watch.Log().find("v400") != std::string::npos; }))
      << watch.Log();
  std::string events = watch.Log();
  size_t last = 0;
  for (int i = 1; i <= 400; ++i) {
    size_t at = events.find("\nv" + std::to_string(i) + "\n");
    ASSERT_NE(at, std::string::npos) << "watch missed event " << i;
    ASSERT_GT(at, last) << "watch events out of order at " << i;
    last = at;
  }
  // The restored state is durable: it survives a restart of the follower.
  c.Kill(follower);
  ASSERT_TRUE(c.StartMember(follower)) << c.Log(follower);
  Stubs again(c.endpoint(follower));
  EXPECT_EQ(CountPrefix(again, "k", false), 401) << c.Log(follower);
  EXPECT_TRUE(Put(again, "after", "snapshot").ok());
}

// A watch client whose member dies reconnects to another member with its last
// revision + 1 and must see every later revision exactly once, in order.
TEST(ClusterTest, WatchResumesOnAnotherMemberWithoutGapsOrDuplicates) {
  TempDir dir("capstan-cluster-watch");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  size_t leader = static_cast<size_t>(c.WaitForLeader(std::chrono::seconds(5)));
  size_t watched = (leader + 1) % c.size();
  size_t other = (leader + 2) % c.size();

  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    Stubs s(c.endpoint(leader));
    for (int i = 0; i < 600 && !stop; ++i) {
      if (Put(s, "w/" + std::to_string(i % 7), std::to_string(i)).ok()) ++written;
    }
  });

  std::vector<int64_t> revisions;
  auto watch_until = [&](size_t member, int64_t start, const std::function<bool()>& done) {
    Stubs s(c.endpoint(member));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = s.watch->Watch(&ctx);
    WatchRequest req;
    req.mutable_create_request()->set_key("w/");
    req.mutable_create_request()->set_range_end("w0");
    req.mutable_create_request()->set_start_revision(start);
    if (!stream->Write(req)) return;
    WatchResponse resp;
    while (!done() && stream->Read(&resp)) {
      for (const auto& ev : resp.events()) revisions.push_back(ev.kv().mod_revision());
    }
    ctx.TryCancel();
  };
  // Watch on one member until some events arrived, then that member dies.
  watch_until(watched, 1, [&] { return revisions.size() >= 150; });
  ASSERT_GE(revisions.size(), 150u);
  c.Kill(watched);
  // Resume elsewhere right after the last revision seen.
  int64_t resume = revisions.back() + 1;
  writer.join();
  int64_t final_rev = 0;
  {
    Stubs s(c.endpoint(other));
    RangeResponse resp;
    ASSERT_TRUE(Get(s, "w/0", false, &resp).ok());
    final_rev = resp.header().revision();
  }
  watch_until(other, resume, [&] { return !revisions.empty() && revisions.back() >= final_rev; });
  ASSERT_FALSE(revisions.empty());
  EXPECT_EQ(revisions.back(), final_rev);
  // Revision 1 is the empty store; every put makes the next revision.
  EXPECT_EQ(static_cast<int>(revisions.size()), written.load());
  for (size_t i = 1; i < revisions.size(); ++i) {
    ASSERT_EQ(revisions[i], revisions[i - 1] + 1) << "gap or duplicate at event " << i;
  }
  stop = true;
}

// Only the leader expires leases; a new leader gives every lease its full TTL
// again, so a lease kept alive until the failover survives it, then expires
// once nobody renews it.
TEST(ClusterTest, LeasesSurviveLeaderFailoverAndThenExpire) {
  TempDir dir("capstan-cluster-lease");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  size_t leader = static_cast<size_t>(c.WaitForLeader(std::chrono::seconds(5)));
  size_t follower = (leader + 1) % c.size();
  std::string grant = OkCtl(c.endpoint(follower), {"lease", "grant", "4"});
  std::string lease = grant.substr(6, grant.find(' ', 6) - 6);
  OkCtl(c.endpoint(follower), {"put", "leased", "v", "--lease=" + lease});
  // Keep it alive (through a follower, forwarded to the leader) past its
  // first TTL: only the leader knows of these renewals.
  auto granted = Clock::now();
  while (Clock::now() - granted < std::chrono::milliseconds(5000)) {
    EXPECT_THAT(OkCtl(c.endpoint(follower), {"lease", "keep-alive", "--once", lease}),
                HasSubstr("keepalived"));
    std::this_thread::sleep_for(std::chrono::milliseconds(700));  // the client's renewal period
  }
  c.Kill(leader);
  ASSERT_GE(c.WaitForLeader(std::chrono::seconds(10), {leader}), 0);
  auto after_failover = Clock::now();
  EXPECT_THAT(OkCtl(c.endpoint(follower), {"get", "leased"}), HasSubstr("leased"))
      << "the new leader must not expire a lease the old one was keeping";
  ASSERT_TRUE(Eventually(
      [&] {
        return OkCtl(c.endpoint(follower), {"get", "leased"}).empty();
      },
      std::chrono::seconds(20)));
  auto lived = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - after_failover);
  EXPECT_GE(lived.count(), 3000) << "the TTL restarts in full on the new leader";
  EXPECT_THAT(OkCtl(c.endpoint(follower), {"lease", "timetolive", lease}),
              HasSubstr("already expired"));
}

TEST(ClusterTest, MembersAreAddedPromotedAndRemoved) {
  TempDir dir("capstan-cluster-members");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  Stubs first(c.endpoint(0));
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(Put(first, "k" + std::to_string(i), "v" + std::to_string(i)).ok());

  size_t n = c.AddSlot();
  EXPECT_THAT(OkCtl(c.endpoint(1),
                    {"member", "add", c.name(n), "--peer-urls=" + c.peer_url(n), "--learner"}),
              HasSubstr("added to cluster"));
  ASSERT_TRUE(c.StartMember(n, /*existing=*/true)) << c.Log(n);
  Stubs joined(c.endpoint(n));
  ASSERT_TRUE(Eventually([&] { return Value(joined, "k49", true) == "v49"; })) << c.Log(n);
  EXPECT_TRUE(EventuallyListed(c.endpoint(0), "started, " + c.name(n) + ", " + c.peer_url(n)));

  std::string id = HexId(c.MemberId(n));
  // As with etcd, promotion waits until the leader sees the learner caught up.
  std::string promote_out;
  EXPECT_TRUE(Eventually([&] {
    auto r = Etcdctl(c.endpoint(2), {"member", "promote", id});
    promote_out = r.out + r.err;
    return r.exit_code == 0;
  })) << promote_out;
  EXPECT_THAT(promote_out, HasSubstr("promoted"));
  // MemberUpdate changes the advertised peer URLs (here: adds a second one).
  std::string extra = "http://127.0.0.1:" + std::to_string(PickFreePort());
  EXPECT_THAT(
      OkCtl(c.endpoint(1), {"member", "update", id, "--peer-urls=" + c.peer_url(n) + "," + extra}),
      HasSubstr("updated"));
  EXPECT_TRUE(EventuallyListed(c.endpoint(n), c.peer_url(n) + "," + extra));
  EXPECT_TRUE(EventuallyListed(c.endpoint(0), ", http://" + c.endpoint(n) + ", false"))
      << "promoted: no longer a learner";

  // Remove the leader itself: it hands over before leaving, and shuts down.
  size_t leader = static_cast<size_t>(c.WaitForLeader(std::chrono::seconds(5)));
  size_t asker = (leader + 1) % c.size();
  EXPECT_THAT(OkCtl(c.endpoint(asker), {"member", "remove", HexId(c.MemberId(leader))}),
              HasSubstr("removed from cluster"));
  EXPECT_TRUE(Eventually([&] { return !c.Running(leader); })) << c.Log(leader);
  int new_leader = c.WaitForLeader(std::chrono::seconds(10), {leader});
  ASSERT_GE(new_leader, 0) << c.Logs();
  EXPECT_TRUE(EventuallyListed(c.endpoint(n), c.peer_url(leader) + ", ", false));
  EXPECT_TRUE(Put(joined, "after", "removal").ok());
  EXPECT_EQ(Value(joined, "after", false), "removal");
}

TEST(ClusterTest, EveryMemberRestartsWithItsData) {
  TempDir dir("capstan-cluster-restart");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  for (int i = 0; i < 60; ++i) {
    Stubs s(c.endpoint(static_cast<size_t>(i) % c.size()));
    ASSERT_TRUE(Put(s, "k" + std::to_string(i), "v").ok());
  }
  for (int round = 0; round < 2; ++round) {
    // First a clean stop of everyone, then SIGKILL of everyone.
    for (size_t i = 0; i < c.size(); ++i) round == 0 ? c.Stop(i) : c.Kill(i);
    ASSERT_TRUE(c.Start()) << c.Logs();
    for (size_t i = 0; i < c.size(); ++i) {
      Stubs s(c.endpoint(i));
      EXPECT_EQ(CountPrefix(s, "k", false), 60) << "member " << i << " round " << round;
    }
    Stubs s(c.endpoint(static_cast<size_t>(round)));
    ASSERT_TRUE(Put(s, "round" + std::to_string(round), "ok").ok());
  }
}

TEST(ClusterTest, LockWaitsAcrossMembersAndFollowersRenewInOrder) {
  TempDir dir("capstan-cluster-lock");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  size_t leader = static_cast<size_t>(c.WaitForLeader(std::chrono::seconds(5)));
  size_t f1 = (leader + 1) % c.size(), f2 = (leader + 2) % c.size();
  Stubs on_f1(c.endpoint(f1)), on_f2(c.endpoint(f2)), on_leader(c.endpoint(leader));
  auto ctx = [] {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return ctx;
  };
  std::vector<int64_t> leases;
  for (Stubs* s : {&on_f1, &on_f2}) {
    LeaseGrantRequest grant;
    grant.set_ttl(60);
    LeaseGrantResponse granted;
    ASSERT_TRUE(s->lease->LeaseGrant(ctx().get(), grant, &granted).ok()) << c.Logs();
    leases.push_back(granted.id());
  }
  // Renewals through a follower come back one per request, in order.
  {
    auto stream_ctx = ctx();
    auto stream = on_f2.lease->LeaseKeepAlive(stream_ctx.get());
    for (int64_t id : {leases[0], int64_t{424242}, leases[1]}) {
      LeaseKeepAliveRequest req;
      req.set_id(id);
      ASSERT_TRUE(stream->Write(req));
    }
    for (int64_t id : {leases[0], int64_t{424242}, leases[1]}) {
      LeaseKeepAliveResponse resp;
      ASSERT_TRUE(stream->Read(&resp));
      EXPECT_EQ(resp.id(), id);
      EXPECT_EQ(resp.ttl() > 0, id != 424242);
    }
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  v3lockpb::LockRequest first;
  first.set_name("cl");
  first.set_lease(leases[0]);
  v3lockpb::LockResponse held;
  ASSERT_TRUE(on_f1.lock->Lock(ctx().get(), first, &held).ok()) << c.Logs();
  // The second waits on another follower until the holder unlocks on the leader.
  grpc::ClientContext second_ctx;
  second_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v3lockpb::LockResponse second;
  grpc::Status second_status;
  std::atomic<bool> second_done{false};
  std::thread waiter([&] {
    v3lockpb::LockRequest req;
    req.set_name("cl");
    req.set_lease(leases[1]);
    second_status = on_f2.lock->Lock(&second_ctx, req, &second);
    second_done = true;
  });
  struct Joiner {
    std::thread* t;
    grpc::ClientContext* ctx;
    ~Joiner() {
      ctx->TryCancel();
      t->join();
    }
  } joiner{&waiter, &second_ctx};
  // Its key is in line (visible on the leader) before the unlock.
  ASSERT_TRUE(Eventually([&] {
    RangeRequest r;
    r.set_key("cl/");
    r.set_range_end("cl0");
    RangeResponse resp;
    return on_leader.kv->Range(ctx().get(), r, &resp).ok() && resp.count() == 2;
  }));
  EXPECT_FALSE(second_done.load());
  v3lockpb::UnlockRequest unlock;
  unlock.set_key(held.key());
  v3lockpb::UnlockResponse unlocked;
  ASSERT_TRUE(on_leader.lock->Unlock(ctx().get(), unlock, &unlocked).ok());
  ASSERT_TRUE(Eventually([&] { return second_done.load(); }));
  EXPECT_TRUE(second_status.ok()) << StatusText(second_status);
  EXPECT_GT(second.header().revision(), unlocked.header().revision() - 1);
  EXPECT_NE(second.key(), held.key());
}

}  // namespace
}  // namespace capstan::e2e
