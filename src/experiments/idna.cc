#include "experiments/idna.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <optional>

namespace capstan::experiments {
namespace {

constexpr char32_t kZeroWidthNonJoiner = 0x200C;
constexpr char32_t kZeroWidthJoiner = 0x200D;

// ICU's "uts46" normalizer: the UTS #46 mapping table (non-transitional:
// deviation characters kept) and NFC in one pass; disallowed and unassigned
// code points become U+FFFD, ignored ones vanish. Immutable, shared.
const UNormalizer2* Uts46Mapping() {
  static const UNormalizer2* const mapping = [] {
    UErrorCode error = U_ZERO_ERROR;
    const UNormalizer2* instance = unorm2_getInstance(nullptr, "uts46", UNORM2_COMPOSE, &error);
    return U_SUCCESS(error) ? instance : nullptr;
  }();
  return mapping;
}

// node's validity rules read Unicode 13 properties (its mapping table is
// Unicode 15, as ICU 72's): a character assigned later has no bidi class
// and is no combining mark or virama there.
bool AssignedBeforeUnicode14(char32_t c) {
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(c), age);
  return age[0] < 14 && u_charType(static_cast<UChar32>(c)) != U_UNASSIGNED;
}

bool IsCombiningMark(char32_t c) {
  return AssignedBeforeUnicode14(c) && (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_M_MASK) != 0;
}

bool IsVirama(char32_t c) {
  return AssignedBeforeUnicode14(c) && u_getCombiningClass(static_cast<UChar32>(c)) == 9;
}

// Bidi classes as node's rules see them; kNone for characters they have no
// class for.
enum class Bidi { kNone, kL, kR, kAL, kEN, kES, kET, kAN, kCS, kON, kBN, kNSM, kOther };

Bidi BidiClass(char32_t c) {
  if (!AssignedBeforeUnicode14(c)) return Bidi::kNone;
  if (c == 0x1734) return Bidi::kNSM;  // Hanunoo pamudpod: NSM until Unicode 14 made it L
  switch (u_charDirection(static_cast<UChar32>(c))) {
    case U_LEFT_TO_RIGHT:
      return Bidi::kL;
    case U_RIGHT_TO_LEFT:
      return Bidi::kR;
    case U_RIGHT_TO_LEFT_ARABIC:
      return Bidi::kAL;
    case U_EUROPEAN_NUMBER:
      return Bidi::kEN;
    case U_EUROPEAN_NUMBER_SEPARATOR:
      return Bidi::kES;
    case U_EUROPEAN_NUMBER_TERMINATOR:
      return Bidi::kET;
    case U_ARABIC_NUMBER:
      return Bidi::kAN;
    case U_COMMON_NUMBER_SEPARATOR:
      return Bidi::kCS;
    case U_OTHER_NEUTRAL:
      return Bidi::kON;
    case U_BOUNDARY_NEUTRAL:
      return Bidi::kBN;
    case U_DIR_NON_SPACING_MARK:
      return Bidi::kNSM;
    default:
      return Bidi::kOther;
  }
}

// The joining types node's ContextJ rule knows: the Arabic, Syriac, Mandaic,
// Mongolian and Phags-pa letters below. Unicode's ArabicShaping gives more
// (NKo, Adlam, later Arabic additions); node treats those as non-joining,
// so this is a table and not ICU's UCHAR_JOINING_TYPE.
struct CodePointRange {
  char32_t first, last;
};
constexpr CodePointRange kRightJoining[] = {
    {0x622, 0x625}, {0x627, 0x627}, {0x629, 0x629}, {0x62F, 0x632}, {0x648, 0x648}, {0x671, 0x673},
    {0x675, 0x677}, {0x688, 0x699}, {0x6C0, 0x6C0}, {0x6C3, 0x6CB}, {0x6CD, 0x6CD}, {0x6CF, 0x6CF},
    {0x6D2, 0x6D3}, {0x6D5, 0x6D5}, {0x6EE, 0x6EF}, {0x710, 0x710}, {0x715, 0x719}, {0x71E, 0x71E},
    {0x728, 0x728}, {0x72A, 0x72A}, {0x72C, 0x72C}, {0x72F, 0x72F}, {0x74D, 0x74D}, {0x759, 0x75B},
    {0x854, 0x854}, {0x8AA, 0x8AC}};
constexpr CodePointRange kDualJoining[] = {
    {0x620, 0x620},   {0x626, 0x626},   {0x628, 0x628},  {0x62A, 0x62E},   {0x633, 0x63F},
    {0x641, 0x647},   {0x649, 0x64A},   {0x66E, 0x66F},  {0x678, 0x687},   {0x69A, 0x6BF},
    {0x6C1, 0x6C2},   {0x6CC, 0x6CC},   {0x6CE, 0x6CE},  {0x6D0, 0x6D1},   {0x6FA, 0x6FC},
    {0x6FF, 0x6FF},   {0x712, 0x714},   {0x71A, 0x71D},  {0x71F, 0x727},   {0x729, 0x729},
    {0x72B, 0x72B},   {0x72D, 0x72E},   {0x74E, 0x758},  {0x75C, 0x766},   {0x850, 0x853},
    {0x855, 0x855},   {0x8A0, 0x8A0},   {0x8A2, 0x8A9},  {0x1807, 0x1807}, {0x1820, 0x1877},
    {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0xA840, 0xA871}};
constexpr char32_t kLeftJoining = 0xA872;

template <size_t N>
bool InRanges(const CodePointRange (&ranges)[N], char32_t c) {
  const CodePointRange* it = std::lower_bound(
      std::begin(ranges), std::end(ranges), c,
      [](const CodePointRange& range, char32_t point) { return range.last < point; });
  return it != std::end(ranges) && it->first <= c;
}

bool JoinsLeftward(char32_t c) { return c == kLeftJoining || InRanges(kDualJoining, c); }
bool JoinsRightward(char32_t c) { return InRanges(kRightJoining, c) || InRanges(kDualJoining, c); }

// UTS #46 section 4.1's label validity as node applies it (CheckHyphens off;
// NFC and the mapping are checked by the callers): no leading combining
// mark; ContextJ for the joiners (the first joiner decides the label); and
// the RFC 5893 bidi rule for labels with a right-to-left character (labels
// without one are not held to it even in a bidi domain name).
bool IsLabelValid(std::u32string_view label) {
  if (label.empty()) return true;
  if (IsCombiningMark(label.front())) return false;
  for (size_t i = 0; i < label.size(); ++i) {
    char32_t c = label[i];
    if (c != kZeroWidthNonJoiner && c != kZeroWidthJoiner) continue;
    if (i > 0 && IsVirama(label[i - 1])) return true;
    if (c == kZeroWidthJoiner || i + 1 >= label.size() || i == 0) return false;
    std::u32string_view before = label.substr(0, i), after = label.substr(i + 1);
    return std::any_of(before.begin(), before.end(), JoinsLeftward) &&
           std::any_of(after.begin(), after.end(), JoinsRightward);
  }
  size_t last = label.size();
  while (last > 0 && BidiClass(label[last - 1]) == Bidi::kNSM) --last;
  if (last == 0) return false;
  --last;  // the last character that is not a non-spacing mark
  bool right_to_left = std::any_of(label.begin(), label.end(), [](char32_t c) {
    Bidi bidi = BidiClass(c);
    return bidi == Bidi::kR || bidi == Bidi::kAL || bidi == Bidi::kAN;
  });
  if (!right_to_left) return true;
  auto neutral_or_number = [](Bidi b) {
    return b == Bidi::kEN || b == Bidi::kES || b == Bidi::kCS || b == Bidi::kET || b == Bidi::kON ||
           b == Bidi::kBN || b == Bidi::kNSM;
  };
  if (BidiClass(label.front()) == Bidi::kL) {
    // A left-to-right label: its characters before the last one L, a number
    // or neutral (node leaves the last one unchecked).
    for (size_t i = 0; i < last; ++i) {
      Bidi bidi = BidiClass(label[i]);
      if (bidi != Bidi::kL && !neutral_or_number(bidi)) return false;
    }
    return true;
  }
  bool european_digit = false, arabic_digit = false;
  for (size_t i = 0; i <= last; ++i) {
    Bidi bidi = BidiClass(label[i]);
    european_digit |= bidi == Bidi::kEN;
    arabic_digit |= bidi == Bidi::kAN;
    if (european_digit && arabic_digit) return false;
    bool right = bidi == Bidi::kR || bidi == Bidi::kAL || bidi == Bidi::kAN;
    if (!right && !neutral_or_number(bidi)) return false;
    if (i == last && !right && bidi != Bidi::kEN) return false;
  }
  return true;
}

// RFC 3492 (punycode) with its overflow limit 2^31 - 1.
constexpr int64_t kPunycodeMaxInt = 0x7FFFFFFF;
constexpr int64_t kBase = 36, kTmin = 1, kTmax = 26, kSkew = 38, kDamp = 700;

int64_t Adapt(int64_t delta, int64_t points, bool first) {
  delta = first ? delta / kDamp : delta / 2;
  delta += delta / points;
  int64_t k = 0;
  while (delta > ((kBase - kTmin) * kTmax) / 2) {
    delta /= kBase - kTmin;
    k += kBase;
  }
  return k + (kBase - kTmin + 1) * delta / (delta + kSkew);
}

int64_t Threshold(int64_t k, int64_t bias) {
  return k <= bias ? kTmin : (k >= bias + kTmax ? kTmax : k - bias);
}

// A label's code points (some above 0x7F) as punycode; nullopt on overflow.
std::optional<std::string> PunycodeEncode(std::u32string_view label) {
  auto digit = [](int64_t d) { return static_cast<char>(d < 26 ? 'a' + d : '0' + (d - 26)); };
  std::string out;
  for (char32_t c : label) {
    if (c < 0x80) out.push_back(static_cast<char>(c));
  }
  int64_t basic = static_cast<int64_t>(out.size()), handled = basic;
  if (basic > 0) out.push_back('-');
  int64_t n = 0x80, delta = 0, bias = 72;
  while (handled < static_cast<int64_t>(label.size())) {
    int64_t m = kPunycodeMaxInt;
    for (char32_t c : label) {
      if (c >= n && c < m) m = c;
    }
    if ((m - n) > (kPunycodeMaxInt - delta) / (handled + 1)) return std::nullopt;
    delta += (m - n) * (handled + 1);
    n = m;
    for (char32_t c : label) {
      if (c < n && ++delta > kPunycodeMaxInt) return std::nullopt;
      if (c != n) continue;
      int64_t q = delta;
      for (int64_t k = kBase;; k += kBase) {
        int64_t t = Threshold(k, bias);
        if (q < t) break;
        out.push_back(digit(t + (q - t) % (kBase - t)));
        q = (q - t) / (kBase - t);
      }
      out.push_back(digit(q));
      bias = Adapt(delta, handled + 1, handled == basic);
      delta = 0;
      ++handled;
    }
    ++delta;
    ++n;
  }
  return out;
}

// The code points a label's punycode (after "xn--", lower case) spells;
// nullopt when it is not valid punycode.
std::optional<std::u32string> PunycodeDecode(std::string_view in) {
  std::u32string out;
  size_t dash = in.rfind('-');
  if (dash != std::string_view::npos) {
    for (char c : in.substr(0, dash)) out.push_back(static_cast<unsigned char>(c));
    in.remove_prefix(dash + 1);
  }
  int64_t n = 0x80, i = 0, bias = 72;
  size_t pos = 0;
  while (pos < in.size()) {
    int64_t old_i = i, weight = 1;
    for (int64_t k = kBase;; k += kBase) {
      if (pos >= in.size()) return std::nullopt;
      char c = in[pos++];
      int64_t digit;
      if (c >= 'a' && c <= 'z') {
        digit = c - 'a';
      } else if (c >= '0' && c <= '9') {
        digit = c - '0' + 26;
      } else {
        return std::nullopt;
      }
      if (digit > (kPunycodeMaxInt - i) / weight) return std::nullopt;
      i += digit * weight;
      int64_t t = Threshold(k, bias);
      if (digit < t) break;
      if (weight > kPunycodeMaxInt / (kBase - t)) return std::nullopt;
      weight *= kBase - t;
    }
    auto points = static_cast<int64_t>(out.size()) + 1;
    bias = Adapt(i - old_i, points, old_i == 0);
    if (i / points > kPunycodeMaxInt - n) return std::nullopt;
    n += i / points;
    i %= points;
    if (n < 0x80) return std::nullopt;  // a basic code point may not be encoded
    out.insert(out.begin() + i, static_cast<char32_t>(n));
    ++i;
  }
  return out;
}

bool IsAscii(std::u32string_view s) {
  return std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0x80; });
}

std::optional<std::u16string> ToUtf16(std::u32string_view s) {
  std::u16string out;
  for (char32_t c : s) {
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return std::nullopt;
    if (c < 0x10000) {
      out.push_back(static_cast<char16_t>(c));
    } else {
      out.push_back(static_cast<char16_t>(U16_LEAD(c)));
      out.push_back(static_cast<char16_t>(U16_TRAIL(c)));
    }
  }
  return out;
}

std::u32string ToUtf32(std::u16string_view s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    UChar32 c;
    U16_NEXT(s.data(), i, s.size(), c);
    out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

// The UTS #46 mapping and NFC of UTF-16 text; nullopt if ICU fails.
std::optional<std::u16string> MapAndNormalize(std::u16string_view text) {
  const UNormalizer2* mapping = Uts46Mapping();
  if (mapping == nullptr || text.size() > INT32_MAX / 4) return std::nullopt;
  std::u16string out(text.size() * 3 + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    UErrorCode error = U_ZERO_ERROR;
    int32_t length = unorm2_normalize(
        mapping, reinterpret_cast<const UChar*>(text.data()), static_cast<int32_t>(text.size()),
        reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &error);
    if (error == U_BUFFER_OVERFLOW_ERROR) {
      out.resize(static_cast<size_t>(length));
      continue;
    }
    if (U_FAILURE(error)) return std::nullopt;
    out.resize(static_cast<size_t>(length));
    return out;
  }
  return std::nullopt;
}

// An "xn--" label's punycode (lower case, ASCII): valid when it decodes,
// to a non-empty label the mapping and NFC leave as it is, that is valid.
// (A label that decodes to ASCII only is accepted, as node does.)
IdnaResult::Status CheckAceLabel(std::string_view punycode) {
  std::optional<std::u32string> decoded = PunycodeDecode(punycode);
  if (!decoded.has_value() || decoded->empty()) return IdnaResult::kFailure;
  std::optional<std::u16string> utf16 = ToUtf16(*decoded);
  if (!utf16.has_value()) return IdnaResult::kFailure;  // a surrogate: disallowed
  std::optional<std::u16string> mapped = MapAndNormalize(*utf16);
  if (!mapped.has_value()) return IdnaResult::kUnsupported;
  // U+FFFD is disallowed, and ICU's table maps it (like every disallowed
  // code point) to itself.
  if (*mapped != *utf16 || mapped->find(u'\uFFFD') != std::u16string::npos ||
      !IsLabelValid(*decoded)) {
    return IdnaResult::kFailure;
  }
  return IdnaResult::kOk;
}

bool StartsWithAcePrefix(std::u32string_view label) {
  return label.size() >= 4 && label[0] == 'x' && label[1] == 'n' && label[2] == '-' &&
         label[3] == '-';
}

}  // namespace

IdnaResult DomainToAscii(std::string_view domain) {
  IdnaResult result;
  std::u32string mapped;
  bool ascii = std::all_of(domain.begin(), domain.end(),
                           [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) {
    // ASCII needs no mapping beyond lower case (no ASCII code point is
    // disallowed with UseSTD3ASCIIRules off); only "xn--" labels are checked.
    for (char c : domain)
      mapped.push_back(static_cast<char32_t>(c >= 'A' && c <= 'Z' ? c + 32 : c));
  } else {
    std::u16string utf16;
    if (domain.size() > INT32_MAX / 2) return result;
    utf16.resize(domain.size());
    int32_t length = 0;
    UErrorCode error = U_ZERO_ERROR;
    u_strFromUTF8(reinterpret_cast<UChar*>(utf16.data()), static_cast<int32_t>(utf16.size()),
                  &length, domain.data(), static_cast<int32_t>(domain.size()), &error);
    if (U_FAILURE(error)) return result;  // invalid UTF-8: U+FFFD, disallowed
    utf16.resize(static_cast<size_t>(length));
    std::optional<std::u16string> normalized = MapAndNormalize(utf16);
    if (!normalized.has_value()) {
      result.status = IdnaResult::kUnsupported;
      return result;
    }
    // ICU's table maps disallowed code points to U+FFFD (U+FFFD itself is
    // disallowed too).
    if (normalized->find(u'\uFFFD') != std::u16string::npos) return result;
    mapped = ToUtf32(*normalized);
  }
  std::string out;
  size_t start = 0;
  while (start <= mapped.size()) {
    size_t dot = mapped.find(U'.', start);
    size_t end = dot == std::u32string::npos ? mapped.size() : dot;
    std::u32string_view label(mapped.data() + start, end - start);
    if (StartsWithAcePrefix(label)) {
      if (!IsAscii(label)) return result;
      size_t label_start = out.size();
      for (char32_t c : label) out.push_back(static_cast<char>(c));
      IdnaResult::Status ace = CheckAceLabel(std::string_view(out).substr(label_start + 4));
      if (ace != IdnaResult::kOk) {
        result.status = ace;
        return result;
      }
    } else if (IsAscii(label)) {
      for (char32_t c : label) out.push_back(static_cast<char>(c));
    } else {
      if (!IsLabelValid(label)) return result;
      std::optional<std::string> punycode = PunycodeEncode(label);
      if (!punycode.has_value()) return result;
      out += "xn--" + *punycode;
    }
    if (dot == std::u32string::npos) break;
    out.push_back('.');
    start = dot + 1;
  }
  if (out.empty()) return result;
  result.status = IdnaResult::kOk;
  result.ascii = std::move(out);
  return result;
}

}  // namespace capstan::experiments
