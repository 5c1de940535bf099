#include "experiments/compiled.h"

#include "experiments/evaluator.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

// A payload with one feature per form; the compiled engine must take the
// plain ones, leave the rest to the reference, and agree with it on every
// user.
const char* kPayload = R"({
  "savedGroups": {"beta": ["u1", "u3"]},
  "features": {
    "plain-force": {"defaultValue": false, "rules": [{"id": "r", "force": true, "coverage": 0.5}]},
    "ranged": {"defaultValue": 0, "rules": [{"force": 1, "range": [0.2, 0.7], "hashVersion": 2}]},
    "experiment": {"defaultValue": "c", "rules": [
      {"condition": {"id": {"$inGroup": "beta"}}, "force": "beta"},
      {"key": "exp", "variations": ["c", "t1", "t2"], "weights": [0.2, 0.3, 0.5], "coverage": 0.8,
       "meta": [{"key": "ctl"}, {"key": "a", "name": "A"}, {"key": "b", "passthrough": true}],
       "namespace": ["ns", 0, 0.9], "hashVersion": 2}]},
    "filtered": {"rules": [{"variations": [1, 2], "filters": [{"seed": "s", "ranges": [[0, 0.5]]}]},
                           {"force": 3}]},
    "no-variations": {"defaultValue": 5, "rules": [{"variations": null}, {"force": 6}]},
    "prerequisite": {"rules": [{"parentConditions": [{"id": "plain-force", "condition": {"value": true}}], "force": 1}]},
    "bandit": {"rules": [{"contextualVariations": [1, 2], "contextualBanditRef": "cb"}]},
    "string-coverage": {"rules": [{"force": 1, "coverage": "0.5"}]},
    "null-feature": null
  }
})";

TEST(CompiledPayloadTest, CompilesPlainFormsOnly) {
  Json payload = Json::parse(kPayload);
  CompiledPayload compiled(payload);
  for (const char* f : {"plain-force", "ranged", "experiment", "filtered", "no-variations"}) {
    EXPECT_TRUE(compiled.IsCompiled(f)) << f;
  }
  for (const char* f : {"prerequisite", "bandit", "string-coverage", "null-feature", "unknown"}) {
    EXPECT_FALSE(compiled.IsCompiled(f)) << f;
  }
}

TEST(CompiledPayloadTest, AgreesWithTheReferenceEvaluator) {
  Json payload = Json::parse(kPayload);
  CompiledPayload compiled(payload);
  const char* features[] = {"plain-force", "ranged", "experiment", "filtered", "no-variations"};
  int in_experiment = 0;
  for (int u = 0; u < 300; ++u) {
    Json attributes = Json::object();
    if (u % 7 != 0) attributes["id"] = "u" + std::to_string(u);
    if (u % 5 == 0) attributes["id"] = u;  // numbers hash as their String()
    Json user = {{"attributes", attributes}};
    for (const char* f : features) {
      GrowthBookEvaluator reference(payload, user);
      absl::StatusOr<Json> expected = reference.EvalFeature(f);
      ASSERT_TRUE(expected.ok());
      ConditionEvaluator conditions(compiled.saved_groups());
      std::optional<FastFeatureResult> fast = compiled.Evaluate(f, attributes, conditions);
      ASSERT_TRUE(fast.has_value());
      EXPECT_EQ(fast->ToJson(f), *expected) << f << " for " << attributes.dump();
      in_experiment += fast->source == FastFeatureResult::Source::kExperiment;
    }
  }
  EXPECT_GT(in_experiment, 50);  // the experiment paths were exercised
}

}  // namespace
}  // namespace capstan::experiments
