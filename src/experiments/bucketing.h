// GrowthBook's deterministic assignment primitives (util.ts of the JavaScript
// SDK): the FNV-1a hash over UTF-16 code units, bucket ranges that keep their
// start as coverage grows, namespaces, and the query-string override.
//
// These are the numbers an assignment is made of; `evaluator.h` puts them
// together into feature and experiment evaluation.
//
// Thread-safety: pure functions.
//
// Example:
//   Hash("seed", "a", 2);                             // 0.0505
//   auto ranges = GetBucketRanges(2, 0.5, nullptr);   // [0,0.25) [0.5,0.75)
//   ChooseVariation(0.6, ranges);                     // 1
#ifndef CAPSTAN_EXPERIMENTS_BUCKETING_H_
#define CAPSTAN_EXPERIMENTS_BUCKETING_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace capstan::experiments {

using VariationRange = std::pair<double, double>;  // [start, end)

// 32-bit FNV-1a over the UTF-16 code units of a UTF-8 string (JavaScript's
// charCodeAt), offset basis 0x811c9dc5.
uint32_t Fnv1a32Utf16(std::string_view utf8);

// hash(seed, value, version) in [0, 1):
//   version 1: fnv(value + seed) % 1000 / 1000   (the SDK's original, biased)
//   version 2: fnv(String(fnv(seed + value))) % 10000 / 10000
// Any other version has no hash (std::nullopt).
std::optional<double> Hash(std::string_view seed, std::string_view value, int version);

// Fnv1a32Utf16 of a value that is not a string: the SDK reads `str.length`,
// which a number does not have, so no unit is hashed.
inline constexpr uint32_t kFnvOfNonString = 0x811c9dc5u;

// hash() as the SDK calls it with JavaScript values: `seed + value` (or
// `value + seed`) concatenates when either side is a string (arrays and
// objects become strings), and otherwise adds numbers, whose hash is
// kFnvOfNonString. `seed` may be null for undefined.
std::optional<double> HashJsValues(const nlohmann::ordered_json* seed,
                                   const nlohmann::ordered_json& value, int version);

// 1/n for each of n variations; empty when n <= 0.
std::vector<double> GetEqualWeights(int num_variations);

// getBucketRanges: coverage clamped to [0, 1]; `weights` replaced by equal
// weights when absent, of the wrong length, or not summing to 1 ± 0.01; each
// variation i gets [cum_i, cum_i + coverage * w_i). NaN coverage stays NaN
// (the SDK does not clamp it either), giving ranges nothing is in.
std::vector<VariationRange> GetBucketRanges(int num_variations, double coverage,
                                            const std::vector<double>* weights);

inline bool InRange(double n, const VariationRange& range) {
  return n >= range.first && n < range.second;
}

// The index of the first range containing n, or -1.
int ChooseVariation(double n, const std::vector<VariationRange>& ranges);

// inNamespace: hash("__" + name, hash_value, 1) in [start, end).
bool InNamespace(std::string_view hash_value, std::string_view name, double start, double end);

// getQueryStringOverride: the variation forced by `?<id>=<n>` in `url`, if n
// is an integer in [0, num_variations).
std::optional<int> GetQueryStringOverride(std::string_view id, std::string_view url,
                                          int num_variations);

// JavaScript's parseInt(s) (radix 10, or 16 after "0x"); NaN when no digits.
double JsParseInt(std::string_view s);

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_BUCKETING_H_
