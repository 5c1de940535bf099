// The JWS compact serialization (RFC 7515 §7.1) as etcd's JWT tokens use
// it: BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(signature),
// header and claims being JSON objects. This file only parses; checking the
// signature and the claims is JwtTokenProvider's job (jwt.h).
//
// The parser is strict, because its input comes from any client: base64url
// without padding and with zero trailing bits (one spelling per byte
// string), JSON (RFC 8259) with no duplicate member names, no bytes after
// the value, nesting at most kMaxJsonDepth, and a token of at most
// kMaxJwsBytes. Values other than strings and numbers are kept only as
// their kind: the claims etcd reads are strings and numbers.
//
// Example:
//   absl::StatusOr<Jws> jws = ParseJwsCompact(token);
//   if (jws.ok() && jws->header.String("alg") == "RS256") ...
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace capstan::store {

inline constexpr size_t kMaxJwsBytes = 8 * 1024;
inline constexpr int kMaxJsonDepth = 16;

// base64url (RFC 4648 §5) without padding.
std::string Base64UrlEncode(std::string_view bytes);
// Refuses padding, characters outside the alphabet, a length of 1 mod 4 and
// non-zero trailing bits.
std::optional<std::string> Base64UrlDecode(std::string_view text);

// A JSON value as the token code needs it.
struct JsonValue {
  enum class Kind { kString, kNumber, kTrue, kFalse, kNull, kObject, kArray };
  Kind kind = Kind::kNull;
  std::string text;  // kString: the decoded string (UTF-8); kNumber: its literal
};

// The members of a JSON object (nested objects and arrays only by kind).
class JsonObject {
 public:
  // Parses one JSON object (RFC 8259), whitespace around it allowed.
  static absl::StatusOr<JsonObject> Parse(std::string_view text);

  const JsonValue* Find(std::string_view name) const;
  // The member's string, or nullopt when it is absent or not a string.
  std::optional<std::string_view> String(std::string_view name) const;
  const std::map<std::string, JsonValue, std::less<>>& members() const { return members_; }

 private:
  std::map<std::string, JsonValue, std::less<>> members_;
};

struct Jws {
  JsonObject header;
  JsonObject claims;
  std::string signing_input;  // the first two segments and the dot between them
  std::string signature;      // decoded
};

// InvalidArgument naming what is wrong (the message is for logs: clients
// get etcd's "invalid auth token").
absl::StatusOr<Jws> ParseJwsCompact(std::string_view token);

}  // namespace capstan::store
