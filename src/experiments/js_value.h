// JavaScript value semantics over JSON documents.
//
// GrowthBook's SDK is JavaScript, and its evaluation leans on the language's
// loose rules: `value + ""` string conversion, `value * 1` number conversion,
// truthiness, `<` between mixed types, `===`, and `JSON.stringify` equality.
// Matching the SDK exactly means reproducing those rules, which this header
// does for values that came from JSON (null, booleans, numbers, strings,
// arrays, objects). "undefined" (a missing key) is a null `const Json*`.
//
// Strings are UTF-8 here and UTF-16 in JavaScript; the functions that depend
// on code units (ordering, hashing) convert.
//
// Thread-safety: all functions are pure and may be called concurrently.
//
// Example:
//   Json a = 10, b = "9";
//   JsLessThan(&a, &b);        // false: "9" is converted to the number 9
//   JsToString(Json(1.5));     // "1.5"
//   JsonStringify(Json::parse(R"({"b":1,"1":2})"));  // {"1":2,"b":1}
#ifndef CAPSTAN_EXPERIMENTS_JS_VALUE_H_
#define CAPSTAN_EXPERIMENTS_JS_VALUE_H_

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"

namespace capstan::experiments {

// Thrown where JavaScript would throw a TypeError (reading a property of null,
// iterating a non-iterable). The SDK lets these escape from an evaluation, so
// an evaluation that throws one fails as a whole; public entry points catch it
// and return an error Status.
class JsTypeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Object keys keep their insertion order, as in JavaScript (JSON.stringify
// equality depends on it).
using Json = nlohmann::ordered_json;

// UTF-8 to UTF-16 code units. Invalid bytes become U+FFFD.
std::u16string Utf8ToUtf16(std::string_view utf8);
// `c` as a digit of a base up to 36 ('0'-'9', then 'a'-'z' or 'A'-'Z' for
// 10-35), or -1.
int DigitValue(char c);

// Number::toString(10): the shortest digits that round-trip, written the way
// ECMAScript's Number.prototype.toString writes them ("1e+21", "1e-7", "0.000001").
std::string JsNumberToString(double number);

// String(value). Arrays join their elements with ","; objects are "[object Object]".
std::string JsToString(const Json& value);
// As JsToString, with a missing value written "undefined".
std::string JsToString(const Json* value);

// Number(value), i.e. `value * 1`. Strings follow StringToNumber: whitespace
// trimmed, "" is 0, 0x/0o/0b prefixes, "Infinity"; anything else is NaN.
double JsToNumber(const Json& value);
double JsToNumber(const Json* value);  // undefined is NaN

// !!value.
bool JsTruthy(const Json& value);
bool JsTruthy(const Json* value);  // undefined is false

// a === b for values that are distinct JSON trees: arrays and objects are never
// identical to each other.
bool JsStrictEquals(const Json* a, const Json* b);

// a < b, a <= b, a > b, a >= b (Abstract Relational Comparison, with ToPrimitive
// turning arrays and objects into strings).
bool JsLessThan(const Json* a, const Json* b);
bool JsLessOrEqual(const Json* a, const Json* b);
bool JsGreaterThan(const Json* a, const Json* b);
bool JsGreaterOrEqual(const Json* a, const Json* b);

// Compares two strings by UTF-16 code units, as JavaScript's `<` on strings does.
int CompareUtf16(std::string_view a, std::string_view b);

// JSON.stringify(value): numbers as JsNumberToString, object keys in
// JavaScript's property order (array-index keys first, ascending, then the
// others in insertion order). A missing value gives std::nullopt (undefined).
std::optional<std::string> JsonStringify(const Json* value);
std::string JsonStringify(const Json& value);

// String.prototype.toLowerCase for ASCII text (other bytes are kept; see
// JsLowerCase in js_regex.h for the Unicode version).
std::string AsciiLowerCase(std::string_view s);

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_JS_VALUE_H_
