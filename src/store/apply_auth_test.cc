// The applier's own auth checks: what the gate cannot know when a request
// arrives (the keys attached to a lease by the time it applies, a
// permission changed meanwhile) is refused where the request applies.
#include <filesystem>

#include "base/clock.h"
#include "base/test_dir.h"
#include "gtest/gtest.h"
#include "store/apply.h"
#include "store/backend.h"

namespace capstan::store {
namespace {

namespace fs = std::filesystem;

class ApplyAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshTestDir("apply_auth_test");
    backend_ = std::move(*Backend::Open(dir_, {}));
    mvcc_ = std::make_unique<Mvcc>(backend_.get());
    ASSERT_TRUE(mvcc_->Restore([](const std::string&, int64_t) {}).ok());
    lessor_ = std::make_unique<Lessor>(RealClock::Get(), 1);
    hub_ = std::make_unique<WatchHub>(
        mvcc_.get(), WatchHub::Options{},
        [](etcdserverpb::ResponseHeader* h, int64_t rev) { h->set_revision(rev); });
    applier_ = std::make_unique<Applier>(backend_.get(), mvcc_.get(), lessor_.get(), hub_.get(),
                                         AuthStore::Options{std::chrono::seconds(300), 4});
    ASSERT_TRUE(applier_->Restore().ok());
  }
  void TearDown() override {
    applier_.reset();
    hub_.reset();
    lessor_.reset();
    mvcc_.reset();
    backend_.reset();
    fs::remove_all(dir_);
  }
  absl::Status Apply(LogEntry entry, const std::string& user = "") {
    if (!user.empty()) {
      entry.mutable_auth_header()->set_username(user);
      entry.mutable_auth_header()->set_revision(applier_->auth()->revision());
    }
    absl::Status out = absl::InternalError("not answered");
    applier_->Apply(++index_, 1, entry,
                    [&](absl::Status st, google::protobuf::Message*) { out = st; });
    return out;
  }
  LogEntry Put(const std::string& key, int64_t lease = 0) {
    LogEntry e;
    e.mutable_put()->set_key(key);
    e.mutable_put()->set_value("v");
    e.mutable_put()->set_lease(lease);
    return e;
  }
  bool Exists(const std::string& key) {
    etcdserverpb::RangeRequest r;
    r.set_key(key);
    etcdserverpb::RangeResponse resp;
    return applier_->Range(r, &resp).ok() && resp.kvs_size() == 1;
  }

  fs::path dir_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Mvcc> mvcc_;
  std::unique_ptr<Lessor> lessor_;
  std::unique_ptr<WatchHub> hub_;
  std::unique_ptr<Applier> applier_;
  uint64_t index_ = 0;
};

TEST_F(ApplyAuthTest, LeaseKeysAndRevisionAreCheckedWhereTheRequestApplies) {
  auto auth = [](auto fill) {
    LogEntry e;
    fill(e.mutable_auth());
    return e;
  };
  std::string hash = *AuthStore::HashPassword("pw", 4);
  ASSERT_TRUE(Apply(auth([&](AuthRequest* a) {
                a->mutable_user_add()->set_name("root");
                a->mutable_user_add()->set_hashedpassword(hash);
              })).ok());
  ASSERT_TRUE(Apply(auth([](AuthRequest* a) {
                a->mutable_user_grant_role()->set_user("root");
                a->mutable_user_grant_role()->set_role("root");
              })).ok());
  ASSERT_TRUE(Apply(auth([&](AuthRequest* a) {
                a->mutable_user_add()->set_name("alice");
                a->mutable_user_add()->set_hashedpassword(hash);
              })).ok());
  ASSERT_TRUE(Apply(auth([](AuthRequest* a) { a->mutable_role_add()->set_name("r"); })).ok());
  ASSERT_TRUE(Apply(auth([](AuthRequest* a) {
                auto* g = a->mutable_role_grant_permission();
                g->set_name("r");
                g->mutable_perm()->set_permtype(authpb::Permission::READWRITE);
                g->mutable_perm()->set_key("a");
              })).ok());
  ASSERT_TRUE(Apply(auth([](AuthRequest* a) {
                a->mutable_user_grant_role()->set_user("alice");
                a->mutable_user_grant_role()->set_role("r");
              })).ok());
  ASSERT_TRUE(Apply(auth([](AuthRequest* a) { a->mutable_enable(); })).ok());

  // A lease that holds "secret" (put by an internal proposal: no header).
  LogEntry grant;
  grant.mutable_lease_grant()->set_id(7);
  grant.mutable_lease_grant()->set_ttl(60);
  ASSERT_TRUE(Apply(grant).ok());
  ASSERT_TRUE(Apply(Put("secret", 7)).ok());

  // alice cannot revoke it (that would delete "secret"), nor attach "a" to
  // it, directly or in a txn; the key is still there.
  LogEntry revoke;
  revoke.mutable_lease_revoke()->set_id(7);
  EXPECT_EQ(Apply(revoke, "alice"), ErrPermissionDenied());
  EXPECT_EQ(Apply(Put("a", 7), "alice"), ErrPermissionDenied());
  LogEntry txn;
  *txn.mutable_txn()->add_failure()->mutable_request_txn()->add_success()->mutable_request_put() =
      Put("a", 7).put();
  EXPECT_EQ(Apply(txn, "alice"), ErrPermissionDenied());
  EXPECT_TRUE(Exists("secret"));
  EXPECT_TRUE(Apply(Put("a"), "alice").ok());

  // Checked at an older auth revision: refused whatever it is.
  LogEntry stale = Put("a");
  stale.mutable_auth_header()->set_username("alice");
  stale.mutable_auth_header()->set_revision(applier_->auth()->revision() - 1);
  EXPECT_EQ(Apply(stale), ErrAuthOldRevision());

  // root may revoke it.
  EXPECT_TRUE(Apply(revoke, "root").ok());
  EXPECT_FALSE(Exists("secret"));
}

}  // namespace
}  // namespace capstan::store
