#include "experiments/bucketing.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include "experiments/js_value.h"

namespace capstan::experiments {
namespace {

// Leading characters parseInt skips: ASCII white space and line terminators
// plus the Unicode spaces JavaScript's StrWhiteSpaceChar lists.
size_t SkipLeadingWhitespace(std::string_view s) {
  static const std::string_view kMultiByteSpaces[] = {
      "\xC2\xA0",     "\xE1\x9A\x80", "\xE2\x80\x80", "\xE2\x80\x81", "\xE2\x80\x82",
      "\xE2\x80\x83", "\xE2\x80\x84", "\xE2\x80\x85", "\xE2\x80\x86", "\xE2\x80\x87",
      "\xE2\x80\x88", "\xE2\x80\x89", "\xE2\x80\x8A", "\xE2\x80\xA8", "\xE2\x80\xA9",
      "\xE2\x80\xAF", "\xE2\x81\x9F", "\xE3\x80\x80", "\xEF\xBB\xBF"};
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') {
      ++i;
      continue;
    }
    bool matched = false;
    for (std::string_view space : kMultiByteSpaces) {
      if (s.substr(i, space.size()) == space) {
        i += space.size();
        matched = true;
        break;
      }
    }
    if (!matched) break;
  }
  return i;
}

}  // namespace

namespace {

constexpr uint32_t kFnvOffsetBasis = 0x811c9dc5u;

// Continues an FNV-1a state over the UTF-16 code units of `utf8`. FNV streams,
// so hashing a + b is continuing a's state over b: no concatenation needed.
uint32_t FnvContinue(uint32_t hval, std::string_view utf8) {
  bool ascii = true;
  for (char c : utf8) ascii &= static_cast<unsigned char>(c) < 0x80;
  auto step = [&hval](uint32_t unit) {
    hval ^= unit;
    // The SDK's shift-and-add sum is this multiplication modulo 2^32.
    hval *= 16777619u;
  };
  if (ascii) {
    for (char c : utf8) step(static_cast<unsigned char>(c));  // a byte is a code unit
  } else {
    for (char16_t unit : Utf8ToUtf16(utf8)) step(unit);
  }
  return hval;
}

}  // namespace

uint32_t Fnv1a32Utf16(std::string_view utf8) { return FnvContinue(kFnvOffsetBasis, utf8); }

std::optional<double> Hash(std::string_view seed, std::string_view value, int version) {
  if (version == 2) {
    uint32_t first = FnvContinue(FnvContinue(kFnvOffsetBasis, seed), value);
    char digits[16];
    auto end = std::to_chars(digits, digits + sizeof(digits), first).ptr;
    return static_cast<double>(Fnv1a32Utf16(std::string_view(digits, end - digits)) % 10000) /
           10000;
  }
  if (version == 1) {
    return static_cast<double>(FnvContinue(FnvContinue(kFnvOffsetBasis, value), seed) % 1000) /
           1000;
  }
  return std::nullopt;
}

std::optional<double> HashJsValues(const Json* seed, const Json& value, int version) {
  if (version != 1 && version != 2) return std::nullopt;
  // ToPrimitive gives a string for strings, arrays and objects.
  auto stringish = [](const Json* v) {
    return v != nullptr && (v->is_string() || v->is_array() || v->is_object());
  };
  if (!stringish(seed) && !stringish(&value)) {
    // Numeric addition: the sum is a number and hashes as kFnvOfNonString.
    if (version == 2) {
      return static_cast<double>(Fnv1a32Utf16(std::to_string(kFnvOfNonString)) % 10000) / 10000;
    }
    return static_cast<double>(kFnvOfNonString % 1000) / 1000;
  }
  if (seed != nullptr && seed->is_string() && value.is_string()) {
    return Hash(seed->get_ref<const std::string&>(), value.get_ref<const std::string&>(), version);
  }
  return Hash(JsToString(seed), JsToString(value), version);
}

std::vector<double> GetEqualWeights(int num_variations) {
  if (num_variations <= 0) return {};
  return std::vector<double>(num_variations, 1.0 / num_variations);
}

std::vector<VariationRange> GetBucketRanges(int num_variations, double coverage,
                                            const std::vector<double>* weights) {
  if (coverage < 0) {
    coverage = 0;
  } else if (coverage > 1) {
    coverage = 1;
  }
  std::vector<double> equal = GetEqualWeights(num_variations);
  const std::vector<double>* chosen = weights != nullptr ? weights : &equal;
  if (static_cast<int>(chosen->size()) != num_variations) chosen = &equal;
  double total = 0;
  for (double w : *chosen) total = w + total;
  if (total < 0.99 || total > 1.01) chosen = &equal;

  std::vector<VariationRange> ranges;
  ranges.reserve(chosen->size());
  double cumulative = 0;
  for (double w : *chosen) {
    double start = cumulative;
    cumulative += w;
    ranges.emplace_back(start, start + coverage * w);
  }
  return ranges;
}

int ChooseVariation(double n, const std::vector<VariationRange>& ranges) {
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (InRange(n, ranges[i])) return static_cast<int>(i);
  }
  return -1;
}

bool InNamespace(std::string_view hash_value, std::string_view name, double start, double end) {
  std::string seed = "__";
  seed.append(name);
  std::optional<double> n = Hash(seed, hash_value, 1);
  if (!n.has_value()) return false;
  return *n >= start && *n < end;
}

double JsParseInt(std::string_view input) {
  std::string_view s = input.substr(SkipLeadingWhitespace(input));
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  int radix = 10;
  if (s.size() >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    radix = 16;
    s.remove_prefix(2);
  }
  double value = 0;
  size_t digits = 0;
  for (char c : s) {
    int d = DigitValue(c);
    if (d < 0) break;
    if (d >= radix) break;
    value = value * radix + d;
    ++digits;
  }
  if (digits == 0) return std::numeric_limits<double>::quiet_NaN();
  return negative ? -value : value;
}

std::optional<int> GetQueryStringOverride(std::string_view id, std::string_view url,
                                          int num_variations) {
  if (url.empty()) return std::nullopt;
  // url.split("?")[1]: the text between the first and second '?'.
  size_t q = url.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view search = url.substr(q + 1);
  search = search.substr(0, search.find('?'));
  if (search.empty()) return std::nullopt;
  // replace(/#.*/, ""): from the first '#' up to a line terminator.
  std::string cleaned(search);
  size_t hash_pos = cleaned.find('#');
  if (hash_pos != std::string::npos) {
    size_t end = cleaned.find_first_of("\r\n", hash_pos);
    cleaned.erase(hash_pos, end == std::string::npos ? std::string::npos : end - hash_pos);
  }
  std::string_view rest = cleaned;
  while (true) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    if (key == id) {
      // Only the first pair with this key counts. kv.split("=", 2)[1] is the
      // text up to a second '='; without '=' it is undefined (parseInt: NaN).
      if (eq == std::string_view::npos) return std::nullopt;
      std::string_view value = pair.substr(eq + 1);
      value = value.substr(0, value.find('='));
      double v = JsParseInt(value);
      if (v >= 0 && v < num_variations) return static_cast<int>(v);
      return std::nullopt;
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

}  // namespace capstan::experiments
