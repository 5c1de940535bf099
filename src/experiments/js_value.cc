#include "experiments/js_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <utility>
#include <vector>

#include "base/utf8.h"

namespace capstan::experiments {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Decodes one code point from UTF-8 at `i`, advancing `i`. Invalid sequences
// give U+FFFD and consume one byte.
char32_t DecodeUtf8(std::string_view s, size_t& i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) {
    ++i;
    return c;
  }
  int extra = 0;
  char32_t cp = 0;
  if ((c & 0xE0) == 0xC0) {
    extra = 1;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    extra = 2;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    extra = 3;
    cp = c & 0x07;
  } else {
    ++i;
    return 0xFFFD;
  }
  for (int k = 1; k <= extra; ++k) {
    if (i + k >= s.size() || (byte(i + k) & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  i += extra + 1;
  return cp;
}

bool IsJsWhitespace(char32_t c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

// Trims JavaScript white space and line terminators from both ends.
std::string_view TrimJsWhitespace(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t next = begin;
    if (!IsJsWhitespace(DecodeUtf8(s, next))) break;
    begin = next;
  }
  size_t end = begin;
  size_t last_non_space_end = begin;
  while (end < s.size()) {
    if (!IsJsWhitespace(DecodeUtf8(s, end))) last_non_space_end = end;
  }
  return s.substr(begin, last_non_space_end - begin);
}

double ParseRadixInteger(std::string_view digits, int radix) {
  if (digits.empty()) return kNaN;
  double value = 0;
  for (char c : digits) {
    int d = DigitValue(c);
    if (d < 0) return kNaN;
    if (d >= radix) return kNaN;
    value = value * radix + d;
  }
  return value;
}

// StringToNumber (ECMA-262 7.1.4.1.1).
double StringToNumber(std::string_view input) {
  std::string_view s = TrimJsWhitespace(input);
  if (s.empty()) return 0;
  if (s.size() > 2 && s[0] == '0') {
    char p = s[1];
    if (p == 'x' || p == 'X') return ParseRadixInteger(s.substr(2), 16);
    if (p == 'o' || p == 'O') return ParseRadixInteger(s.substr(2), 8);
    if (p == 'b' || p == 'B') return ParseRadixInteger(s.substr(2), 2);
  }
  size_t i = 0;
  bool negative = false;
  if (s[i] == '+' || s[i] == '-') {
    negative = s[i] == '-';
    ++i;
  }
  if (s.substr(i) == "Infinity") {
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  }
  // StrUnsignedDecimalLiteral: digits [. digits] [e [sign] digits], at least one
  // digit in the mantissa.
  size_t mantissa_digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++mantissa_digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++mantissa_digits;
  }
  if (mantissa_digits == 0) return kNaN;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exponent_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exponent_digits;
    if (exponent_digits == 0) return kNaN;
  }
  if (i != s.size()) return kNaN;
  std::string copy(s);
  return std::strtod(copy.c_str(), nullptr);
}

bool IsArrayIndexKey(const std::string& key, uint64_t* index) {
  if (key.empty() || key.size() > 10) return false;
  if (key.size() > 1 && key[0] == '0') return false;
  uint64_t value = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value >= 4294967295ULL) return false;  // 2^32 - 1 is not an array index
  *index = value;
  return true;
}

void StringifyInto(const Json& value, std::string* out);

void StringifyString(const std::string& s, std::string* out) {
  // nlohmann's escaping is JSON.stringify's for well-formed strings: quotes,
  // backslashes and control characters escaped, everything else kept.
  out->append(Json(s).dump());
}

void StringifyInto(const Json& value, std::string* out) {
  switch (value.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded:
      out->append("null");
      return;
    case Json::value_t::boolean:
      out->append(value.get<bool>() ? "true" : "false");
      return;
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: {
      double d = value.get<double>();
      out->append(std::isfinite(d) ? JsNumberToString(d) : "null");
      return;
    }
    case Json::value_t::string:
      StringifyString(value.get_ref<const std::string&>(), out);
      return;
    case Json::value_t::binary:
      out->append("null");
      return;
    case Json::value_t::array: {
      out->push_back('[');
      bool first = true;
      for (const Json& element : value) {
        if (!first) out->push_back(',');
        first = false;
        StringifyInto(element, out);
      }
      out->push_back(']');
      return;
    }
    case Json::value_t::object: {
      // JavaScript orders integer-like keys first, ascending.
      std::vector<std::pair<uint64_t, const std::string*>> index_keys;
      std::vector<const std::string*> other_keys;
      for (auto it = value.begin(); it != value.end(); ++it) {
        uint64_t index;
        if (IsArrayIndexKey(it.key(), &index)) {
          index_keys.emplace_back(index, &it.key());
        } else {
          other_keys.push_back(&it.key());
        }
      }
      std::sort(index_keys.begin(), index_keys.end());
      out->push_back('{');
      bool first = true;
      auto emit = [&](const std::string& key) {
        if (!first) out->push_back(',');
        first = false;
        StringifyString(key, out);
        out->push_back(':');
        StringifyInto(value.at(key), out);
      };
      for (const auto& [index, key] : index_keys) emit(*key);
      for (const std::string* key : other_keys) emit(*key);
      out->push_back('}');
      return;
    }
  }
}

// ToPrimitive for JSON values: arrays and objects become their String().
// Returns true and sets *str when the primitive is a string; else sets *num.
bool ToPrimitiveForCompare(const Json* v, std::string* str, double* num) {
  if (v == nullptr) {
    *num = kNaN;
    return false;
  }
  switch (v->type()) {
    case Json::value_t::string:
      *str = v->get<std::string>();
      return true;
    case Json::value_t::array:
    case Json::value_t::object:
      *str = JsToString(*v);
      return true;
    default:
      *num = JsToNumber(*v);
      return false;
  }
}

// Abstract Relational Comparison x < y: true, false, or undefined (nullopt).
std::optional<bool> RelationalLess(const Json* x, const Json* y) {
  std::string xs, ys;
  double xn = 0, yn = 0;
  bool x_is_string = ToPrimitiveForCompare(x, &xs, &xn);
  bool y_is_string = ToPrimitiveForCompare(y, &ys, &yn);
  if (x_is_string && y_is_string) return CompareUtf16(xs, ys) < 0;
  if (x_is_string) xn = StringToNumber(xs);
  if (y_is_string) yn = StringToNumber(ys);
  if (std::isnan(xn) || std::isnan(yn)) return std::nullopt;
  return xn < yn;
}

}  // namespace

int DigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
  return -1;
}

std::u16string Utf8ToUtf16(std::string_view utf8) {
  std::u16string out;
  out.reserve(utf8.size());
  size_t i = 0;
  while (i < utf8.size()) {
    char32_t cp = DecodeUtf8(utf8, i);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
  }
  return out;
}

std::string JsNumberToString(double number) {
  if (std::isnan(number)) return "NaN";
  if (number == 0) return "0";
  if (std::isinf(number)) return number > 0 ? "Infinity" : "-Infinity";
  std::string sign;
  if (number < 0) {
    sign = "-";
    number = -number;
  }
  // Shortest round-trip digits in scientific form: d[.ddd]e±x.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), number, std::chars_format::scientific);
  std::string_view sci(buf, res.ptr - buf);
  size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos)) {
    if (c != '.') digits.push_back(c);
  }
  int exponent = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());
  const int k = static_cast<int>(digits.size());
  const int n = exponent + 1;  // value = 0.digits * 10^n
  std::string out = sign;
  if (k <= n && n <= 21) {
    out += digits;
    out.append(n - k, '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, n);
    out += '.';
    out += digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(-n, '0');
    out += digits;
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += 'e';
    out += (n - 1 >= 0) ? '+' : '-';
    out += std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string JsToString(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded:
      return "null";
    case Json::value_t::boolean:
      return value.get<bool>() ? "true" : "false";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return JsNumberToString(value.get<double>());
    case Json::value_t::string:
      return value.get<std::string>();
    case Json::value_t::array: {
      // Array.prototype.join: null (and undefined) elements are empty.
      std::string out;
      bool first = true;
      for (const Json& element : value) {
        if (!first) out.push_back(',');
        first = false;
        if (!element.is_null()) out += JsToString(element);
      }
      return out;
    }
    case Json::value_t::object:
    case Json::value_t::binary:
      return "[object Object]";
  }
  return "";
}

std::string JsToString(const Json* value) {
  return value == nullptr ? "undefined" : JsToString(*value);
}

double JsToNumber(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return 0;
    case Json::value_t::boolean:
      return value.get<bool>() ? 1 : 0;
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return value.get<double>();
    case Json::value_t::string:
      return StringToNumber(value.get_ref<const std::string&>());
    case Json::value_t::array:
      return StringToNumber(JsToString(value));
    default:
      return kNaN;
  }
}

double JsToNumber(const Json* value) { return value == nullptr ? kNaN : JsToNumber(*value); }

bool JsTruthy(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded:
      return false;
    case Json::value_t::boolean:
      return value.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: {
      double d = value.get<double>();
      return d != 0 && !std::isnan(d);
    }
    case Json::value_t::string:
      return !value.get_ref<const std::string&>().empty();
    default:
      return true;
  }
}

bool JsTruthy(const Json* value) { return value != nullptr && JsTruthy(*value); }

bool JsStrictEquals(const Json* a, const Json* b) {
  if (a == nullptr || b == nullptr) return a == b;
  if (a->is_number() && b->is_number()) return a->get<double>() == b->get<double>();
  if (a->type() != b->type()) return false;
  switch (a->type()) {
    case Json::value_t::null:
      return true;
    case Json::value_t::boolean:
      return a->get<bool>() == b->get<bool>();
    case Json::value_t::string:
      return a->get_ref<const std::string&>() == b->get_ref<const std::string&>();
    default:
      return false;  // distinct objects
  }
}

bool JsLessThan(const Json* a, const Json* b) { return RelationalLess(a, b).value_or(false); }

bool JsLessOrEqual(const Json* a, const Json* b) {
  std::optional<bool> r = RelationalLess(b, a);
  return r.has_value() && !*r;
}

bool JsGreaterThan(const Json* a, const Json* b) { return RelationalLess(b, a).value_or(false); }

bool JsGreaterOrEqual(const Json* a, const Json* b) {
  std::optional<bool> r = RelationalLess(a, b);
  return r.has_value() && !*r;
}

int CompareUtf16(std::string_view a, std::string_view b) {
  // Fast path: UTF-8 byte order equals code point order, which equals UTF-16
  // order unless a supplementary character meets one in U+E000..U+FFFF.
  bool ascii = true;
  for (char c : a) ascii &= static_cast<unsigned char>(c) < 0x80;
  for (char c : b) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) {
    int c = a.compare(b);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  std::u16string ua = Utf8ToUtf16(a), ub = Utf8ToUtf16(b);
  int c = ua.compare(ub);
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

std::optional<std::string> JsonStringify(const Json* value) {
  if (value == nullptr) return std::nullopt;
  return JsonStringify(*value);
}

std::string JsonStringify(const Json& value) {
  std::string out;
  StringifyInto(value, &out);
  return out;
}

std::string AsciiLowerCase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace capstan::experiments
