// JavaScript regular expressions (`new RegExp(pattern, flags)`, no `u` flag) on
// top of std::wregex.
//
// std::regex's ECMAScript grammar is ECMAScript 3 without the web-compatibility
// rules (Annex B) every JavaScript engine follows. JsRegex rewrites a pattern
// into the std::regex dialect first, so that
//   * a `{` or `}` that is not a quantifier, a `]` outside a class and
//     `\p`, `\k`, `\q`-style identity escapes are literals, as in JavaScript;
//   * `\cJ` is a control character, `[^]` any character, `[]` nothing;
//   * `-` next to a class escape (`[\d-z]`) is a literal;
//   * named groups `(?<name>...)` and `\k<name>` work (as numbered groups),
//     and a backreference to a group not yet closed matches the empty string;
//   * patterns JavaScript rejects are rejected (`x*+`, `a{1}{2}`, `a{2,1}`, `*`).
// Case-insensitive matching folds with the C.UTF-8 locale's simple case
// mapping, as JavaScript's toUpperCase-based folding does for ordinary letters.
//
// Still different (documented in README.md): lookbehind `(?<=` `(?<!` is not
// supported (the pattern counts as invalid), and characters outside the BMP
// are single characters rather than two UTF-16 units.
//
// Thread-safety: a compiled JsRegex is immutable; Test may be called from many
// threads at once.
//
// Example:
//   std::unique_ptr<JsRegex> re = JsRegex::Compile("^a{", /*ignore_case=*/false);
//   re->Test("a{b");  // true: the brace is a literal
#ifndef CAPSTAN_EXPERIMENTS_JS_REGEX_H_
#define CAPSTAN_EXPERIMENTS_JS_REGEX_H_

#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>

namespace capstan::experiments {

class JsRegex {
 public:
  // Limits, because libstdc++'s matcher and compiler recurse once per subject
  // character and per nesting level: past them a deep stack would overflow.
  // A longer pattern counts as invalid and a longer subject as not matching
  // (where JavaScript would still match).
  static constexpr size_t kMaxPatternBytes = 1024;
  static constexpr size_t kMaxSubjectBytes = 4096;

  // nullptr when JavaScript would throw a SyntaxError (or the pattern uses a
  // feature std::regex cannot express).
  static std::unique_ptr<JsRegex> Compile(std::string_view pattern_utf8, bool ignore_case);

  // regex.test(subject): is there a match anywhere in the subject?
  bool Test(std::string_view subject_utf8) const;

 private:
  explicit JsRegex(std::wregex regex) : regex_(std::move(regex)) {}
  std::wregex regex_;
};

// Rewrites a JavaScript pattern into std::regex's ECMAScript dialect;
// std::nullopt when JavaScript rejects it or std::regex cannot express it.
// Exposed for tests.
std::optional<std::wstring> TranslateJsPattern(const std::wstring& pattern);

// UTF-8 to a wide string of code points (wchar_t is 32 bits on Linux).
std::wstring Utf8ToCodePoints(std::string_view utf8);

// String.prototype.toLowerCase by each code point's simple lower-case mapping
// (C.UTF-8); the few multi-character mappings (U+0130) are not applied.
std::string JsLowerCase(std::string_view utf8);

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_JS_REGEX_H_
