#include "store/jwt.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "store/jws.h"

namespace capstan::store {
namespace {

constexpr int kMinRsaBits = 2048;

struct MethodSpec {
  std::string_view alg;
  int family;  // JwtTokenProvider::Family, as an int (it is private)
  int hash_bits;
};
// Family values: 0 RSA, 1 RSA-PSS, 2 ECDSA, 3 EdDSA, 4 HMAC.
constexpr std::array<MethodSpec, 13> kMethods = {{
    {"RS256", 0, 256},
    {"RS384", 0, 384},
    {"RS512", 0, 512},
    {"PS256", 1, 256},
    {"PS384", 1, 384},
    {"PS512", 1, 512},
    {"ES256", 2, 256},
    {"ES384", 2, 384},
    {"ES512", 2, 512},
    {"EdDSA", 3, 0},
    {"HS256", 4, 256},
    {"HS384", 4, 384},
    {"HS512", 4, 512},
}};

const EVP_MD* Digest(int bits) {
  switch (bits) {
    case 256:
      return EVP_sha256();
    case 384:
      return EVP_sha384();
    case 512:
      return EVP_sha512();
    default:
      return nullptr;  // EdDSA hashes inside the algorithm
  }
}

// The curve each ES method names (RFC 7518 §3.4) and its coordinate size.
struct Curve {
  const char* name;
  size_t bytes;
};
Curve CurveFor(int hash_bits) {
  switch (hash_bits) {
    case 256:
      return {"prime256v1", 32};
    case 384:
      return {"secp384r1", 48};
    default:
      return {"secp521r1", 66};
  }
}

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
struct SigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
using SigPtr = std::unique_ptr<ECDSA_SIG, SigFree>;

// Never prompt on the terminal for an encrypted key's passphrase.
int NoPassphrase(char*, int, int, void*) { return -1; }

// A PEM key of the kind `selection` asks (EVP_PKEY_KEYPAIR: PKCS#8, PKCS#1
// RSA, SEC1 EC; EVP_PKEY_PUBLIC_KEY: SubjectPublicKeyInfo, PKCS#1 RSA).
PkeyPtr DecodePem(std::string_view pem, int selection) {
  EVP_PKEY* pkey = nullptr;
  OSSL_DECODER_CTX* dctx =
      OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", nullptr, nullptr, selection, nullptr, nullptr);
  if (dctx == nullptr) return nullptr;
  OSSL_DECODER_CTX_set_pem_password_cb(dctx, NoPassphrase, nullptr);
  const auto* data = reinterpret_cast<const unsigned char*>(pem.data());
  size_t len = pem.size();
  int ok = OSSL_DECODER_from_data(dctx, &data, &len);
  OSSL_DECODER_CTX_free(dctx);
  if (ok != 1) {
    EVP_PKEY_free(pkey);
    return nullptr;
  }
  return PkeyPtr(pkey);
}

// A public key from a certificate (etcd's parsers accept one as pub-key).
PkeyPtr PublicKeyFromCertificate(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return nullptr;
  X509* cert = PEM_read_bio_X509(bio, nullptr, NoPassphrase, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return nullptr;
  PkeyPtr key(X509_get_pubkey(cert));
  X509_free(cert);
  return key;
}

std::string KeyKind(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
      return "an RSA key";
    case EVP_PKEY_RSA_PSS:
      return "an RSASSA-PSS key";
    case EVP_PKEY_EC: {
      char group[64] = "";
      size_t len = 0;
      EVP_PKEY_get_group_name(key, group, sizeof(group), &len);
      return absl::StrCat("an EC key on ", group);
    }
    case EVP_PKEY_ED25519:
      return "an Ed25519 key";
    default:
      return absl::StrCat("a key of type ", EVP_PKEY_get_base_id(key));
  }
}

absl::StatusOr<std::string> ReadKeyFile(const std::string& option, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(option, ": cannot read \"", path, "\": ", std::strerror(errno)));
  }
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(option, ": cannot read \"", path, "\""));
  }
  return data;
}

// Go's json.Marshal of a string: <, > and & and the JS line separators
// escaped too, as etcd's tokens have them.
void AppendJsonString(std::string_view s, std::string* out) {
  out->push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '\r') {
      out->append("\\r");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
      absl::StrAppend(out, "\\u00", absl::Hex(c, absl::kZeroPad2));
    } else if (c == 0xE2 && i + 2 < s.size() && s[i + 1] == '\x80' &&
               (s[i + 2] == '\xA8' || s[i + 2] == '\xA9')) {
      out->append(s[i + 2] == '\xA8' ? "\\u2028" : "\\u2029");
      i += 2;
    } else {
      out->push_back(static_cast<char>(c));
    }
  }
  out->push_back('"');
}

// A JSON number as a double, if it is finite.
std::optional<double> Number(const JsonValue* v) {
  if (v == nullptr || v->kind != JsonValue::Kind::kNumber) return std::nullopt;
  double d;
  if (!absl::SimpleAtod(v->text, &d) || !std::isfinite(d)) return std::nullopt;
  return d;
}

absl::Status Invalid(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("JWT: ", std::string(why)));
}

}  // namespace

JwtTokenProvider::~JwtTokenProvider() { EVP_PKEY_free(key_); }

absl::StatusOr<std::shared_ptr<const JwtTokenProvider>> JwtTokenProvider::Create(
    const std::map<std::string, std::string>& options) {
  std::vector<std::string> unknown;
  for (const auto& [name, value] : options) {
    if (name != kSignMethod && name != kPublicKey && name != kPrivateKey && name != kTtl) {
      unknown.push_back(name);
    }
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown JWT option(s) ", absl::StrJoin(unknown, ", "),
                     " (known: sign-method, pub-key, priv-key, ttl)"));
  }
  auto get = [&](const char* name) {
    auto it = options.find(name);
    return it == options.end() ? std::string() : it->second;
  };
  absl::Duration ttl = kDefaultTtl;
  if (std::string text = get(kTtl); !text.empty()) {
    // absl's duration syntax is Go's (etcd parses ttl with time.ParseDuration).
    if (!absl::ParseDuration(text, &ttl) || ttl <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ttl \"", text, "\": give a positive duration, e.g. 5m, 1h or 90s"));
    }
  }
  std::string pub, priv;
  if (std::string path = get(kPublicKey); !path.empty()) {
    ASSIGN_OR_RETURN(pub, ReadKeyFile(kPublicKey, path));
  }
  if (std::string path = get(kPrivateKey); !path.empty()) {
    ASSIGN_OR_RETURN(priv, ReadKeyFile(kPrivateKey, path));
  }
  return FromKeys(get(kSignMethod), pub, priv, ttl);
}

absl::StatusOr<std::shared_ptr<const JwtTokenProvider>> JwtTokenProvider::FromKeys(
    std::string_view sign_method, std::string_view public_pem, std::string_view private_key,
    absl::Duration ttl) {
  std::string method(sign_method);  // absl's string_view is not std's here
  const MethodSpec* spec = nullptr;
  for (const MethodSpec& m : kMethods) {
    if (m.alg == sign_method) spec = &m;
  }
  if (spec == nullptr) {
    std::vector<std::string> names;
    for (const MethodSpec& m : kMethods) names.emplace_back(m.alg);
    return absl::InvalidArgumentError(
        absl::StrCat("sign-method \"", method, "\" is not one of ", absl::StrJoin(names, ", ")));
  }
  std::shared_ptr<JwtTokenProvider> p(new JwtTokenProvider());
  p->alg_ = std::string(spec->alg);
  p->family_ = static_cast<Family>(spec->family);
  p->hash_bits_ = spec->hash_bits;
  p->ttl_ = ttl;
  if (p->family_ == Family::kHmac) {
    // etcd: the priv-key file's bytes are the secret; pub-key is unused.
    if (private_key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(method, " needs priv-key (the file's bytes are the HMAC secret)"));
    }
    p->hmac_key_ = std::string(private_key);
    return std::shared_ptr<const JwtTokenProvider>(std::move(p));
  }
  if (public_pem.empty() && private_key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(method, " needs priv-key (to issue tokens) or pub-key (to check them)"));
  }
  PkeyPtr priv, pub;
  if (!private_key.empty()) {
    priv = DecodePem(private_key, EVP_PKEY_KEYPAIR);
    if (priv == nullptr) {
      return absl::InvalidArgumentError(
          "priv-key: not a PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted)");
    }
  }
  if (!public_pem.empty()) {
    pub = DecodePem(public_pem, EVP_PKEY_PUBLIC_KEY);
    if (pub == nullptr) pub = PublicKeyFromCertificate(public_pem);
    if (pub == nullptr) {
      return absl::InvalidArgumentError(
          "pub-key: not a PEM public key (SubjectPublicKeyInfo, PKCS#1 or a certificate)");
    }
  }
  // The key must be of the method's type (and curve, size): an RSA public
  // key never checks an HS256 token, whatever the token says.
  for (auto [key, option] : {std::pair{priv.get(), "priv-key"}, std::pair{pub.get(), "pub-key"}}) {
    if (key == nullptr) continue;
    int id = EVP_PKEY_get_base_id(key);
    std::string wrong = absl::StrCat(option, ": ", method, " needs %s, this is ", KeyKind(key));
    switch (p->family_) {
      case Family::kRsa:
      case Family::kRsaPss:
        if (id != EVP_PKEY_RSA) {
          return absl::InvalidArgumentError(absl::StrReplaceAll(wrong, {{"%s", "an RSA key"}}));
        }
        if (EVP_PKEY_get_bits(key) < kMinRsaBits) {
          return absl::InvalidArgumentError(absl::StrCat(option, ": the RSA key has ",
                                                         EVP_PKEY_get_bits(key), " bits; at least ",
                                                         kMinRsaBits));
        }
        break;
      case Family::kEcdsa: {
        Curve curve = CurveFor(p->hash_bits_);
        char group[64] = "";
        size_t len = 0;
        if (id == EVP_PKEY_EC) EVP_PKEY_get_group_name(key, group, sizeof(group), &len);
        if (id != EVP_PKEY_EC || std::string_view(group) != curve.name) {
          return absl::InvalidArgumentError(
              absl::StrReplaceAll(wrong, {{"%s", absl::StrCat("an EC key on ", curve.name)}}));
        }
        p->ec_coordinate_bytes_ = curve.bytes;
        break;
      }
      case Family::kEdDsa:
        if (id != EVP_PKEY_ED25519) {
          return absl::InvalidArgumentError(absl::StrReplaceAll(wrong, {{"%s", "an Ed25519 key"}}));
        }
        break;
      case Family::kHmac:
        break;
    }
  }
  if (priv != nullptr && pub != nullptr && EVP_PKEY_eq(priv.get(), pub.get()) != 1) {
    return absl::InvalidArgumentError("pub-key and priv-key are not a pair");
  }
  p->verify_only_ = priv == nullptr;
  p->key_ = (priv != nullptr ? std::move(priv) : std::move(pub)).release();
  return std::shared_ptr<const JwtTokenProvider>(std::move(p));
}

absl::StatusOr<std::string> JwtTokenProvider::SignBytes(std::string_view input) const {
  const EVP_MD* md = Digest(hash_bits_);
  if (family_ == Family::kHmac) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (HMAC(md, hmac_key_.data(), static_cast<int>(hmac_key_.size()),
             reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac,
             &len) == nullptr) {
      return absl::InternalError("JWT: HMAC failed");
    }
    return std::string(reinterpret_cast<char*>(mac), len);
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), &pctx, md, nullptr, key_) != 1) {
    return absl::InternalError("JWT: cannot start signing");
  }
  if (family_ == Family::kRsaPss &&
      (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    return absl::InternalError("JWT: cannot set RSA-PSS parameters");
  }
  const auto* data = reinterpret_cast<const unsigned char*>(input.data());
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, data, input.size()) != 1) {
    return absl::InternalError("JWT: signing failed");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, data,
                     input.size()) != 1) {
    return absl::InternalError("JWT: signing failed");
  }
  sig.resize(len);
  if (family_ != Family::kEcdsa) return sig;
  // JWS carries ECDSA as r || s, each the curve's size (RFC 7518 §3.4);
  // OpenSSL makes DER.
  const auto* der = reinterpret_cast<const unsigned char*>(sig.data());
  SigPtr parsed(d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(sig.size())));
  if (parsed == nullptr) return absl::InternalError("JWT: bad ECDSA signature from OpenSSL");
  std::string raw(2 * ec_coordinate_bytes_, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  int n = static_cast<int>(ec_coordinate_bytes_);
  if (BN_bn2binpad(ECDSA_SIG_get0_r(parsed.get()), out, n) != n ||
      BN_bn2binpad(ECDSA_SIG_get0_s(parsed.get()), out + n, n) != n) {
    return absl::InternalError("JWT: bad ECDSA signature from OpenSSL");
  }
  return raw;
}

bool JwtTokenProvider::VerifyBytes(std::string_view input, std::string_view signature) const {
  if (family_ == Family::kHmac) {
    absl::StatusOr<std::string> mac = SignBytes(input);
    return mac.ok() && mac->size() == signature.size() &&
           CRYPTO_memcmp(mac->data(), signature.data(), signature.size()) == 0;
  }
  std::string der;
  if (family_ == Family::kEcdsa) {
    if (signature.size() != 2 * ec_coordinate_bytes_) return false;
    const auto* raw = reinterpret_cast<const unsigned char*>(signature.data());
    int n = static_cast<int>(ec_coordinate_bytes_);
    SigPtr sig(ECDSA_SIG_new());
    BIGNUM* r = BN_bin2bn(raw, n, nullptr);
    BIGNUM* s = BN_bin2bn(raw + n, n, nullptr);
    if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
      BN_free(r);
      BN_free(s);
      return false;
    }
    unsigned char* out = nullptr;
    int len = i2d_ECDSA_SIG(sig.get(), &out);
    if (len <= 0) return false;
    der.assign(reinterpret_cast<char*>(out), static_cast<size_t>(len));
    OPENSSL_free(out);
    signature = der;
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), &pctx, Digest(hash_bits_), nullptr, key_) != 1) {
    return false;
  }
  // Any salt length: etcd 3.4 (jwt-go v3) signs PS* with the longest salt,
  // later etcd with the digest's length.
  if (family_ == Family::kRsaPss &&
      (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1)) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(input.data()),
                          input.size()) == 1;
}

absl::StatusOr<std::string> JwtTokenProvider::Sign(std::string_view user, uint64_t revision,
                                                   absl::Time now) const {
  if (verify_only_) return ErrVerifyOnly();
  // The member order and spelling of etcd's (Go marshals map keys sorted).
  std::string header = absl::StrCat("{\"alg\":\"", alg_, "\",\"typ\":\"JWT\"}");
  std::string claims = absl::StrCat("{\"exp\":", absl::ToUnixSeconds(now + ttl_),
                                    ",\"revision\":", revision, ",\"username\":");
  AppendJsonString(user, &claims);
  claims.push_back('}');
  std::string input = absl::StrCat(Base64UrlEncode(header), ".", Base64UrlEncode(claims));
  ASSIGN_OR_RETURN(std::string sig, SignBytes(input));
  return absl::StrCat(input, ".", Base64UrlEncode(sig));
}

absl::StatusOr<JwtClaims> JwtTokenProvider::Verify(std::string_view token, absl::Time now) const {
  double now_s = absl::ToDoubleSeconds(now - absl::UnixEpoch());
  {
    MutexLock lock(&cache_mu_);
    auto it = verified_.find(absl::string_view(token.data(), token.size()));
    if (it != verified_.end()) {
      if (now_s < it->second.expires) return it->second.claims;
      verified_.erase(it);
      return Invalid("expired");
    }
  }
  ASSIGN_OR_RETURN(Verified v, VerifyUncached(token, now_s));
  MutexLock lock(&cache_mu_);
  // Emptied when full rather than kept in LRU order: a refill costs one
  // signature check per client, and the bound is what matters.
  if (verified_.size() >= kVerifiedCacheEntries) verified_.clear();
  verified_.emplace(std::string(token), v);
  return v.claims;
}

absl::StatusOr<JwtTokenProvider::Verified> JwtTokenProvider::VerifyUncached(std::string_view token,
                                                                            double now_s) const {
  ASSIGN_OR_RETURN(Jws jws, ParseJwsCompact(token));
  // The header says which algorithm; it must be the configured one before
  // any key is touched (no "none", no HS256 under an RSA public key).
  std::optional<std::string_view> alg = jws.header.String("alg");
  if (!alg) return Invalid("header has no \"alg\"");
  if (*alg != alg_) return Invalid(absl::StrCat("alg \"", std::string(*alg), "\" is not ", alg_));
  // A critical extension this code cannot honour (RFC 7515 §4.1.11).
  if (jws.header.Find("crit") != nullptr) return Invalid("header has \"crit\"");
  if (!VerifyBytes(jws.signing_input, jws.signature)) return Invalid("bad signature");
  Verified v;
  JwtClaims& out = v.claims;
  std::optional<std::string_view> user = jws.claims.String("username");
  if (!user) return Invalid("no \"username\" string claim");
  out.username = std::string(*user);
  // etcd reads the revision as a JSON number (a float64 in Go).
  std::optional<double> rev = Number(jws.claims.Find("revision"));
  if (!rev || *rev < 0 || *rev != std::floor(*rev) || *rev >= 18446744073709551616.0) {
    return Invalid("no \"revision\" claim that is a whole number");
  }
  out.revision = static_cast<uint64_t>(*rev);
  std::optional<double> exp = Number(jws.claims.Find("exp"));
  if (!exp) return Invalid("no \"exp\" number claim");
  if (!(now_s < *exp)) return Invalid("expired");
  if (const JsonValue* nbf = jws.claims.Find("nbf"); nbf != nullptr) {
    std::optional<double> at = Number(nbf);
    if (!at) return Invalid("\"nbf\" is not a number");
    if (now_s < *at) return Invalid("not valid yet (nbf)");
  }
  v.expires = *exp;
  return v;
}

absl::StatusOr<std::shared_ptr<const JwtTokenProvider>> ParseAuthTokenOption(
    std::string_view value) {
  std::vector<std::string> parts =
      absl::StrSplit(absl::string_view(value.data(), value.size()), ',');
  std::map<std::string, std::string> options;
  for (size_t i = 1; i < parts.size(); ++i) {
    std::vector<std::string> kv = absl::StrSplit(parts[i], '=');
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("option \"", parts[i], "\" is not name=value"));
    }
    if (!options.emplace(kv[0], kv[1]).second) {
      return absl::InvalidArgumentError(absl::StrCat("option \"", kv[0], "\" given twice"));
    }
  }
  // etcd lets "simple" carry options and ignores them.
  if (parts[0] == "simple") return std::shared_ptr<const JwtTokenProvider>();
  if (parts[0] != "jwt") {
    return absl::InvalidArgumentError(
        absl::StrCat("token type \"", parts[0], "\" is not \"simple\" or \"jwt\""));
  }
  return JwtTokenProvider::Create(options);
}

}  // namespace capstan::store
