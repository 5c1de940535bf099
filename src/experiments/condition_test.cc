#include "experiments/condition.h"

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

struct ConditionCase {
  const char* condition;
  const char* attributes;
  bool expected;
};

// Each expectation was printed by @growthbook/growthbook 1.7.0's evalCondition
// with savedGroups {"g": ["1", "2"]}: loose string/number equality, JSON
// equality that depends on key order, mixed-type comparison, missing values as
// null, regexes that test String(null), dot paths through arrays.
TEST(ConditionTest, AgreesWithTheSdkOnEdgeCases) {
  const ConditionCase cases[] = {
      {R"({"age":{"$gt":18}})", R"({"age":21})", true},
      {R"({"age":{"$gt":"18"}})", R"({"age":"9"})", true},
      {R"({"age":{"$gt":18}})", R"({"age":"9"})", false},
      {R"({"age":"21"})", R"({"age":21})", true},
      {R"({"age":21})", R"({"age":"21"})", true},
      {R"({"age":0})", R"({})", true},
      {R"({"x":true})", R"({"x":1})", true},
      {R"({"x":false})", R"({})", false},
      {R"({"x":null})", R"({})", true},
      {R"({"x":[1,2]})", R"({"x":[1,2]})", true},
      {R"({"x":{"a":1,"b":2}})", R"({"x":{"b":2,"a":1}})", false},
      {R"({"x":{"$eq":[1]}})", R"({"x":[1]})", false},
      {R"({"x":{"$exists":false}})", R"({"x":null})", true},
      {R"({"x":{"$in":[1,"a"]}})", R"({"x":["b","a"]})", true},
      {R"({"x":{"$ini":["ABC"]}})", R"({"x":"abc"})", true},
      {R"({"x":{"$nin":"a"}})", R"({"x":"a"})", false},
      {R"({"x":{"$all":[1,2]}})", R"({"x":[2,1,3]})", true},
      {R"({"x":{"$size":{"$gt":1}}})", R"({"x":[1,2]})", true},
      {R"({"x":{"$elemMatch":{"a":1}}})", R"({"x":[0,{"a":1}]})", true},
      {R"({"x":{"$elemMatch":{"$gt":5}}})", R"({"x":[0,6]})", true},
      {R"({"x":{"$regex":"^a.c$"}})", R"({"x":"abc"})", true},
      {R"({"x":{"$regex":"nu"}})", R"({})", true},
      {R"({"x":{"$regex":"("}})", R"({"x":"("})", false},
      {R"({"x":{"$regexi":"^ABC"}})", R"({"x":"abcd"})", true},
      {R"({"x":{"$type":"null"}})", R"({})", true},
      {R"({"x":{"$type":"array"}})", R"({"x":[]})", true},
      {R"({"x":{"$not":{"$gt":3}}})", R"({"x":2})", true},
      {R"({"$or":[]})", R"({})", true},
      {R"({"$and":[{"a":1},{"b":2}]})", R"({"a":1,"b":2})", true},
      {R"({"$nor":[{"a":1}]})", R"({"a":2})", true},
      {R"({"$not":{"a":1}})", R"({"a":1})", false},
      {R"({"a.b.c":5})", R"({"a":{"b":{"c":5}}})", true},
      {R"({"tags.length":2})", R"({"tags":["x","y"]})", true},
      {R"({"tags.1":"y"})", R"({"tags":["x","y"]})", true},
      {R"({"v":{"$vgt":"1.2.10"}})", R"({"v":"1.2.9"})", false},
      {R"({"v":{"$vlt":"1.0.0"}})", R"({"v":"1.0.0-rc.1"})", true},
      {R"({"v":{"$veq":"v1.2.3+abc"}})", R"({"v":"1.2.3"})", true},
      {R"({"id":{"$inGroup":"g"}})", R"({"id":"2"})", true},
      {R"({"id":{"$notInGroup":"missing"}})", R"({"id":"2"})", true},
      {R"({"x":{"$gte":null}})", R"({})", true},
      {R"({"x":{"$lt":"b"}})", R"({"x":["a"]})", true},
      {R"({"x":{"$unknown":1}})", R"({"x":1})", false},
      {R"({"x":{}})", R"({"x":{}})", true},
      {R"({"x":1})", R"({"x":"1e0"})", true},
  };
  Json groups = Json::parse(R"({"g":["1","2"]})");
  for (const ConditionCase& c : cases) {
    ConditionEvaluator evaluator(groups);
    EXPECT_EQ(evaluator.Evaluate(Json::parse(c.attributes), Json::parse(c.condition)), c.expected)
        << "condition " << c.condition << " attributes " << c.attributes;
  }
}

TEST(ConditionTest, NullLogicalOperandThrowsAsInTheSdk) {
  ConditionEvaluator evaluator(Json::object());
  EXPECT_THROW(evaluator.Evaluate(Json::object(), Json::parse(R"({"$or":null})")), JsTypeError);
}

TEST(PaddedVersionStringTest, MatchesTheSdk) {
  // Printed by the SDK's paddedVersionString.
  EXPECT_EQ(PaddedVersionString(Json("1.0.0-rc.1")), "    1-    0-    0-rc-    1");
  EXPECT_EQ(PaddedVersionString(Json("v1.2.3+build")), "    1-    2-    3-~");
  EXPECT_EQ(PaddedVersionString(Json("1.2")), "    1-    2");
  EXPECT_EQ(PaddedVersionString(Json("10.0.0")), "   10-    0-    0-~");
  EXPECT_EQ(PaddedVersionString(Json("1.0.0-beta.11")), "    1-    0-    0-beta-   11");
  EXPECT_EQ(PaddedVersionString(Json(1.5)), "    1-    5");
  EXPECT_EQ(PaddedVersionString(Json("")), "    0");
  EXPECT_EQ(PaddedVersionString(Json(nullptr)), "    0");
  EXPECT_EQ(PaddedVersionString(Json("123456.1.1")), "123456-    1-    1-~");
}

}  // namespace
}  // namespace capstan::experiments
