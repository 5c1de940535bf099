#include "store/auth_store.h"

#include <filesystem>

#include "base/test_dir.h"
#include "gtest/gtest.h"
#include "store/auth_gate.h"
#include "store/backend.h"
#include "store/jwt.h"

namespace capstan::store {
namespace {

namespace fs = std::filesystem;
using namespace etcdserverpb;

const std::string kFromKey(1, '\0');

TEST(KeyIntervalSetTest, PointsPrefixesAndFromKey) {
  KeyIntervalSet s;
  s.Add("foo", "");       // the key foo
  s.Add("pre/", "pre0");  // prefix pre/
  s.Add("z", kFromKey);   // z and after
  s.Merge();
  EXPECT_TRUE(s.Covers("foo", ""));
  EXPECT_FALSE(s.Covers("fo", ""));
  EXPECT_FALSE(s.Covers("foo0", ""));
  EXPECT_FALSE(s.Covers("foo", "fop"));                   // foo* is more than foo
  EXPECT_TRUE(s.Covers("foo", std::string("foo\0", 4)));  // exactly [foo, foo\0)
  EXPECT_TRUE(s.Covers("pre/a", ""));
  EXPECT_TRUE(s.Covers("pre/", "pre0"));
  EXPECT_TRUE(s.Covers("pre/a", "pre/b"));
  EXPECT_FALSE(s.Covers("pre", "pre0"));  // starts before the prefix
  EXPECT_FALSE(s.Covers("pre/", kFromKey));
  EXPECT_TRUE(s.Covers("z", kFromKey));
  EXPECT_TRUE(s.Covers("zzz", ""));
  EXPECT_FALSE(s.Covers("y", kFromKey));
  EXPECT_FALSE(s.Covers("", kFromKey));
}

TEST(KeyIntervalSetTest, UnionCoversAcrossTouchingIntervals) {
  KeyIntervalSet s;
  s.Add("b", "d");
  s.Add("a", "b");
  s.Add("d", "f");
  s.Merge();
  EXPECT_TRUE(s.Covers("a", "f"));
  EXPECT_FALSE(s.Covers("a", "g"));
  KeyIntervalSet gap;
  gap.Add("a", "b");
  gap.Add("c", "d");
  gap.Merge();
  EXPECT_FALSE(gap.Covers("a", "d"));
  EXPECT_FALSE(gap.Covers("b", ""));
  KeyIntervalSet empty_range;
  empty_range.Add("b", "a");  // grants nothing
  empty_range.Merge();
  EXPECT_TRUE(empty_range.empty());
}

class AuthStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshTestDir("auth_store_test");
    Open();
  }
  void TearDown() override {
    auth_.reset();
    backend_.reset();
    fs::remove_all(dir_);
  }
  void Open() {
    auth_.reset();
    backend_.reset();
    auto b = Backend::Open(dir_, {});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    // Cost 4: the cheapest bcrypt, these tests check logic, not strength.
    auth_ = std::make_unique<AuthStore>(backend_.get(),
                                        AuthStore::Options{std::chrono::seconds(300), 4});
    ASSERT_TRUE(auth_->Load().ok());
  }
  absl::Status Apply(const AuthRequest& req, const AuthHeader* header = nullptr) {
    rocksdb::WriteBatch batch;
    auto resp = auth_->Apply(req, ++index_, header, &batch);
    if (!resp.ok()) return resp.status();
    last_ = std::move(*resp);
    return backend_->Write(&batch);
  }
  absl::Status AddUser(const std::string& name, const std::string& password) {
    AuthRequest r;
    r.mutable_user_add()->set_name(name);
    auto hash = AuthStore::HashPassword(password, 4);
    if (!hash.ok()) return hash.status();
    r.mutable_user_add()->set_hashedpassword(*hash);
    return Apply(r);
  }
  absl::Status AddRole(const std::string& name) {
    AuthRequest r;
    r.mutable_role_add()->set_name(name);
    return Apply(r);
  }
  absl::Status Grant(const std::string& user, const std::string& role) {
    AuthRequest r;
    r.mutable_user_grant_role()->set_user(user);
    r.mutable_user_grant_role()->set_role(role);
    return Apply(r);
  }
  absl::Status GrantPerm(const std::string& role, authpb::Permission::Type type,
                         const std::string& key, const std::string& end) {
    AuthRequest r;
    r.mutable_role_grant_permission()->set_name(role);
    auto* p = r.mutable_role_grant_permission()->mutable_perm();
    p->set_permtype(type);
    p->set_key(key);
    p->set_range_end(end);
    return Apply(r);
  }
  absl::Status Enable() {
    AuthRequest r;
    r.mutable_enable();
    return Apply(r);
  }
  absl::StatusOr<std::string> Login(const std::string& user, const std::string& password) {
    auto rev = auth_->CheckPassword(user, password);
    if (!rev.ok()) return rev.status();
    AuthRequest r;
    r.mutable_authenticate()->set_name(user);
    r.mutable_authenticate()->set_token_prefix(AuthStore::NewTokenPrefix());
    r.mutable_authenticate()->set_checked_revision(*rev);
    RETURN_IF_ERROR(Apply(r));
    return static_cast<AuthenticateResponse*>(last_.get())->token();
  }
  AuthInfo Who(const std::string& user) { return auth_->InfoFromName(user); }

  fs::path dir_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<AuthStore> auth_;
  std::unique_ptr<google::protobuf::Message> last_;
  uint64_t index_ = 0;
};

TEST_F(AuthStoreTest, EnableNeedsRootWithRootRole) {
  EXPECT_EQ(Enable(), ErrRootUserNotExist());
  ASSERT_TRUE(AddUser("root", "pw").ok());
  EXPECT_EQ(Enable(), ErrRootRoleNotExist());
  ASSERT_TRUE(Grant("root", "root").ok());  // the root role need not exist as a role
  EXPECT_TRUE(Enable().ok());
  EXPECT_TRUE(auth_->enabled());
  EXPECT_TRUE(Enable().ok());  // again: nothing to do
}

TEST_F(AuthStoreTest, ManagementErrorsAreEtcds) {
  ASSERT_TRUE(AddUser("root", "pw").ok());
  EXPECT_EQ(AddUser("root", "pw"), ErrUserAlreadyExist());
  EXPECT_EQ(AddUser("", "pw"), ErrUserEmpty());
  EXPECT_EQ(AddRole(""), ErrRoleEmpty());
  ASSERT_TRUE(AddRole("r").ok());
  EXPECT_EQ(AddRole("r"), ErrRoleAlreadyExist());
  EXPECT_EQ(Grant("nobody", "r"), ErrUserNotFound());
  EXPECT_EQ(Grant("root", "nothing"), ErrRoleNotFound());
  EXPECT_EQ(GrantPerm("nothing", authpb::Permission::READ, "k", ""), ErrRoleNotFound());
  AuthRequest revoke;
  revoke.mutable_user_revoke_role()->set_name("root");
  revoke.mutable_user_revoke_role()->set_role("r");
  EXPECT_EQ(Apply(revoke), ErrRoleNotGranted());
  AuthRequest revoke_perm;
  revoke_perm.mutable_role_revoke_permission()->set_role("r");
  revoke_perm.mutable_role_revoke_permission()->set_key("k");
  EXPECT_EQ(Apply(revoke_perm), ErrPermissionNotGranted());
  // While enabled, root and its role stay.
  ASSERT_TRUE(Grant("root", "root").ok());
  ASSERT_TRUE(Enable().ok());
  AuthRequest del;
  del.mutable_user_delete()->set_name("root");
  EXPECT_EQ(Apply(del), ErrInvalidAuthMgmt());
  revoke.mutable_user_revoke_role()->set_role("root");
  EXPECT_EQ(Apply(revoke), ErrInvalidAuthMgmt());
}

TEST_F(AuthStoreTest, PermissionsFollowRolesAndRevision) {
  ASSERT_TRUE(AddUser("root", "pw").ok());
  ASSERT_TRUE(Grant("root", "root").ok());
  ASSERT_TRUE(AddUser("alice", "apw").ok());
  ASSERT_TRUE(AddRole("r").ok());
  ASSERT_TRUE(GrantPerm("r", authpb::Permission::READWRITE, "foo", "").ok());
  ASSERT_TRUE(GrantPerm("r", authpb::Permission::READ, "pre/", "pre0").ok());
  ASSERT_TRUE(Grant("alice", "r").ok());
  // Disabled: everything passes.
  EXPECT_TRUE(auth_->CheckWrite(AuthInfo{}, "anything", "").ok());
  ASSERT_TRUE(Enable().ok());

  EXPECT_EQ(auth_->CheckRead(AuthInfo{}, "foo", ""), ErrUserEmpty());
  AuthInfo alice = Who("alice");
  EXPECT_TRUE(auth_->CheckWrite(alice, "foo", "").ok());
  EXPECT_TRUE(auth_->CheckRead(alice, "pre/x", "").ok());
  EXPECT_EQ(auth_->CheckWrite(alice, "pre/x", ""), ErrPermissionDenied());
  EXPECT_EQ(auth_->CheckRead(alice, "bar", ""), ErrPermissionDenied());
  EXPECT_EQ(auth_->CheckAdmin(alice), ErrPermissionDenied());
  EXPECT_EQ(auth_->CheckAdmin(Who("nobody")), ErrUserNotFound());
  EXPECT_EQ(auth_->CheckRead(Who("nobody"), "foo", ""), ErrPermissionDenied());
  EXPECT_TRUE(auth_->CheckWrite(Who("root"), "anything", kFromKey).ok());

  // A change moves the revision: identities resolved before it are stale.
  ASSERT_TRUE(GrantPerm("r", authpb::Permission::WRITE, "bar", "").ok());
  EXPECT_EQ(auth_->CheckWrite(alice, "bar", ""), ErrAuthOldRevision());
  EXPECT_TRUE(auth_->CheckWrite(Who("alice"), "bar", "").ok());
  // Same range again: the type changes, no duplicate.
  ASSERT_TRUE(GrantPerm("r", authpb::Permission::READ, "bar", "").ok());
  EXPECT_EQ(auth_->CheckWrite(Who("alice"), "bar", ""), ErrPermissionDenied());
  AuthRoleGetRequest get;
  get.set_role("r");
  AuthRoleGetResponse role;
  ASSERT_TRUE(auth_->RoleGet(get, &role).ok());
  ASSERT_EQ(role.perm_size(), 3);
  EXPECT_EQ(role.perm(0).key(), "bar");  // sorted by key, as etcd
  // Deleting the role takes its permissions from alice.
  AuthRequest del;
  del.mutable_role_delete()->set_role("r");
  ASSERT_TRUE(Apply(del).ok());
  EXPECT_EQ(auth_->CheckRead(Who("alice"), "foo", ""), ErrPermissionDenied());
}

TEST_F(AuthStoreTest, TokensAndPasswords) {
  ASSERT_TRUE(AddUser("root", "pw").ok());
  ASSERT_TRUE(Grant("root", "root").ok());
  ASSERT_TRUE(AddUser("alice", "apw").ok());
  AuthRequest nopw;
  nopw.mutable_user_add()->set_name("cn-user");
  nopw.mutable_user_add()->mutable_options()->set_no_password(true);
  ASSERT_TRUE(Apply(nopw).ok());
  EXPECT_EQ(Login("alice", "apw").status(), ErrAuthNotEnabled());
  ASSERT_TRUE(Enable().ok());
  EXPECT_EQ(Login("alice", "wrong").status(), ErrAuthFailed());
  EXPECT_EQ(Login("nobody", "x").status(), ErrAuthFailed());
  EXPECT_EQ(Login("cn-user", "").status(), ErrNoPasswordUser());

  absl::StatusOr<std::string> token = Login("alice", "apw");
  ASSERT_TRUE(token.ok()) << token.status();
  // etcd's simple token: 16 letters, a dot, the log index.
  EXPECT_EQ(token->find('.'), 16u);
  auto info = auth_->InfoFromToken(*token);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->user, "alice");
  EXPECT_EQ(auth_->InfoFromToken("forged.1").status(), ErrInvalidAuthToken());

  // A new password kills the tokens; the old password stops working.
  AuthRequest change;
  change.mutable_user_change_password()->set_name("alice");
  change.mutable_user_change_password()->set_hashedpassword(*AuthStore::HashPassword("new", 4));
  ASSERT_TRUE(Apply(change).ok());
  EXPECT_EQ(auth_->InfoFromToken(*token).status(), ErrInvalidAuthToken());
  EXPECT_EQ(Login("alice", "apw").status(), ErrAuthFailed());
  EXPECT_TRUE(Login("alice", "new").ok());
  // A password checked before a change is not good for a token after it.
  auto rev = auth_->CheckPassword("alice", "new");
  ASSERT_TRUE(rev.ok());
  ASSERT_TRUE(AddRole("later").ok());
  AuthRequest stale;
  stale.mutable_authenticate()->set_name("alice");
  stale.mutable_authenticate()->set_token_prefix("abcdefghijklmnop");
  stale.mutable_authenticate()->set_checked_revision(*rev);
  EXPECT_EQ(Apply(stale), ErrAuthOldRevision());
}

TEST_F(AuthStoreTest, TokensExpireAfterTheirTtl) {
  auth_ =
      std::make_unique<AuthStore>(backend_.get(), AuthStore::Options{std::chrono::seconds(0), 4});
  ASSERT_TRUE(auth_->Load().ok());
  ASSERT_TRUE(AddUser("root", "pw").ok());
  ASSERT_TRUE(Grant("root", "root").ok());
  ASSERT_TRUE(Enable().ok());
  absl::StatusOr<std::string> token = Login("root", "pw");
  ASSERT_TRUE(token.ok());
  // A TTL of zero: dead on arrival.
  EXPECT_EQ(auth_->InfoFromToken(*token).status(), ErrInvalidAuthToken());
}

// --auth-token jwt: the log entry of Authenticate issues nothing (the
// answering member signs), any holder of the key resolves the token, and the
// token names the auth revision it was issued at.
TEST_F(AuthStoreTest, JwtTokensAreCheckedBySignatureAndRevision) {
  auto jwt = JwtTokenProvider::FromKeys("HS256", "", "cluster secret");
  ASSERT_TRUE(jwt.ok());
  auth_ = std::make_unique<AuthStore>(backend_.get(),
                                      AuthStore::Options{std::chrono::seconds(300), 4, *jwt});
  ASSERT_TRUE(auth_->Load().ok());
  EXPECT_TRUE(auth_->tokens_self_contained());
  ASSERT_TRUE(AddUser("root", "pw").ok());
  ASSERT_TRUE(Grant("root", "root").ok());
  ASSERT_TRUE(AddUser("alice", "apw").ok());
  ASSERT_TRUE(AddRole("r").ok());
  ASSERT_TRUE(GrantPerm("r", authpb::Permission::READ, "foo", "").ok());
  ASSERT_TRUE(Grant("alice", "r").ok());
  ASSERT_TRUE(Enable().ok());
  absl::StatusOr<std::string> applied = Login("alice", "apw");
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, "");  // signed by the caller, not at apply
  EXPECT_EQ(auth_->token_count(), 0u);

  auto token = (*jwt)->Sign("alice", auth_->revision());
  ASSERT_TRUE(token.ok());
  auto who = auth_->InfoFromToken(*token);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->user, "alice");
  EXPECT_EQ(who->revision, auth_->revision());
  EXPECT_TRUE(auth_->CheckRead(*who, "foo", "").ok());
  EXPECT_EQ(auth_->CheckWrite(*who, "foo", ""), ErrPermissionDenied());
  // Another cluster's key, garbage, a simple token: invalid.
  auto other = JwtTokenProvider::FromKeys("HS256", "", "another secret");
  EXPECT_EQ(auth_->InfoFromToken(*(*other)->Sign("alice", auth_->revision())).status(),
            ErrInvalidAuthToken());
  EXPECT_EQ(auth_->InfoFromToken("abcdefghijklmnop.12").status(), ErrInvalidAuthToken());
  EXPECT_EQ(auth_->InfoFromToken("").status(), ErrInvalidAuthToken());
  // Any auth change: the token still resolves, but its revision is old.
  ASSERT_TRUE(AddRole("unrelated").ok());
  who = auth_->InfoFromToken(*token);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(auth_->CheckRead(*who, "foo", ""), ErrAuthOldRevision());
}

TEST_F(AuthStoreTest, StatePersistsAndAdminIsRecheckedAtApply) {
  ASSERT_TRUE(AddUser("root", "pw").ok());
  ASSERT_TRUE(Grant("root", "root").ok());
  ASSERT_TRUE(AddUser("alice", "apw").ok());
  ASSERT_TRUE(Enable().ok());
  uint64_t rev = auth_->revision();
  Open();
  EXPECT_TRUE(auth_->enabled());
  EXPECT_EQ(auth_->revision(), rev);
  EXPECT_TRUE(auth_->CheckPassword("alice", "apw").ok());
  EXPECT_TRUE(auth_->IsAdmin("root"));
  // An admin change proposed by alice fails where it applies.
  AuthHeader from_alice;
  from_alice.set_username("alice");
  from_alice.set_revision(auth_->revision());
  AuthRequest add;
  add.mutable_role_add()->set_name("sneaky");
  EXPECT_EQ(Apply(add, &from_alice), ErrPermissionDenied());
  AuthHeader from_root = from_alice;
  from_root.set_username("root");
  EXPECT_TRUE(Apply(add, &from_root).ok());
}

TEST_F(AuthStoreTest, IdentityFromTokenElseCertificateName) {
  ASSERT_TRUE(AddUser("root", "pw").ok());
  ASSERT_TRUE(Grant("root", "root").ok());
  AuthRequest cn_user;
  cn_user.mutable_user_add()->set_name("client-cn");
  cn_user.mutable_user_add()->mutable_options()->set_no_password(true);
  ASSERT_TRUE(Apply(cn_user).ok());
  ASSERT_TRUE(Enable().ok());
  absl::StatusOr<std::string> token = Login("root", "pw");
  ASSERT_TRUE(token.ok());
  std::optional<std::string> cn = "client-cn";  // what the TLS layer would report
  // No token: the certificate's CN is the user.
  auto who = ResolveIdentity(auth_.get(), std::nullopt, false, cn);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->user, "client-cn");
  EXPECT_EQ(who->revision, auth_->revision());
  // A token wins over the certificate; a bad token is an error, not a fallback.
  who = ResolveIdentity(auth_.get(), std::string_view(*token), false, cn);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->user, "root");
  EXPECT_EQ(ResolveIdentity(auth_.get(), std::string_view("bad.1"), false, cn).status(),
            ErrInvalidAuthToken());
  // Through etcd's gRPC gateway the certificate is the gateway's, not a user's.
  who = ResolveIdentity(auth_.get(), std::nullopt, true, cn);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->user, "");
  // Nothing at all: nobody.
  who = ResolveIdentity(auth_.get(), std::nullopt, false, std::nullopt);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->user, "");
}

TEST(AuthPasswordTest, BcryptHashesVerify) {
  auto hash = AuthStore::HashPassword("secret", 4);
  ASSERT_TRUE(hash.ok());
  EXPECT_EQ(hash->rfind("$2b$04$", 0), 0u) << *hash;
  EXPECT_EQ(AuthStore::HashPassword(std::string("a\0b", 3), 4).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace capstan::store
