// Auth and RBAC, differential: the same etcdctl commands (users, roles,
// permissions, auth enable, and every kind of request as a restricted user)
// against etcd (Debian's etcd-server 3.4) and `capstan store`; exit codes,
// output and error messages must match exactly. Then the paths etcd's later
// security advisories closed, where etcd 3.4 is the wrong reference:
// capstan alone, through gRPC with a token, must refuse them.
#include <string>
#include <vector>

#include "diff_util.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

using namespace etcdserverpb;

// stderr without clientv3's JSON retry logs (they carry timestamps and IDs).
std::string ErrorLines(const std::string& err) {
  std::string out;
  size_t pos = 0;
  while (pos < err.size()) {
    size_t nl = err.find('\n', pos);
    if (nl == std::string::npos) nl = err.size();
    std::string line = err.substr(pos, nl - pos);
    if (line.rfind("{\"level\"", 0) != 0) out += line + "\n";
    pos = nl + 1;
  }
  return out;
}

class AuthDifferentialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kEtcd, dir_.path() + "/etcd");
    capstan_ =
        std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_.path() + "/capstan");
    ASSERT_TRUE(etcd_->Start()) << etcd_->Log();
    ASSERT_TRUE(capstan_->Start()) << capstan_->Log();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "capstan log:\n" << capstan_->Log() << "\n";
  }

  // Runs etcdctl with `args` against both; expects the same exit code,
  // output and error lines. Returns capstan's output.
  std::string Same(const std::vector<std::string>& args, const std::string& input = "") {
    CommandResult a = Etcdctl(etcd_->endpoint(), args, input);
    CommandResult b = Etcdctl(capstan_->endpoint(), args, input);
    std::string what = "etcdctl " + ::testing::PrintToString(args);
    EXPECT_EQ(a.exit_code, b.exit_code) << what << "\netcd: " << a.err << "\ncapstan: " << b.err;
    EXPECT_EQ(a.out, b.out) << what;
    EXPECT_EQ(ErrorLines(a.err), ErrorLines(b.err)) << what;
    ++steps_;
    return b.out;
  }

  // The users and roles of every scenario: root, alice (readwrite foo,
  // read the prefix pre/, write from z on), bob (no role).
  void CreateUsersAndRoles() {
    Same({"user", "add", "root:rootpw"});
    Same({"user", "add", "alice:alicepw"});
    Same({"user", "add", "bob:bobpw"});
    Same({"role", "add", "r"});
    Same({"role", "grant-permission", "r", "readwrite", "foo"});
    Same({"role", "grant-permission", "r", "read", "pre/", "--prefix"});
    Same({"role", "grant-permission", "r", "write", "z", "--from-key"});
    Same({"user", "grant-role", "alice", "r"});
  }

  TempDir dir_{"capstan-auth-diff"};
  std::unique_ptr<StoreProcess> etcd_, capstan_;
  int steps_ = 0;
};

TEST_F(AuthDifferentialTest, UserAndRoleManagement) {
  CreateUsersAndRoles();
  Same({"user", "list"});
  Same({"role", "list"});
  Same({"user", "get", "alice"});
  Same({"user", "get", "alice", "--detail"});
  Same({"role", "get", "r"});
  // Errors, with etcd's codes and messages.
  Same({"user", "add", "alice:again"});
  Same({"role", "add", "r"});
  Same({"user", "get", "nobody"});
  Same({"role", "get", "nothing"});
  Same({"user", "delete", "nobody"});
  Same({"role", "delete", "nothing"});
  Same({"user", "grant-role", "alice", "nothing"});
  Same({"user", "grant-role", "nobody", "r"});
  Same({"user", "revoke-role", "alice", "nothing"});
  Same({"role", "grant-permission", "nothing", "read", "k"});
  Same({"role", "revoke-permission", "r", "never-granted"});
  // Granting the same range again changes its type; revoking removes it.
  Same({"role", "grant-permission", "r", "read", "foo"});
  Same({"role", "get", "r"});
  Same({"role", "revoke-permission", "r", "foo"});
  Same({"role", "get", "r"});
  Same({"user", "revoke-role", "alice", "r"});
  Same({"user", "get", "alice"});
  Same({"role", "delete", "r"});
  Same({"user", "delete", "bob"});
  Same({"user", "list"});
  Same({"role", "list"});
  // Without a root user auth cannot be enabled.
  Same({"auth", "enable"});
  Same({"user", "delete", "root"});
  Same({"auth", "enable"});
  EXPECT_GE(steps_, 30);
}

TEST_F(AuthDifferentialTest, EnableAndEnforce) {
  CreateUsersAndRoles();
  Same({"put", "foo", "v0"});
  Same({"put", "pre/a", "p0"});
  // etcdctl's auth enable adds the root role and grants it when missing.
  Same({"auth", "enable"});
  Same({"user", "get", "root"});

  // No credentials, bad credentials.
  Same({"get", "foo"});
  Same({"put", "foo", "x"});
  Same({"--user", "alice:wrong", "get", "foo"});
  Same({"--user", "nobody:pw", "get", "foo"});

  const std::vector<std::string> alice = {"--user", "alice:alicepw"};
  auto as = [](std::vector<std::string> who, std::vector<std::string> args) {
    who.insert(who.end(), args.begin(), args.end());
    return who;
  };
  // Keys: readwrite foo, read pre/*, write z and after.
  Same(as(alice, {"put", "foo", "v1"}));
  Same(as(alice, {"get", "foo"}));
  Same(as(alice, {"get", "foo", "--prefix"}));  // foo* is wider than foo
  Same(as(alice, {"put", "bar", "x"}));
  Same(as(alice, {"get", "bar"}));
  Same(as(alice, {"get", "pre/a"}));
  Same(as(alice, {"get", "pre/", "--prefix"}));
  Same(as(alice, {"get", "pre", "--prefix"}));  // pre* is wider than pre/*
  Same(as(alice, {"put", "pre/a", "x"}));
  Same(as(alice, {"put", "zz", "x"}));
  Same(as(alice, {"get", "zz"}));
  Same(as(alice, {"del", "pre/a"}));
  Same(as(alice, {"del", "zz"}));
  Same(as(alice, {"del", "foo", "--prev-kv"}));
  Same(as(alice, {"put", "foo", "v2", "--prev-kv"}));
  Same(as(alice, {"put", "zz", "x", "--prev-kv"}));  // write but no read
  Same(as(alice, {"get", "a", "--from-key"}));
  // Txn: every compare and every op is checked, on both branches.
  Same(as(alice, {"txn", "--interactive=false"}),
       "value(\"foo\") = \"v2\"\n\nput foo v3\n\nget pre/a\n\n");
  Same(as(alice, {"txn", "--interactive=false"}), "value(\"bar\") = \"x\"\n\nput foo v4\n\n\n");
  Same(as(alice, {"txn", "--interactive=false"}),
       "value(\"foo\") = \"v3\"\n\nput foo v4\n\nput bar x\n\n");
  Same(as(alice, {"txn", "--interactive=false"}),
       "value(\"foo\") = \"v3\"\n\nget pre/a\n\nput pre/a x\n\n");
  // Admin calls need the root role.
  Same(as(alice, {"user", "list"}));
  Same(as(alice, {"role", "list"}));
  Same(as(alice, {"user", "add", "eve:pw"}));
  Same(as(alice, {"role", "grant-permission", "r", "readwrite", "bar"}));
  Same(as(alice, {"user", "get", "alice"}));  // herself
  Same(as(alice, {"user", "get", "root"}));
  Same(as(alice, {"role", "get", "r"}));  // a role she has
  Same(as(alice, {"role", "get", "root"}));
  Same(as(alice, {"auth", "disable"}));

  const std::vector<std::string> root = {"--user", "root:rootpw"};
  // root may do anything, but not remove itself or its role while enabled.
  Same(as(root, {"get", "", "--from-key", "--keys-only"}));
  Same(as(root, {"user", "delete", "root"}));
  Same(as(root, {"user", "revoke-role", "root", "root"}));
  Same(as(root, {"role", "delete", "root"}));
  Same(as(root, {"user", "list"}));
  // A permission change takes effect for the next request.
  Same(as(root, {"role", "grant-permission", "r", "read", "bar"}));
  Same(as(alice, {"get", "bar"}));
  Same(as(root, {"role", "revoke-permission", "r", "foo"}));
  Same(as(alice, {"get", "foo"}));
  // A changed password: the old one fails, the new one works.
  Same(as(root, {"user", "passwd", "alice", "--interactive=false"}), "newpw\n");
  Same(as(alice, {"get", "bar"}));
  Same({"--user", "alice:newpw", "get", "bar"});
  // A deleted user cannot log in.
  Same(as(root, {"user", "delete", "bob"}));
  Same({"--user", "bob:bobpw", "get", "foo"});
  // Disabled again: anyone may do anything.
  Same(as(root, {"auth", "disable"}));
  Same({"get", "foo"});
  Same({"put", "bar", "open"});
  Same({"user", "list"});
  EXPECT_GE(steps_, 60);
}

// ---- capstan alone: what etcd 3.4 lets through and later etcd refuses.

class AuthAdvisoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_.path() + "/data");
    ASSERT_TRUE(server_->Start()) << server_->Log();
    for (auto args :
         std::vector<std::vector<std::string>>{{"user", "add", "root:rootpw"},
                                               {"user", "add", "alice:alicepw"},
                                               {"role", "add", "r"},
                                               {"role", "grant-permission", "r", "readwrite", "a"},
                                               {"role", "grant-permission", "r", "read", "w"},
                                               {"user", "grant-role", "alice", "r"},
                                               {"put", "a", "1"},
                                               {"put", "secret", "s"},
                                               {"auth", "enable"}}) {
      CommandResult r = Etcdctl(server_->endpoint(), args);
      ASSERT_EQ(r.exit_code, 0) << ::testing::PrintToString(args) << r.err;
    }
    stubs_ = std::make_unique<Stubs>(server_->endpoint());
    auth_ = Auth::NewStub(stubs_->channel);
    root_token_ = Token("root", "rootpw");
    alice_token_ = Token("alice", "alicepw");
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "server log:\n" << server_->Log() << "\n";
  }
  std::string Token(const std::string& user, const std::string& password) {
    grpc::ClientContext ctx;
    AuthenticateRequest req;
    req.set_name(user);
    req.set_password(password);
    AuthenticateResponse resp;
    grpc::Status st = auth_->Authenticate(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << StatusText(st);
    return resp.token();
  }
  std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("token", token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return ctx;
  }
  static const char* Denied() { return "7: etcdserver: permission denied"; }

  TempDir dir_{"capstan-auth-adv"};
  std::unique_ptr<StoreProcess> server_;
  std::unique_ptr<Stubs> stubs_;
  std::unique_ptr<Auth::Stub> auth_;
  std::string root_token_, alice_token_;
};

TEST_F(AuthAdvisoryTest, NestedTxnOpsAreChecked) {
  // GHSA-rfx7-8w68-q57q: a range in a nested txn on a key alice cannot read.
  TxnRequest outer;
  TxnRequest* inner = outer.add_success()->mutable_request_txn();
  inner->add_success()->mutable_request_range()->set_key("secret");
  TxnResponse resp;
  EXPECT_EQ(StatusText(stubs_->kv->Txn(As(alice_token_).get(), outer, &resp)), Denied());
  // The same txn on a key she may read passes.
  inner->mutable_success(0)->mutable_request_range()->set_key("a");
  EXPECT_TRUE(stubs_->kv->Txn(As(alice_token_).get(), outer, &resp).ok());
  EXPECT_EQ(resp.responses(0).response_txn().responses(0).response_range().kvs(0).value(), "1");
}

TEST_F(AuthAdvisoryTest, TxnPutPrevKvNeedsRead) {
  // GHSA-x35m-3gp4-4fh5: prev_kv on a put in a txn reads the old value,
  // so it needs READ: give alice WRITE alone on "z".
  CommandResult r = Etcdctl(server_->endpoint(), {"--user", "root:rootpw", "role",
                                                  "grant-permission", "r", "write", "z"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(Etcdctl(server_->endpoint(), {"--user", "root:rootpw", "put", "z", "old"}).exit_code,
            0);
  std::string token = Token("alice", "alicepw");  // the auth revision moved
  TxnRequest txn;
  PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key("z");
  put->set_value("new");
  put->set_prev_kv(true);
  TxnResponse resp;
  EXPECT_EQ(StatusText(stubs_->kv->Txn(As(token).get(), txn, &resp)), Denied());
  put->set_prev_kv(false);
  EXPECT_TRUE(stubs_->kv->Txn(As(token).get(), txn, &resp).ok());
}

TEST_F(AuthAdvisoryTest, WatchFromKeyNeedsTheWholeRange) {
  // GHSA-xg4h-6gfc-h4m8: read on "w" alone does not cover a watch from "w".
  auto ctx = As(alice_token_);
  auto stream = stubs_->watch->Watch(ctx.get());
  WatchRequest req;
  req.mutable_create_request()->set_key("w");
  req.mutable_create_request()->set_range_end(std::string(1, '\0'));
  ASSERT_TRUE(stream->Write(req));
  WatchResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_TRUE(resp.created());
  EXPECT_TRUE(resp.canceled());
  EXPECT_EQ(resp.watch_id(), -1);
  EXPECT_EQ(resp.cancel_reason(), "etcdserver: permission denied");
  // The single key is fine, on the same stream.
  req.mutable_create_request()->clear_range_end();
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_TRUE(resp.created());
  EXPECT_FALSE(resp.canceled());
  stream->WritesDone();
  ctx->TryCancel();
  (void)stream->Finish();
}

TEST_F(AuthAdvisoryTest, LeaseKeysGuardRevokeAttachAndTimeToLive) {
  // root attaches "secret" to a lease.
  LeaseGrantRequest grant;
  grant.set_ttl(60);
  LeaseGrantResponse granted;
  ASSERT_TRUE(stubs_->lease->LeaseGrant(As(root_token_).get(), grant, &granted).ok());
  PutRequest put;
  put.set_key("secret");
  put.set_value("s2");
  put.set_lease(granted.id());
  PutResponse put_resp;
  ASSERT_TRUE(stubs_->kv->Put(As(root_token_).get(), put, &put_resp).ok());

  // alice may not revoke it (that deletes "secret"), checked where it
  // applies, nor attach a key of hers to it, nor list its keys
  // (CVE-2023-32082).
  LeaseRevokeRequest revoke;
  revoke.set_id(granted.id());
  LeaseRevokeResponse revoked;
  EXPECT_EQ(StatusText(stubs_->lease->LeaseRevoke(As(alice_token_).get(), revoke, &revoked)),
            Denied());
  put.set_key("a");
  EXPECT_EQ(StatusText(stubs_->kv->Put(As(alice_token_).get(), put, &put_resp)), Denied());
  LeaseTimeToLiveRequest ttl;
  ttl.set_id(granted.id());
  ttl.set_keys(true);
  LeaseTimeToLiveResponse ttl_resp;
  EXPECT_EQ(StatusText(stubs_->lease->LeaseTimeToLive(As(alice_token_).get(), ttl, &ttl_resp)),
            Denied());
  RangeRequest get;
  get.set_key("secret");
  RangeResponse got;
  ASSERT_TRUE(stubs_->kv->Range(As(root_token_).get(), get, &got).ok());
  ASSERT_EQ(got.kvs_size(), 1);
  EXPECT_EQ(got.kvs(0).value(), "s2");
  // root may.
  EXPECT_TRUE(stubs_->lease->LeaseRevoke(As(root_token_).get(), revoke, &revoked).ok());
}

TEST_F(AuthAdvisoryTest, AdminAndIdentityOnlyCalls) {
  // GHSA-q8m4-xhhv-38mg: no identity, no cluster topology, status or leases.
  grpc::ClientContext anonymous;
  MemberListRequest members;
  MemberListResponse members_resp;
  EXPECT_EQ(StatusText(stubs_->cluster->MemberList(&anonymous, members, &members_resp)),
            "3: etcdserver: user name is empty");
  EXPECT_TRUE(stubs_->cluster->MemberList(As(alice_token_).get(), members, &members_resp).ok());
  // Alarm changes and compaction need the root role.
  AlarmRequest alarm;
  alarm.set_action(AlarmRequest::ACTIVATE);
  alarm.set_alarm(NOSPACE);
  AlarmResponse alarm_resp;
  EXPECT_EQ(StatusText(stubs_->maintenance->Alarm(As(alice_token_).get(), alarm, &alarm_resp)),
            Denied());
  CompactionRequest compact;
  compact.set_revision(1);
  CompactionResponse compact_resp;
  EXPECT_EQ(StatusText(stubs_->kv->Compact(As(alice_token_).get(), compact, &compact_resp)),
            Denied());
  // A bad token is refused before anything else.
  RangeRequest get;
  get.set_key("a");
  RangeResponse got;
  EXPECT_EQ(StatusText(stubs_->kv->Range(As("forged.1").get(), get, &got)),
            "16: etcdserver: invalid auth token");
}

TEST(AuthFlags, BadAuthFlagsSayWhatIsWrong) {
  auto r = RunCommand({CapstanBinary(), "store", "--auth-token",
                       "jwt,pub-key=a.pem,priv-key=b.pem,sign-method=RS256"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--auth-token: pub-key: cannot read \"a.pem\""), std::string::npos) << r.err;
  r = RunCommand({CapstanBinary(), "store", "--auth-token", "jwt,sign-method=XS256"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--auth-token: sign-method \"XS256\" is not one of"), std::string::npos)
      << r.err;
  r = RunCommand({CapstanBinary(), "store", "--auth-token-ttl", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--auth-token-ttl must be >= 1"), std::string::npos) << r.err;
  r = RunCommand({CapstanBinary(), "store", "--bcrypt-cost", "3"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--bcrypt-cost must be between 4 and 31"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace capstan::e2e
