#include "store/jwt.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "base/test_dir.h"
#include "gtest/gtest.h"
#include "store/jws.h"

namespace capstan::store {
namespace {

// ---- keys, made at test time

struct Pem {
  std::string priv, pub;
};

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(len));
  BIO_free(bio);
  return out;
}

Pem ToPem(EVP_PKEY* key) {
  BIO* priv = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr);
  BIO* pub = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(pub, key);
  EVP_PKEY_free(key);
  return Pem{BioText(priv), BioText(pub)};
}

// Generated once per process: RSA key generation is slow.
const Pem& RsaKey(int which = 0) {
  static const Pem keys[2] = {ToPem(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})),
                              ToPem(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}))};
  return keys[which];
}
Pem EcKey(const char* curve) { return ToPem(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve)); }
Pem Ed25519Key() { return ToPem(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")); }

std::shared_ptr<const JwtTokenProvider> Make(std::string_view method, std::string_view pub,
                                             std::string_view priv) {
  auto p = JwtTokenProvider::FromKeys(method, pub, priv);
  EXPECT_TRUE(p.ok()) << method << ": " << p.status();
  return p.ok() ? *p : nullptr;
}

// A token with any header and claims, signed with HMAC-SHA256 under `secret`.
std::string CraftHs256(std::string_view header, std::string_view claims, std::string_view secret) {
  std::string input = absl::StrCat(Base64UrlEncode(header), ".", Base64UrlEncode(claims));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return absl::StrCat(input, ".",
                      Base64UrlEncode(std::string_view(reinterpret_cast<char*>(mac), len)));
}

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

// ---- signing and checking, each family

TEST(JwtTest, EveryMethodSignsAndVerifiesItsOwnTokens) {
  Pem p256 = EcKey("P-256"), p384 = EcKey("P-384"), p521 = EcKey("P-521"), ed = Ed25519Key();
  struct Case {
    const char* method;
    const Pem* key;
  };
  Pem hmac{"a shared secret, read as bytes\n", ""};
  for (Case c :
       {Case{"RS256", &RsaKey()}, Case{"RS384", &RsaKey()}, Case{"RS512", &RsaKey()},
        Case{"PS256", &RsaKey()}, Case{"PS384", &RsaKey()}, Case{"PS512", &RsaKey()},
        Case{"ES256", &p256}, Case{"ES384", &p384}, Case{"ES512", &p521}, Case{"EdDSA", &ed},
        Case{"HS256", &hmac}, Case{"HS384", &hmac}, Case{"HS512", &hmac}}) {
    SCOPED_TRACE(c.method);
    auto signer = Make(c.method, c.key->pub, c.key->priv);
    ASSERT_NE(signer, nullptr);
    EXPECT_FALSE(signer->verify_only());
    auto token = signer->Sign("alice", 42, kNow);
    ASSERT_TRUE(token.ok()) << token.status();
    auto claims = signer->Verify(*token, kNow);
    ASSERT_TRUE(claims.ok()) << claims.status();
    EXPECT_EQ(claims->username, "alice");
    EXPECT_EQ(claims->revision, 42u);
    // etcd's header and claims, exactly (Go sorts map keys).
    auto jws = ParseJwsCompact(*token);
    ASSERT_TRUE(jws.ok());
    EXPECT_EQ(jws->header.String("alg"), c.method);
    EXPECT_EQ(jws->header.String("typ"), "JWT");
    ASSERT_NE(jws->claims.Find("exp"), nullptr);
    EXPECT_EQ(jws->claims.Find("exp")->text, "1800000300");  // now + 5m
    // Another member with only the public key accepts it (not HS*).
    if (!c.key->pub.empty()) {
      auto checker = Make(c.method, c.key->pub, "");
      ASSERT_NE(checker, nullptr);
      EXPECT_TRUE(checker->verify_only());
      EXPECT_TRUE(checker->Verify(*token, kNow).ok());
      EXPECT_EQ(checker->Sign("alice", 1, kNow).status(), ErrVerifyOnly());
    }
    // One flipped bit in the signature is a bad token.
    std::string bad = *token;
    bad[bad.size() - 3] = bad[bad.size() - 3] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(signer->Verify(bad, kNow).ok());
  }
}

TEST(JwtTest, ExpiresAtExp) {
  Pem hmac{"secret", ""};
  auto p = Make("HS256", "", hmac.priv);
  auto token = p->Sign("alice", 1, kNow);
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(p->Verify(*token, kNow + absl::Minutes(5) - absl::Seconds(1)).ok());
  auto late = p->Verify(*token, kNow + absl::Minutes(5));
  EXPECT_FALSE(late.ok());
  EXPECT_NE(late.status().message().find("expired"), std::string::npos) << late.status();
  // ttl= sets the life.
  auto short_lived = JwtTokenProvider::FromKeys("HS256", "", "secret", absl::Seconds(10));
  ASSERT_TRUE(short_lived.ok());
  token = (*short_lived)->Sign("alice", 1, kNow);
  EXPECT_TRUE((*short_lived)->Verify(*token, kNow + absl::Seconds(9)).ok());
  EXPECT_FALSE((*short_lived)->Verify(*token, kNow + absl::Seconds(10)).ok());
}

TEST(JwtTest, VerifiedTokensAreRememberedUntilExpAndTheCacheIsBounded) {
  auto p = Make("HS256", "", "k");
  auto token = p->Sign("alice", 1, kNow);
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(p->Verify(*token, kNow).ok());
  EXPECT_EQ(p->verified_cache_size(), 1u);
  EXPECT_TRUE(p->Verify(*token, kNow + absl::Seconds(1)).ok());   // from the cache
  EXPECT_FALSE(p->Verify(*token, kNow + absl::Minutes(5)).ok());  // expired, cached or not
  EXPECT_EQ(p->verified_cache_size(), 0u);
  EXPECT_FALSE(p->Verify(*token + "x", kNow).ok());  // refusals are not remembered
  EXPECT_EQ(p->verified_cache_size(), 0u);
  for (size_t i = 0; i <= JwtTokenProvider::kVerifiedCacheEntries; ++i) {
    ASSERT_TRUE(p->Verify(*p->Sign("u" + std::to_string(i), 1, kNow), kNow).ok());
  }
  EXPECT_LE(p->verified_cache_size(), JwtTokenProvider::kVerifiedCacheEntries);
}

TEST(JwtTest, AnotherKeyOrATamperedPayloadIsRefused) {
  auto ours = Make("RS256", RsaKey(0).pub, RsaKey(0).priv);
  auto theirs = Make("RS256", RsaKey(1).pub, RsaKey(1).priv);
  auto token = theirs->Sign("root", 7, kNow);
  ASSERT_TRUE(token.ok());
  auto st = ours->Verify(*token, kNow);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("bad signature"), std::string::npos) << st.status();
  // alice's token, payload swapped for root's claims, signature kept.
  auto alice = ours->Sign("alice", 7, kNow);
  ASSERT_TRUE(alice.ok());
  size_t d1 = alice->find('.'), d2 = alice->rfind('.');
  std::string claims = absl::StrCat("{\"exp\":", absl::ToUnixSeconds(kNow) + 300,
                                    ",\"revision\":7,\"username\":\"root\"}");
  std::string forged =
      absl::StrCat(alice->substr(0, d1), ".", Base64UrlEncode(claims), alice->substr(d2));
  EXPECT_FALSE(ours->Verify(forged, kNow).ok());
  // HS: another secret.
  auto hs = Make("HS256", "", "secret-1");
  EXPECT_FALSE(hs->Verify(CraftHs256("{\"alg\":\"HS256\"}", claims, "secret-2"), kNow).ok());
  EXPECT_TRUE(hs->Verify(CraftHs256("{\"alg\":\"HS256\"}", claims, "secret-1"), kNow).ok());
}

TEST(JwtTest, AlgorithmConfusionIsRefused) {
  // The classic: an RS256 verifier handed an HS256 token keyed with the
  // (public) RSA key's PEM. The header's alg must be the configured one.
  auto rs = Make("RS256", RsaKey().pub, "");
  std::string claims = absl::StrCat("{\"exp\":", absl::ToUnixSeconds(kNow) + 300,
                                    ",\"revision\":1,\"username\":\"root\"}");
  std::string confused = CraftHs256("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims, RsaKey().pub);
  auto st = rs->Verify(confused, kNow);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("alg \"HS256\" is not RS256"), std::string::npos)
      << st.status();
  // "none", with or without a signature.
  std::string none =
      absl::StrCat(Base64UrlEncode("{\"alg\":\"none\"}"), ".", Base64UrlEncode(claims), ".");
  EXPECT_FALSE(rs->Verify(none, kNow).ok());
  // The other way: an HS256 verifier and an RS256 token.
  auto hs = Make("HS256", "", RsaKey().pub);
  auto rs_token = Make("RS256", RsaKey().pub, RsaKey().priv)->Sign("root", 1, kNow);
  EXPECT_FALSE(hs->Verify(*rs_token, kNow).ok());
  // No alg, alg not a string, a critical extension.
  auto hs_ok = Make("HS256", "", "k");
  EXPECT_FALSE(hs_ok->Verify(CraftHs256("{\"typ\":\"JWT\"}", claims, "k"), kNow).ok());
  EXPECT_FALSE(hs_ok->Verify(CraftHs256("{\"alg\":256}", claims, "k"), kNow).ok());
  EXPECT_FALSE(
      hs_ok->Verify(CraftHs256("{\"alg\":\"HS256\",\"crit\":[\"x\"]}", claims, "k"), kNow).ok());
}

TEST(JwtTest, ClaimsAreCheckedStrictly) {
  auto hs = Make("HS256", "", "k");
  std::string h = "{\"alg\":\"HS256\"}";
  int64_t exp = absl::ToUnixSeconds(kNow) + 300;
  auto verify = [&](const std::string& claims) {
    return hs->Verify(CraftHs256(h, claims, "k"), kNow);
  };
  EXPECT_TRUE(verify(absl::StrCat("{\"username\":\"a\",\"revision\":3,\"exp\":", exp, "}")).ok());
  // Go reads numbers as float64: 3.0 and 3e0 are 3.
  auto as_float = verify(absl::StrCat("{\"username\":\"a\",\"revision\":3.0,\"exp\":", exp, ".5}"));
  ASSERT_TRUE(as_float.ok()) << as_float.status();
  EXPECT_EQ(as_float->revision, 3u);
  for (std::string bad : {
           absl::StrCat("{\"revision\":3,\"exp\":", exp, "}"),                 // no user
           absl::StrCat("{\"username\":1,\"revision\":3,\"exp\":", exp, "}"),  // not a string
           absl::StrCat("{\"username\":\"a\",\"exp\":", exp, "}"),             // no revision
           absl::StrCat("{\"username\":\"a\",\"revision\":\"3\",\"exp\":", exp, "}"),
           absl::StrCat("{\"username\":\"a\",\"revision\":-1,\"exp\":", exp, "}"),
           absl::StrCat("{\"username\":\"a\",\"revision\":1.5,\"exp\":", exp, "}"),
           std::string("{\"username\":\"a\",\"revision\":3}"),  // no exp
           absl::StrCat("{\"username\":\"a\",\"revision\":3,\"exp\":\"", exp, "\"}"),
           absl::StrCat("{\"username\":\"a\",\"revision\":3,\"exp\":", exp, ",\"nbf\":", exp,
                        "}"),  // not yet
           absl::StrCat("{\"username\":\"a\",\"username\":\"root\",\"revision\":3,\"exp\":", exp,
                        "}"),  // duplicate member
       }) {
    EXPECT_FALSE(verify(bad).ok()) << bad;
  }
}

TEST(JwtTest, UsernamesRoundTripThroughJsonEscapes) {
  auto hs = Make("HS256", "", "k");
  for (std::string user : {std::string("a\"b\\c"), std::string("<&>"), std::string("tab\there"),
                           std::string("ünï\xe2\x80\xa8"), std::string("\x01")}) {
    auto token = hs->Sign(user, 1, kNow);
    ASSERT_TRUE(token.ok());
    auto claims = hs->Verify(*token, kNow);
    ASSERT_TRUE(claims.ok()) << claims.status();
    EXPECT_EQ(claims->username, user);
  }
}

// ---- start-up errors name what is wrong

TEST(JwtTest, StartupErrorsNameTheOption) {
  auto error = [](std::string_view method, std::string_view pub, std::string_view priv) {
    auto p = JwtTokenProvider::FromKeys(method, pub, priv);
    return p.ok() ? std::string("OK") : std::string(p.status().message());
  };
  EXPECT_EQ(error("RS257", "", ""),
            "sign-method \"RS257\" is not one of RS256, RS384, RS512, PS256, PS384, PS512, "
            "ES256, ES384, ES512, EdDSA, HS256, HS384, HS512");
  EXPECT_EQ(error("none", "", "").rfind("sign-method \"none\"", 0), 0u);
  EXPECT_EQ(error("RS256", "", ""),
            "RS256 needs priv-key (to issue tokens) or pub-key (to check them)");
  EXPECT_EQ(error("HS256", "", ""), "HS256 needs priv-key (the file's bytes are the HMAC secret)");
  Pem p256 = EcKey("P-256"), p384 = EcKey("P-384");
  EXPECT_EQ(error("RS256", "", p256.priv),
            "priv-key: RS256 needs an RSA key, this is an EC key on prime256v1");
  EXPECT_EQ(error("ES256", p384.pub, ""),
            "pub-key: ES256 needs an EC key on prime256v1, this is an EC key on secp384r1");
  EXPECT_EQ(error("EdDSA", RsaKey().pub, ""),
            "pub-key: EdDSA needs an Ed25519 key, this is an RSA key");
  EXPECT_EQ(error("RS256", RsaKey(1).pub, RsaKey(0).priv), "pub-key and priv-key are not a pair");
  EXPECT_EQ(error("RS256", "", "not a key"),
            "priv-key: not a PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted)");
  Pem small = ToPem(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024}));
  EXPECT_EQ(error("PS256", "", small.priv), "priv-key: the RSA key has 1024 bits; at least 2048");
}

TEST(JwtTest, ParsesEtcdsAuthTokenFlag) {
  auto dir = FreshTestDir("jwt_test");
  std::filesystem::create_directories(dir);
  std::string priv = dir / "priv.pem", pub = dir / "pub.pem";
  std::ofstream(priv) << RsaKey().priv;
  std::ofstream(pub) << RsaKey().pub;
  auto simple = ParseAuthTokenOption("simple");
  ASSERT_TRUE(simple.ok());
  EXPECT_EQ(*simple, nullptr);
  auto jwt = ParseAuthTokenOption(
      absl::StrCat("jwt,pub-key=", pub, ",priv-key=", priv, ",sign-method=RS512,ttl=1h30m"));
  ASSERT_TRUE(jwt.ok()) << jwt.status();
  EXPECT_EQ((*jwt)->sign_method(), "RS512");
  EXPECT_EQ((*jwt)->ttl(), absl::Minutes(90));
  EXPECT_FALSE((*jwt)->verify_only());
  auto message = [](const std::string& flag) {
    auto p = ParseAuthTokenOption(flag);
    return p.ok() ? std::string("OK") : std::string(p.status().message());
  };
  EXPECT_EQ(message("jwt,sign-method=RS256,priv-key=/nonexistent/k.pem"),
            "priv-key: cannot read \"/nonexistent/k.pem\": No such file or directory");
  EXPECT_EQ(message("jwt,sign-method=RS256,priv-key"), "option \"priv-key\" is not name=value");
  EXPECT_EQ(message("jwt,ttl=1m,ttl=2m"), "option \"ttl\" given twice");
  EXPECT_EQ(message("jwt,sign-method=HS256,priv-key=" + priv + ",privkey=x"),
            "unknown JWT option(s) privkey (known: sign-method, pub-key, priv-key, ttl)");
  EXPECT_EQ(message("jwt,sign-method=HS256,priv-key=" + priv + ",ttl=5"),
            "ttl \"5\": give a positive duration, e.g. 5m, 1h or 90s");
  EXPECT_EQ(message("oauth"), "token type \"oauth\" is not \"simple\" or \"jwt\"");
  std::filesystem::remove_all(dir);
}

// ---- the JWS parser

TEST(JwsTest, Base64UrlIsStrict) {
  EXPECT_EQ(Base64UrlEncode(""), "");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  EXPECT_EQ(Base64UrlDecode("-_8"), std::string("\xfb\xff"));
  EXPECT_EQ(Base64UrlDecode("-_9"), std::nullopt);   // non-zero trailing bits
  EXPECT_EQ(Base64UrlDecode("-_8="), std::nullopt);  // padding
  EXPECT_EQ(Base64UrlDecode("+/8"), std::nullopt);   // base64, not base64url
  EXPECT_EQ(Base64UrlDecode("A"), std::nullopt);     // 1 mod 4
  for (std::string s : {std::string(), std::string("a"), std::string("ab"), std::string("abc"),
                        std::string("abcd"), std::string("\0\xff\x80", 3)}) {
    EXPECT_EQ(Base64UrlDecode(Base64UrlEncode(s)), s);
  }
}

TEST(JwsTest, JsonIsStrict) {
  EXPECT_TRUE(
      JsonObject::Parse(" {\"a\" : [1, {\"b\": null}], \"c\": \"\\u00e9\\ud83d\\ude00\"} ").ok());
  auto obj = JsonObject::Parse("{\"c\": \"\\u00e9\\ud83d\\ude00\\/\"}");
  ASSERT_TRUE(obj.ok());
  EXPECT_EQ(obj->String("c"), "\xc3\xa9\xf0\x9f\x98\x80/");
  for (std::string bad :
       {"", "[]", "{", "{}x", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":01}", "{\"a\":1.}",
        "{\"a\":-}", "{\"a\":tru}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\x\"}",
        "{\"a\":\"\x01\"}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":1,\"a\":1}"}) {
    EXPECT_FALSE(JsonObject::Parse(bad).ok()) << bad;
  }
  std::string deep =
      "{\"a\":" + std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']') + "}";
  EXPECT_FALSE(JsonObject::Parse(deep).ok());
  std::string ok =
      "{\"a\":" + std::string(kMaxJsonDepth - 1, '[') + std::string(kMaxJsonDepth - 1, ']') + "}";
  EXPECT_TRUE(JsonObject::Parse(ok).ok());
}

TEST(JwsTest, CompactSerializationShape) {
  std::string h = Base64UrlEncode("{\"alg\":\"HS256\"}"), c = Base64UrlEncode("{}");
  EXPECT_TRUE(ParseJwsCompact(h + "." + c + ".").ok());
  EXPECT_FALSE(ParseJwsCompact(h + "." + c).ok());
  EXPECT_FALSE(ParseJwsCompact(h + "." + c + "..").ok());
  EXPECT_FALSE(ParseJwsCompact(h + "." + c + "." + std::string(kMaxJwsBytes, 'A')).ok());
  EXPECT_FALSE(ParseJwsCompact("").ok());
  auto jws = ParseJwsCompact(h + "." + c + ".AQ");
  ASSERT_TRUE(jws.ok());
  EXPECT_EQ(jws->signing_input, h + "." + c);
  EXPECT_EQ(jws->signature, "\x01");
}

}  // namespace
}  // namespace capstan::store
