// The store-free parts of config_store.h; the repository and the watcher
// against a real store are in tests/e2e/experiments_service_test.cc.
#include "experiments/config_store.h"

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

TEST(ConfigDocumentTest, TheEnvelopeRoundTripsAndABareSpecReadsAsVersion0) {
  ConfigDocument doc;
  doc.kind = "features";
  doc.id = "banner";
  doc.spec = Json::parse(R"({"defaultValue": 1})");
  doc.version = 3;
  doc.created_by = "ann";
  doc.created_at = "2026-12-07T00:00:00.000Z";
  doc.updated_by = "bob";
  doc.updated_at = "2026-12-07T01:00:00.000Z";
  Json stored = doc.ToStored();
  EXPECT_FALSE(stored.contains("revision"));  // the store keeps it
  ConfigDocument back = ConfigDocument::FromStored("features", "banner", stored, 42);
  EXPECT_EQ(back.spec, doc.spec);
  EXPECT_EQ(back.version, 3);
  EXPECT_EQ(back.created_by, "ann");
  EXPECT_EQ(back.updated_at, "2026-12-07T01:00:00.000Z");
  EXPECT_EQ(back.ToApi()["revision"], 42);

  // Written by hand (etcdctl put): the whole value is the spec.
  ConfigDocument bare =
      ConfigDocument::FromStored("features", "x", Json::parse(R"({"defaultValue": true})"), 7);
  EXPECT_EQ(bare.version, 0);
  EXPECT_EQ(bare.spec, Json::parse(R"({"defaultValue": true})"));
  // A feature whose own fields happen to include "spec" is still a bare spec.
  ConfigDocument tricky =
      ConfigDocument::FromStored("features", "y", Json::parse(R"({"spec": 1})"), 7);
  EXPECT_EQ(tricky.spec, Json::parse(R"({"spec": 1})"));
}

TEST(ConfigStoreNamesTest, IdsNameOneKeyEach) {
  EXPECT_TRUE(IsValidDocumentId("checkout-v2.1"));
  EXPECT_TRUE(IsValidDocumentId("sdk-abc:prod_1"));
  EXPECT_FALSE(IsValidDocumentId(""));
  EXPECT_FALSE(IsValidDocumentId("a/b"));
  EXPECT_FALSE(IsValidDocumentId(".hidden"));
  EXPECT_FALSE(IsValidDocumentId("a b"));
  EXPECT_FALSE(IsValidDocumentId(std::string(257, 'a')));
  ConfigStore store(nullptr, "/p/");
  EXPECT_EQ(store.DocumentKey("features", "x"), "/p/config/features/x");
}

TEST(ConfigStoreNamesTest, UnknownKindsAndBadIdsFailBeforeTheStore) {
  ConfigStore store(nullptr, "/p/");  // no client: nothing may reach it
  store.RegisterKind("features", [](const std::string&, const Json&) { return absl::OkStatus(); });
  EXPECT_EQ(store.Get("nope", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Put("features", "a/b", Json::object(), 0, "u").status().code(),
            absl::StatusCode::kInvalidArgument);
  store.RegisterKind("strict", [](const std::string&, const Json&) {
    return absl::InvalidArgumentError("rules[0].force: required");
  });
  absl::Status refused = store.Put("strict", "x", Json::object(), 0, "u").status();
  EXPECT_EQ(refused.message(), "rules[0].force: required");
  EXPECT_FALSE(CurrentRevisionOf(refused).has_value());
}

}  // namespace
}  // namespace capstan::experiments
