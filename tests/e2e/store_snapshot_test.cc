// `capstan store snapshot save|status|restore` against real processes: a
// snapshot taken from a running member (by capstan and by etcdctl) restores
// into a new 3-member cluster whose members agree with each other and with
// the source (Maintenance.HashKV), keep revisions, leases and the compaction
// point, and take writes; damaged or truncated files are refused.
#include <filesystem>
#include <fstream>
#include <regex>

#include "cluster.h"
#include "diff_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::e2e {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

CommandResult Capstan(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {CapstanBinary(), "store", "snapshot"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, "", std::chrono::seconds(60));
}

std::string OkCtl(const std::string& endpoint, const std::vector<std::string>& args) {
  auto r = Etcdctl(endpoint, args);
  EXPECT_EQ(r.exit_code, 0) << "etcdctl " << args[0] << ": " << r.err;
  return r.out;
}

// HashKV at `rev` (0: current), or -1 when the call fails.
int64_t HashKv(const std::string& endpoint, int64_t rev, int64_t* compact = nullptr) {
  Stubs s(endpoint);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5) * TimeScale());
  etcdserverpb::HashKVRequest req;
  req.set_revision(rev);
  etcdserverpb::HashKVResponse resp;
  if (!s.maintenance->HashKV(&ctx, req, &resp).ok()) return -1;
  if (compact != nullptr) *compact = resp.compact_revision();
  return resp.hash();
}

int64_t CurrentRevision(const std::string& endpoint) {
  std::string out = OkCtl(endpoint, {"get", "nothing", "-w", "json"});
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("\"revision\":([0-9]+)"))) return -1;
  return std::stoll(m[1]);
}

class StoreSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_.path() + "/source");
    ASSERT_TRUE(source_->Start()) << source_->Log();
    ep_ = source_->endpoint();
    for (int i = 0; i < 60; ++i)
      OkCtl(ep_, {"put", "key" + std::to_string(i), "v" + std::to_string(i)});
    for (int i = 0; i < 10; ++i) OkCtl(ep_, {"del", "key" + std::to_string(i)});
    for (int i = 10; i < 20; ++i) OkCtl(ep_, {"put", "key" + std::to_string(i), "second"});
    std::string granted = OkCtl(ep_, {"lease", "grant", "600"});
    std::smatch m;
    ASSERT_TRUE(std::regex_search(granted, m, std::regex("lease ([0-9a-f]+)")));
    lease_ = m[1];
    OkCtl(ep_, {"put", "leased", "x", "--lease=" + lease_});
    OkCtl(ep_, {"compaction", "30"});
    revision_ = CurrentRevision(ep_);
    ASSERT_GT(revision_, 80);
    source_hash_ = HashKv(ep_, revision_);
    ASSERT_NE(source_hash_, -1);
  }

  TempDir dir_{"store_snapshot_test"};
  std::unique_ptr<StoreProcess> source_;
  std::string ep_;
  std::string lease_;
  int64_t revision_ = 0;
  int64_t source_hash_ = 0;
};

TEST_F(StoreSnapshotTest, SaveStatusAndRestoreIntoANewThreeMemberCluster) {
  std::string ours = dir_.path() + "/ours.snap", theirs = dir_.path() + "/etcdctl.snap";
  auto saved = Capstan({"save", ours, "--endpoints", ep_});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_THAT(saved.out, HasSubstr("Snapshot saved at " + ours));
  EXPECT_FALSE(fs::exists(ours + ".part"));
  EXPECT_THAT(OkCtl(ep_, {"snapshot", "save", theirs}), HasSubstr("Snapshot saved"));
  source_->Stop();

  for (const std::string& file : {ours, theirs}) {
    auto status = Capstan({"status", file, "-w", "json"});
    ASSERT_EQ(status.exit_code, 0) << status.err;
    EXPECT_THAT(status.out, HasSubstr("\"revision\":" + std::to_string(revision_)));
    EXPECT_THAT(status.out, HasSubstr("\"hashOk\":true"));
    EXPECT_THAT(status.out, HasSubstr("\"compactRevision\":30"));
    EXPECT_THAT(status.out, HasSubstr("\"liveKeys\":51"));  // 60 - 10 deleted + leased
    EXPECT_THAT(status.out, HasSubstr("\"leases\":1"));
  }
  auto table = Capstan({"status", theirs, "-w", "table"});
  EXPECT_THAT(table.out, HasSubstr("TOTAL KEYS"));

  // A new cluster from etcdctl's file: each member restores the same file.
  Cluster cluster(dir_.path() + "/restored");
  std::string initial;
  for (size_t i = 0; i < cluster.size(); ++i) {
    initial += (i ? "," : "") + cluster.name(i) + "=" + cluster.peer_url(i);
  }
  for (size_t i = 0; i < cluster.size(); ++i) {
    auto r = Capstan({"restore", i == 0 ? ours : theirs, "--data-dir",
                      dir_.path() + "/restored/" + cluster.name(i), "--name", cluster.name(i),
                      "--initial-cluster", initial, "--initial-advertise-peer-urls",
                      cluster.peer_url(i)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("revision " + std::to_string(revision_)));
  }
  ASSERT_TRUE(cluster.Start()) << cluster.Logs();
  for (size_t i = 0; i < cluster.size(); ++i) {
    int64_t compact = 0;
    EXPECT_EQ(HashKv(cluster.endpoint(i), revision_, &compact), source_hash_)
        << cluster.name(i) << "\n"
        << cluster.Logs();
    EXPECT_EQ(compact, 30);
    EXPECT_EQ(OkCtl(cluster.endpoint(i), {"get", "key15", "--print-value-only", "--consistency=s"}),
              "second\n");
  }
  std::string members = OkCtl(cluster.endpoint(0), {"member", "list"});
  for (size_t i = 0; i < cluster.size(); ++i) EXPECT_THAT(members, HasSubstr(cluster.peer_url(i)));
  EXPECT_THAT(OkCtl(cluster.endpoint(1), {"lease", "timetolive", lease_, "--keys"}),
              HasSubstr("attached keys([leased])"));
  auto compacted = Etcdctl(cluster.endpoint(2), {"get", "key15", "--rev", "20"});
  EXPECT_THAT(compacted.err, HasSubstr("required revision has been compacted"));
  EXPECT_EQ(OkCtl(cluster.endpoint(0), {"get", "key5"}), "");  // deleted before the snapshot

  // The new cluster takes writes after the restored history, and agrees.
  OkCtl(cluster.endpoint(0), {"put", "after", "restore"});
  int64_t rev = CurrentRevision(cluster.endpoint(0));
  EXPECT_EQ(rev, revision_ + 1);
  int64_t first = HashKv(cluster.endpoint(0), rev);
  for (size_t i = 1; i < cluster.size(); ++i) {
    EXPECT_TRUE(Eventually([&] { return HashKv(cluster.endpoint(i), rev) == first; }))
        << cluster.name(i);
  }
}

TEST_F(StoreSnapshotTest, RefusesDamagedTruncatedAndExistingTargets) {
  std::string snap = dir_.path() + "/good.snap";
  ASSERT_EQ(Capstan({"save", snap, "--endpoints", ep_}).exit_code, 0);
  std::string data;
  {
    std::ifstream in(snap, std::ios::binary);
    data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(data.size(), 4096u);

  std::string corrupt = dir_.path() + "/corrupt.snap";
  std::string flipped = data;
  flipped[2000] ^= 0x40;
  std::ofstream(corrupt, std::ios::binary) << flipped;
  auto r = Capstan({"restore", corrupt, "--data-dir", dir_.path() + "/c"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("SHA-256 mismatch"));
  EXPECT_FALSE(fs::exists(dir_.path() + "/c"));
  EXPECT_THAT(Capstan({"status", corrupt, "-w", "json"}).err, HasSubstr("SHA-256 mismatch"));

  std::string truncated = dir_.path() + "/truncated.snap";
  std::ofstream(truncated, std::ios::binary) << data.substr(0, data.size() - 700);
  r = Capstan({"restore", truncated, "--data-dir", dir_.path() + "/t"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no SHA-256 trailer"));
  EXPECT_FALSE(fs::exists(dir_.path() + "/t"));

  // Cut at a 512-byte boundary plus 32: looks hashed, the hash tells.
  std::string cut = dir_.path() + "/cut.snap";
  std::ofstream(cut, std::ios::binary) << data.substr(0, 2048 + 32);
  EXPECT_THAT(Capstan({"restore", cut, "--data-dir", dir_.path() + "/u"}).err,
              HasSubstr("SHA-256 mismatch"));

  fs::create_directories(dir_.path() + "/full");
  std::ofstream(dir_.path() + "/full/file") << "x";
  r = Capstan({"restore", snap, "--data-dir", dir_.path() + "/full"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("exists and is not empty"));

  r = Capstan({"restore", snap, "--data-dir", dir_.path() + "/n", "--name", "nobody",
               "--initial-cluster", "a=http://127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no member named \"nobody\""));

  // A stopped member's database directory, as etcdutl's --skip-hash-check
  // for a db file copied out of a data dir.
  source_->Stop();
  std::string kv = dir_.path() + "/source/member/kv";
  EXPECT_THAT(Capstan({"restore", kv, "--data-dir", dir_.path() + "/k"}).err,
              HasSubstr("--skip-hash-check"));
  auto dir_status = Capstan({"status", kv, "--skip-hash-check", "-w", "json"});
  ASSERT_EQ(dir_status.exit_code, 0) << dir_status.err;
  EXPECT_THAT(dir_status.out, HasSubstr("\"revision\":" + std::to_string(revision_)));
  EXPECT_THAT(dir_status.out, HasSubstr("\"hashChecked\":false"));
  r = Capstan({"restore", kv, "--skip-hash-check", "--data-dir", dir_.path() + "/k"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  StoreProcess restored(StoreProcess::Kind::kCapstan, dir_.path() + "/k");
  ASSERT_TRUE(restored.Start()) << restored.Log();
  EXPECT_EQ(HashKv(restored.endpoint(), revision_), source_hash_);
}

}  // namespace
}  // namespace capstan::e2e
