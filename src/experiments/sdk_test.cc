#include "experiments/sdk.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

Json User(const char* id) { return Json{{"attributes", {{"id", id}}}}; }

TEST(GrowthBookClientTest, EvaluatesAndSwapsPayloads) {
  auto first = FeaturePayload::Parse(R"({"features":{"f":{"defaultValue":1}}})");
  auto second = FeaturePayload::Parse(R"({"features":{"f":{"defaultValue":2}}})");
  ASSERT_TRUE(first.ok() && second.ok());
  GrowthBookClient client(*first);
  EXPECT_EQ((*client.EvalFeature("f", User("u")))["value"], 1);
  client.SetPayload(*second);
  EXPECT_EQ((*client.EvalFeature("f", User("u")))["value"], 2);
}

TEST(GrowthBookClientTest, WithoutPayloadEveryFeatureIsUnknown) {
  GrowthBookClient client;
  EXPECT_EQ((*client.EvalFeature("f", User("u")))["source"], "unknownFeature");
}

TEST(GrowthBookClientTest, RunUsesTheUsersAttributes) {
  GrowthBookClient client;
  // Result printed by the SDK for id "1" (the protocol's example).
  absl::StatusOr<Json> result =
      client.Run(Json::parse(R"({"key":"my-test","variations":[0,1]})"), User("1"));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["variationId"], 1);
  EXPECT_EQ((*result)["bucket"], 0.969);
}

// The typed view says what the FeatureResult JSON says, on the compiled path
// and on the reference evaluator's (a parent condition is not compiled).
TEST(GrowthBookClientTest, TheTypedViewAgreesWithTheFeatureResult) {
  auto payload = FeaturePayload::Parse(R"({"features":{
    "plain": {"defaultValue": {"color": "blue"}},
    "forced": {"defaultValue": false, "rules": [
      {"id": "fr", "condition": {"country": "US"}, "force": true, "coverage": 0.5}]},
    "exp": {"defaultValue": "control", "rules": [
      {"id": "er", "key": "exp-key", "hashVersion": 2, "variations": ["control", "treatment"],
       "weights": [0.5, 0.5], "meta": [{"key": "c"}, {"key": "t", "name": "T"}]}]},
    "child": {"defaultValue": 0, "rules": [
      {"id": "cr", "parentConditions": [{"id": "plain", "condition": {"value.color": "blue"}}],
       "key": "child-exp", "hashVersion": 2, "variations": [1, 2]}]}}})");
  ASSERT_TRUE(payload.ok()) << payload.status();
  ASSERT_FALSE((*payload)->compiled().IsCompiled("child"));
  GrowthBookClient client(*payload);
  int experiments = 0;
  for (const char* feature : {"plain", "forced", "exp", "child", "missing"}) {
    for (int u = 0; u < 40; ++u) {
      Json attributes = {{"id", "user-" + std::to_string(u)}, {"country", u % 2 ? "US" : "CA"}};
      absl::StatusOr<Json> full = client.EvalFeature(feature, Json{{"attributes", attributes}});
      FeatureView view_value;
      absl::Status viewed = client.EvalFeatureView(feature, attributes, &view_value);
      ASSERT_TRUE(full.ok() && viewed.ok());
      const FeatureView* view = &view_value;
      SCOPED_TRACE(std::string(feature) + " " + attributes.dump());
      EXPECT_EQ(*view->value, (*full)["value"]);
      EXPECT_EQ(view->on, (*full)["on"].get<bool>());
      EXPECT_EQ(view->source, (*full)["source"].get<std::string>());
      EXPECT_EQ(view->rule_id, full->value("ruleId", std::string()));
      if (!full->contains("experimentResult")) {
        EXPECT_EQ(view->experiment, nullptr);
        continue;
      }
      ++experiments;
      const Json& result = (*full)["experimentResult"];
      ASSERT_NE(view->experiment, nullptr);
      EXPECT_EQ(*view->experiment, (*full)["experiment"]);
      EXPECT_EQ(view->variation_id, result["variationId"].get<int>());
      EXPECT_EQ(view->bucket, result["bucket"].get<double>());
      EXPECT_EQ(view->hash_attribute, result["hashAttribute"].get<std::string>());
      ASSERT_NE(view->hash_value, nullptr);
      EXPECT_EQ(*view->hash_value, result["hashValue"]);
      std::string key = view->variation_meta != nullptr && view->variation_meta->contains("key")
                            ? (*view->variation_meta)["key"].get<std::string>()
                            : std::to_string(view->variation_id);
      EXPECT_EQ(key, result["key"].get<std::string>());
    }
  }
  EXPECT_GT(experiments, 40);  // both experiment features assigned users
}

TEST(FeaturePayloadTest, DecryptsEncryptedFeatures) {
  // Encrypted by node's crypto (aes-128-cbc) as GrowthBook does.
  auto payload = FeaturePayload::Parse(
      R"({"encryptedFeatures":"vMSg2Bj/IurObDsWVmvkUg==.Hv+UkiDHL/O6yEQd6cEA/HivIYH7rIz5mLhpGqop3A4="})",
      "Ns04T5n9+59rl2x3SlNHtQ==");
  ASSERT_TRUE(payload.ok()) << payload.status();
  EXPECT_EQ((*payload)->json()["features"]["f"]["defaultValue"], "secret");
  EXPECT_FALSE(
      FeaturePayload::Parse(
          R"({"encryptedFeatures":"vMSg2Bj/IurObDsWVmvkUg==.Hv+UkiDHL/O6yEQd6cEA/HivIYH7rIz5mLhpGqop3A4="})",
          "AAAAAAAAAAAAAAAAAAAAAA==")
          .ok());
  EXPECT_FALSE(FeaturePayload::Parse("{oops").ok());
}

// Readers racing a writer always see one whole payload or the other.
TEST(GrowthBookClientTest, ConcurrentSwapAndEvaluate) {
  auto a = *FeaturePayload::Parse(R"({"features":{"f":{"defaultValue":"a"}}})");
  auto b = *FeaturePayload::Parse(R"({"features":{"f":{"defaultValue":"b"}}})");
  GrowthBookClient client(a);
  std::vector<std::thread> readers;
  std::atomic<int> bad{0};
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        Json value = (*client.EvalFeature("f", User("u")))["value"];
        if (value != "a" && value != "b") bad++;
      }
    });
  }
  for (int i = 0; i < 2000; ++i) client.SetPayload(i % 2 ? a : b);
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace capstan::experiments
