#include "store/jws.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "base/utf8.h"

namespace capstan::store {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int DecodeChar(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("JWS: ", std::string(what)));
}

// Recursive descent over RFC 8259, depth-bounded.
class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : s_(text) {}

  absl::Status ParseTopObject(std::map<std::string, JsonValue, std::less<>>* members) {
    SkipSpace();
    if (!Peek('{')) return Bad("JSON: expected an object");
    RETURN_IF_ERROR(ParseObject(1, members));
    SkipSpace();
    if (pos_ != s_.size()) return Bad("JSON: bytes after the object");
    return absl::OkStatus();
  }

 private:
  bool Peek(char c) const { return pos_ < s_.size() && s_[pos_] == c; }
  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  // `members` null: a nested object, parsed and dropped.
  absl::Status ParseObject(int depth, std::map<std::string, JsonValue, std::less<>>* members) {
    if (depth > kMaxJsonDepth) return Bad("JSON: nested too deep");
    ++pos_;  // '{'
    SkipSpace();
    if (Peek('}')) {
      ++pos_;
      return absl::OkStatus();
    }
    for (;;) {
      SkipSpace();
      if (!Peek('"')) return Bad("JSON: expected a member name");
      std::string name;
      RETURN_IF_ERROR(ParseString(&name));
      SkipSpace();
      if (!Peek(':')) return Bad("JSON: expected ':'");
      ++pos_;
      JsonValue value;
      RETURN_IF_ERROR(ParseValue(depth, &value));
      if (members != nullptr) {
        auto [it, inserted] = members->emplace(std::move(name), std::move(value));
        // Two parsers reading different values for one name is how
        // signature checks get bypassed: refuse, whatever Go would keep.
        if (!inserted) return Bad(absl::StrCat("JSON: duplicate member \"", it->first, "\""));
      }
      SkipSpace();
      if (Peek(',')) {
        ++pos_;
        continue;
      }
      if (Peek('}')) {
        ++pos_;
        return absl::OkStatus();
      }
      return Bad("JSON: expected ',' or '}'");
    }
  }

  absl::Status ParseArray(int depth) {
    if (depth > kMaxJsonDepth) return Bad("JSON: nested too deep");
    ++pos_;  // '['
    SkipSpace();
    if (Peek(']')) {
      ++pos_;
      return absl::OkStatus();
    }
    for (;;) {
      JsonValue ignored;
      RETURN_IF_ERROR(ParseValue(depth, &ignored));
      SkipSpace();
      if (Peek(',')) {
        ++pos_;
        continue;
      }
      if (Peek(']')) {
        ++pos_;
        return absl::OkStatus();
      }
      return Bad("JSON: expected ',' or ']'");
    }
  }

  absl::Status ParseValue(int depth, JsonValue* out) {
    SkipSpace();
    if (pos_ >= s_.size()) return Bad("JSON: value expected");
    char c = s_[pos_];
    if (c == '"') {
      out->kind = JsonValue::Kind::kString;
      return ParseString(&out->text);
    }
    if (c == '{') {
      out->kind = JsonValue::Kind::kObject;
      return ParseObject(depth + 1, nullptr);
    }
    if (c == '[') {
      out->kind = JsonValue::Kind::kArray;
      return ParseArray(depth + 1);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      out->kind = JsonValue::Kind::kNumber;
      return ParseNumber(&out->text);
    }
    for (auto [word, kind] : {std::pair{std::string_view("true"), JsonValue::Kind::kTrue},
                              std::pair{std::string_view("false"), JsonValue::Kind::kFalse},
                              std::pair{std::string_view("null"), JsonValue::Kind::kNull}}) {
      if (s_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        out->kind = kind;
        return absl::OkStatus();
      }
    }
    return Bad("JSON: unexpected character");
  }

  bool Digits() {
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    return pos_ > start;
  }

  absl::Status ParseNumber(std::string* out) {
    size_t start = pos_;
    if (Peek('-')) ++pos_;
    if (Peek('0')) {
      ++pos_;
    } else if (!Digits()) {
      return Bad("JSON: bad number");
    }
    if (Peek('.')) {
      ++pos_;
      if (!Digits()) return Bad("JSON: bad number");
    }
    if (Peek('e') || Peek('E')) {
      ++pos_;
      if (Peek('+') || Peek('-')) ++pos_;
      if (!Digits()) return Bad("JSON: bad number");
    }
    out->assign(s_.substr(start, pos_ - start));
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> Hex4() {
    if (s_.size() - pos_ < 4) return Bad("JSON: short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return Bad("JSON: bad \\u escape");
      }
    }
    return v;
  }

  // One UTF-8 sequence starting at pos_ (RFC 3629: shortest form, no
  // surrogates, at most U+10FFFF), copied to `out`.
  absl::Status CopyUtf8(std::string* out) {
    auto byte = [&](size_t i) { return static_cast<unsigned char>(s_[i]); };
    unsigned char b0 = byte(pos_);
    size_t len;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      cp = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      cp = b0 & 0x07;
    } else {
      return Bad("JSON: invalid UTF-8");
    }
    if (s_.size() - pos_ < len) return Bad("JSON: invalid UTF-8");
    for (size_t i = 1; i < len; ++i) {
      unsigned char b = byte(pos_ + i);
      if ((b & 0xC0) != 0x80) return Bad("JSON: invalid UTF-8");
      cp = (cp << 6) | (b & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return Bad("JSON: invalid UTF-8");
    }
    out->append(s_.substr(pos_, len));
    pos_ += len;
    return absl::OkStatus();
  }

  absl::Status ParseString(std::string* out) {
    ++pos_;  // '"'
    for (;;) {
      if (pos_ >= s_.size()) return Bad("JSON: unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c < 0x20) return Bad("JSON: control character in a string");
      if (c >= 0x80) {
        RETURN_IF_ERROR(CopyUtf8(out));
        continue;
      }
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size()) return Bad("JSON: unterminated string");
      char e = s_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          ASSIGN_OR_RETURN(uint32_t cp, Hex4());
          if (cp >= 0xDC00 && cp <= 0xDFFF) return Bad("JSON: lone low surrogate");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(pos_, 2) != "\\u") return Bad("JSON: lone high surrogate");
            pos_ += 2;
            ASSIGN_OR_RETURN(uint32_t low, Hex4());
            if (low < 0xDC00 || low > 0xDFFF) return Bad("JSON: lone high surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8::Append(cp, out);
          break;
        }
        default:
          return Bad("JSON: bad escape");
      }
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t v = at(i) << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
  } else if (rest == 2) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
  }
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = DecodeChar(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  // The bits left over must be zero: otherwise several texts would decode
  // to the same bytes.
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

absl::StatusOr<JsonObject> JsonObject::Parse(std::string_view text) {
  JsonObject obj;
  JsonParser parser(text);
  RETURN_IF_ERROR(parser.ParseTopObject(&obj.members_));
  return obj;
}

const JsonValue* JsonObject::Find(std::string_view name) const {
  auto it = members_.find(name);
  return it == members_.end() ? nullptr : &it->second;
}

std::optional<std::string_view> JsonObject::String(std::string_view name) const {
  const JsonValue* v = Find(name);
  if (v == nullptr || v->kind != JsonValue::Kind::kString) return std::nullopt;
  return v->text;
}

absl::StatusOr<Jws> ParseJwsCompact(std::string_view token) {
  if (token.size() > kMaxJwsBytes) {
    return Bad(absl::StrCat("token longer than ", kMaxJwsBytes, " bytes"));
  }
  size_t dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return Bad("not three segments");
  size_t dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return Bad("not three segments");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view claims_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view sig_b64 = token.substr(dot2 + 1);
  std::optional<std::string> header = Base64UrlDecode(header_b64);
  if (!header) return Bad("header is not base64url");
  std::optional<std::string> claims = Base64UrlDecode(claims_b64);
  if (!claims) return Bad("claims are not base64url");
  std::optional<std::string> sig = Base64UrlDecode(sig_b64);
  if (!sig) return Bad("signature is not base64url");
  Jws jws;
  ASSIGN_OR_RETURN(jws.header, JsonObject::Parse(*header));
  ASSIGN_OR_RETURN(jws.claims, JsonObject::Parse(*claims));
  jws.signing_input = std::string(token.substr(0, dot2));
  jws.signature = *std::move(sig);
  return jws;
}

}  // namespace capstan::store
