#include "experiments/url_target.h"

#include <cctype>
#include <vector>

#include "experiments/js_regex.h"

namespace capstan::experiments {
namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The characters of the subset (see the header); a space only inside.
bool InSubset(std::string_view s) {
  if (!s.empty() && (s.front() == ' ' || s.back() == ' ')) return false;
  for (char c : s) {
    if (IsAlpha(c) || IsDigit(c)) continue;
    switch (c) {
      case '-':
      case '.':
      case '_':
      case '~':
      case '/':
      case '?':
      case '#':
      case '&':
      case '=':
      case ':':
      case '*':
      case '!':
      case '$':
      case ',':
      case ';':
      case ' ':
        continue;
      default:
        return false;
    }
  }
  return true;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The only character of the subset a component percent-encodes.
std::string EncodeSpaces(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == ' ') {
      out += "%20";
    } else {
      out += c;
    }
  }
  return out;
}

// Parses the authority (host[:port]) of a special URL: false when
// JavaScript throws; *supported false outside the subset.
bool ParseHost(std::string_view authority, const std::string& scheme, std::string* out,
               bool* supported) {
  std::string_view host = authority, port;
  size_t colon = authority.find(':');
  if (colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return false;
  if (host.find(' ') != std::string_view::npos) {
    *supported = false;
    return false;
  }
  std::string lower = Lower(host);
  // IPv4 forms and punycode are outside the subset.
  std::vector<std::string_view> labels;
  size_t start = 0;
  while (true) {
    size_t dot = lower.find('.', start);
    labels.push_back(std::string_view(lower).substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  std::string_view last = labels.back();
  if (last.empty() && labels.size() > 1) last = labels[labels.size() - 2];
  bool all_digits = !last.empty();
  for (char c : last) all_digits &= IsDigit(c);
  if (all_digits || last.substr(0, 2) == "0x") {
    *supported = false;
    return false;
  }
  for (std::string_view label : labels) {
    if (label.substr(0, 4) == "xn--") {
      *supported = false;
      return false;
    }
  }
  *out = lower;
  if (!port.empty()) {
    uint32_t value = 0;
    for (char c : port) {
      if (!IsDigit(c)) return false;
      value = value * 10 + static_cast<uint32_t>(c - '0');
      if (value > 65535) return false;
    }
    bool is_default = (scheme == "https" && value == 443) || (scheme == "http" && value == 80);
    if (!is_default) *out += ":" + std::to_string(value);
  }
  return true;
}

// The path state from `input` onto `path` (segments); dot segments resolved.
void ParsePath(std::string_view input, std::vector<std::string>* path) {
  size_t start = 0;
  while (true) {
    size_t slash = input.find('/', start);
    std::string_view segment = input.substr(start, slash - start);
    bool last = slash == std::string_view::npos;
    if (segment == "..") {
      if (!path->empty()) path->pop_back();
      if (last) path->push_back("");
    } else if (segment == ".") {
      if (last) path->push_back("");
    } else {
      path->push_back(EncodeSpaces(segment));
    }
    if (last) break;
    start = slash + 1;
  }
}

// Splits what follows the path: ?query and #fragment.
void ParseTail(std::string_view rest, SubsetUrl* url) {
  size_t hash = rest.find('#');
  if (hash != std::string_view::npos) {
    url->fragment = EncodeSpaces(rest.substr(hash + 1));
    rest = rest.substr(0, hash);
  }
  if (!rest.empty() && rest.front() == '?') url->query = EncodeSpaces(rest.substr(1));
}

std::string JoinPath(const std::vector<std::string>& segments) {
  std::string out;
  for (const std::string& s : segments) out += "/" + s;
  return out.empty() ? "/" : out;
}

// The query's name/value pairs in order (searchParams.forEach), over a raw
// query of the subset (no '%' or '+', spaces encoded as %20 by EncodeSpaces).
std::vector<std::pair<std::string, std::string>> SearchParams(
    const std::optional<std::string>& query) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!query.has_value()) return out;
  std::string decoded;
  for (size_t i = 0; i < query->size(); ++i) {
    if (query->compare(i, 3, "%20") == 0) {
      decoded += ' ';
      i += 2;
    } else {
      decoded += (*query)[i];
    }
  }
  size_t start = 0;
  while (start <= decoded.size()) {
    size_t amp = decoded.find('&', start);
    std::string_view pair = std::string_view(decoded).substr(start, amp - start);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      out.emplace_back(std::string(pair.substr(0, eq)),
                       eq == std::string_view::npos ? "" : std::string(pair.substr(eq + 1)));
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
  return out;
}

// URLSearchParams(query).get(key) || "": the first pair named `key`.
std::string SearchParam(const std::optional<std::string>& query, std::string_view key) {
  for (auto& [name, value] : SearchParams(query)) {
    if (name == key) return std::move(value);
  }
  return "";
}

// `^` + pattern + `$` with the `i` flag, where the pattern is literal text
// whose each non-overlapping "_____" is `.*` (_evalSimpleUrlPart); `is_path`
// strips one leading and one trailing '/' of the pattern and makes them
// optional around it.
bool SimplePartMatches(std::string_view actual, std::string pattern, bool is_path) {
  // Tokens: literal runs and wildcards, as the regex replace cuts them.
  std::vector<std::string> literals(1);  // literal, wildcard, literal, ...
  for (size_t i = 0; i < pattern.size();) {
    if (pattern.compare(i, 5, "_____") == 0) {
      literals.emplace_back();
      i += 5;
    } else {
      literals.back() += pattern[i++];
    }
  }
  if (is_path) {
    // escaped.replace(/(^\/|\/$)/g, ""): on the whole escaped string (a
    // wildcard is ".*" there, so a '/' next to one is still at an end only
    // when its literal is the first or last).
    if (!literals.front().empty() && literals.front().front() == '/') {
      literals.front().erase(0, 1);
    }
    if (!literals.back().empty() && literals.back().back() == '/') literals.back().pop_back();
  }
  std::string subject = Lower(actual);
  for (std::string& literal : literals) literal = Lower(literal);
  // Try the optional slashes around the body.
  auto body_matches = [&](std::string_view s) {
    // Glob match: literals[0] .* literals[1] .* ... literals[n], anchored.
    if (literals.size() == 1) return s == literals[0];
    const std::string& first = literals.front();
    const std::string& last = literals.back();
    if (s.size() < first.size() + last.size()) return false;
    if (s.substr(0, first.size()) != first) return false;
    if (s.substr(s.size() - last.size()) != last) return false;
    std::string_view middle = s.substr(first.size(), s.size() - first.size() - last.size());
    size_t at = 0;
    for (size_t i = 1; i + 1 < literals.size(); ++i) {
      size_t found = middle.find(literals[i], at);
      if (found == std::string_view::npos) return false;
      at = found + literals[i].size();
    }
    return true;
  };
  if (!is_path) return body_matches(subject);
  std::string_view s = subject;
  for (int lead = 0; lead < 2; ++lead) {
    if (lead == 1 && (s.empty() || s.front() != '/')) continue;
    std::string_view a = lead == 1 ? s.substr(1) : s;
    for (int trail = 0; trail < 2; ++trail) {
      if (trail == 1 && (a.empty() || a.back() != '/')) continue;
      if (body_matches(trail == 1 ? a.substr(0, a.size() - 1) : a)) return true;
    }
  }
  return false;
}

// _evalSimpleUrlTarget; nullopt outside the subset.
std::optional<bool> SimpleTarget(const SubsetUrl& actual, const std::string& pattern) {
  std::string rewritten = pattern;
  size_t delimiter = rewritten.find_first_of(":/?");
  if (rewritten.substr(0, delimiter).find('.') != std::string::npos) {
    rewritten = "https://" + rewritten;
  }
  std::string wild;
  for (char c : rewritten) {
    if (c == '*') {
      wild += "_____";
    } else {
      wild += c;
    }
  }
  static const SubsetUrl kPatternBase{"https", "_____", "/", std::nullopt, std::nullopt};
  UrlParse expected = ParseSubsetUrl(wild, kPatternBase);
  if (!expected.supported) return std::nullopt;
  if (!expected.valid) return false;
  const SubsetUrl& e = expected.url;
  if (!SimplePartMatches(actual.host, e.host, false)) return false;
  if (!SimplePartMatches(actual.path, e.path, true)) return false;
  if (e.fragment.has_value() && !e.fragment->empty()) {
    std::string actual_hash =
        actual.fragment.has_value() && !actual.fragment->empty() ? "#" + *actual.fragment : "";
    if (!SimplePartMatches(actual_hash, "#" + *e.fragment, false)) return false;
  }
  for (const auto& [key, value] : SearchParams(e.query)) {
    if (!SimplePartMatches(SearchParam(actual.query, key), value, false)) return false;
  }
  return true;
}

}  // namespace

std::string SubsetUrl::Href() const {
  std::string out = Origin() + path;
  if (query.has_value()) out += "?" + *query;
  if (fragment.has_value()) out += "#" + *fragment;
  return out;
}

UrlParse ParseSubsetUrl(std::string_view input, const SubsetUrl& base) {
  UrlParse result;
  if (!InSubset(input) || input.find('@') != std::string_view::npos) {
    result.supported = false;
    return result;
  }
  SubsetUrl& url = result.url;
  // A scheme: ALPHA *(ALPHA / DIGIT / "-" / ".") ":".
  size_t colon = std::string_view::npos;
  if (!input.empty() && IsAlpha(input[0])) {
    size_t i = 1;
    while (i < input.size() &&
           (IsAlpha(input[i]) || IsDigit(input[i]) || input[i] == '-' || input[i] == '.')) {
      ++i;
    }
    if (i < input.size() && input[i] == ':') colon = i;
  }
  std::string_view rest;
  if (colon != std::string_view::npos) {
    url.scheme = Lower(input.substr(0, colon));
    rest = input.substr(colon + 1);
    if ((url.scheme != "http" && url.scheme != "https") || rest.substr(0, 2) != "//") {
      result.supported = false;
      return result;
    }
  } else if (input.substr(0, 2) == "//") {
    url.scheme = base.scheme;
    rest = input;
  } else {
    // Relative to the base: a path, a query or a fragment.
    url.scheme = base.scheme;
    url.host = base.host;
    std::vector<std::string> path;
    if (input.empty() || input[0] == '?' || input[0] == '#') {
      url.path = base.path;
      url.query = base.query;
      if (input.empty()) {
        result.valid = true;
        return result;
      }
      url.fragment.reset();
      if (input[0] == '?') url.query.reset();
      ParseTail(input, &url);
      result.valid = true;
      return result;
    }
    size_t end = input.find_first_of("?#");
    std::string_view path_part = input.substr(0, end);
    if (path_part.front() != '/') {
      // Merged with the base's directory: the base path is "/" here.
      ParsePath(path_part, &path);
    } else {
      ParsePath(path_part.substr(1), &path);
    }
    url.path = JoinPath(path);
    if (end != std::string_view::npos) ParseTail(input.substr(end), &url);
    result.valid = true;
    return result;
  }
  // Special authority ignore slashes: every '/' before the host.
  size_t i = 0;
  while (i < rest.size() && rest[i] == '/') ++i;
  rest = rest.substr(i);
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  bool supported = true;
  if (!ParseHost(authority, url.scheme, &url.host, &supported)) {
    result.supported = supported;
    return result;
  }
  rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  size_t tail = rest.find_first_of("?#");
  std::string_view path_part = rest.substr(0, tail);
  std::vector<std::string> path;
  ParsePath(path_part.empty() ? std::string_view() : path_part.substr(1), &path);
  url.path = JoinPath(path);
  if (tail != std::string_view::npos) ParseTail(rest.substr(tail), &url);
  result.valid = true;
  return result;
}

std::optional<bool> UrlTargeted(std::string_view url, const Json& targets) {
  if (!targets.is_array()) return std::nullopt;
  if (targets.empty()) return false;
  static const SubsetUrl kUrlBase{"https", "_", "/", std::nullopt, std::nullopt};
  UrlParse actual = ParseSubsetUrl(url, kUrlBase);
  if (!actual.supported) return std::nullopt;
  bool has_include_rules = false, included = false;
  for (const Json& target : targets) {
    if (!target.is_object()) return std::nullopt;
    auto type = target.find("type");
    auto pattern = target.find("pattern");
    bool match = false;
    if (type != target.end() && type->is_string() && pattern != target.end() &&
        pattern->is_string() && actual.valid) {
      const std::string& p = pattern->get_ref<const std::string&>();
      if (*type == "regex") {
        // getUrlRegExp escapes unescaped '/', which changes no meaning.
        std::unique_ptr<JsRegex> regex = JsRegex::Compile(p, /*ignore_case=*/false);
        if (regex != nullptr) {
          std::string href = actual.url.Href();
          match = regex->Test(href) || regex->Test(href.substr(actual.url.Origin().size()));
        }
      } else if (*type == "simple") {
        std::optional<bool> simple = SimpleTarget(actual.url, p);
        if (!simple.has_value()) return std::nullopt;
        match = *simple;
      }
    } else if (type == target.end() || pattern == target.end() || !pattern->is_string() ||
               !type->is_string()) {
      return std::nullopt;  // JavaScript's coercions of other shapes: not followed
    }
    auto include = target.find("include");
    if (include != target.end() && include->is_boolean() && !include->get<bool>()) {
      if (match) return false;
    } else {
      has_include_rules = true;
      if (match) included = true;
    }
  }
  return included || !has_include_rules;
}

}  // namespace capstan::experiments
