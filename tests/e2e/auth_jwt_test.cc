// JWT tokens (`--auth-token jwt,...`), black-box: etcdctl and gRPC against a
// 1-member and a 3-member capstan cluster, and the same scenario against
// etcd (Debian's 3.4) started with the same keys and flags. Keys are made at
// test time; tokens the test forges are signed here with OpenSSL directly,
// not with the code under test.
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <fstream>
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

constexpr char kInvalidToken[] = "16: etcdserver: invalid auth token";
constexpr char kOldRevision[] = "3: etcdserver: revision of auth store is old";

// ---- keys and tokens made here

std::string Base64Url(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

std::string DecodeSegment(const std::string& seg) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : seg) {
    int v = std::isupper(c)   ? c - 'A'
            : std::islower(c) ? c - 'a' + 26
            : std::isdigit(c) ? c - '0' + 52
            : c == '-'        ? 62
                              : 63;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

struct KeyFiles {
  std::string priv, pub;
  EVP_PKEY* key = nullptr;
};

// A key pair written as PKCS#8 and SubjectPublicKeyInfo PEM: RSA-2048 by
// default, else an EC key on `curve`.
KeyFiles MakeKey(const std::string& dir, const std::string& name, const char* curve = nullptr) {
  KeyFiles k;
  k.key = curve == nullptr ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                           : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve);
  k.priv = dir + "/" + name + ".key";
  k.pub = dir + "/" + name + ".pub";
  FILE* f = std::fopen(k.priv.c_str(), "w");
  PEM_write_PrivateKey(f, k.key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  f = std::fopen(k.pub.c_str(), "w");
  PEM_write_PUBKEY(f, k.key);
  std::fclose(f);
  return k;
}

// An RS256 token with these claims, signed with `key`.
std::string SignRs256(EVP_PKEY* key, const std::string& claims) {
  std::string input = Base64Url("{\"alg\":\"RS256\",\"typ\":\"JWT\"}") + "." + Base64Url(claims);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                 input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  EVP_MD_CTX_free(ctx);
  sig.resize(len);
  return input + "." + Base64Url(sig);
}

// A token's claims, with "exp" blanked (it depends on the second it was made).
std::string ClaimsOf(const std::string& token) {
  size_t d1 = token.find('.'), d2 = token.rfind('.');
  if (d1 == std::string::npos || d1 == d2) return "not a JWS: " + token;
  std::string claims = DecodeSegment(token.substr(d1 + 1, d2 - d1 - 1));
  size_t exp = claims.find("\"exp\":");
  if (exp != std::string::npos) {
    size_t end = claims.find_first_of(",}", exp);
    claims.replace(exp + 6, end - exp - 6, "N");
  }
  return claims;
}

std::string Claims(const std::string& user, uint64_t revision, int64_t exp) {
  return "{\"exp\":" + std::to_string(exp) + ",\"revision\":" + std::to_string(revision) +
         ",\"username\":\"" + user + "\"}";
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string JwtFlag(const KeyFiles& k, bool with_private = true) {
  std::string flag = "jwt,pub-key=" + k.pub;
  if (with_private) flag += ",priv-key=" + k.priv;
  return flag + ",sign-method=RS256,ttl=5m";
}

// ---- gRPC helpers

grpc::Status Login(const std::string& endpoint, const std::string& user,
                   const std::string& password, std::string* token) {
  Stubs stubs(endpoint);
  auto auth = Auth::NewStub(stubs.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  AuthenticateRequest req;
  req.set_name(user);
  req.set_password(password);
  AuthenticateResponse resp;
  grpc::Status st = auth->Authenticate(&ctx, req, &resp);
  *token = resp.token();
  return st;
}

std::string Get(const std::string& endpoint, const std::string& token, const std::string& key,
                bool serializable = false,
                std::chrono::seconds deadline = std::chrono::seconds(10)) {
  Stubs stubs(endpoint);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  ctx.AddMetadata("token", token);
  RangeRequest req;
  req.set_key(key);
  req.set_serializable(serializable);
  RangeResponse resp;
  grpc::Status st = stubs.kv->Range(&ctx, req, &resp);
  if (!st.ok()) return StatusText(st);
  return resp.kvs_size() == 1 ? "value=" + resp.kvs(0).value() : "none";
}

uint64_t AuthRevision(const std::string& endpoint) {
  Stubs stubs(endpoint);
  auto auth = Auth::NewStub(stubs.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  AuthStatusResponse resp;
  if (!auth->AuthStatus(&ctx, AuthStatusRequest(), &resp).ok()) return 0;
  return resp.authrevision();
}

// root (root role) and alice (readwrite on foo), auth enabled.
void SetUpUsers(const std::string& endpoint) {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"user", "add", "root:rootpw"},
                                             {"user", "add", "alice:alicepw"},
                                             {"role", "add", "r"},
                                             {"role", "grant-permission", "r", "readwrite", "foo"},
                                             {"user", "grant-role", "alice", "r"},
                                             {"auth", "enable"}}) {
    CommandResult r = Etcdctl(endpoint, args);
    ASSERT_EQ(r.exit_code, 0) << ::testing::PrintToString(args) << "\n" << r.err;
  }
}

class AuthJwtTest : public ::testing::Test {
 protected:
  void TearDown() override { EVP_PKEY_free(keys_.key), EVP_PKEY_free(other_.key); }
  TempDir dir_{"capstan-auth-jwt"};
  KeyFiles keys_ = MakeKey(dir_.path(), "cluster");
  KeyFiles other_ = MakeKey(dir_.path(), "other");
};

TEST_F(AuthJwtTest, OneMemberIssuesChecksAndRetiresTokens) {
  StoreProcess capstan(StoreProcess::Kind::kCapstan, dir_.path() + "/capstan",
                       {"--auth-token", JwtFlag(keys_)});
  ASSERT_TRUE(capstan.Start()) << capstan.Log();
  std::string ep = capstan.endpoint();
  ASSERT_NO_FATAL_FAILURE(SetUpUsers(ep));
  // etcdctl authenticates and uses the token it gets.
  CommandResult put = Etcdctl(ep, {"--user", "alice:alicepw", "put", "foo", "bar"});
  EXPECT_EQ(put.out, "OK\n") << put.err;
  CommandResult denied = Etcdctl(ep, {"--user", "alice:alicepw", "put", "other", "x"});
  EXPECT_NE(denied.err.find("etcdserver: permission denied"), std::string::npos) << denied.err;

  std::string token;
  ASSERT_TRUE(Login(ep, "alice", "alicepw", &token).ok());
  // A JWS whose header and claims are etcd's.
  size_t d1 = token.find('.'), d2 = token.rfind('.');
  ASSERT_NE(d1, d2) << token;
  EXPECT_EQ(DecodeSegment(token.substr(0, d1)), "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
  std::string claims = DecodeSegment(token.substr(d1 + 1, d2 - d1 - 1));
  EXPECT_NE(claims.find("\"username\":\"alice\""), std::string::npos) << claims;
  EXPECT_NE(claims.find("\"revision\":" + std::to_string(AuthRevision(ep))), std::string::npos)
      << claims;
  EXPECT_EQ(Get(ep, token, "foo"), "value=bar");

  // Tampered, another key, expired, alg none: etcd's invalid auth token.
  std::string tampered = token;
  tampered[d2 + 5] = tampered[d2 + 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(Get(ep, tampered, "foo"), kInvalidToken);
  uint64_t rev = AuthRevision(ep);
  EXPECT_EQ(Get(ep, SignRs256(other_.key, Claims("alice", rev, UnixNow() + 300)), "foo"),
            kInvalidToken);
  EXPECT_EQ(Get(ep, SignRs256(keys_.key, Claims("alice", rev, UnixNow() - 1)), "foo"),
            kInvalidToken);
  std::string none =
      Base64Url("{\"alg\":\"none\"}") + "." + Base64Url(Claims("root", rev, UnixNow() + 300)) + ".";
  EXPECT_EQ(Get(ep, none, "foo"), kInvalidToken);
  // A token the test signs with the cluster's key is as good as the member's.
  EXPECT_EQ(Get(ep, SignRs256(keys_.key, Claims("alice", rev, UnixNow() + 300)), "foo"),
            "value=bar");

  // Any auth change retires every token (its revision is old), as etcd's.
  CommandResult add = Etcdctl(ep, {"--user", "root:rootpw", "role", "add", "later"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_EQ(Get(ep, token, "foo"), kOldRevision);
  ASSERT_TRUE(Login(ep, "alice", "alicepw", &token).ok());
  EXPECT_EQ(Get(ep, token, "foo"), "value=bar");
}

TEST_F(AuthJwtTest, ThreeMembersAcceptEachOthersTokensWithoutTheLog) {
  ClusterOptions options;
  options.extra_flags = {"--auth-token", JwtFlag(keys_)};
  Cluster cluster(dir_.path(), options);
  ASSERT_TRUE(cluster.Start()) << cluster.Logs();
  ASSERT_NO_FATAL_FAILURE(SetUpUsers(cluster.endpoint(0)));
  CommandResult put = Etcdctl(cluster.endpoint(1), {"--user", "alice:alicepw", "put", "foo", "v"});
  ASSERT_EQ(put.exit_code, 0) << put.err;

  std::string token;
  ASSERT_TRUE(Login(cluster.endpoint(0), "alice", "alicepw", &token).ok());
  // Member 2 has applied the enable and the put once it reads them.
  ASSERT_TRUE(Eventually([&] { return Get(cluster.endpoint(2), token, "foo") == "value=v"; }))
      << Get(cluster.endpoint(2), token, "foo");
  EXPECT_EQ(Get(cluster.endpoint(1), token, "foo"), "value=v");

  // Cut member 2 off: a valid token still works on it (serializable read:
  // nothing needs the log), and a bad one is refused at once as invalid —
  // not held for a read index that cannot come (the client's deadline
  // would end it with DEADLINE_EXCEEDED instead).
  cluster.Isolate({2});
  EXPECT_EQ(Get(cluster.endpoint(2), token, "foo", /*serializable=*/true), "value=v");
  std::string forged =
      SignRs256(other_.key, Claims("root", AuthRevision(cluster.endpoint(0)), UnixNow() + 300));
  EXPECT_EQ(
      Get(cluster.endpoint(2), forged, "foo", /*serializable=*/false, std::chrono::seconds(5)),
      kInvalidToken);
  cluster.Heal();

  // Tokens are self-contained: they outlive a restart of the member.
  cluster.Stop(2);
  ASSERT_TRUE(cluster.StartMember(2)) << cluster.Log(2);
  EXPECT_TRUE(Eventually([&] { return Get(cluster.endpoint(2), token, "foo") == "value=v"; },
                         std::chrono::seconds(20)))
      << Get(cluster.endpoint(2), token, "foo");
}

// ---- against etcd, same keys, same flags

class AuthJwtDifferentialTest : public AuthJwtTest {
 protected:
  void StartBoth(const std::string& flag) {
    etcd_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kEtcd, dir_.path() + "/etcd",
                                           std::vector<std::string>{"--auth-token", flag});
    capstan_ =
        std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_.path() + "/capstan",
                                       std::vector<std::string>{"--auth-token", flag});
    ASSERT_TRUE(etcd_->Start()) << etcd_->Log();
    ASSERT_TRUE(capstan_->Start()) << capstan_->Log();
  }
  void TearDown() override {
    if (HasFailure() && capstan_) std::cerr << "capstan log:\n" << capstan_->Log() << "\n";
    AuthJwtTest::TearDown();
  }
  // The same etcdctl command against both: same exit code, output, errors.
  void Same(const std::vector<std::string>& args) {
    CommandResult a = Etcdctl(etcd_->endpoint(), args);
    CommandResult b = Etcdctl(capstan_->endpoint(), args);
    std::string what = "etcdctl " + ::testing::PrintToString(args);
    EXPECT_EQ(a.exit_code, b.exit_code) << what << "\netcd: " << a.err << "\ncapstan: " << b.err;
    EXPECT_EQ(a.out, b.out) << what;
    EXPECT_EQ(ErrorLine(a.err), ErrorLine(b.err)) << what;
  }
  // The "Error: ..." line etcdctl prints (without clientv3's JSON logs).
  static std::string ErrorLine(const std::string& err) {
    size_t at = err.find("Error:");
    return at == std::string::npos ? "" : err.substr(at, err.find('\n', at) - at);
  }
  std::unique_ptr<StoreProcess> etcd_, capstan_;
};

TEST_F(AuthJwtDifferentialTest, SameAnswersAndTokensCrossOver) {
  ASSERT_NO_FATAL_FAILURE(StartBoth(JwtFlag(keys_)));
  for (auto& ep : {etcd_->endpoint(), capstan_->endpoint()}) {
    ASSERT_NO_FATAL_FAILURE(SetUpUsers(ep));
  }
  Same({"--user", "alice:alicepw", "put", "foo", "bar"});
  Same({"--user", "alice:alicepw", "get", "foo"});
  Same({"--user", "alice:alicepw", "put", "other", "x"});
  Same({"--user", "alice:wrong", "get", "foo"});
  Same({"--user", "root:rootpw", "user", "list"});
  Same({"get", "foo"});

  // The same auth history gives the same auth revision, so a token either
  // one issues names a revision the other is at (etcd 3.4 has no
  // AuthStatus: its revision is read from its token's claims).
  std::string from_etcd, from_capstan;
  ASSERT_TRUE(Login(etcd_->endpoint(), "alice", "alicepw", &from_etcd).ok());
  ASSERT_TRUE(Login(capstan_->endpoint(), "alice", "alicepw", &from_capstan).ok());
  uint64_t rev = AuthRevision(capstan_->endpoint());
  EXPECT_EQ(ClaimsOf(from_etcd), ClaimsOf(from_capstan));
  EXPECT_NE(ClaimsOf(from_etcd).find("\"revision\":" + std::to_string(rev) + ","),
            std::string::npos)
      << ClaimsOf(from_etcd);
  // etcd's token (signed by etcd with the same private key) on capstan, and back.
  EXPECT_EQ(Get(capstan_->endpoint(), from_etcd, "foo"), "value=bar");
  EXPECT_EQ(Get(etcd_->endpoint(), from_capstan, "foo"), "value=bar");
  // Refusals match too.
  for (const std::string& bad :
       {SignRs256(other_.key, Claims("alice", rev, UnixNow() + 300)),
        SignRs256(keys_.key, Claims("alice", rev, UnixNow() - 1)), std::string("not.a.jwt")}) {
    EXPECT_EQ(Get(etcd_->endpoint(), bad, "foo"), Get(capstan_->endpoint(), bad, "foo")) << bad;
  }
  // An auth change: the old token is refused the same way by both.
  Same({"--user", "root:rootpw", "role", "add", "later"});
  EXPECT_EQ(Get(etcd_->endpoint(), from_capstan, "foo"), kOldRevision);
  EXPECT_EQ(Get(capstan_->endpoint(), from_etcd, "foo"), kOldRevision);
}

// The other families etcd 3.4 has: ECDSA's r||s encoding, RSA-PSS's salt
// (jwt-go v3 signs with the longest salt) and HMAC over the key file's bytes
// must agree with Go's, or the tokens would not cross over.
TEST_F(AuthJwtDifferentialTest, OtherMethodsCrossOverToo) {
  KeyFiles p384 = MakeKey(dir_.path(), "p384", "P-384");
  std::string secret = dir_.path() + "/hmac.secret";
  std::ofstream(secret) << "a shared secret\n";
  struct Case {
    std::string method, flag;
  };
  for (const Case& c : {
           Case{"PS256", "jwt,pub-key=" + keys_.pub + ",priv-key=" + keys_.priv},
           Case{"ES384", "jwt,pub-key=" + p384.pub + ",priv-key=" + p384.priv},
           Case{"HS512", "jwt,priv-key=" + secret},
       }) {
    SCOPED_TRACE(c.method);
    std::string tag = c.method;
    etcd_ = std::make_unique<StoreProcess>(
        StoreProcess::Kind::kEtcd, dir_.path() + "/etcd-" + tag,
        std::vector<std::string>{"--auth-token", c.flag + ",sign-method=" + c.method});
    capstan_ = std::make_unique<StoreProcess>(
        StoreProcess::Kind::kCapstan, dir_.path() + "/capstan-" + tag,
        std::vector<std::string>{"--auth-token", c.flag + ",sign-method=" + c.method});
    ASSERT_TRUE(etcd_->Start()) << etcd_->Log();
    ASSERT_TRUE(capstan_->Start()) << capstan_->Log();
    Same({"user", "add", "root:rootpw"});
    Same({"auth", "enable"});
    Same({"--user", "root:rootpw", "put", "foo", "bar"});
    std::string from_etcd, from_capstan;
    ASSERT_TRUE(Login(etcd_->endpoint(), "root", "rootpw", &from_etcd).ok());
    ASSERT_TRUE(Login(capstan_->endpoint(), "root", "rootpw", &from_capstan).ok());
    EXPECT_EQ(ClaimsOf(from_etcd), ClaimsOf(from_capstan));
    EXPECT_EQ(Get(capstan_->endpoint(), from_etcd, "foo"), "value=bar");
    EXPECT_EQ(Get(etcd_->endpoint(), from_capstan, "foo"), "value=bar");
    etcd_->Stop();
    capstan_->Stop();
  }
  EVP_PKEY_free(p384.key);
}

TEST_F(AuthJwtDifferentialTest, VerifyOnlyMembersCheckButDoNotIssue) {
  ASSERT_NO_FATAL_FAILURE(StartBoth(JwtFlag(keys_, /*with_private=*/false)));
  Same({"user", "add", "root:rootpw"});
  Same({"auth", "enable"});
  Same({"--user", "root:rootpw", "put", "foo", "bar"});
  std::string ignored;
  grpc::Status on_etcd = Login(etcd_->endpoint(), "root", "rootpw", &ignored);
  grpc::Status on_capstan = Login(capstan_->endpoint(), "root", "rootpw", &ignored);
  EXPECT_EQ(StatusText(on_etcd), StatusText(on_capstan));
  // A token made with the private key (here, by the test) works on both.
  uint64_t rev = AuthRevision(capstan_->endpoint());
  std::string token = SignRs256(keys_.key, Claims("root", rev, UnixNow() + 300));
  EXPECT_EQ(Get(etcd_->endpoint(), token, "foo"), "none");
  EXPECT_EQ(Get(capstan_->endpoint(), token, "foo"), "none");
}

}  // namespace
}  // namespace capstan::e2e
