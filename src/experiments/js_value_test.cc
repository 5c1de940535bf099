#include "experiments/js_value.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

TEST(JsNumberToStringTest, WritesNumbersAsJavaScriptDoes) {
  EXPECT_EQ(JsNumberToString(0), "0");
  EXPECT_EQ(JsNumberToString(-0.0), "0");
  EXPECT_EQ(JsNumberToString(1), "1");
  EXPECT_EQ(JsNumberToString(1.5), "1.5");
  EXPECT_EQ(JsNumberToString(-2.25), "-2.25");
  EXPECT_EQ(JsNumberToString(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(JsNumberToString(123456789012345680000.0), "123456789012345680000");
  EXPECT_EQ(JsNumberToString(1e21), "1e+21");
  EXPECT_EQ(JsNumberToString(1.5e22), "1.5e+22");
  EXPECT_EQ(JsNumberToString(0.000001), "0.000001");
  EXPECT_EQ(JsNumberToString(1e-7), "1e-7");
  EXPECT_EQ(JsNumberToString(1.25e-7), "1.25e-7");
  EXPECT_EQ(JsNumberToString(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(JsNumberToString(-std::numeric_limits<double>::infinity()), "-Infinity");
}

TEST(JsToStringTest, ConvertsLikeStringConstructor) {
  EXPECT_EQ(JsToString(Json(nullptr)), "null");
  EXPECT_EQ(JsToString(nullptr), "undefined");
  EXPECT_EQ(JsToString(Json(true)), "true");
  EXPECT_EQ(JsToString(Json::parse("[1,null,[2,3],\"a\"]")), "1,,2,3,a");
  EXPECT_EQ(JsToString(Json::parse("{\"a\":1}")), "[object Object]");
  EXPECT_EQ(JsToString(Json::parse("1.0")), "1");
}

TEST(JsToNumberTest, ConvertsLikeMultiplyingByOne) {
  EXPECT_EQ(JsToNumber(Json(nullptr)), 0);
  EXPECT_EQ(JsToNumber(Json("")), 0);
  EXPECT_EQ(JsToNumber(Json("  12  ")), 12);
  EXPECT_EQ(JsToNumber(Json("0x1A")), 26);
  EXPECT_EQ(JsToNumber(Json("1e3")), 1000);
  EXPECT_EQ(JsToNumber(Json(".5")), 0.5);
  EXPECT_EQ(JsToNumber(Json("5.")), 5);
  EXPECT_TRUE(std::isinf(JsToNumber(Json("-Infinity"))));
  EXPECT_TRUE(std::isnan(JsToNumber(Json("inf"))));
  EXPECT_TRUE(std::isnan(JsToNumber(Json("1,2"))));
  EXPECT_TRUE(std::isnan(JsToNumber(Json("0x"))));
  EXPECT_EQ(JsToNumber(Json(true)), 1);
  EXPECT_EQ(JsToNumber(Json::parse("[]")), 0);
  EXPECT_EQ(JsToNumber(Json::parse("[\"7\"]")), 7);
  EXPECT_TRUE(std::isnan(JsToNumber(Json::parse("[1,2]"))));
  EXPECT_TRUE(std::isnan(JsToNumber(Json::parse("{}"))));
  EXPECT_TRUE(std::isnan(JsToNumber(nullptr)));
}

TEST(JsTruthyTest, FalsyValues) {
  EXPECT_FALSE(JsTruthy(Json(0)));
  EXPECT_FALSE(JsTruthy(Json("")));
  EXPECT_FALSE(JsTruthy(Json(nullptr)));
  EXPECT_FALSE(JsTruthy(Json(false)));
  EXPECT_FALSE(JsTruthy(nullptr));
  EXPECT_TRUE(JsTruthy(Json("0")));
  EXPECT_TRUE(JsTruthy(Json::array()));
  EXPECT_TRUE(JsTruthy(Json::object()));
}

TEST(JsCompareTest, MixedTypesFollowAbstractRelationalComparison) {
  Json ten = 10, nine_string = "9", ten_string = "10", null_value = nullptr, abc = "abc";
  EXPECT_FALSE(JsLessThan(&ten, &nine_string));        // 10 < 9
  EXPECT_TRUE(JsLessThan(&ten_string, &nine_string));  // string order
  EXPECT_TRUE(JsLessOrEqual(&null_value, &null_value));
  Json zero = 0;
  EXPECT_TRUE(JsGreaterOrEqual(&null_value, &zero));  // null is 0
  EXPECT_FALSE(JsLessThan(&abc, &ten));               // NaN: undefined
  EXPECT_FALSE(JsGreaterOrEqual(&abc, &ten));
  EXPECT_FALSE(JsLessOrEqual(nullptr, &ten));  // undefined is NaN
  Json array = Json::parse("[5]");
  EXPECT_TRUE(JsLessThan(&array, &ten));  // "5" -> 5
}

TEST(JsStrictEqualsTest, ObjectsAreNeverIdentical) {
  Json a = Json::parse("[1]"), b = Json::parse("[1]");
  EXPECT_FALSE(JsStrictEquals(&a, &b));
  Json one = 1, one_float = 1.0, one_string = "1";
  EXPECT_TRUE(JsStrictEquals(&one, &one_float));
  EXPECT_FALSE(JsStrictEquals(&one, &one_string));
}

TEST(JsonStringifyTest, IndexKeysComeFirstAndNumbersAreJavaScripts) {
  EXPECT_EQ(JsonStringify(Json::parse(R"({"b":1,"10":2,"a":[1.0,2.5],"2":null})")),
            R"({"2":null,"10":2,"b":1,"a":[1,2.5]})");
  EXPECT_EQ(JsonStringify(Json::parse(R"({"01":1,"1":2})")), R"({"1":2,"01":1})");
  EXPECT_FALSE(JsonStringify(nullptr).has_value());
}

TEST(CompareUtf16Test, SupplementaryCharactersSortBelowHighBmp) {
  // U+1F600 is D83D DE00 in UTF-16, below U+FF5E; in UTF-8 it sorts above.
  EXPECT_LT(CompareUtf16("\xF0\x9F\x98\x80", "\xEF\xBD\x9E"), 0);
  EXPECT_LT(CompareUtf16("a", "b"), 0);
  EXPECT_EQ(CompareUtf16("x", "x"), 0);
}

}  // namespace
}  // namespace capstan::experiments
