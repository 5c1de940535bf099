// etcd's JWT token provider (`--auth-token jwt,sign-method=RS256,
// priv-key=PATH,pub-key=PATH,ttl=5m`): a token is a JWS (jws.h) signed by
// the cluster's key with the claims etcd writes and reads,
//
//   {"exp": <unix seconds>, "revision": <auth revision>, "username": "<user>"}
//
// so any member holding the key checks any member's token by itself: no log
// entry, no shared table (simple tokens, by contrast, are assigned through
// the log). As etcd:
//   - sign-method is one of RS256/384/512, PS256/384/512, ES256/384/512,
//     EdDSA (Ed25519) and HS256/384/512; a token whose header names another
//     "alg" (or "none") is refused before any key is used;
//   - with only pub-key the member verifies but cannot issue tokens
//     (Authenticate fails with ErrVerifyOnly);
//   - HS* keys are the priv-key file's bytes, as they are;
//   - the revision claim is the auth revision the password was checked at:
//     after any auth change the token is refused with ErrAuthOldRevision
//     (checked by AuthStore, not here), and the client authenticates again.
// Stricter than etcd: "exp" is required (etcd's tokens always carry it),
// unknown options and an RSA key under 2048 bits are refused at start, and
// the JWS parser refuses duplicate JSON members and non-canonical base64.
//
// Checking a signature costs 15 µs (RSA-2048) to 80 µs (Ed25519) of CPU,
// more than a whole put: tokens that checked out are remembered (at most
// kVerifiedCacheEntries, the cache is emptied when full) until their "exp",
// so a client reusing its token pays a hash lookup per call.
//
// Thread-safety: Sign and Verify from any thread (the cache has its lock).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "base/status.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace capstan::store {

// Who a valid token names.
struct JwtClaims {
  std::string username;
  uint64_t revision = 0;
};

class JwtTokenProvider {
 public:
  // etcd's option names (the parts of --auth-token after "jwt,").
  static constexpr char kSignMethod[] = "sign-method";
  static constexpr char kPublicKey[] = "pub-key";
  static constexpr char kPrivateKey[] = "priv-key";
  static constexpr char kTtl[] = "ttl";
  static constexpr absl::Duration kDefaultTtl = absl::Minutes(5);
  static constexpr size_t kVerifiedCacheEntries = 4096;

  // Reads the key files named in `options`. Errors name the option and the
  // file (missing file, unknown sign-method, a key of the wrong type or
  // curve, pub-key and priv-key that are not a pair).
  static absl::StatusOr<std::shared_ptr<const JwtTokenProvider>> Create(
      const std::map<std::string, std::string>& options);
  // The same with the keys' contents (tests); empty means not given.
  static absl::StatusOr<std::shared_ptr<const JwtTokenProvider>> FromKeys(
      std::string_view sign_method, std::string_view public_pem, std::string_view private_key,
      absl::Duration ttl = kDefaultTtl);

  ~JwtTokenProvider();
  JwtTokenProvider(const JwtTokenProvider&) = delete;
  JwtTokenProvider& operator=(const JwtTokenProvider&) = delete;

  const std::string& sign_method() const { return alg_; }
  absl::Duration ttl() const { return ttl_; }
  // Only a public key: tokens are checked, never issued.
  bool verify_only() const { return verify_only_; }
  // For tests: tokens remembered as verified.
  size_t verified_cache_size() const {
    MutexLock lock(&cache_mu_);
    return verified_.size();
  }

  // A token for `user` at auth `revision`, expiring at now + ttl.
  // ErrVerifyOnly without a private key.
  absl::StatusOr<std::string> Sign(std::string_view user, uint64_t revision,
                                   absl::Time now = absl::Now()) const;
  // The claims of a token this cluster's key signed, unexpired at `now`.
  // InvalidArgument saying why otherwise (for the log; callers answer
  // etcd's ErrInvalidAuthToken).
  absl::StatusOr<JwtClaims> Verify(std::string_view token, absl::Time now = absl::Now()) const;

 private:
  enum class Family { kRsa, kRsaPss, kEcdsa, kEdDsa, kHmac };
  JwtTokenProvider() = default;

  struct Verified {
    JwtClaims claims;
    double expires;  // the "exp" claim, Unix seconds
  };
  absl::StatusOr<Verified> VerifyUncached(std::string_view token, double now) const;
  absl::StatusOr<std::string> SignBytes(std::string_view input) const;
  bool VerifyBytes(std::string_view input, std::string_view signature) const;

  std::string alg_;
  Family family_ = Family::kHmac;
  int hash_bits_ = 256;  // SHA-2 size; ECDSA: also the curve's
  size_t ec_coordinate_bytes_ = 0;
  EVP_PKEY* key_ = nullptr;  // owned; the private key unless verify-only
  std::string hmac_key_;
  absl::Duration ttl_ = kDefaultTtl;
  bool verify_only_ = false;
  mutable Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, Verified> verified_ ABSL_GUARDED_BY(cache_mu_);
};

// etcd's ErrVerifyOnly; etcd has no gRPC code for it (clients see UNKNOWN).
inline absl::Status ErrVerifyOnly() {
  return absl::UnknownError("auth: token signing attempted with verify-only key");
}

// The token provider --auth-token names: "simple" (null) or "jwt,k=v,...".
// Errors say what is wrong without the flag's name (the caller adds it).
absl::StatusOr<std::shared_ptr<const JwtTokenProvider>> ParseAuthTokenOption(
    std::string_view value);

}  // namespace capstan::store
