#include "experiments/url_target.h"

#include <memory>
#include <string>

#include "experiments/js_regex.h"

namespace capstan::experiments {
namespace {

enum class Match { kNo, kYes, kUnsupported };

// _evalSimpleUrlPart: "^" + pattern escaped, "_____" as ".*" (a `.` stops at
// line terminators, spelled out so no regex engine's idea of `.` matters),
// "$", case-insensitive; for a path one leading and one trailing '/' of the
// escaped pattern dropped and made optional around it.
Match SimplePartMatches(std::string_view actual, std::string_view pattern, bool is_path) {
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
