#include "experiments/whatwg_url.h"

#include <array>

#include "experiments/decrypt.h"
#include "experiments/idna.h"

namespace capstan::experiments {
namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int HexValue(char c) {
  if (IsDigit(c)) return c - '0';
  return (c | 0x20) - 'a' + 10;
}
char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c | 0x20) : c; }

// The standard's percent-encode sets, each a superset of the one before.
enum class EncodeSet { kFragment, kQuery, kSpecialQuery, kPath, kUserinfo };

bool NeedsEncoding(unsigned char c, EncodeSet set) {
  if (c < 0x20 || c > 0x7E) return true;  // the C0 control percent-encode set
  switch (set) {
    case EncodeSet::kFragment:
      return c == ' ' || c == '"' || c == '<' || c == '>' || c == '`';
    case EncodeSet::kQuery:
    case EncodeSet::kSpecialQuery:
      return c == ' ' || c == '"' || c == '#' || c == '<' || c == '>' ||
             (set == EncodeSet::kSpecialQuery && c == '\'');
    case EncodeSet::kPath:
    case EncodeSet::kUserinfo:
      if (c == ' ' || c == '"' || c == '#' || c == '<' || c == '>' || c == '?' || c == '`' ||
          c == '{' || c == '}') {
        return true;
      }
      return set == EncodeSet::kUserinfo &&
             (c == '/' || c == ':' || c == ';' || c == '=' || c == '@' || c == '[' || c == '\\' ||
              c == ']' || c == '^' || c == '|');
  }
  return false;
}

void AppendEncoded(std::string_view s, EncodeSet set, std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (NeedsEncoding(c, set)) {
      out->push_back('%');
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    } else {
      out->push_back(ch);
    }
  }
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() + 0 && IsHex(s[i + 1]) && IsHex(s[i + 2])) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool IsSpecialScheme(std::string_view scheme) {
  return scheme == "http" || scheme == "https" || scheme == "ws" || scheme == "wss" ||
         scheme == "ftp";
}

std::optional<uint16_t> DefaultPort(std::string_view scheme) {
  if (scheme == "http" || scheme == "ws") return 80;
  if (scheme == "https" || scheme == "wss") return 443;
  if (scheme == "ftp") return 21;
  return std::nullopt;
}

// The IPv4 number parser: nullopt on failure.
std::optional<uint64_t> ParseIpv4Number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  int radix = 10;
  if (s.size() >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    radix = 16;
    s.remove_prefix(2);
  } else if (s.size() >= 2 && s[0] == '0') {
    radix = 8;
    s.remove_prefix(1);
  }
  if (s.empty()) return 0;
  uint64_t value = 0;
  for (char c : s) {
    int digit;
    if (radix == 16 && IsHex(c)) {
      digit = HexValue(c);
    } else if (radix != 16 && IsDigit(c) && c - '0' < radix) {
      digit = c - '0';
    } else {
      return std::nullopt;
    }
    // Saturate: any value past 2^32 fails later, however large.
    value = value > (uint64_t{1} << 40) ? value : value * static_cast<uint64_t>(radix) + digit;
  }
  return value;
}

std::vector<std::string_view> SplitDots(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

// The ends-in-a-number checker: the host is then an IPv4 address or invalid.
bool EndsInANumber(std::string_view host) {
  std::vector<std::string_view> parts = SplitDots(host);
  if (parts.back().empty()) {
    if (parts.size() == 1) return false;
    parts.pop_back();
  }
  std::string_view last = parts.back();
  bool all_digits = !last.empty();
  for (char c : last) all_digits &= IsDigit(c);
  return all_digits || ParseIpv4Number(last).has_value();
}

// The IPv4 parser, serialized; nullopt on failure.
std::optional<std::string> ParseIpv4(std::string_view host) {
  std::vector<std::string_view> parts = SplitDots(host);
  if (parts.back().empty() && parts.size() > 1) parts.pop_back();
  if (parts.size() > 4) return std::nullopt;
  std::vector<uint64_t> numbers;
  for (std::string_view part : parts) {
    std::optional<uint64_t> n = ParseIpv4Number(part);
    if (!n.has_value()) return std::nullopt;
    numbers.push_back(*n);
  }
  for (size_t i = 0; i + 1 < numbers.size(); ++i) {
    if (numbers[i] > 255) return std::nullopt;
  }
  if (numbers.back() >= (uint64_t{1} << (8 * (5 - numbers.size())))) return std::nullopt;
  uint64_t address = numbers.back();
  for (size_t i = 0; i + 1 < numbers.size(); ++i) address += numbers[i] << (8 * (3 - i));
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (!out.empty()) out += '.';
    out += std::to_string((address >> shift) & 255);
  }
  return out;
}

// The IPv6 parser (input without the brackets), serialized with them.
std::optional<std::string> ParseIpv6(std::string_view in) {
  std::array<uint16_t, 8> pieces{};
  int piece_index = 0, compress = -1;
  size_t i = 0;
  if (i < in.size() && in[i] == ':') {
    if (in.size() < 2 || in[1] != ':') return std::nullopt;
    i += 2;
    compress = ++piece_index;
  }
  while (i < in.size()) {
    if (piece_index == 8) return std::nullopt;
    if (in[i] == ':') {
      if (compress != -1) return std::nullopt;
      ++i;
      compress = ++piece_index;
      continue;
    }
    unsigned value = 0, length = 0;
    while (length < 4 && i < in.size() && IsHex(in[i])) {
      value = value * 16 + HexValue(in[i]);
      ++i;
      ++length;
    }
    if (i < in.size() && in[i] == '.') {
      // An embedded IPv4 address in the last two pieces.
      if (length == 0) return std::nullopt;
      i -= length;
      if (piece_index > 6) return std::nullopt;
      int numbers_seen = 0;
      while (i < in.size()) {
        int ipv4_piece = -1;
        if (numbers_seen > 0) {
          if (in[i] == '.' && numbers_seen < 4) {
            ++i;
          } else {
            return std::nullopt;
          }
        }
        if (i >= in.size() || !IsDigit(in[i])) return std::nullopt;
        while (i < in.size() && IsDigit(in[i])) {
          int number = in[i] - '0';
          if (ipv4_piece == -1) {
            ipv4_piece = number;
          } else if (ipv4_piece == 0) {
            return std::nullopt;
          } else {
            ipv4_piece = ipv4_piece * 10 + number;
          }
          if (ipv4_piece > 255) return std::nullopt;
          ++i;
        }
        pieces[piece_index] = static_cast<uint16_t>(pieces[piece_index] * 0x100 + ipv4_piece);
        ++numbers_seen;
        if (numbers_seen == 2 || numbers_seen == 4) ++piece_index;
      }
      if (numbers_seen != 4) return std::nullopt;
      break;
    }
    if (i < in.size() && in[i] == ':') {
      ++i;
      if (i >= in.size()) return std::nullopt;
    } else if (i < in.size()) {
      return std::nullopt;
    }
    pieces[piece_index++] = static_cast<uint16_t>(value);
  }
  if (compress != -1) {
    int swaps = piece_index - compress;
    piece_index = 7;
    while (piece_index != 0 && swaps > 0) {
      std::swap(pieces[piece_index], pieces[compress + swaps - 1]);
      --piece_index;
      --swaps;
    }
  } else if (piece_index != 8) {
    return std::nullopt;
  }
  // Serialize: the first longest run (>= 2) of zero pieces becomes "::".
  int best_start = -1, best_length = 1;
  for (int start = 0; start < 8;) {
    if (pieces[start] != 0) {
      ++start;
      continue;
    }
    int end = start;
    while (end < 8 && pieces[end] == 0) ++end;
    if (end - start > best_length) {
      best_start = start;
      best_length = end - start;
    }
    start = end;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "[";
  bool ignore0 = false;
  for (int p = 0; p < 8; ++p) {
    if (ignore0 && pieces[p] == 0) continue;
    ignore0 = false;
    if (p == best_start) {
      out += p == 0 ? "::" : ":";
      ignore0 = true;
      continue;
    }
    std::string hex;
    for (int shift = 12; shift >= 0; shift -= 4) {
      int digit = (pieces[p] >> shift) & 15;
      if (digit != 0 || !hex.empty() || shift == 0) hex += kHex[digit];
    }
    out += hex;
    if (p != 7) out += ':';
  }
  return out + "]";
}

bool IsForbiddenDomainCodePoint(unsigned char c) {
  if (c <= 0x20 || c == 0x7F || c == '%') return true;
  switch (c) {
    case '#':
    case '/':
    case ':':
    case '<':
    case '>':
    case '?':
    case '@':
    case '[':
    case '\\':
    case ']':
    case '^':
    case '|':
      return true;
    default:
      return false;
  }
}

// The host parser for a special URL.
UrlParseResult::Status ParseHost(std::string_view input, std::string* out) {
  if (!input.empty() && input.front() == '[') {
    if (input.back() != ']') return UrlParseResult::kFailure;
    std::optional<std::string> v6 = ParseIpv6(input.substr(1, input.size() - 2));
    if (!v6.has_value()) return UrlParseResult::kFailure;
    *out = *v6;
    return UrlParseResult::kOk;
  }
  std::string domain = PercentDecode(input);
  bool ascii = true;
  for (char& c : domain) {
    ascii &= static_cast<unsigned char>(c) < 0x80;
    c = Lower(c);
  }
  // ASCII without an "xn--" label needs no IDNA: lower case is its answer.
  bool punycode = false;
  for (std::string_view label : SplitDots(domain)) punycode |= label.substr(0, 4) == "xn--";
  if (!ascii || punycode) {
    IdnaResult idna = DomainToAscii(domain);
    if (idna.status == IdnaResult::kUnsupported) return UrlParseResult::kUnsupported;
    if (idna.status != IdnaResult::kOk) return UrlParseResult::kFailure;
    domain = std::move(idna.ascii);
  }
  if (domain.empty()) return UrlParseResult::kFailure;
  for (char c : domain) {
    if (IsForbiddenDomainCodePoint(static_cast<unsigned char>(c))) {
      return UrlParseResult::kFailure;
    }
  }
  if (EndsInANumber(domain)) {
    std::optional<std::string> v4 = ParseIpv4(domain);
    if (!v4.has_value()) return UrlParseResult::kFailure;
    *out = *v4;
    return UrlParseResult::kOk;
  }
  *out = std::move(domain);
  return UrlParseResult::kOk;
}

bool IsSlash(char c) { return c == '/' || c == '\\'; }  // special URLs only

bool IsSingleDot(std::string_view s) { return s == "." || s == "%2e" || s == "%2E"; }
bool IsDoubleDot(std::string_view s) {
  if (s.size() < 2 || s.size() > 6) return false;
  std::string lower(s);
  for (char& c : lower) c = Lower(c);
  return lower == ".." || lower == ".%2e" || lower == "%2e." || lower == "%2e%2e";
}

// The path state from `in` (the path's text, after a leading slash if any)
// onto url->path: segments split at '/' or '\', dot segments resolved.
void ParsePath(std::string_view in, WhatwgUrl* url) {
  size_t start = 0;
  while (true) {
    size_t end = start;
    while (end < in.size() && !IsSlash(in[end])) ++end;
    std::string_view segment = in.substr(start, end - start);
    bool at_end = end == in.size();
    if (IsDoubleDot(segment)) {
      if (!url->path.empty()) url->path.pop_back();
      if (at_end) url->path.emplace_back();
    } else if (IsSingleDot(segment)) {
      if (at_end) url->path.emplace_back();
    } else {
      std::string encoded;
      AppendEncoded(segment, EncodeSet::kPath, &encoded);
      url->path.push_back(std::move(encoded));
    }
    if (at_end) break;
    start = end + 1;
  }
}

// What follows the path: "?query" and/or "#fragment".
void ParseQueryAndFragment(std::string_view rest, WhatwgUrl* url) {
  size_t hash = rest.find('#');
  if (hash != std::string_view::npos) {
    url->fragment.emplace();
    AppendEncoded(rest.substr(hash + 1), EncodeSet::kFragment, &*url->fragment);
    rest = rest.substr(0, hash);
  }
  if (!rest.empty() && rest.front() == '?') {
    url->query.emplace();
    AppendEncoded(rest.substr(1), EncodeSet::kSpecialQuery, &*url->query);
  }
}

// The path (starting at `rest`, which holds path, query and fragment).
void ParsePathQueryFragment(std::string_view rest, WhatwgUrl* url) {
  size_t tail = rest.find_first_of("?#");
  std::string_view path = rest.substr(0, tail);
  if (!path.empty() && IsSlash(path.front())) path.remove_prefix(1);
  ParsePath(path, url);
  if (tail != std::string_view::npos) ParseQueryAndFragment(rest.substr(tail), url);
}

// The authority and everything after it; `rest` starts after the slashes.
UrlParseResult::Status ParseAuthorityAndRest(std::string_view rest, WhatwgUrl* url) {
  size_t end = 0;
  while (end < rest.size() && !IsSlash(rest[end]) && rest[end] != '?' && rest[end] != '#') ++end;
  std::string_view authority = rest.substr(0, end);
  size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    size_t colon = userinfo.find(':');
    AppendEncoded(userinfo.substr(0, colon), EncodeSet::kUserinfo, &url->username);
    if (colon != std::string_view::npos) {
      AppendEncoded(userinfo.substr(colon + 1), EncodeSet::kUserinfo, &url->password);
    }
    authority = authority.substr(at + 1);
    if (authority.empty()) return UrlParseResult::kFailure;
  }
  // host[:port]; a ':' inside [...] belongs to the host.
  size_t colon = std::string_view::npos;
  bool in_brackets = false;
  for (size_t i = 0; i < authority.size(); ++i) {
    if (authority[i] == '[') in_brackets = true;
    if (authority[i] == ']') in_brackets = false;
    if (authority[i] == ':' && !in_brackets) {
      colon = i;
      break;
    }
  }
  std::string_view host = authority.substr(0, colon);
  if (host.empty()) return UrlParseResult::kFailure;
  if (UrlParseResult::Status s = ParseHost(host, &url->host); s != UrlParseResult::kOk) return s;
  if (colon != std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    if (!port.empty()) {
      uint32_t value = 0;
      for (char c : port) {
        if (!IsDigit(c)) return UrlParseResult::kFailure;
        value = value * 10 + static_cast<uint32_t>(c - '0');
        if (value > 65535) return UrlParseResult::kFailure;
      }
      if (DefaultPort(url->scheme) != value) url->port = static_cast<uint16_t>(value);
    }
  }
  ParsePathQueryFragment(rest.substr(end), url);
  return UrlParseResult::kOk;
}

std::string_view SkipSlashes(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && IsSlash(s[i])) ++i;
  return s.substr(i);
}

// The relative state: `rest` resolved against the special `base`.
UrlParseResult::Status ParseRelative(std::string_view rest, const WhatwgUrl& base, WhatwgUrl* url) {
  url->scheme = base.scheme;
  if (!rest.empty() && IsSlash(rest.front())) {
    // The relative slash state: "//host" or an absolute path on base's host.
    if (rest.size() >= 2 && IsSlash(rest[1])) {
      return ParseAuthorityAndRest(SkipSlashes(rest), url);
    }
    url->username = base.username;
    url->password = base.password;
    url->host = base.host;
    url->port = base.port;
    ParsePathQueryFragment(rest, url);
    return UrlParseResult::kOk;
  }
  url->username = base.username;
  url->password = base.password;
  url->host = base.host;
  url->port = base.port;
  url->path = base.path;
  url->query = base.query;
  if (rest.empty()) return UrlParseResult::kOk;
  if (rest.front() == '?' || rest.front() == '#') {
    if (rest.front() == '?') url->query.reset();
    ParseQueryAndFragment(rest, url);
    return UrlParseResult::kOk;
  }
  // A path relative to base's directory.
  url->query.reset();
  if (!url->path.empty()) url->path.pop_back();
  size_t tail = rest.find_first_of("?#");
  ParsePath(rest.substr(0, tail), url);
  if (tail != std::string_view::npos) ParseQueryAndFragment(rest.substr(tail), url);
  return UrlParseResult::kOk;
}

}  // namespace

std::string WhatwgUrl::Host() const {
  return port.has_value() ? host + ":" + std::to_string(*port) : host;
}

std::string WhatwgUrl::Origin() const { return scheme + "://" + Host(); }

std::string WhatwgUrl::Pathname() const {
  std::string out;
  for (const std::string& segment : path) out += "/" + segment;
  return out;
}

std::string WhatwgUrl::Hash() const {
  return fragment.has_value() && !fragment->empty() ? "#" + *fragment : "";
}

std::string WhatwgUrl::Href() const {
  std::string out = scheme + "://";
  if (!username.empty() || !password.empty()) {
    out += username;
    if (!password.empty()) out += ":" + password;
    out += "@";
  }
  out += Host() + Pathname();
  if (query.has_value()) out += "?" + *query;
  if (fragment.has_value()) out += "#" + *fragment;
  return out;
}

UrlParseResult ParseWhatwgUrl(std::string_view input, const WhatwgUrl* base) {
  UrlParseResult result;
  // Leading and trailing C0 controls and spaces go; tabs and newlines anywhere.
  while (!input.empty() && static_cast<unsigned char>(input.front()) <= 0x20) {
    input.remove_prefix(1);
  }
  while (!input.empty() && static_cast<unsigned char>(input.back()) <= 0x20) {
    input.remove_suffix(1);
  }
  std::string cleaned;
  cleaned.reserve(input.size());
  for (char c : input) {
    if (c != '\t' && c != '\n' && c != '\r') cleaned.push_back(c);
  }
  std::string_view in = cleaned;
  WhatwgUrl& url = result.url;

  // A scheme: ALPHA *(ALPHA / DIGIT / "+" / "-" / ".") ":".
  size_t colon = std::string_view::npos;
  if (!in.empty() && IsAlpha(in[0])) {
    size_t i = 1;
    while (i < in.size() &&
           (IsAlpha(in[i]) || IsDigit(in[i]) || in[i] == '+' || in[i] == '-' || in[i] == '.')) {
      ++i;
    }
    if (i < in.size() && in[i] == ':') colon = i;
  }
  if (colon != std::string_view::npos) {
    for (char c : in.substr(0, colon)) url.scheme.push_back(Lower(c));
    if (!IsSpecialScheme(url.scheme)) {
      result.status = UrlParseResult::kUnsupported;  // file: and non-special schemes
      return result;
    }
    std::string_view rest = in.substr(colon + 1);
    if (base != nullptr && base->scheme == url.scheme &&
        !(rest.size() >= 2 && rest[0] == '/' && rest[1] == '/')) {
      // The special relative or authority state: "https:path" against https.
      result.status = ParseRelative(rest, *base, &url);
      return result;
    }
    result.status = ParseAuthorityAndRest(SkipSlashes(rest), &url);
    return result;
  }
  if (base == nullptr) return result;  // a relative URL without a base
  if (!IsSpecialScheme(base->scheme)) {
    result.status = UrlParseResult::kUnsupported;
    return result;
  }
  result.status = ParseRelative(in, *base, &url);
  return result;
}

UrlSearchParams UrlSearchParams::Parse(std::string_view query) {
  UrlSearchParams params;
  auto decode = [](std::string_view s) {
    std::string plus_as_space(s);
    for (char& c : plus_as_space) {
      if (c == '+') c = ' ';
    }
    // UTF-8 decode without BOM: DecodeUtf8Lossy strips one leading BOM, so
    // give it one to strip.
    return DecodeUtf8Lossy("\xEF\xBB\xBF" + PercentDecode(plus_as_space));
  };
  size_t start = 0;
  while (start <= query.size()) {
    size_t amp = query.find('&', start);
    std::string_view pair = query.substr(start, amp == std::string_view::npos ? amp : amp - start);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      params.pairs_.emplace_back(decode(pair.substr(0, eq)), eq == std::string_view::npos
                                                                 ? std::string()
                                                                 : decode(pair.substr(eq + 1)));
    }
    if (amp == std::string_view::npos) break;
    start = amp + 1;
  }
  return params;
}

const std::string* UrlSearchParams::Get(std::string_view name) const {
  for (const auto& [n, v] : pairs_) {
    if (n == name) return &v;
  }
  return nullptr;
}

bool UrlSearchParams::Has(std::string_view name) const { return Get(name) != nullptr; }

void UrlSearchParams::Set(std::string_view name, std::string_view value) {
  bool found = false;
  for (size_t i = 0; i < pairs_.size();) {
    if (pairs_[i].first != name) {
      ++i;
    } else if (!found) {
      pairs_[i].second = std::string(value);
      found = true;
      ++i;
    } else {
      pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  if (!found) pairs_.emplace_back(std::string(name), std::string(value));
}

std::string UrlSearchParams::Serialize() const {
  static constexpr char kHex[] = "0123456789ABCDEF";
  auto append = [](std::string_view s, std::string* out) {
    for (char ch : s) {
      auto c = static_cast<unsigned char>(ch);
      if (c == ' ') {
        out->push_back('+');
      } else if (IsAlpha(ch) || IsDigit(ch) || ch == '*' || ch == '-' || ch == '.' || ch == '_') {
        out->push_back(ch);
      } else {
        out->push_back('%');
        out->push_back(kHex[c >> 4]);
        out->push_back(kHex[c & 15]);
      }
    }
  };
  std::string out;
  for (const auto& [name, value] : pairs_) {
    if (!out.empty()) out.push_back('&');
    append(name, &out);
    out.push_back('=');
    append(value, &out);
  }
  return out;
}

}  // namespace capstan::experiments
