#include "experiments/url_target.h"

#include <memory>
#include <string>
#include <vector>

#include "experiments/js_regex.h"

namespace capstan::experiments {
namespace {

enum class Match { kNo, kYes, kUnsupported };

// Plain ASCII without line terminators: what the fast route below takes.
bool IsPlainAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80 || c == '\n' || c == '\r') return false;
  }
  return true;
}

bool AsciiEqualFold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] | 0x20) : a[i];
    char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] | 0x20) : b[i];
    if (x != y) return false;
  }
  return true;
}

size_t AsciiFindFold(std::string_view haystack, std::string_view needle, size_t from) {
  for (size_t i = from; i + needle.size() <= haystack.size(); ++i) {
    if (AsciiEqualFold(haystack.substr(i, needle.size()), needle)) return i;
  }
  return std::string_view::npos;
}

// The fast route, for plain ASCII on both sides: there JavaScript's `i` flag
// folds exactly the ASCII letters and `.` matches every character, so the
// regex is a glob: literal pieces around unrestricted wildcards, matched
// greedily (the leftmost place for each middle piece is never worse).
bool GlobMatches(std::string_view s, const std::vector<std::string_view>& pieces) {
  if (pieces.size() == 1) return AsciiEqualFold(s, pieces[0]);
  std::string_view first = pieces.front(), last = pieces.back();
  if (s.size() < first.size() + last.size()) return false;
  if (!AsciiEqualFold(s.substr(0, first.size()), first)) return false;
  if (!AsciiEqualFold(s.substr(s.size() - last.size()), last)) return false;
  std::string_view middle = s.substr(first.size(), s.size() - first.size() - last.size());
  size_t at = 0;
  for (size_t i = 1; i + 1 < pieces.size(); ++i) {
    size_t found = AsciiFindFold(middle, pieces[i], at);
    if (found == std::string_view::npos) return false;
    at = found + pieces[i].size();
  }
  return true;
}

Match GlobRoute(std::string_view actual, std::string_view pattern, bool is_path) {
  if (is_path) {
    // The escaped pattern's one leading and one trailing '/' (escaping adds
    // none at either end, so they are the pattern's own).
    bool trailing = pattern.size() >= 2 && pattern.back() == '/';
    if (!pattern.empty() && pattern.front() == '/') pattern.remove_prefix(1);
    if (trailing) pattern.remove_suffix(1);
  }
  std::vector<std::string_view> pieces;  // split at each non-overlapping "_____"
  size_t start = 0;
  while (true) {
    size_t wildcard = pattern.find("_____", start);
    pieces.push_back(pattern.substr(
        start, wildcard == std::string_view::npos ? std::string_view::npos : wildcard - start));
    if (wildcard == std::string_view::npos) break;
    start = wildcard + 5;
  }
  if (!is_path) return GlobMatches(actual, pieces) ? Match::kYes : Match::kNo;
  // \/? around the body: try the subject with and without each slash.
  for (int lead = 0; lead < 2; ++lead) {
    if (lead == 1 && (actual.empty() || actual.front() != '/')) continue;
    std::string_view a = lead == 1 ? actual.substr(1) : actual;
    for (int trail = 0; trail < 2; ++trail) {
      if (trail == 1 && (a.empty() || a.back() != '/')) continue;
      if (GlobMatches(trail == 1 ? a.substr(0, a.size() - 1) : a, pieces)) return Match::kYes;
    }
  }
  return Match::kNo;
}

// _evalSimpleUrlPart as the SDK writes it: "^" + pattern escaped, "_____"
// as ".*" (a `.` stops at line terminators, spelled out so no regex engine's
// idea of `.` matters), "$", case-insensitive; for a path one leading and
// one trailing '/' of the escaped pattern dropped and made optional around
// it. Compiled per call, so only for what the glob route cannot take.
Match RegexRoute(std::string_view actual, std::string_view pattern, bool is_path) {
  std::string escaped;
  for (size_t i = 0; i < pattern.size();) {
    if (pattern.compare(i, 5, "_____") == 0) {
      escaped += R"([^\n\r\u2028\u2029]*)";
      i += 5;
      continue;
    }
    char c = pattern[i++];
    switch (c) {
      case '*':
      case '.':
      case '+':
      case '?':
      case '^':
      case '$':
      case '{':
      case '}':
      case '(':
      case ')':
      case '|':
      case '[':
      case ']':
      case '\\':
        escaped += '\\';
        break;
      default:
        break;
    }
    escaped += c;
  }
  if (is_path) {
    // escaped.replace(/(^\/|\/$)/g, ""): a lone "/" is removed once.
    bool trailing = escaped.size() >= 2 && escaped.back() == '/';
    if (!escaped.empty() && escaped.front() == '/') escaped.erase(0, 1);
    if (trailing) escaped.pop_back();
    escaped = R"(\/?)" + escaped + R"(\/?)";
  }
  if (actual.size() > JsRegex::kMaxSubjectBytes) return Match::kUnsupported;
  std::unique_ptr<JsRegex> regex = JsRegex::Compile("^" + escaped + "$", /*ignore_case=*/true);
  if (regex == nullptr) return Match::kUnsupported;  // only a pattern past its size limit
  return regex->Test(actual) ? Match::kYes : Match::kNo;
}

Match SimplePartMatches(std::string_view actual, std::string_view pattern, bool is_path,
                        bool force_regex = false) {
  if (!force_regex && IsPlainAscii(actual) && IsPlainAscii(pattern)) {
    return GlobRoute(actual, pattern, is_path);
  }
  return RegexRoute(actual, pattern, is_path);
}

// _evalSimpleUrlTarget.
Match SimpleTarget(const WhatwgUrl& actual, std::string_view pattern) {
  // pattern.replace(/^([^:/?]*)\./i, "https://$1."): a '.' before any of
  // ":/?" means a host without a scheme.
  std::string rewritten;
  size_t delimiter = pattern.find_first_of(":/?");
  if (pattern.substr(0, delimiter).find('.') != std::string_view::npos) rewritten = "https://";
  for (char c : pattern) {
    if (c == '*') {
      rewritten += "_____";
    } else {
      rewritten += c;
    }
  }
  UrlParseResult expected = ParseWhatwgUrl(rewritten, &UrlPatternBase());
  if (expected.status == UrlParseResult::kUnsupported) return Match::kUnsupported;
  if (!expected.ok()) return Match::kNo;
  const WhatwgUrl& e = expected.url;
  Match m = SimplePartMatches(actual.Host(), e.Host(), false);
  if (m != Match::kYes) return m;
  m = SimplePartMatches(actual.Pathname(), e.Pathname(), true);
  if (m != Match::kYes) return m;
  if (std::string hash = e.Hash(); !hash.empty()) {
    m = SimplePartMatches(actual.Hash(), hash, false);
    if (m != Match::kYes) return m;
  }
  UrlSearchParams expected_params = UrlSearchParams::Parse(e.query.value_or(""));
  if (expected_params.pairs().empty()) return Match::kYes;
  UrlSearchParams actual_params = UrlSearchParams::Parse(actual.query.value_or(""));
  for (const auto& [key, value] : expected_params.pairs()) {
    const std::string* got = actual_params.Get(key);
    m = SimplePartMatches(got == nullptr ? std::string_view() : *got, value, false);
    if (m != Match::kYes) return m;
  }
  return Match::kYes;
}

// getUrlRegExp: every '/' after a character other than '\' escaped (the
// global replace consumes that character, so "a//" becomes "a\//").
std::string EscapeSlashes(std::string_view pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    out += pattern[i];
    if (pattern[i] != '\\' && i + 1 < pattern.size() && pattern[i + 1] == '/') {
      out += "\\/";
      ++i;
    }
  }
  return out;
}

// _evalURLTarget for one target object.
Match EvalTarget(const UrlParseResult& actual, const Json& target) {
  if (actual.status == UrlParseResult::kUnsupported) return Match::kUnsupported;
  if (!actual.ok()) return Match::kNo;  // new URL threw: caught, false
  auto type = target.find("type");
  auto pattern = target.find("pattern");
  if (type == target.end() || !type->is_string()) return Match::kNo;
  // A pattern that is not a string throws inside the SDK's try: false.
  if (pattern == target.end() || !pattern->is_string()) return Match::kNo;
  const std::string& p = pattern->get_ref<const std::string&>();
  if (*type == "regex") {
    std::unique_ptr<JsRegex> regex = JsRegex::Compile(EscapeSlashes(p), /*ignore_case=*/false);
    if (regex == nullptr) return Match::kNo;
    std::string href = actual.url.Href();
    // JsRegex does not match past its subject limit, where JavaScript might.
    if (href.size() > JsRegex::kMaxSubjectBytes) return Match::kUnsupported;
    return regex->Test(href) ||
                   regex->Test(std::string_view(href).substr(actual.url.Origin().size()))
               ? Match::kYes
               : Match::kNo;
  }
  if (*type == "simple") return SimpleTarget(actual.url, p);
  return Match::kNo;
}

WhatwgUrl ParseBase(std::string_view href) { return ParseWhatwgUrl(href).url; }

}  // namespace

std::optional<bool> SimpleUrlPartMatches(std::string_view actual, std::string_view pattern,
                                         bool is_path, bool force_regex) {
  Match m = SimplePartMatches(actual, pattern, is_path, force_regex);
  if (m == Match::kUnsupported) return std::nullopt;
  return m == Match::kYes;
}

const WhatwgUrl& UrlTargetBase() {
  static const WhatwgUrl base = ParseBase("https://_");
  return base;
}

const WhatwgUrl& UrlPatternBase() {
  static const WhatwgUrl base = ParseBase("https://_____");
  return base;
}

std::optional<bool> UrlTargeted(std::string_view url, const Json& targets) {
  // `!targets.length`: a string's characters have no `type` (no match, an
  // include rule each); other non-arrays have no length.
  if (targets.is_string()) return false;
  if (targets.is_object() && targets.contains("length")) return std::nullopt;
  if (!targets.is_array() || targets.empty()) return false;
  UrlParseResult actual = ParseWhatwgUrl(url, &UrlTargetBase());
  bool has_include_rules = false, included = false;
  for (const Json& target : targets) {
    if (target.is_null()) throw JsTypeError("Cannot read properties of null (reading 'type')");
    Match match = Match::kNo;
    if (actual.status == UrlParseResult::kUnsupported) return std::nullopt;
    if (target.is_object()) {
      match = EvalTarget(actual, target);
      if (match == Match::kUnsupported) return std::nullopt;
    }
    auto include = target.is_object() ? target.find("include") : target.end();
    if (target.is_object() && include != target.end() && include->is_boolean() &&
        !include->get<bool>()) {
      if (match == Match::kYes) return false;
    } else {
      has_include_rules = true;
      if (match == Match::kYes) included = true;
    }
  }
  return included || !has_include_rules;
}

}  // namespace capstan::experiments
