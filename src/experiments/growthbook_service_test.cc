#include "experiments/growthbook_service.h"

#include "experiments/decrypt.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

std::shared_ptr<const ConfigDocument> Doc(std::string kind, std::string id, Json spec,
                                          std::string updated_at = "2026-12-07T00:00:00.000Z") {
  auto doc = std::make_shared<ConfigDocument>();
  doc->kind = std::move(kind);
  doc->id = std::move(id);
  doc->spec = std::move(spec);
  doc->version = 1;
  doc->updated_at = std::move(updated_at);
  return doc;
}

std::string FieldOf(const absl::Status& st) {
  std::string m(st.message());
  return m.substr(0, m.find(": "));
}

TEST(ValidateFeatureTest, ErrorsNameTheField) {
  EXPECT_TRUE(ValidateFeature("f", Json::parse(R"({"defaultValue": false})")).ok());
  EXPECT_TRUE(ValidateFeature("f", Json::parse(R"({"defaultValue": 1, "rules": [
      {"force": 2, "coverage": 0.5, "condition": {"country": "NL"}},
      {"variations": [1, 2], "weights": [0.5, 0.5], "key": "e", "hashAttribute": "id"}]})"))
                  .ok());
  struct Case {
    const char* spec;
    const char* field;
  } cases[] = {
      {R"({"rules": [{"force": 1}, {"force": 2, "coverage": "half"}]})", "rules[1].coverage"},
      {R"({"rules": [{"force": 1, "coverage": 1.5}]})", "rules[0].coverage"},
      {R"({"rules": {}})", "rules"},
      {R"({"rules": [7]})", "rules[0]"},
      {R"({"rules": [{"coverage": 1}]})", "rules[0]"},
      {R"({"rules": [{"variations": [1, 2], "weights": [0.5]}]})", "rules[0].weights"},
      {R"({"rules": [{"variations": [1, 2], "weights": [0.5, "x"]}]})", "rules[0].weights[1]"},
      {R"({"rules": [{"force": 1, "condition": []}]})", "rules[0].condition"},
      {R"({"rules": [{"force": 1, "namespace": ["n", 0, 2]}]})", "rules[0].namespace"},
      {R"({"rules": [{"force": 1, "parentConditions": [{"condition": {}}]}]})",
       "rules[0].parentConditions[0].id"},
      {R"({"environments": {"prod": {"enabled": "yes"}}})", "environments.prod.enabled"},
      {R"({"environments": {"prod": {"rules": [{"force": 1, "hashVersion": 3}]}}})",
       "environments.prod.rules[0].hashVersion"},
      {R"({"project": 5})", "project"},
      {R"([1])", "(document)"},
  };
  for (const Case& c : cases) {
    absl::Status st = ValidateFeature("f", Json::parse(c.spec));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.spec;
    EXPECT_EQ(FieldOf(st), c.field) << st;
  }
}

TEST(ValidateOthersTest, SavedGroupsAndConnections) {
  EXPECT_TRUE(ValidateSavedGroup("g", Json::parse(R"({"values": ["a", 1]})")).ok());
  EXPECT_EQ(FieldOf(ValidateSavedGroup("g", Json::parse(R"({"values": [true]})"))), "values[0]");
  EXPECT_EQ(FieldOf(ValidateSavedGroup("g", Json::parse(R"({})"))), "values");
  EXPECT_TRUE(ValidateSdkConnection("k", Json::parse(R"({"environment": "production"})")).ok());
  EXPECT_EQ(FieldOf(ValidateSdkConnection("k", Json::parse(R"({"encryptPayload": true})"))),
            "encryptionKey");
  EXPECT_EQ(FieldOf(ValidateSdkConnection("k", Json::parse(R"({"projects": "a"})"))), "projects");
}

class EndpointsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto snapshot = std::make_shared<DocumentSnapshot>();
    snapshot->generation = 7;
    snapshot->kinds["features"]["banner"] = Doc("features", "banner", Json::parse(R"({
        "defaultValue": "blue", "project": "web",
        "rules": [{"force": "red", "condition": {"country": "NL"}},
                  {"force": "never", "enabled": false}]})"),
                                                "2026-12-07T01:00:00.000Z");
    snapshot->kinds["features"]["checkout"] = Doc("features", "checkout", Json::parse(R"({
        "defaultValue": 0, "project": "shop",
        "environments": {"production": {"enabled": true, "rules": [
            {"key": "exp-checkout", "variations": [0, 1], "weights": [0.5, 0.5],
             "hashAttribute": "id", "condition": {"id": {"$exists": true}}}]},
                         "dev": {"enabled": false}}})"));
    snapshot->kinds["features"]["old"] =
        Doc("features", "old", Json::parse(R"({"defaultValue": 1, "archived": true})"));
    snapshot->kinds["features"]["vip"] = Doc("features", "vip", Json::parse(R"({
        "defaultValue": false,
        "rules": [{"force": true, "condition": {"id": {"$inGroup": "vips"}}}]})"));
    snapshot->kinds["saved-groups"]["vips"] =
        Doc("saved-groups", "vips", Json::parse(R"({"values": ["u1", "u2"]})"));
    snapshot->kinds["sdk-connections"]["sdk-all"] =
        Doc("sdk-connections", "sdk-all", Json::parse(R"({"environment": "production"})"));
    snapshot->kinds["sdk-connections"]["sdk-web"] =
        Doc("sdk-connections", "sdk-web",
            Json::parse(R"({"environment": "dev", "projects": ["web"]})"));
    snapshot->kinds["sdk-connections"]["sdk-secret"] =
        Doc("sdk-connections", "sdk-secret",
            Json::parse(R"({"encryptPayload": true, "encryptionKey": "Ns04T5n9+59rl2x3SlNHtQ==",
                            "remoteEvalEnabled": false})"));
    endpoints_.OnSnapshot(snapshot);
  }
  GrowthBookEndpoints endpoints_;
};

TEST_F(EndpointsTest, FeaturesPayloadHasGrowthBooksShape) {
  net::HttpResponse r = endpoints_.Features("sdk-all");
  ASSERT_EQ(r.status, 200);
  Json body = Json::parse(r.body);
  EXPECT_EQ(body["status"], 200);
  EXPECT_EQ(body["dateUpdated"], "2026-12-07T01:00:00.000Z");
  EXPECT_EQ(body["experiments"], Json::array());
  EXPECT_EQ(body["savedGroups"], Json::parse(R"({"vips": ["u1", "u2"]})"));
  // Disabled rules and archived features left out; environments resolved.
  EXPECT_EQ(body["features"]["banner"],
            Json::parse(R"({"defaultValue": "blue", "rules": [{"force": "red",
                            "condition": {"country": "NL"}}]})"));
  EXPECT_FALSE(body["features"].contains("old"));
  EXPECT_EQ(body["features"]["checkout"]["rules"][0]["key"], "exp-checkout");
  EXPECT_EQ(endpoints_.generation(), 7u);
  std::string etag;
  for (const auto& [name, value] : r.headers) {
    if (name == "ETag") etag = value;
  }
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(endpoints_.Features("sdk-all", etag).status, 304);
  EXPECT_EQ(endpoints_.Features("sdk-all", "\"other\"").status, 200);
  // Projects and environments filter.
  Json web = Json::parse(endpoints_.Features("sdk-web").body);
  EXPECT_EQ(web["features"].size(), 1u);
  EXPECT_TRUE(web["features"].contains("banner"));
}

TEST_F(EndpointsTest, UnknownClientKeyIs400AsGrowthBook) {
  net::HttpResponse r = endpoints_.Features("nope");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json::parse(r.body)["error"], "Invalid API Key");
  EXPECT_EQ(endpoints_.RemoteEval("nope", "{}").status, 400);
}

TEST_F(EndpointsTest, EncryptedConnectionsDecryptWithTheirKey) {
  Json body = Json::parse(endpoints_.Features("sdk-secret").body);
  EXPECT_EQ(body["features"], Json::object());
  EXPECT_FALSE(body.contains("savedGroups"));
  std::optional<std::string> features =
      DecryptPayload(body["encryptedFeatures"].get<std::string>(), "Ns04T5n9+59rl2x3SlNHtQ==");
  ASSERT_TRUE(features.has_value());
  EXPECT_TRUE(Json::parse(*features).contains("checkout"));
  std::optional<std::string> groups =
      DecryptPayload(body["encryptedSavedGroups"].get<std::string>(), "Ns04T5n9+59rl2x3SlNHtQ==");
  ASSERT_TRUE(groups.has_value());
  EXPECT_EQ(Json::parse(*groups), Json::parse(R"({"vips": ["u1", "u2"]})"));
  EXPECT_EQ(endpoints_.RemoteEval("sdk-secret", "{}").status, 400);  // remoteEvalEnabled: false
}

TEST_F(EndpointsTest, RemoteEvalReducesFeaturesToTheirValues) {
  net::HttpResponse r = endpoints_.RemoteEval(
      "sdk-all", R"({"attributes": {"id": "u1", "country": "NL"}, "forcedVariations": {},
                     "forcedFeatures": [["vip", false]], "url": ""})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json body = Json::parse(r.body);
  Json features = body["features"];
  EXPECT_EQ(features["banner"], Json::parse(R"({"defaultValue": "red"})"));
  EXPECT_FALSE(features.contains("vip"));  // forced off
  // The experiment's answer: a force rule that tracks the assignment, with
  // the other variation's value scrubbed.
  Json checkout_result = endpoints_.ClientFor("sdk-all")
                             ->EvalFeature("checkout", {{"attributes", {{"id", "u1"}}}})
                             .value();
  if (checkout_result["on"].get<bool>()) {
    const Json& rule = features["checkout"]["rules"][0];
    EXPECT_EQ(rule["force"], checkout_result["value"]);
    const Json& experiment = rule["tracks"][0]["experiment"];
    EXPECT_FALSE(experiment.contains("condition"));
    int chosen = checkout_result["experimentResult"]["variationId"].get<int>();
    EXPECT_EQ(experiment["variations"][1 - chosen], Json::object());
  } else {
    // Variation 0 (value 0) is off but still reported: an experiment ran.
    EXPECT_EQ(features["checkout"]["defaultValue"], 0);
  }
  EXPECT_EQ(body["status"], 200);
  // Without the forced value the saved group puts u1 in.
  Json plain =
      Json::parse(endpoints_.RemoteEval("sdk-all", R"({"attributes": {"id": "u1"}})").body);
  EXPECT_EQ(plain["features"]["vip"], Json::parse(R"({"defaultValue": true})"));
  EXPECT_EQ(endpoints_.RemoteEval("sdk-all", "[").status, 400);
}

}  // namespace
}  // namespace capstan::experiments
