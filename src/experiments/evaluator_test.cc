#include "experiments/evaluator.h"

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

TEST(EvaluatorTest, ForceRuleWithConditionFallsThroughToDefault) {
  Json context = Json::parse(R"({"attributes":{"id":"1","country":"US"},
      "features":{"f":{"defaultValue":"off","rules":[
        {"id":"uk","condition":{"country":"UK"},"force":"uk"},
        {"id":"all","force":"on","coverage":0}]}}})");
  GrowthBookEvaluator evaluator(context);
  absl::StatusOr<Json> result = evaluator.EvalFeature("f");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ((*result)["source"], "defaultValue");
  EXPECT_EQ((*result)["value"], "off");
  EXPECT_EQ((*result)["ruleId"], "");
}

TEST(EvaluatorTest, MissingHashAttributeKeepsUserOutOfExperiment) {
  Json context = Json::parse(R"({"attributes":{"id":0}})");
  GrowthBookEvaluator evaluator(context);
  absl::StatusOr<Json> result = evaluator.Run(Json::parse(R"({"key":"e","variations":["a","b"]})"));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["inExperiment"], false);
  EXPECT_EQ((*result)["value"], "a");
  EXPECT_EQ((*result)["hashValue"], "");  // 0 is falsy: treated as missing
  EXPECT_FALSE(result->contains("bucket"));
}

TEST(EvaluatorTest, PassthroughVariationFallsThroughToNextRule) {
  Json context = Json::parse(R"({"attributes":{"id":"1"},
      "features":{"f":{"defaultValue":0,"rules":[
        {"variations":[1,2],"ranges":[[0,1],[1,1]],"meta":[{"key":"a","passthrough":true},{"key":"b"}]},
        {"force":3}]}}})");
  GrowthBookEvaluator evaluator(context);
  absl::StatusOr<Json> result = evaluator.EvalFeature("f");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["value"], 3);
  EXPECT_EQ((*result)["source"], "force");
}

TEST(EvaluatorTest, NullRuleIsATypeErrorNotACrash) {
  Json context = Json::parse(R"({"features":{"f":{"rules":[null]}}})");
  GrowthBookEvaluator evaluator(context);
  EXPECT_FALSE(evaluator.EvalFeature("f").ok());
}

TEST(EvaluatorTest, StickyAssignmentIsRecorded) {
  Json context = Json::parse(R"({"attributes":{"id":"u1"},
      "features":{"f":{"rules":[{"key":"e","variations":[0,1],"meta":[{"key":"c"},{"key":"t"}]}]}}})");
  GrowthBookEvaluator evaluator(context);
  evaluator.EnableStickyBucketing(Json::object());
  absl::StatusOr<Json> result = evaluator.EvalFeature("f");
  ASSERT_TRUE(result.ok());
  const Json& docs = evaluator.sticky_bucket_assignment_docs();
  ASSERT_TRUE(docs.contains("id||u1"));
  EXPECT_EQ(docs["id||u1"]["assignments"]["e__0"], (*result)["experimentResult"]["key"]);
}

}  // namespace
}  // namespace capstan::experiments
