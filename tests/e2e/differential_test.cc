// Differential tests: the same operations against etcd (Debian's etcd-server)
// and against capstan store; every answer must match, errors included, except
// for cluster/member IDs and the raft term.
#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "diff_util.h"
#include "gtest/gtest.h"

namespace capstan::e2e {
namespace {

using namespace etcdserverpb;

std::string PrefixEnd(std::string p) {
  while (!p.empty() && static_cast<unsigned char>(p.back()) == 0xff) p.pop_back();
  if (p.empty()) return std::string(1, '\0');
  p.back() = static_cast<char>(p.back() + 1);
  return p;
}

const std::string kAll(1, '\0');

class DifferentialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kEtcd, dir_.path() + "/etcd");
    capstan_ =
        std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_.path() + "/capstan");
    ASSERT_TRUE(etcd_->Start()) << etcd_->Log();
    ASSERT_TRUE(capstan_->Start()) << capstan_->Log();
    a_ = std::make_unique<Stubs>(etcd_->endpoint());
    b_ = std::make_unique<Stubs>(capstan_->endpoint());
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "capstan log:\n" << capstan_->Log() << "\n";
  }

  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return ctx;
  }

  // Sends `call` to both servers; expects equal statuses and responses.
  template <typename Resp, typename Call>
  Resp Same(const std::string& what, Call call, std::function<void(Resp*)> normalize = nullptr) {
    Resp a, b;
    grpc::Status sa = call(*a_, &a);
    grpc::Status sb = call(*b_, &b);
    EXPECT_EQ(StatusText(sa), StatusText(sb)) << what;
    if (sa.ok() && sb.ok()) {
      NormalizeHeaders(&a);
      NormalizeHeaders(&b);
      if (normalize) {
        normalize(&a);
        normalize(&b);
      }
      EXPECT_EQ(Diff(a, b), "") << what;
    }
    ++ops_;
    return b;
  }

  RangeResponse Range(const RangeRequest& r, const std::string& what = "range") {
    return Same<RangeResponse>(what + " " + r.ShortDebugString(), [&](Stubs& s, RangeResponse* o) {
      return s.kv->Range(Ctx().get(), r, o);
    });
  }
  PutResponse Put(const PutRequest& r) {
    return Same<PutResponse>("put " + r.ShortDebugString(), [&](Stubs& s, PutResponse* o) {
      return s.kv->Put(Ctx().get(), r, o);
    });
  }
  PutResponse Put(const std::string& k, const std::string& v, int64_t lease = 0) {
    PutRequest r;
    r.set_key(k);
    r.set_value(v);
    r.set_lease(lease);
    return Put(r);
  }
  DeleteRangeResponse Delete(const DeleteRangeRequest& r) {
    return Same<DeleteRangeResponse>(
        "delete " + r.ShortDebugString(),
        [&](Stubs& s, DeleteRangeResponse* o) { return s.kv->DeleteRange(Ctx().get(), r, o); });
  }
  TxnResponse Txn(const TxnRequest& r) {
    return Same<TxnResponse>("txn " + r.ShortDebugString(), [&](Stubs& s, TxnResponse* o) {
      return s.kv->Txn(Ctx().get(), r, o);
    });
  }
  void Compact(int64_t rev, bool physical = true) {
    CompactionRequest r;
    r.set_revision(rev);
    r.set_physical(physical);
    Same<CompactionResponse>(
        "compact " + r.ShortDebugString(),
        [&](Stubs& s, CompactionResponse* o) { return s.kv->Compact(Ctx().get(), r, o); });
  }
  void LeaseGrant(int64_t id, int64_t ttl) {
    LeaseGrantRequest r;
    r.set_id(id);
    r.set_ttl(ttl);
    Same<LeaseGrantResponse>(
        "lease grant " + r.ShortDebugString(),
        [&](Stubs& s, LeaseGrantResponse* o) { return s.lease->LeaseGrant(Ctx().get(), r, o); });
  }
  void LeaseRevoke(int64_t id) {
    LeaseRevokeRequest r;
    r.set_id(id);
    Same<LeaseRevokeResponse>(
        "lease revoke " + r.ShortDebugString(),
        [&](Stubs& s, LeaseRevokeResponse* o) { return s.lease->LeaseRevoke(Ctx().get(), r, o); });
  }
  void TimeToLive(int64_t id, bool keys) {
    LeaseTimeToLiveRequest r;
    r.set_id(id);
    r.set_keys(keys);
    Same<LeaseTimeToLiveResponse>(
        "lease ttl " + r.ShortDebugString(),
        [&](Stubs& s, LeaseTimeToLiveResponse* o) {
          return s.lease->LeaseTimeToLive(Ctx().get(), r, o);
        },
        [](LeaseTimeToLiveResponse* o) {
          // Remaining TTL depends on timing; key order on etcd's map iteration.
          if (o->ttl() > 0) o->set_ttl(1);
          std::vector<std::string> keys(o->keys().begin(), o->keys().end());
          std::sort(keys.begin(), keys.end());
          o->clear_keys();
          for (auto& k : keys) o->add_keys(k);
        });
  }
  void Leases() {
    Same<LeaseLeasesResponse>(
        "lease list",
        [&](Stubs& s, LeaseLeasesResponse* o) {
          return s.lease->LeaseLeases(Ctx().get(), LeaseLeasesRequest(), o);
        },
        [](LeaseLeasesResponse* o) {
          std::sort(o->mutable_leases()->begin(), o->mutable_leases()->end(),
                    [](const LeaseStatus& x, const LeaseStatus& y) { return x.id() < y.id(); });
        });
  }

  static RangeRequest R(const std::string& key, const std::string& end = "") {
    RangeRequest r;
    r.set_key(key);
    r.set_range_end(end);
    return r;
  }

  TempDir dir_{"capstan-diff"};
  std::unique_ptr<StoreProcess> etcd_, capstan_;
  std::unique_ptr<Stubs> a_, b_;
  int ops_ = 0;
};

TEST_F(DifferentialTest, RangeOptions) {
  Range(R("a"), "empty store");
  Range(R(""), "empty key is an error");
  for (const char* k : {"a", "ab", "abc", "b", "c", "d"}) Put(k, std::string("v-") + k);
  Put("b", "zz");
  Put("ab", "a");
  for (std::string end :
       {std::string(""), std::string("c"), kAll, PrefixEnd("a"), std::string("a")}) {
    for (int64_t limit : {0, 1, 2, 10}) {
      RangeRequest r = R("a", end);
      r.set_limit(limit);
      Range(r);
      r.set_keys_only(true);
      Range(r);
      r.set_keys_only(false);
      r.set_count_only(true);
      Range(r);
    }
  }
  Range(R(kAll, kAll), "everything");
  Range(R("c", "a"), "end before key");
  for (int order = 0; order <= 2; ++order) {
    for (int target = 0; target <= 4; ++target) {
      for (int64_t limit : {0, 2}) {
        RangeRequest r = R("a", kAll);
        r.set_sort_order(static_cast<RangeRequest::SortOrder>(order));
        r.set_sort_target(static_cast<RangeRequest::SortTarget>(target));
        r.set_limit(limit);
        Range(r);
      }
    }
  }
  for (int64_t v : {0, 3, 5, 8, 100}) {
    RangeRequest r = R("a", kAll);
    r.set_min_mod_revision(v);
    Range(r);
    r = R("a", kAll);
    r.set_max_mod_revision(v);
    r.set_limit(2);
    Range(r);
    r = R("a", kAll);
    r.set_min_create_revision(v);
    r.set_count_only(true);
    Range(r);
    r = R("a", kAll);
    r.set_max_create_revision(v);
    Range(r);
  }
  for (int64_t rev : {-1, 0, 1, 2, 5, 8, 9, 100}) {
    RangeRequest r = R("a", kAll);
    r.set_revision(rev);
    Range(r);
    r.set_serializable(true);
    Range(r);
  }
}

TEST_F(DifferentialTest, PutAndDeleteOptions) {
  PutRequest p;
  Put(p);  // empty key
  Put("k", "v1");
  p.set_key("k");
  p.set_prev_kv(true);
  p.set_value("v2");
  Put(p);
  p = PutRequest();
  p.set_key("k");
  p.set_ignore_value(true);
  Put(p);
  p.set_value("x");
  Put(p);  // value provided
  p = PutRequest();
  p.set_key("missing");
  p.set_ignore_value(true);
  Put(p);  // key not found
  p = PutRequest();
  p.set_key("k");
  p.set_ignore_lease(true);
  p.set_lease(7);
  Put(p);                // lease provided
  Put("k", "v", 12345);  // lease not found
  LeaseGrant(100, 1000);
  Put("k", "leased", 100);
  p = PutRequest();
  p.set_key("k");
  p.set_value("still leased");
  p.set_ignore_lease(true);
  p.set_prev_kv(true);
  Put(p);
  TimeToLive(100, true);
  Range(R("k"));
  for (const char* k : {"d/1", "d/2", "d/3", "e"}) Put(k, k);
  DeleteRangeRequest d;
  Delete(d);  // empty key
  d.set_key("nothing");
  Delete(d);
  d.set_key("d/");
  d.set_range_end(PrefixEnd("d/"));
  d.set_prev_kv(true);
  Delete(d);
  d.set_key("e");
  d.set_range_end(kAll);
  Delete(d);
  d = DeleteRangeRequest();
  d.set_key("k");
  d.set_prev_kv(true);
  Delete(d);
  TimeToLive(100, true);
  Range(R(kAll, kAll));
}

TEST_F(DifferentialTest, TxnSemantics) {
  Put("a", "1");
  Put("b", "2");
  Put("a", "3");
  LeaseGrant(9, 1000);
  Put("l", "x", 9);
  auto cmp = [](const std::string& key, Compare::CompareTarget t, Compare::CompareResult res,
                int64_t n, const std::string& value = "", const std::string& end = "") {
    Compare c;
    c.set_key(key);
    c.set_range_end(end);
    c.set_target(t);
    c.set_result(res);
    switch (t) {
      case Compare::VERSION:
        c.set_version(n);
        break;
      case Compare::CREATE:
        c.set_create_revision(n);
        break;
      case Compare::MOD:
        c.set_mod_revision(n);
        break;
      case Compare::VALUE:
        c.set_value(value);
        break;
      case Compare::LEASE:
        c.set_lease(n);
        break;
      default:
        break;
    }
    return c;
  };
  for (const char* key : {"a", "b", "l", "missing"}) {
    for (int t = 0; t <= 4; ++t) {
      for (int res = 0; res <= 3; ++res) {
        for (int64_t n : {0, 2, 4, 9}) {
          TxnRequest txn;
          *txn.add_compare() =
              cmp(key, static_cast<Compare::CompareTarget>(t),
                  static_cast<Compare::CompareResult>(res), n, n == 0 ? "" : std::to_string(n - 1));
          *txn.add_success()->mutable_request_range() = R(key);
          Txn(txn);
        }
      }
    }
  }
  // Compares over ranges, and a compare whose oneof holds another target.
  TxnRequest txn;
  *txn.add_compare() = cmp("a", Compare::VERSION, Compare::GREATER, 0, "", "c");
  Txn(txn);
  txn = TxnRequest();
  Compare odd = cmp("a", Compare::MOD, Compare::EQUAL, 0);
  odd.set_version(4);
  *txn.add_compare() = odd;
  Txn(txn);
  // Writes, reads of own writes, nested txns on both branches.
  txn = TxnRequest();
  *txn.add_compare() = cmp("a", Compare::VALUE, Compare::EQUAL, 0, "3");
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key("c");
  put->set_value("new");
  put->set_prev_kv(true);
  *txn.add_success()->mutable_request_range() = R("a", "z");
  auto* nested = txn.add_success()->mutable_request_txn();
  *nested->add_compare() = cmp("c", Compare::VERSION, Compare::EQUAL, 0);
  auto* np = nested->add_success()->mutable_request_put();
  np->set_key("n");
  np->set_value("from nested (compare saw the pre-txn state)");
  auto* nd = nested->add_failure()->mutable_request_delete_range();
  nd->set_key("b");
  nd->set_prev_kv(true);
  auto* del = txn.add_success()->mutable_request_delete_range();
  del->set_key("l");
  del->set_prev_kv(true);
  *txn.add_failure()->mutable_request_range() = R("a");
  Txn(txn);
  Range(R(kAll, kAll));
  // Errors: duplicate keys, too many ops, bad lease, missing key with ignore_value.
  txn = TxnRequest();
  for (int i = 0; i < 2; ++i) {
    auto* p = txn.add_success()->mutable_request_put();
    p->set_key("dup");
  }
  Txn(txn);
  txn = TxnRequest();
  auto* d = txn.add_success()->mutable_request_delete_range();
  d->set_key("a");
  d->set_range_end("z");
  txn.add_success()->mutable_request_put()->set_key("m");
  Txn(txn);
  txn = TxnRequest();
  for (int i = 0; i < 129; ++i) {
    txn.add_success()->mutable_request_put()->set_key("many" + std::to_string(i));
  }
  Txn(txn);
  txn = TxnRequest();
  txn.add_compare();
  Txn(txn);
  txn = TxnRequest();
  auto* lp = txn.add_success()->mutable_request_put();
  lp->set_key("x");
  lp->set_lease(424242);
  Txn(txn);
  txn = TxnRequest();
  auto* ip = txn.add_failure()->mutable_request_put();
  ip->set_key("nope");
  ip->set_ignore_value(true);
  *txn.add_compare() = cmp("a", Compare::VERSION, Compare::EQUAL, 100);
  Txn(txn);
  // Read-only txns, at revisions, including a future one.
  for (int64_t rev : {0, 2, 5, 1000}) {
    txn = TxnRequest();
    RangeRequest r = R("a", kAll);
    r.set_revision(rev);
    *txn.add_success()->mutable_request_range() = r;
    Txn(txn);
  }
  txn = TxnRequest();
  Txn(txn);  // empty txn
  Range(R(kAll, kAll));
}

TEST_F(DifferentialTest, CompactionAndLeases) {
  for (int i = 0; i < 10; ++i) Put("k" + std::to_string(i % 3), std::to_string(i));
  Put("gone", "x");
  DeleteRangeRequest d;
  d.set_key("gone");
  Delete(d);
  Compact(5);
  Compact(5);
  Compact(3);
  Compact(1000);
  for (int64_t rev : {3, 4, 5, 6, 12}) {
    RangeRequest r = R("k", "l");
    r.set_revision(rev);
    Range(r);
    TxnRequest t;
    *t.add_success()->mutable_request_range() = r;
    Txn(t);
  }
  Compact(13, false);
  Range(R(kAll, kAll));

  LeaseGrant(1, 1000);
  LeaseGrant(1, 1000);          // exists
  LeaseGrant(2, 1);             // raised to the minimum TTL
  LeaseGrant(3, 9000000001LL);  // too large
  Put("a", "1", 1);
  Put("b", "2", 1);
  Put("c", "3", 2);
  Put("b", "no lease now");
  TimeToLive(1, true);
  TimeToLive(2, false);
  TimeToLive(77, true);
  Leases();
  LeaseRevoke(1);
  LeaseRevoke(1);
  Range(R(kAll, kAll));
  Leases();
}

TEST_F(DifferentialTest, ClusterMemberErrors) {
  // Errors of membership changes on a one-member cluster (the IDs and URLs
  // of real members differ between the two servers).
  MemberRemoveRequest remove;
  remove.set_id(12345);
  Same<MemberRemoveResponse>("member remove unknown", [&](Stubs& s, MemberRemoveResponse* o) {
    return s.cluster->MemberRemove(Ctx().get(), remove, o);
  });
  MemberUpdateRequest update;
  update.set_id(12345);
  update.add_peerurls("http://127.0.0.1:1");
  Same<MemberUpdateResponse>("member update unknown", [&](Stubs& s, MemberUpdateResponse* o) {
    return s.cluster->MemberUpdate(Ctx().get(), update, o);
  });
  MemberPromoteRequest promote;
  promote.set_id(12345);
  Same<MemberPromoteResponse>("member promote unknown", [&](Stubs& s, MemberPromoteResponse* o) {
    return s.cluster->MemberPromote(Ctx().get(), promote, o);
  });
  MemberAddRequest add;  // no peer URLs
  Same<MemberAddResponse>("member add without urls", [&](Stubs& s, MemberAddResponse* o) {
    return s.cluster->MemberAdd(Ctx().get(), add, o);
  });
  // Each server's own member: promoting a voter fails the same way.
  for (Stubs* s : {a_.get(), b_.get()}) {
    MemberListResponse list;
    grpc::Status st = s->cluster->MemberList(Ctx().get(), MemberListRequest(), &list);
    ASSERT_TRUE(st.ok()) << StatusText(st);
    ASSERT_EQ(list.members_size(), 1);
    EXPECT_FALSE(list.members(0).name().empty());
    EXPECT_EQ(list.members(0).clienturls_size(), 1);
  }
  MemberListResponse la, lb;
  ASSERT_TRUE(a_->cluster->MemberList(Ctx().get(), MemberListRequest(), &la).ok());
  ASSERT_TRUE(b_->cluster->MemberList(Ctx().get(), MemberListRequest(), &lb).ok());
  MemberPromoteRequest pa, pb;
  pa.set_id(la.members(0).id());
  pb.set_id(lb.members(0).id());
  MemberPromoteResponse ra, rb;
  EXPECT_EQ(StatusText(a_->cluster->MemberPromote(Ctx().get(), pa, &ra)),
            StatusText(b_->cluster->MemberPromote(Ctx().get(), pb, &rb)));
}

// Sends `ids` as renewals on one LeaseKeepAlive stream and returns the
// responses (TTLs above zero as 1: the remaining time depends on timing),
// then the stream's status after the client half-closes.
std::pair<std::vector<LeaseKeepAliveResponse>, std::string> KeepAlive(
    Stubs& stubs, const std::vector<int64_t>& ids) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto stream = stubs.lease->LeaseKeepAlive(&ctx);
  std::vector<LeaseKeepAliveResponse> out;
  for (int64_t id : ids) {
    LeaseKeepAliveRequest req;
    req.set_id(id);
    if (!stream->Write(req)) break;
    LeaseKeepAliveResponse resp;
    if (!stream->Read(&resp)) break;
    if (resp.ttl() > 0) resp.set_ttl(1);
    NormalizeHeaders(&resp);
    out.push_back(resp);
  }
  stream->WritesDone();
  LeaseKeepAliveResponse extra;
  while (stream->Read(&extra)) out.push_back(extra);  // none expected
  return {out, StatusText(stream->Finish())};
}

TEST_F(DifferentialTest, LeaseKeepAliveStream) {
  LeaseGrant(5, 100);
  LeaseGrant(6, 100);
  Put("held", "x", 5);
  // Known, unknown (TTL 0 and no error), known again, another, revoked.
  auto [ra, sa] = KeepAlive(*a_, {5, 99, 5, 6});
  auto [rb, sb] = KeepAlive(*b_, {5, 99, 5, 6});
  EXPECT_EQ(sa, sb);
  ASSERT_EQ(ra.size(), 4u);
  ASSERT_EQ(rb.size(), ra.size());
  for (size_t i = 0; i < ra.size(); ++i) EXPECT_EQ(Diff(ra[i], rb[i]), "") << "response " << i;
  LeaseRevoke(6);
  std::tie(ra, sa) = KeepAlive(*a_, {6});
  std::tie(rb, sb) = KeepAlive(*b_, {6});
  EXPECT_EQ(sa, sb);
  ASSERT_EQ(ra.size(), 1u);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(Diff(ra[0], rb[0]), "");
  // An empty stream: closed by the client at once.
  std::tie(ra, sa) = KeepAlive(*a_, {});
  std::tie(rb, sb) = KeepAlive(*b_, {});
  EXPECT_EQ(sa, sb);
  EXPECT_TRUE(rb.empty());
  TimeToLive(5, true);
}

TEST_F(DifferentialTest, MaintenanceAnswers) {
  Put("a", "1");
  Put("b", "2");
  StatusResponse st_a, st_b;
  ASSERT_TRUE(a_->maintenance->Status(Ctx().get(), StatusRequest(), &st_a).ok());
  ASSERT_TRUE(b_->maintenance->Status(Ctx().get(), StatusRequest(), &st_b).ok());
  // The fields that describe the same state the same way (sizes, indexes
  // and versions are the implementation's).
  EXPECT_EQ(st_a.header().revision(), st_b.header().revision());
  EXPECT_EQ(st_a.islearner(), st_b.islearner());
  EXPECT_EQ(st_a.errors_size(), st_b.errors_size());
  EXPECT_EQ(st_a.leader() == st_a.header().member_id(), st_b.leader() == st_b.header().member_id());
  EXPECT_GT(st_b.dbsize(), 0);
  EXPECT_GT(st_b.raftindex(), 0u);
  AlarmRequest get;
  get.set_action(AlarmRequest::GET);
  // etcd 3.4 answers Alarm without a header, 3.5 with one.
  auto no_header = [](AlarmResponse* o) { o->clear_header(); };
  Same<AlarmResponse>(
      "alarm get",
      [&](Stubs& s, AlarmResponse* o) { return s.maintenance->Alarm(Ctx().get(), get, o); },
      no_header);
  AlarmRequest deactivate;
  deactivate.set_action(AlarmRequest::DEACTIVATE);
  deactivate.set_alarm(AlarmType::NOSPACE);
  Same<AlarmResponse>(
      "alarm deactivate none",
      [&](Stubs& s, AlarmResponse* o) { return s.maintenance->Alarm(Ctx().get(), deactivate, o); },
      no_header);
  Same<DefragmentResponse>("defragment", [&](Stubs& s, DefragmentResponse* o) {
    return s.maintenance->Defragment(Ctx().get(), DefragmentRequest(), o);
  });
  HashKVRequest hkv;
  hkv.set_revision(100);  // a future revision
  Same<HashKVResponse>("hashkv future", [&](Stubs& s, HashKVResponse* o) {
    return s.maintenance->HashKV(Ctx().get(), hkv, o);
  });
  Compact(2);
  hkv.set_revision(1);  // compacted
  Same<HashKVResponse>("hashkv compacted", [&](Stubs& s, HashKVResponse* o) {
    return s.maintenance->HashKV(Ctx().get(), hkv, o);
  });
  HashResponse ha, hb;
  EXPECT_EQ(StatusText(a_->maintenance->Hash(Ctx().get(), HashRequest(), &ha)),
            StatusText(b_->maintenance->Hash(Ctx().get(), HashRequest(), &hb)));
  MoveLeaderRequest move;
  move.set_targetid(12345);
  Same<MoveLeaderResponse>("move leader to a stranger", [&](Stubs& s, MoveLeaderResponse* o) {
    return s.maintenance->MoveLeader(Ctx().get(), move, o);
  });
  // A snapshot arrives whole: the remaining count goes down to zero.
  grpc::ClientContext ctx;
  auto reader = b_->maintenance->Snapshot(&ctx, SnapshotRequest());
  SnapshotResponse chunk;
  uint64_t bytes = 0, last_remaining = UINT64_MAX;
  int chunks = 0;
  while (reader->Read(&chunk) && chunks < 100000) {
    bytes += chunk.blob().size();
    EXPECT_LT(chunk.remaining_bytes(), last_remaining);
    last_remaining = chunk.remaining_bytes();
    ++chunks;
  }
  EXPECT_EQ(StatusText(reader->Finish()), "OK");
  EXPECT_EQ(last_remaining, 0u);
  EXPECT_EQ(bytes % 512, 32u);  // tar blocks and the SHA-256 trailer
}

// Waits (bounded) until `key` exists or not on one server.
bool WaitKey(Stubs& s, const std::string& key, bool present) {
  for (int i = 0; i < 2000; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    RangeRequest r;
    r.set_key(key);
    RangeResponse resp;
    if (s.kv->Range(&ctx, r, &resp).ok() && (resp.count() > 0) == present) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

TEST_F(DifferentialTest, LockContention) {
  LeaseGrant(0x70, 100);
  LeaseGrant(0x80, 100);
  LeaseGrant(0x90, 100);
  v3lockpb::LockRequest first;
  first.set_name("l");
  first.set_lease(0x70);
  Same<v3lockpb::LockResponse>("lock free", [&](Stubs& s, v3lockpb::LockResponse* o) {
    return s.lock->Lock(Ctx().get(), first, o);
  });
  // A second holder waits in line on each server until the first unlocks.
  struct Waiting {
    grpc::ClientContext ctx;
    v3lockpb::LockResponse resp;
    grpc::Status status;
    std::thread thread;
    // A failed assertion returns early: end the call and the thread.
    ~Waiting() {
      if (!thread.joinable()) return;
      ctx.TryCancel();
      thread.join();
    }
  };
  auto wait_for_lock = [](Stubs& s, int64_t lease, Waiting* w) {
    w->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    w->thread = std::thread([&s, lease, w] {
      v3lockpb::LockRequest req;
      req.set_name("l");
      req.set_lease(lease);
      w->status = s.lock->Lock(&w->ctx, req, &w->resp);
    });
  };
  Waiting second_a, second_b, third_a, third_b;
  wait_for_lock(*a_, 0x80, &second_a);
  wait_for_lock(*b_, 0x80, &second_b);
  ASSERT_TRUE(WaitKey(*a_, "l/80", true));
  ASSERT_TRUE(WaitKey(*b_, "l/80", true));
  // A third, cancelled while it waits, leaves the line (its key is deleted).
  wait_for_lock(*a_, 0x90, &third_a);
  wait_for_lock(*b_, 0x90, &third_b);
  ASSERT_TRUE(WaitKey(*a_, "l/90", true));
  ASSERT_TRUE(WaitKey(*b_, "l/90", true));
  third_a.ctx.TryCancel();
  third_b.ctx.TryCancel();
  third_a.thread.join();
  third_b.thread.join();
  EXPECT_EQ(StatusText(third_a.status), StatusText(third_b.status));
  EXPECT_TRUE(WaitKey(*a_, "l/90", false));
  EXPECT_TRUE(WaitKey(*b_, "l/90", false));

  v3lockpb::UnlockRequest unlock;
  unlock.set_key("l/70");
  Same<v3lockpb::UnlockResponse>("unlock", [&](Stubs& s, v3lockpb::UnlockResponse* o) {
    return s.lock->Unlock(Ctx().get(), unlock, o);
  });
  second_a.thread.join();
  second_b.thread.join();
  EXPECT_EQ(StatusText(second_a.status), StatusText(second_b.status));
  NormalizeHeaders(&second_a.resp);
  NormalizeHeaders(&second_b.resp);
  EXPECT_EQ(Diff(second_a.resp, second_b.resp), "");
  EXPECT_EQ(second_b.resp.key(), "l/80");
  Range(R("l/", "l0"));
}

TEST_F(DifferentialTest, ElectionObserve) {
  LeaseGrant(0x11, 100);
  LeaseGrant(0x22, 100);
  v3electionpb::LeaderRequest leader;
  leader.set_name("e");
  Same<v3electionpb::LeaderResponse>("leader of nobody", [&](Stubs& s, auto* o) {
    return s.election->Leader(Ctx().get(), leader, o);
  });
  v3electionpb::CampaignRequest campaign;
  campaign.set_name("e");
  campaign.set_lease(0x11);
  campaign.set_value("v1");
  auto won = Same<v3electionpb::CampaignResponse>("campaign", [&](Stubs& s, auto* o) {
    return s.election->Campaign(Ctx().get(), campaign, o);
  });
  Same<v3electionpb::LeaderResponse>(
      "leader", [&](Stubs& s, auto* o) { return s.election->Leader(Ctx().get(), leader, o); });
  // Observers on both servers see the same leaders, one message per change.
  grpc::ClientContext ctx_a, ctx_b;
  ctx_a.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  ctx_b.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto observe_a = a_->election->Observe(&ctx_a, leader);
  auto observe_b = b_->election->Observe(&ctx_b, leader);
  auto next_same = [&](const std::string& what) {
    v3electionpb::LeaderResponse ra, rb;
    ASSERT_TRUE(observe_a->Read(&ra)) << what;
    ASSERT_TRUE(observe_b->Read(&rb)) << what;
    NormalizeHeaders(&ra);
    NormalizeHeaders(&rb);
    EXPECT_EQ(Diff(ra, rb), "") << what;
  };
  next_same("the first leader");
  v3electionpb::ProclaimRequest proclaim;
  *proclaim.mutable_leader() = won.leader();
  proclaim.set_value("v2");
  Same<v3electionpb::ProclaimResponse>("proclaim", [&](Stubs& s, auto* o) {
    return s.election->Proclaim(Ctx().get(), proclaim, o);
  });
  next_same("the proclaimed value");
  Same<v3electionpb::ProclaimResponse>("proclaim without leader", [&](Stubs& s, auto* o) {
    return s.election->Proclaim(Ctx().get(), v3electionpb::ProclaimRequest(), o);
  });
  v3electionpb::ResignRequest resign;
  *resign.mutable_leader() = won.leader();
  Same<v3electionpb::ResignResponse>(
      "resign", [&](Stubs& s, auto* o) { return s.election->Resign(Ctx().get(), resign, o); });
  Same<v3electionpb::ProclaimResponse>("proclaim after resigning", [&](Stubs& s, auto* o) {
    return s.election->Proclaim(Ctx().get(), proclaim, o);
  });
  // A second campaigner becomes the leader; the observers see it.
  campaign.set_lease(0x22);
  campaign.set_value("w");
  Same<v3electionpb::CampaignResponse>("second campaign", [&](Stubs& s, auto* o) {
    return s.election->Campaign(Ctx().get(), campaign, o);
  });
  next_same("the second leader");
  ctx_a.TryCancel();
  ctx_b.TryCancel();
  EXPECT_EQ(observe_a->Finish().error_code(), observe_b->Finish().error_code());
}

TEST_F(DifferentialTest, RequestSizeLimits) {
  Put("big", std::string(1536 * 1024 - 100, 'x'));  // just fits
  Put("big", std::string(1536 * 1024 + 100, 'x'));  // etcd's "request is too large"
  // Past the transport limit both reject in gRPC (messages differ by language).
  PutRequest huge;
  huge.set_key("huge");
  huge.set_value(std::string(3 << 20, 'x'));
  PutResponse pa, pb;
  auto sa = a_->kv->Put(Ctx().get(), huge, &pa);
  auto sb = b_->kv->Put(Ctx().get(), huge, &pb);
  EXPECT_EQ(sa.error_code(), sb.error_code()) << sa.error_message() << " / " << sb.error_message();
  Put("after", "the connection is still usable");
}

TEST_F(DifferentialTest, HarnessDetectsDivergence) {
  // The comparison must be able to fail: write to capstan only, then compare.
  PutRequest p;
  p.set_key("only-capstan");
  PutResponse ignored;
  ASSERT_TRUE(b_->kv->Put(Ctx().get(), p, &ignored).ok());
  RangeResponse ra, rb;
  RangeRequest r = R(kAll, kAll);
  ASSERT_TRUE(a_->kv->Range(Ctx().get(), r, &ra).ok());
  ASSERT_TRUE(b_->kv->Range(Ctx().get(), r, &rb).ok());
  NormalizeHeaders(&ra);
  NormalizeHeaders(&rb);
  EXPECT_NE(Diff(ra, rb), "");
  EXPECT_NE(ra.header().revision(), rb.header().revision());
}

struct WatchLog {
  std::vector<WatchResponse> control;  // created / canceled responses, in order
  std::map<int64_t, std::vector<mvccpb::Event>> events;
};

// Creates watchers on one server, runs `writes`, and collects events until
// every live watcher has seen revision `until(watch)`.
class WatchSession {
 public:
  WatchSession(Stubs* stubs) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    stream_ = stubs->watch->Watch(&ctx_);
  }
  ~WatchSession() {
    stream_->WritesDone();
    ctx_.TryCancel();
  }
  // Sends a create request and returns its control response.
  WatchResponse Create(const WatchCreateRequest& req) {
    WatchRequest w;
    *w.mutable_create_request() = req;
    EXPECT_TRUE(stream_->Write(w));
    WatchResponse resp;
    while (stream_->Read(&resp)) {
      if (resp.created()) return resp;
      Absorb(resp);  // events or a cancel for an earlier watcher
    }
    return resp;
  }
  void Absorb(const WatchResponse& resp) {
    if (resp.canceled()) {
      log_.control.push_back(resp);
      done_.insert(resp.watch_id());
    }
    for (const auto& ev : resp.events()) {
      log_.events[resp.watch_id()].push_back(ev);
      last_rev_[resp.watch_id()] = ev.kv().mod_revision();
    }
  }
  // Reads until each watcher in `want` has an event at or past its revision.
  void ReadUntil(const std::map<int64_t, int64_t>& want) {
    auto satisfied = [&] {
      for (const auto& [id, rev] : want) {
        if (!done_.contains(id) && last_rev_[id] < rev) return false;
      }
      return true;
    };
    WatchResponse resp;
    while (!satisfied() && stream_->Read(&resp)) Absorb(resp);
  }
  WatchLog& log() { return log_; }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<WatchRequest, WatchResponse>> stream_;
  WatchLog log_;
  std::set<int64_t> done_;
  std::map<int64_t, int64_t> last_rev_;
};

TEST_F(DifferentialTest, WatchStreams) {
  for (int i = 0; i < 6; ++i) Put(i % 2 ? "a/x" : "b", "v" + std::to_string(i));
  DeleteRangeRequest d;
  d.set_key("a/x");
  Delete(d);
  Compact(4);
  WatchSession wa(a_.get()), wb(b_.get());
  struct Spec {
    WatchCreateRequest req;
    bool no_delete = false;
  };
  std::vector<Spec> specs;
  auto add = [&](const std::string& key, const std::string& end, int64_t start, bool prev,
                 std::vector<WatchCreateRequest::FilterType> filters, int64_t id = 0) {
    Spec s;
    s.req.set_key(key);
    s.req.set_range_end(end);
    s.req.set_start_revision(start);
    s.req.set_prev_kv(prev);
    s.req.set_watch_id(id);
    for (auto f : filters) {
      s.req.add_filters(f);
      if (f == WatchCreateRequest::NODELETE) s.no_delete = true;
    }
    specs.push_back(s);
  };
  add(kAll, kAll, 1, false, {});           // compacted
  add("a", PrefixEnd("a"), 4, true, {});   // from the compaction point
  add("a", PrefixEnd("a"), 0, false, {});  // from now
  add("b", "d", 5, true, {WatchCreateRequest::NOPUT});
  add("a", kAll, 6, true, {WatchCreateRequest::NODELETE}, 100);
  add("b", "", 2, false, {}, 100);  // duplicate id
  add("z", "a", 0, false, {});      // empty range
  add("b", "", 100, false, {});     // future start
  for (const auto& s : specs) {
    WatchResponse ca = wa.Create(s.req), cb = wb.Create(s.req);
    NormalizeHeaders(&ca);
    NormalizeHeaders(&cb);
    EXPECT_EQ(Diff(ca, cb), "") << "create " << s.req.ShortDebugString();
  }
  for (int i = 0; i < 5; ++i) Put(i % 2 ? "a/y" : "c", "w" + std::to_string(i));
  // Sentinels every watcher matches: one revision of puts, one of deletes.
  TxnRequest puts, dels;
  for (const char* k : {"a/~", "b", "c~"}) {
    auto* p = puts.add_success()->mutable_request_put();
    p->set_key(k);
    p->set_value("sentinel");
    dels.add_success()->mutable_request_delete_range()->set_key(k);
  }
  int64_t put_rev = Txn(puts).header().revision();
  int64_t del_rev = Txn(dels).header().revision();
  ASSERT_LT(put_rev, 100);
  Put("pad", "reach the future watcher");
  std::map<int64_t, int64_t> want;
  for (int64_t id : {1, 2, 3}) want[id] = del_rev;
  want[100] = put_rev;
  wa.ReadUntil(want);
  wb.ReadUntil(want);
  // Later events may or may not have arrived yet; compare up to what was awaited.
  for (auto* log : {&wa.log(), &wb.log()}) {
    for (auto& [id, evs] : log->events) {
      int64_t limit = want.contains(id) ? want[id] : 0;
      std::erase_if(evs, [&](const mvccpb::Event& e) { return e.kv().mod_revision() > limit; });
    }
  }
  EXPECT_EQ(wa.log().events.size(), wb.log().events.size());
  for (auto& [id, evs] : wa.log().events) {
    auto& other = wb.log().events[id];
    ASSERT_EQ(evs.size(), other.size()) << "watch " << id;
    for (size_t i = 0; i < evs.size(); ++i) {
      EXPECT_EQ(Diff(evs[i], other[i]), "") << "watch " << id << " event " << i;
    }
  }
  ASSERT_EQ(wa.log().control.size(), wb.log().control.size());
  for (size_t i = 0; i < wa.log().control.size(); ++i) {
    EXPECT_EQ(wa.log().control[i].watch_id(), wb.log().control[i].watch_id());
    EXPECT_EQ(wa.log().control[i].compact_revision(), wb.log().control[i].compact_revision());
  }
}

TEST_F(DifferentialTest, WatchCancelAndProgressRequests) {
  Put("p", "1");
  auto run = [&](Stubs& stubs) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto stream = stubs.watch->Watch(&ctx);
    std::vector<WatchResponse> out;
    WatchRequest req;
    req.mutable_create_request()->set_key("p");
    stream->Write(req);
    WatchResponse resp;
    stream->Read(&resp);
    out.push_back(resp);
    WatchRequest progress;
    progress.mutable_progress_request();
    stream->Write(progress);  // every watcher is synced: answered at once
    stream->Read(&resp);
    out.push_back(resp);
    WatchRequest cancel;
    cancel.mutable_cancel_request()->set_watch_id(out[0].watch_id());
    stream->Write(cancel);
    stream->Read(&resp);
    out.push_back(resp);
    stream->WritesDone();
    ctx.TryCancel();
    return out;
  };
  auto ra = run(*a_), rb = run(*b_);
  ASSERT_EQ(ra.size(), rb.size());
  for (size_t i = 0; i < ra.size(); ++i) {
    NormalizeHeaders(&ra[i]);
    NormalizeHeaders(&rb[i]);
    EXPECT_EQ(Diff(ra[i], rb[i]), "") << "response " << i;
  }
}

// Randomized operation sequences over a small key space, so that compares,
// ranges and deletes keep hitting the same keys.
class RandomizedDifferentialTest : public DifferentialTest,
                                   public ::testing::WithParamInterface<int> {};

TEST_P(RandomizedDifferentialTest, SameAnswers) {
  std::mt19937 rng(GetParam());
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  const std::vector<std::string> keys = {"a", "a/1", "a/2", "b", "b/1", "c", "d", "e"};
  auto key = [&] { return keys[pick(keys.size())]; };
  auto end = [&](const std::string& k) -> std::string {
    switch (pick(5)) {
      case 0:
      case 1:
        return "";
      case 2:
        return PrefixEnd(k);
      case 3:
        return kAll;
      default:
        return key();
    }
  };
  int64_t rev = 1;
  auto random_range = [&] {
    std::string k = key();
    RangeRequest r = R(k, end(k));
    if (pick(3) == 0) r.set_limit(pick(4));
    if (pick(4) == 0) r.set_revision(std::max<int64_t>(1, rev - pick(25) + 1));
    if (pick(4) == 0) {
      r.set_sort_order(static_cast<RangeRequest::SortOrder>(pick(3)));
      r.set_sort_target(static_cast<RangeRequest::SortTarget>(pick(5)));
    }
    if (pick(8) == 0) r.set_keys_only(true);
    if (pick(8) == 0) r.set_count_only(true);
    if (pick(8) == 0) r.set_min_mod_revision(pick(rev + 1));
    if (pick(8) == 0) r.set_max_create_revision(pick(rev + 1));
    return r;
  };
  auto random_put = [&] {
    PutRequest p;
    p.set_key(key());
    p.set_value("v" + std::to_string(pick(5)));
    if (pick(4) == 0) p.set_prev_kv(true);
    if (pick(10) == 0) p.set_lease(pick(4));
    if (pick(12) == 0) {
      p.clear_value();
      p.set_ignore_value(true);
    }
    return p;
  };
  auto random_delete = [&] {
    DeleteRangeRequest d;
    d.set_key(key());
    d.set_range_end(pick(2) ? "" : end(d.key()));
    d.set_prev_kv(pick(2));
    return d;
  };
  std::function<TxnRequest(int)> random_txn = [&](int depth) {
    TxnRequest t;
    int nc = pick(3);
    for (int i = 0; i < nc; ++i) {
      Compare* c = t.add_compare();
      c->set_key(key());
      if (pick(5) == 0) c->set_range_end(end(c->key()));
      c->set_target(static_cast<Compare::CompareTarget>(pick(5)));
      c->set_result(static_cast<Compare::CompareResult>(pick(4)));
      switch (c->target()) {
        case Compare::VALUE:
          c->set_value("v" + std::to_string(pick(5)));
          break;
        case Compare::VERSION:
          c->set_version(pick(4));
          break;
        case Compare::CREATE:
          c->set_create_revision(pick(rev + 1));
          break;
        case Compare::MOD:
          c->set_mod_revision(pick(rev + 1));
          break;
        default:
          c->set_lease(pick(3));
          break;
      }
    }
    for (auto* ops : {t.mutable_success(), t.mutable_failure()}) {
      int n = pick(4);
      for (int i = 0; i < n; ++i) {
        int kind = pick(depth > 0 ? 4 : 3);
        auto* op = ops->Add();
        if (kind == 0) *op->mutable_request_range() = random_range();
        if (kind == 1) *op->mutable_request_put() = random_put();
        if (kind == 2) *op->mutable_request_delete_range() = random_delete();
        if (kind == 3) *op->mutable_request_txn() = random_txn(depth - 1);
      }
    }
    return t;
  };

  constexpr int kOps = 150;
  for (int i = 0; i < kOps; ++i) {
    int op = pick(100);
    if (op < 30) {
      rev = std::max(rev, Put(random_put()).header().revision());
    } else if (op < 50) {
      Range(random_range());
    } else if (op < 60) {
      rev = std::max(rev, Delete(random_delete()).header().revision());
    } else if (op < 88) {
      rev = std::max(rev, Txn(random_txn(2)).header().revision());
    } else if (op < 92) {
      LeaseGrant(1 + pick(3), 1000);
    } else if (op < 95) {
      LeaseRevoke(1 + pick(3));
    } else if (op < 97) {
      TimeToLive(1 + pick(3), true);
    } else {
      Compact(std::max<int64_t>(1, rev - pick(10)));
    }
  }
  Range(R(kAll, kAll), "final state");
  EXPECT_GE(ops_, kOps);
}

INSTANTIATE_TEST_SUITE_P(Seeds, RandomizedDifferentialTest, ::testing::Values(1, 2, 3));

}  // namespace
}  // namespace capstan::e2e
