// Auth across a 3-member cluster: changes made through one member apply on
// every member, a token from one member works on the others (tokens are
// assigned through the log), and the auth state survives a restart.
#include <string>
#include <vector>

#include "cluster.h"
#include "diff_util.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

using namespace etcdserverpb;

class AuthClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<Cluster>(dir_.path());
    ASSERT_TRUE(cluster_->Start()) << cluster_->Logs();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << cluster_->Logs() << "\n";
  }
  std::string Ok(size_t member, const std::vector<std::string>& args) {
    CommandResult r = Etcdctl(cluster_->endpoint(member), args);
    EXPECT_EQ(r.exit_code, 0) << "member " << member << " etcdctl "
                              << ::testing::PrintToString(args) << "\n"
                              << r.err;
    return r.out;
  }
  CommandResult Ctl(size_t member, const std::vector<std::string>& args) {
    return Etcdctl(cluster_->endpoint(member), args);
  }

  TempDir dir_{"capstan-auth-cluster"};
  std::unique_ptr<Cluster> cluster_;
};

TEST_F(AuthClusterTest, ChangesAndTokensHoldOnEveryMember) {
  Ok(0, {"user", "add", "root:rootpw"});
  Ok(1, {"user", "add", "alice:alicepw"});
  Ok(2, {"role", "add", "r"});
  Ok(0, {"role", "grant-permission", "r", "readwrite", "k", "--prefix"});
  Ok(1, {"user", "grant-role", "alice", "r"});
  Ok(2, {"auth", "enable"});

  // Every member enforces it, once it has applied the enable.
  for (size_t m = 0; m < 3; ++m) {
    EXPECT_TRUE(Eventually([&] {
      return Ctl(m, {"get", "k1"}).err.find("etcdserver: user name is empty") != std::string::npos;
    })) << "member "
        << m;
    EXPECT_EQ(Ok(m, {"--user", "alice:alicepw", "put", "k" + std::to_string(m), "v"}), "OK\n");
    CommandResult denied = Ctl(m, {"--user", "alice:alicepw", "put", "other", "v"});
    EXPECT_NE(denied.err.find("etcdserver: permission denied"), std::string::npos) << denied.err;
  }

  // A token from member 0 is good on members 1 and 2.
  Stubs on0(cluster_->endpoint(0));
  auto auth = Auth::NewStub(on0.channel);
  grpc::ClientContext login_ctx;
  AuthenticateRequest login;
  login.set_name("alice");
  login.set_password("alicepw");
  AuthenticateResponse token;
  ASSERT_TRUE(auth->Authenticate(&login_ctx, login, &token).ok());
  for (size_t m = 1; m < 3; ++m) {
    Stubs stubs(cluster_->endpoint(m));
    grpc::ClientContext ctx;
    ctx.AddMetadata("token", token.token());
    RangeRequest get;
    get.set_key("k0");
    RangeResponse got;
    grpc::Status st = stubs.kv->Range(&ctx, get, &got);
    ASSERT_TRUE(st.ok()) << "member " << m << ": " << StatusText(st);
    ASSERT_EQ(got.kvs_size(), 1);
  }

  // A permission revoked through member 1 is gone on member 2 for the next request.
  Ok(1, {"--user", "root:rootpw", "role", "revoke-permission", "r", "k", "--prefix"});
  CommandResult revoked = Ctl(2, {"--user", "alice:alicepw", "get", "k0"});
  EXPECT_NE(revoked.err.find("etcdserver: permission denied"), std::string::npos) << revoked.err;

  // The auth state survives a restart.
  cluster_->Stop(2);
  ASSERT_TRUE(cluster_->StartMember(2));
  ASSERT_TRUE(Eventually(
      [&] {
        return Ctl(2, {"--user", "root:rootpw", "user", "list"}).exit_code == 0;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(Ok(2, {"--user", "root:rootpw", "user", "list"}), "alice\nroot\n");
  CommandResult still_enabled = Ctl(2, {"get", "k0"});
  EXPECT_NE(still_enabled.err.find("etcdserver: user name is empty"), std::string::npos)
      << still_enabled.err;
}

}  // namespace
}  // namespace capstan::e2e
