// Fuzz target: etcd JWT tokens as clients send them (store/jws.h, jwt.h).
// The input is a token: it goes through the JWS parser, the base64url
// decoder and the JSON object parser on its own, and is verified by an
// HS256 and an ES256 provider. Invariants: no crash; base64url decoding is
// canonical (what decodes encodes back to the same text); a parsed JWS's
// signing input is the token's prefix; a token an HS256 provider accepts
// names a user and a revision that a fresh token round-trips.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "store/jws.h"
#include "store/jwt.h"

namespace {

using namespace capstan::store;

void Check(bool ok) {
  if (!ok) std::abort();
}

// The seeds' HS256 tokens are signed with "k" and expire in 2100.
const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto hs256 = *JwtTokenProvider::FromKeys("HS256", "", "k");
  static const auto es256 = *JwtTokenProvider::FromKeys(
      "ES256",
      "-----BEGIN PUBLIC KEY-----\n"
      "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE3APRuwBrzxkHKOsWkYU6MfOHvs/V\n"
      "tm7UuzVM92773xQlyEqtmGDFG7t3UZawR7dDisAIT8z9sifb4vrTOhYiSA==\n"
      "-----END PUBLIC KEY-----\n",
      "");
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (std::optional<std::string> bytes = Base64UrlDecode(input)) {
    Check(Base64UrlEncode(*bytes) == input);
  }
  (void)JsonObject::Parse(input);
  if (absl::StatusOr<Jws> jws = ParseJwsCompact(input); jws.ok()) {
    Check(input.substr(0, jws->signing_input.size()) == jws->signing_input);
    Check(input.size() <= kMaxJwsBytes);
  }
  if (absl::StatusOr<JwtClaims> claims = hs256->Verify(input, kNow); claims.ok()) {
    absl::StatusOr<std::string> again = hs256->Sign(claims->username, claims->revision, kNow);
    Check(again.ok());
    absl::StatusOr<JwtClaims> back = hs256->Verify(*again, kNow);
    Check(back.ok() && back->username == claims->username && back->revision == claims->revision);
  }
  (void)es256->Verify(input, kNow);
  return 0;
}
