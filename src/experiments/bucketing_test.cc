#include "experiments/bucketing.h"

#include <cmath>

#include "experiments/js_value.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

// Expected values printed by @growthbook/growthbook 1.7.0's util.hash.
TEST(HashTest, MatchesTheJavaScriptSdk) {
  EXPECT_EQ(Hash("", "a", 1), 0.22);
  EXPECT_EQ(Hash("", "b", 1), 0.077);
  EXPECT_EQ(Hash("b", "a", 1), 0.946);
  EXPECT_EQ(Hash("ef", "d", 1), 0.652);
  EXPECT_EQ(Hash("asdf", "8952klfjas09ujkasdf", 1), 0.335);
  EXPECT_EQ(Hash("seed", "a", 2), 0.0505);
  EXPECT_EQ(Hash("", "a", 2), 0.0216);
  EXPECT_EQ(Hash("b", "a", 2), 0.665);
  EXPECT_EQ(Hash("ef", "d", 2), 0.8601);
  EXPECT_EQ(Hash("asdf", "8952klfjas09ujkasdf", 2), 0.5491);
}

TEST(HashTest, HashesUtf16CodeUnitsNotUtf8Bytes) {
  EXPECT_EQ(Hash("", "\xE6\x97\xA5\xE6\x9C\xAC", 1), 0.396);  // 日本
  EXPECT_EQ(Hash("", "\xF0\x9F\x98\x80", 2), 0.4971);         // a surrogate pair
}

TEST(HashTest, UnknownVersionHasNoHash) {
  EXPECT_FALSE(Hash("x", "y", 3).has_value());
  EXPECT_FALSE(Hash("x", "y", 0).has_value());
}

// A filter without a seed hashes `undefined + 21`: numeric addition, so NaN,
// whose FNV covers no code units. Found by the differential test; values
// printed by the SDK.
TEST(HashTest, NonStringOperandsAddAsNumbers) {
  Json twenty_one = 21, twenty_one_string = "21", array = Json::parse("[1,2]"), five = 5;
  Json null_value = nullptr, true_value = true;
  EXPECT_EQ(HashJsValues(nullptr, twenty_one, 2), 0.2305);
  EXPECT_EQ(HashJsValues(nullptr, twenty_one, 1), 0.261);
  EXPECT_EQ(HashJsValues(nullptr, twenty_one_string, 2), 0.651);  // "undefined21"
  EXPECT_EQ(HashJsValues(&five, array, 1), 0.097);                // "1,25"
  EXPECT_EQ(HashJsValues(&null_value, true_value, 1), 0.261);     // null + true = 1
}

TEST(BucketRangesTest, CoverageKeepsEachStart) {
  auto ranges = GetBucketRanges(3, 0.7, nullptr);
  ASSERT_EQ(ranges.size(), 3u);
  std::vector<double> weights = {0.2, 0.3, 0.5};
  ranges = GetBucketRanges(3, 0.7, &weights);
  // Printed by the SDK: [[0,0.13999999999999999],[0.2,0.41000000000000003],[0.5,0.85]]
  EXPECT_EQ(ranges[0].second, 0.13999999999999999);
  EXPECT_EQ(ranges[1].first, 0.2);
  EXPECT_EQ(ranges[1].second, 0.41000000000000003);
  EXPECT_EQ(ranges[2].second, 0.85);
}

TEST(BucketRangesTest, InvalidWeightsAndCoverageAreCorrected) {
  std::vector<double> short_weights = {1.0};
  auto ranges = GetBucketRanges(2, 5, &short_weights);  // coverage clamped to 1
  EXPECT_EQ(ranges[0], VariationRange(0, 0.5));
  EXPECT_EQ(ranges[1], VariationRange(0.5, 1));
  std::vector<double> bad_sum = {0.5, 0.6};
  ranges = GetBucketRanges(2, -1, &bad_sum);  // coverage clamped to 0
  EXPECT_EQ(ranges[1], VariationRange(0.5, 0.5));
  std::vector<double> near_one = {0.4, 0.605};  // 1.005 is within 1 +- 0.01
  ranges = GetBucketRanges(2, 1, &near_one);
  EXPECT_EQ(ranges[1].first, 0.4);
  EXPECT_TRUE(GetBucketRanges(0, 1, nullptr).empty());
}

TEST(ChooseVariationTest, EndIsExclusive) {
  std::vector<VariationRange> ranges = {{0, 0.5}, {0.5, 1}};
  EXPECT_EQ(ChooseVariation(0.5, ranges), 1);
  EXPECT_EQ(ChooseVariation(1, ranges), -1);
  EXPECT_EQ(ChooseVariation(0, ranges), 0);
}

TEST(QueryStringOverrideTest, FollowsTheSdk) {
  EXPECT_EQ(GetQueryStringOverride("my-test", "http://a.com/?x=1&my-test=1#f", 2), 1);
  EXPECT_EQ(GetQueryStringOverride("my-test", "http://a.com/?my-test=2", 2), std::nullopt);
  EXPECT_EQ(GetQueryStringOverride("my-test", "http://a.com/?my-test=1.9x", 2), 1);
  EXPECT_EQ(GetQueryStringOverride("my-test", "http://a.com/?my-test", 2), std::nullopt);
  // Only the first pair with the key counts.
  EXPECT_EQ(GetQueryStringOverride("t", "/?t=9&t=1", 2), std::nullopt);
  // Only the text between the first and second '?' is searched.
  EXPECT_EQ(GetQueryStringOverride("t", "/?a=1?t=1", 2), std::nullopt);
  EXPECT_EQ(GetQueryStringOverride("t", "", 2), std::nullopt);
}

TEST(JsParseIntTest, ParsesALeadingInteger) {
  EXPECT_EQ(JsParseInt("  42abc"), 42);
  EXPECT_EQ(JsParseInt("-3"), -3);
  EXPECT_EQ(JsParseInt("0x10"), 16);
  EXPECT_TRUE(std::isnan(JsParseInt("abc")));
  EXPECT_TRUE(std::isnan(JsParseInt("")));
}

TEST(InNamespaceTest, UsesHashVersionOneWithPrefixedSeed) {
  double n = *Hash("__ns", "user", 1);
  EXPECT_TRUE(InNamespace("user", "ns", n, n + 0.001));
  EXPECT_FALSE(InNamespace("user", "ns", n + 0.001, 1));
}

}  // namespace
}  // namespace capstan::experiments
