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
