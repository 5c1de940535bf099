// Membership operations an operator runs on a live cluster: every member of
// a 3-member cluster replaced one at a time (add as learner, start, promote,
// remove the old one) while a writer keeps writing, with no acknowledged
// write lost and the final members in agreement; learners refusing client
// requests as etcd's do; and etcd's strict reconfiguration check.
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "cluster.h"
#include "diff_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using SteadyClock = std::chrono::steady_clock;

std::string HexId(uint64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%llx", static_cast<unsigned long long>(id));
  return buf;
}

int64_t HashKv(const std::string& endpoint, int64_t rev) {
  Stubs s(endpoint);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5) * TimeScale());
  etcdserverpb::HashKVRequest req;
  req.set_revision(rev);
  etcdserverpb::HashKVResponse resp;
  if (!s.maintenance->HashKV(&ctx, req, &resp).ok()) return -1;
  return resp.hash();
}

// Writes w/<n> = <n> through whichever live member comes next, one at a
// time, until told to stop or its bounds (count, time) are reached;
// remembers every write the cluster acknowledged.
class Writer {
 public:
  explicit Writer(std::vector<std::string> endpoints) : endpoints_(std::move(endpoints)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Writer() { Stop(); }
  void SetEndpoints(std::vector<std::string> endpoints) {
    std::lock_guard<std::mutex> lock(mu_);
    endpoints_ = std::move(endpoints);
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<int> acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  int attempts() const { return attempts_; }

 private:
  static constexpr int kMaxWrites = 20000;
  void Run() {
    auto until = SteadyClock::now() + std::chrono::seconds(120) * TimeScale();
    for (int n = 0; n < kMaxWrites && !stop_ && SteadyClock::now() < until; ++n) {
      std::string endpoint;
      {
        std::lock_guard<std::mutex> lock(mu_);
        endpoint = endpoints_[static_cast<size_t>(n) % endpoints_.size()];
      }
      auto& stubs = stubs_[endpoint];
      if (!stubs) stubs = std::make_unique<Stubs>(endpoint);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2) * TimeScale());
      etcdserverpb::PutRequest req;
      req.set_key("w/" + std::to_string(n));
      req.set_value(std::to_string(n));
      etcdserverpb::PutResponse resp;
      ++attempts_;
      if (stubs->kv->Put(&ctx, req, &resp).ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        acked_.push_back(n);
      }
    }
  }

  std::mutex mu_;
  std::vector<std::string> endpoints_;                   // GUARDED_BY(mu_)
  std::vector<int> acked_;                               // GUARDED_BY(mu_)
  std::map<std::string, std::unique_ptr<Stubs>> stubs_;  // writer thread only
  std::atomic<bool> stop_{false};
  std::atomic<int> attempts_{0};
  std::thread thread_;
};

TEST(MemberReplaceTest, EveryMemberReplacedUnderWriteLoadLosesNoAcknowledgedWrite) {
  TempDir dir("capstan-member-replace");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  std::vector<size_t> live = {0, 1, 2};
  std::set<size_t> gone;
  auto endpoints = [&] {
    std::vector<std::string> out;
    for (size_t i : live) out.push_back(c.endpoint(i));
    return out;
  };
  Writer writer(endpoints());

  for (size_t old = 0; old < 3; ++old) {
    size_t fresh = c.AddSlot();
    std::string via = c.endpoint(live.back());
    // Right after the previous change the leader may still refuse one
    // ("a membership change is already in progress"): retry, bounded.
    CommandResult add;
    ASSERT_TRUE(Eventually([&] {
      add = Etcdctl(
          via, {"member", "add", c.name(fresh), "--peer-urls=" + c.peer_url(fresh), "--learner"});
      return add.exit_code == 0;
    })) << add.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(add.out, m, std::regex("Member +([0-9a-f]+) added"))) << add.out;
    std::string fresh_id = m[1];
    ASSERT_TRUE(c.StartMember(fresh, /*existing=*/true)) << c.Log(fresh);

    // A learner serves Status and serializable reads only, as etcd's.
    auto put = Etcdctl(c.endpoint(fresh), {"put", "learner", "write"});
    EXPECT_NE(put.exit_code, 0);
    EXPECT_THAT(put.err, HasSubstr("rpc not supported for learner"));
    auto get = Etcdctl(c.endpoint(fresh), {"get", "w/0", "--consistency=s"});
    EXPECT_EQ(get.exit_code, 0) << get.err;

    std::string out;
    ASSERT_TRUE(Eventually(
        [&] {
          auto r = Etcdctl(via, {"member", "promote", fresh_id});
          out = r.out + r.err;
          return r.exit_code == 0;
        },
        std::chrono::seconds(30) * TimeScale()))
        << out << c.Logs();
    live.push_back(fresh);
    writer.SetEndpoints(endpoints());

    // The old member goes: the writer stops using it first, as a load
    // balancer would drain it.
    std::erase(live, old);
    writer.SetEndpoints(endpoints());
    std::string old_id = HexId(c.MemberId(old));
    ASSERT_TRUE(Eventually(
        [&] {
          auto r = Etcdctl(c.endpoint(live.front()), {"member", "remove", old_id});
          out = r.out + r.err;
          return r.exit_code == 0;
        },
        std::chrono::seconds(30) * TimeScale()))
        << out << c.Logs();
    // A removed member shuts itself down; the operator stops it anyway.
    EXPECT_TRUE(Eventually([&] { return !c.Running(old); }, std::chrono::seconds(20)))
        << c.Log(old);
    c.Stop(old);
    gone.insert(old);
    ASSERT_GE(c.WaitForLeader(std::chrono::seconds(20), gone), 0) << c.Logs();
  }
  writer.Stop();

  std::vector<int> acked = writer.acked();
  ASSERT_GT(acked.size(), 10u) << "attempts: " << writer.attempts();
  std::printf("member replacement: %zu of %d writes acknowledged\n", acked.size(),
              writer.attempts());
  // Every acknowledged write is on the new members.
  Stubs s(c.endpoint(live.front()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10) * TimeScale());
  etcdserverpb::RangeRequest range;
  range.set_key("w/");
  range.set_range_end("w0");
  etcdserverpb::RangeResponse resp;
  ASSERT_TRUE(s.kv->Range(&ctx, range, &resp).ok());
  std::map<std::string, std::string> stored;
  for (const auto& kv : resp.kvs()) stored[kv.key()] = kv.value();
  int lost = 0;
  for (int n : acked) {
    auto it = stored.find("w/" + std::to_string(n));
    if (it == stored.end() || it->second != std::to_string(n)) ++lost;
  }
  EXPECT_EQ(lost, 0) << "of " << acked.size() << " acknowledged writes";
  // The three new members agree.
  int64_t rev = resp.header().revision();
  int64_t hash = HashKv(c.endpoint(live[0]), rev);
  ASSERT_NE(hash, -1);
  for (size_t i = 1; i < live.size(); ++i) {
    EXPECT_TRUE(Eventually([&] { return HashKv(c.endpoint(live[i]), rev) == hash; }))
        << c.name(live[i]);
  }
  std::string members = Etcdctl(c.endpoint(live[0]), {"member", "list"}).out;
  for (size_t old = 0; old < 3; ++old) EXPECT_THAT(members, Not(HasSubstr(c.peer_url(old))));
}

// etcdctl against two members of three: an election just after
// WaitForLeader is answered "no leader" (as etcd answers it); such an answer
// is asked again (bounded), so what the test checks is the reconfiguration,
// not the election.
CommandResult EtcdctlWithLeader(const std::string& endpoint, const std::vector<std::string>& args) {
  CommandResult r;
  Eventually(
      [&] {
        r = Etcdctl(endpoint, args);
        return r.err.find("etcdserver: no leader") == std::string::npos;
      },
      std::chrono::seconds(30));
  return r;
}

TEST(MemberReplaceTest, StrictReconfigCheckRefusesChangesWithoutAStartedQuorum) {
  TempDir dir("capstan-strict-reconfig");
  Cluster c(dir.path());
  // m2 is a founding member that never starts (never published its name).
  ASSERT_TRUE(c.StartMember(0));
  ASSERT_TRUE(c.StartMember(1));
  ASSERT_GE(c.WaitForLeader(std::chrono::seconds(30), {2}), 0) << c.Logs();
  auto add =
      EtcdctlWithLeader(c.endpoint(0), {"member", "add", "m3", "--peer-urls=http://127.0.0.1:1"});
  EXPECT_NE(add.exit_code, 0);
  EXPECT_THAT(add.err,
              HasSubstr("etcdserver: re-configuration failed due to not enough started members"));
  auto remove = EtcdctlWithLeader(c.endpoint(1), {"member", "remove", HexId(c.MemberId(0))});
  EXPECT_NE(remove.exit_code, 0);
  EXPECT_THAT(remove.err,
              HasSubstr("etcdserver: re-configuration failed due to not enough started members"));
  // A learner changes no quorum: allowed.
  auto learner = EtcdctlWithLeader(
      c.endpoint(0), {"member", "add", "m3", "--peer-urls=http://127.0.0.1:1", "--learner"});
  EXPECT_EQ(learner.exit_code, 0) << learner.err;
  // Off, as etcd's --strict-reconfig-check=false: the same removal goes through.
  c.Stop(0);
  c.Stop(1);
  TempDir loose_dir("capstan-strict-reconfig-off");
  ClusterOptions off;
  off.extra_flags = {"--strict-reconfig-check=false"};
  Cluster loose(loose_dir.path(), off);
  ASSERT_TRUE(loose.StartMember(0));
  ASSERT_TRUE(loose.StartMember(1));
  ASSERT_GE(loose.WaitForLeader(std::chrono::seconds(30), {2}), 0) << loose.Logs();
  auto added = EtcdctlWithLeader(loose.endpoint(0),
                                 {"member", "add", "m3", "--peer-urls=http://127.0.0.1:1"});
  EXPECT_EQ(added.exit_code, 0) << added.err;
}

TEST(MemberReplaceTest, AMemberRemovedWhileDownLearnsItAndExits) {
  TempDir dir("capstan-removed-while-down");
  Cluster c(dir.path());
  ASSERT_TRUE(c.Start()) << c.Logs();
  std::string id = HexId(c.MemberId(2));
  c.Stop(2);
  // Until every member has published its name the strict check counts too
  // few started members: retry, bounded.
  CommandResult removed;
  ASSERT_TRUE(Eventually([&] {
    removed = Etcdctl(c.endpoint(0), {"member", "remove", id});
    return removed.exit_code == 0;
  })) << removed.err;
  ASSERT_EQ(Etcdctl(c.endpoint(1), {"put", "after", "removal"}).exit_code, 0);
  // It comes back with its old data: it never saw its removal.
  c.StartMember(2);
  EXPECT_TRUE(Eventually([&] { return !c.Running(2); }, std::chrono::seconds(30) * TimeScale()))
      << c.Log(2);
  EXPECT_THAT(c.Log(2), HasSubstr("removed from the cluster while it was away"));
  // The others carry on.
  EXPECT_EQ(Etcdctl(c.endpoint(0), {"get", "after", "--print-value-only"}).out, "removal\n");
}

}  // namespace
}  // namespace capstan::e2e
