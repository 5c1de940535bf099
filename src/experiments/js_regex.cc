#include "experiments/js_regex.h"

#include <cwctype>
#include <locale>
#include <vector>

#include "base/utf8.h"
#include "experiments/js_value.h"

namespace capstan::experiments {
namespace {

// The locale whose wide ctype gives Unicode case mappings; the classic one
// (ASCII only) if no UTF-8 locale exists.
const std::locale& CaseLocale() {
  static const std::locale locale = [] {
    for (const char* name : {"C.UTF-8", "C.utf8", "en_US.UTF-8"}) {
      try {
        return std::locale(name);
      } catch (const std::runtime_error&) {
      }
    }
    return std::locale::classic();
  }();
  return locale;
}

bool IsDigit(wchar_t c) { return c >= L'0' && c <= L'9'; }
bool IsOctal(wchar_t c) { return c >= L'0' && c <= L'7'; }
bool IsHex(wchar_t c) { return IsDigit(c) || (c >= L'a' && c <= L'f') || (c >= L'A' && c <= L'F'); }
bool IsAsciiLetter(wchar_t c) { return (c >= L'a' && c <= L'z') || (c >= L'A' && c <= L'Z'); }
bool IsSyntaxCharacter(wchar_t c) {
  return std::wstring_view(L"^$\\.*+?()[]{}|/").find(c) != std::wstring_view::npos;
}

std::wstring HexEscape(unsigned value) {
  static const wchar_t kDigits[] = L"0123456789ABCDEF";
  if (value <= 0xFF) return {L'\\', L'x', kDigits[value >> 4], kDigits[value & 0xF]};
  return {L'\\',
          L'u',
          kDigits[(value >> 12) & 0xF],
          kDigits[(value >> 8) & 0xF],
          kDigits[(value >> 4) & 0xF],
          kDigits[value & 0xF]};
}

// A literal character in std::regex syntax, inside or outside a class.
std::wstring Literal(wchar_t c, bool in_class) {
  if (in_class) {
    if (c == L'\\' || c == L']' || c == L'[' || c == L'^' || c == L'-') return {L'\\', c};
    return {c};
  }
  if (c == L'/' || c == L'-') return {c};
  if (IsSyntaxCharacter(c)) return {L'\\', c};
  return {c};
}

enum class AtomKind { kCharacter, kClassEscape, kAssertion, kBackreference };

struct Translator {
  const std::wstring& p;
  std::vector<std::wstring> group_names;  // per capture group; empty if unnamed
  bool has_named_groups = false;
  std::wstring out;
  unsigned backreference = 0;       // set by Escape for a kBackreference
  std::vector<bool> closed_groups;  // per capture group, during Run
  std::vector<int> open_groups;     // capture number, or 0, per open '('
  unsigned groups_seen = 0;

  explicit Translator(const std::wstring& pattern) : p(pattern) {}

  // Numbers the capture groups and records their names (first pass).
  void CollectGroups() {
    bool in_class = false;
    for (size_t i = 0; i < p.size(); ++i) {
      wchar_t c = p[i];
      if (c == L'\\') {
        ++i;
      } else if (in_class) {
        if (c == L']') in_class = false;
      } else if (c == L'[') {
        in_class = true;
      } else if (c == L'(') {
        if (i + 1 < p.size() && p[i + 1] == L'?') {
          if (i + 2 < p.size() && p[i + 2] == L'<' && i + 3 < p.size() && p[i + 3] != L'=' &&
              p[i + 3] != L'!') {
            size_t end = p.find(L'>', i + 3);
            group_names.push_back(end == std::wstring::npos ? L"" : p.substr(i + 3, end - i - 3));
            has_named_groups = true;
          }
        } else {
          group_names.emplace_back();
        }
      }
    }
  }

  // Legacy octal escape (Annex B): up to three octal digits, value <= 0377.
  size_t OctalEscape(size_t i, std::wstring* text) {
    unsigned value = 0;
    size_t j = i;
    while (j < p.size() && j - i < 3 && IsOctal(p[j]) && value * 8 + (p[j] - L'0') <= 0377) {
      value = value * 8 + (p[j] - L'0');
      ++j;
    }
    *text = HexEscape(value);
    return j;
  }

  // Translates the escape whose backslash is at p[i]. Returns the index after
  // it, or npos when JavaScript rejects it.
  size_t Escape(size_t i, bool in_class, std::wstring* text, AtomKind* kind) {
    *kind = AtomKind::kCharacter;
    if (i + 1 >= p.size()) return std::wstring::npos;  // "\ at end of pattern"
    wchar_t c = p[i + 1];
    switch (c) {
      case L'd':
      case L'D':
      case L'w':
      case L'W':
      case L's':
      case L'S': {
        // Spelled out, because std::regex asks the locale, and JavaScript's
        // \d and \w are ASCII while its \s has a fixed Unicode list.
        *kind = AtomKind::kClassEscape;
        static const std::wstring kDigit = L"0-9";
        static const std::wstring kWord = L"A-Za-z0-9_";
        static const std::wstring kSpace =
            L"\\t\\n\\v\\f\\r "
            L"\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000\\uFEFF";
        const std::wstring& set = (c == L'd' || c == L'D')   ? kDigit
                                  : (c == L'w' || c == L'W') ? kWord
                                                             : kSpace;
        bool negated = c == L'D' || c == L'W' || c == L'S';
        if (!in_class) {
          *text = (negated ? L"[^" : L"[") + set + L"]";
        } else if (!negated) {
          *text = set;
        } else {
          *text = {L'\\', c};  // a negated set inside a class: left to std::regex
        }
        return i + 2;
      }
      case L'b':
        if (in_class) {
          *text = HexEscape(8);  // backspace
        } else {
          *kind = AtomKind::kAssertion;
          *text = L"\\b";
        }
        return i + 2;
      case L'B':
        if (in_class) {
          *text = Literal(L'B', true);
        } else {
          *kind = AtomKind::kAssertion;
          *text = L"\\B";
        }
        return i + 2;
      case L'f':
      case L'n':
      case L'r':
      case L't':
      case L'v':
        *text = {L'\\', c};
        return i + 2;
      case L'c': {
        wchar_t letter = i + 2 < p.size() ? p[i + 2] : 0;
        if (IsAsciiLetter(letter) || (in_class && (IsDigit(letter) || letter == L'_'))) {
          *text = HexEscape(static_cast<unsigned>(letter) % 32);
          return i + 3;
        }
        *text = L"\\\\";  // a literal backslash; the 'c' follows as itself
        return i + 1;
      }
      case L'x':
        if (i + 3 < p.size() && IsHex(p[i + 2]) && IsHex(p[i + 3])) {
          *text = p.substr(i, 4);
          return i + 4;
        }
        *text = Literal(L'x', in_class);
        return i + 2;
      case L'u':
        if (i + 5 < p.size() && IsHex(p[i + 2]) && IsHex(p[i + 3]) && IsHex(p[i + 4]) &&
            IsHex(p[i + 5])) {
          *text = p.substr(i, 6);
          return i + 6;
        }
        *text = Literal(L'u', in_class);
        return i + 2;
      case L'k': {
        if (!has_named_groups) {
          *text = Literal(L'k', in_class);
          return i + 2;
        }
        if (in_class || i + 2 >= p.size() || p[i + 2] != L'<') return std::wstring::npos;
        size_t end = p.find(L'>', i + 3);
        if (end == std::wstring::npos) return std::wstring::npos;
        std::wstring name = p.substr(i + 3, end - i - 3);
        for (size_t g = 0; g < group_names.size(); ++g) {
          if (group_names[g] == name) {
            *kind = AtomKind::kBackreference;
            backreference = static_cast<unsigned>(g + 1);
            *text = L"\\" + std::to_wstring(g + 1);
            return end + 1;
          }
        }
        return std::wstring::npos;
      }
      case L'0':
        if (i + 2 < p.size() && IsDigit(p[i + 2])) return OctalEscape(i + 1, text);
        *text = HexEscape(0);
        return i + 2;
      default:
        break;
    }
    if (IsDigit(c)) {
      size_t j = i + 1;
      unsigned number = 0;
      while (j < p.size() && IsDigit(p[j]) && number < 100000)
        number = number * 10 + (p[j++] - L'0');
      if (!in_class && number <= group_names.size()) {
        *kind = AtomKind::kBackreference;
        backreference = number;
        *text = L"\\" + std::to_wstring(number);
        return j;
      }
      // Annex B: not a backreference, so an octal escape, or \8 and \9 as themselves.
      if (IsOctal(c)) return OctalEscape(i + 1, text);
      *text = Literal(c, in_class);
      return i + 2;
    }
    // Identity escape: the character itself.
    *text = Literal(c, in_class);
    return i + 2;
  }

  // Parses `{n}`, `{n,}` or `{n,m}` at p[i]; returns the index after it, or
  // npos when it is not a quantifier (then `{` is a literal).
  size_t BraceQuantifier(size_t i, unsigned long* min, unsigned long* max) const {
    size_t j = i + 1;
    size_t start = j;
    while (j < p.size() && IsDigit(p[j])) ++j;
    if (j == start || j >= p.size()) return std::wstring::npos;
    *min = std::stoul(std::wstring(p.substr(start, std::min<size_t>(j - start, 9))));
    *max = *min;
    if (p[j] == L'}') return j + 1;
    if (p[j] != L',') return std::wstring::npos;
    ++j;
    start = j;
    while (j < p.size() && IsDigit(p[j])) ++j;
    if (j >= p.size() || p[j] != L'}') return std::wstring::npos;
    *max = j == start ? static_cast<unsigned long>(-1)
                      : std::stoul(std::wstring(p.substr(start, std::min<size_t>(j - start, 9))));
    return j + 1;
  }

  // Translates the class whose '[' is at p[i]; returns the index after it.
  size_t Class(size_t i) {
    if (p.compare(i, 2, L"[]") == 0) {
      out += L"(?!)";  // matches nothing
      return i + 2;
    }
    if (p.compare(i, 3, L"[^]") == 0) {
      out += L"[\\s\\S]";  // matches anything
      return i + 3;
    }
    out += L'[';
    size_t j = i + 1;
    if (j < p.size() && p[j] == L'^') {
      out += L'^';
      ++j;
    }
    bool first = true;
    AtomKind previous = AtomKind::kCharacter;
    while (j < p.size() && p[j] != L']') {
      wchar_t c = p[j];
      if (c == L'\\') {
        std::wstring text;
        AtomKind kind;
        size_t next = Escape(j, /*in_class=*/true, &text, &kind);
        if (next == std::wstring::npos) return next;
        out += text;
        previous = kind;
        j = next;
      } else if (c == L'-' && !first && j + 1 < p.size() && p[j + 1] != L']') {
        // A range, unless a class escape stands on either side (Annex B).
        bool next_is_class_escape =
            p[j + 1] == L'\\' && j + 2 < p.size() &&
            std::wstring_view(L"dDwWsS").find(p[j + 2]) != std::wstring_view::npos;
        out += (previous == AtomKind::kClassEscape || next_is_class_escape) ? L"\\-" : L"-";
        previous = AtomKind::kCharacter;
        ++j;
      } else {
        out += Literal(c, /*in_class=*/true);
        previous = AtomKind::kCharacter;
        ++j;
      }
      first = false;
    }
    if (j >= p.size()) return std::wstring::npos;  // unterminated class
    out += L']';
    return j + 1;
  }

  bool Run() {
    CollectGroups();
    closed_groups.assign(group_names.size(), false);
    bool can_quantify = false;      // the previous token is an atom
    bool after_quantifier = false;  // the previous token is a quantifier
    bool lazy_applied = false;
    size_t i = 0;
    auto atom = [&] {
      can_quantify = true;
      after_quantifier = false;
    };
    auto quantifier = [&]() -> bool {
      if (!can_quantify || after_quantifier) return false;  // "Nothing to repeat"
      can_quantify = false;
      after_quantifier = true;
      lazy_applied = false;
      return true;
    };
    while (i < p.size()) {
      wchar_t c = p[i];
      switch (c) {
        case L'\\': {
          std::wstring text;
          AtomKind kind;
          size_t next = Escape(i, /*in_class=*/false, &text, &kind);
          if (next == std::wstring::npos) return false;
          // A reference to a group that has not closed yet matches the empty
          // string in JavaScript; std::regex rejects or fails it.
          if (kind == AtomKind::kBackreference && !closed_groups[backreference - 1]) {
            text = L"(?:)";
          }
          out += text;
          if (kind == AtomKind::kAssertion) {
            can_quantify = after_quantifier = false;
          } else {
            atom();
          }
          i = next;
          break;
        }
        case L'[': {
          size_t next = Class(i);
          if (next == std::wstring::npos) return false;
          atom();
          i = next;
          break;
        }
        case L'(': {
          if (p.compare(i, 3, L"(?:") == 0 || p.compare(i, 3, L"(?=") == 0 ||
              p.compare(i, 3, L"(?!") == 0) {
            out += p.substr(i, 3);
            open_groups.push_back(0);
            i += 3;
          } else if (p.compare(i, 4, L"(?<=") == 0 || p.compare(i, 4, L"(?<!") == 0) {
            return false;  // lookbehind: std::regex has none
          } else if (p.compare(i, 3, L"(?<") == 0) {
            size_t end = p.find(L'>', i + 3);
            if (end == std::wstring::npos || end == i + 3) return false;
            out += L'(';
            open_groups.push_back(static_cast<int>(++groups_seen));
            i = end + 1;
          } else if (p.compare(i, 2, L"(?") == 0) {
            return false;  // "Invalid group"
          } else {
            out += L'(';
            open_groups.push_back(static_cast<int>(++groups_seen));
            ++i;
          }
          can_quantify = after_quantifier = false;
          break;
        }
        case L')':
          if (open_groups.empty()) return false;  // "Unmatched ')'"
          if (open_groups.back() > 0) closed_groups[open_groups.back() - 1] = true;
          open_groups.pop_back();
          out += L')';
          atom();
          ++i;
          break;
        case L'|':
        case L'^':
        case L'$':
          out += c;
          can_quantify = after_quantifier = false;
          ++i;
          break;
        case L'*':
        case L'+':
        case L'?':
          if (c == L'?' && after_quantifier && !lazy_applied) {
            lazy_applied = true;
          } else if (!quantifier()) {
            return false;
          }
          out += c;
          ++i;
          break;
        case L'{': {
          unsigned long min = 0, max = 0;
          size_t next = BraceQuantifier(i, &min, &max);
          if (next == std::wstring::npos) {
            out += L"\\{";
            atom();
            ++i;
            break;
          }
          if (min > max) return false;  // "numbers out of order"
          if (!quantifier()) return false;
          out += p.substr(i, next - i);
          i = next;
          break;
        }
        case L'}':
        case L']':
          out += std::wstring{L'\\', c};
          atom();
          ++i;
          break;
        case L'.':
          out += L'.';
          atom();
          ++i;
          break;
        default:
          out += Literal(c, /*in_class=*/false);
          atom();
          ++i;
          break;
      }
    }
    return true;
  }
};

}  // namespace

std::wstring Utf8ToCodePoints(std::string_view utf8) {
  std::wstring out;
  std::u16string units = Utf8ToUtf16(utf8);
  for (size_t i = 0; i < units.size(); ++i) {
    char32_t c = units[i];
    if (c >= 0xD800 && c < 0xDC00 && i + 1 < units.size() && units[i + 1] >= 0xDC00 &&
        units[i + 1] < 0xE000) {
      c = 0x10000 + ((c - 0xD800) << 10) + (units[i + 1] - 0xDC00);
      ++i;
    }
    out.push_back(static_cast<wchar_t>(c));
  }
  return out;
}

std::string JsLowerCase(std::string_view utf8) {
  bool ascii = true;
  for (char c : utf8) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) return AsciiLowerCase(utf8);
  const auto& ctype = std::use_facet<std::ctype<wchar_t>>(CaseLocale());
  std::string out;
  for (wchar_t c : Utf8ToCodePoints(utf8))
    utf8::Append(static_cast<char32_t>(ctype.tolower(c)), &out);
  return out;
}

std::optional<std::wstring> TranslateJsPattern(const std::wstring& pattern) {
  Translator translator(pattern);
  if (!translator.Run()) return std::nullopt;
  return std::move(translator.out);
}

std::unique_ptr<JsRegex> JsRegex::Compile(std::string_view pattern_utf8, bool ignore_case) {
  if (pattern_utf8.size() > kMaxPatternBytes) return nullptr;
  std::optional<std::wstring> translated = TranslateJsPattern(Utf8ToCodePoints(pattern_utf8));
  if (!translated.has_value()) return nullptr;
  try {
    std::wregex regex;
    // Non-ASCII letters (written or escaped) need the UTF-8 locale to fold;
    // other patterns keep the classic locale so \b stays ASCII, as in JavaScript.
    bool ascii_pattern = pattern_utf8.find("\\u") == std::string_view::npos &&
                         pattern_utf8.find("\\x") == std::string_view::npos;
    for (char c : pattern_utf8) ascii_pattern &= static_cast<unsigned char>(c) < 0x80;
    if (ignore_case && !ascii_pattern) regex.imbue(CaseLocale());
    auto flags = std::regex_constants::ECMAScript;
    if (ignore_case) flags |= std::regex_constants::icase;
    regex.assign(*translated, flags);
    return std::unique_ptr<JsRegex>(new JsRegex(std::move(regex)));
  } catch (const std::regex_error&) {
    return nullptr;
  }
}

bool JsRegex::Test(std::string_view subject_utf8) const {
  if (subject_utf8.size() > kMaxSubjectBytes) return false;
  std::wstring subject = Utf8ToCodePoints(subject_utf8);
  try {
    return std::regex_search(subject, regex_);
  } catch (const std::regex_error&) {
    return false;  // the matcher's complexity limit
  }
}

}  // namespace capstan::experiments
