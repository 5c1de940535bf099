// Parsing and validation of the native model's documents (model.h), and the
// cross-document checks of ConfigSnapshot::Build (snapshot.h).
#include "experiments/model.h"

#include <set>
#include <string>
#include <vector>

#include "experiments/snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(std::string_view key, std::string_view json) {
  absl::StatusOr<ModelDocument> doc = ParseModelDocument(key, json);
  return doc.ok() ? "" : std::string(doc.status().message());
}

absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> Snapshot(
    std::vector<std::pair<std::string, std::string>> documents) {
  std::vector<ConfigSnapshot::StoredDocument> stored;
  for (auto& [key, value] : documents) stored.push_back({key, value, 1});
  return ConfigSnapshot::BuildFromStore(stored);
}

std::string SnapshotError(std::vector<std::pair<std::string, std::string>> documents) {
  auto snapshot = Snapshot(std::move(documents));
  return snapshot.ok() ? "" : std::string(snapshot.status().message());
}

const std::pair<std::string, std::string> kDomain = {"/capstan/experiments/config/domains/main",
                                                     R"({"id":"main"})"};
const std::pair<std::string, std::string> kLayer = {
    "/capstan/experiments/config/layers/checkout",
    R"({"id":"checkout","domain":"main","parameters":{"color":"blue","size":1}})"};

TEST(ModelKeyTest, RoundTripsEveryKind) {
  for (DocumentKind kind : {DocumentKind::kUnitType, DocumentKind::kDomain, DocumentKind::kLayer,
                            DocumentKind::kExperiment, DocumentKind::kHoldout,
                            DocumentKind::kSavedGroup, DocumentKind::kFlag}) {
    std::string key = ModelDocumentKey(kind, "a-1");
    auto parsed = ParseModelDocumentKey(key);
    ASSERT_TRUE(parsed.ok()) << key;
    EXPECT_EQ(parsed->first, kind);
    EXPECT_EQ(parsed->second, "a-1");
  }
  EXPECT_EQ(ModelDocumentKey(DocumentKind::kLayer, "x"), "/capstan/experiments/config/layers/x");
  EXPECT_FALSE(ParseModelDocumentKey("/capstan/experiments/config/widgets/x").ok());
  EXPECT_FALSE(ParseModelDocumentKey("/capstan/experiments/config/layers/a/b").ok());
  EXPECT_FALSE(ParseModelDocumentKey("/other/layers/x").ok());
  EXPECT_FALSE(ParseModelDocumentKey("/capstan/experiments/config/layers/").ok());
}

TEST(ModelParseTest, ExperimentWithDefaults) {
  auto doc = ParseModelDocument("/capstan/experiments/config/experiments/e1",
                                R"({"id":"e1","layer":"checkout",
                                    "variants":[{"id":"control"},{"id":"treatment"}]})",
                                42);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(doc->kind, DocumentKind::kExperiment);
  EXPECT_EQ(doc->revision, 42);
  const auto& e = std::get<ExperimentDoc>(doc->object);
  EXPECT_EQ(e.state, ExperimentState::kDraft);
  EXPECT_EQ(e.salt, "e1");
  EXPECT_EQ(e.coverage, 1);
  EXPECT_EQ(e.range, VariationRange(0, 1));
  ASSERT_EQ(e.variants.size(), 2u);
  EXPECT_DOUBLE_EQ(e.variants[0].weight, 0.5);
  EXPECT_TRUE(e.condition.is_null());
}

TEST(ModelParseTest, ErrorsNameTheDocumentAndField) {
  EXPECT_THAT(
      ErrorOf("/capstan/experiments/config/experiments/e1", R"({"id":"e1","layer":"checkout",
      "variants":[{"id":"a","weight":0.5},{"id":"b","weight":1.5}]})"),
      HasSubstr("experiments/e1: variants[1].weight: must be in [0,1]"));
  EXPECT_THAT(
      ErrorOf("/capstan/experiments/config/experiments/e1", R"({"id":"e1","layer":"checkout",
      "variants":[{"id":"a","weight":0.5},{"id":"b","weight":0.4}]})"),
      HasSubstr("experiments/e1: variants: weights must sum to 1"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/experiments/e1",
                      R"({"id":"e1","variants":[{"id":"a"}],"coverge":0.5})"),
              ::testing::AllOf(HasSubstr("experiments/e1: layer: required"),
                               HasSubstr("experiments/e1: coverge: unknown field")));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/experiments/e1",
                      R"({"id":"e2","layer":"l","variants":[{"id":"a"}]})"),
              HasSubstr("experiments/e1: id: must equal the key's id \"e1\""));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/experiments/e1",
                      R"({"id":"e1","layer":"l","range":[0.5,0.2],"variants":[{"id":"a"}]})"),
              HasSubstr("experiments/e1: range: must satisfy 0 <= start <= end <= 1"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/experiments/e1",
                      R"({"id":"e1","layer":"l","variants":[{"id":"a"},{"id":"a"}]})"),
              HasSubstr("experiments/e1: variants[1].id: duplicate variant id"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/experiments/e1",
                      R"({"id":"e1","layer":"l","variants":[{"id":"a"}],
                          "forced_variants":{"user-1":"zzz"}})"),
              HasSubstr("experiments/e1: forced_variants.user-1: names no variant"));
  EXPECT_THAT(
      ErrorOf("/capstan/experiments/config/experiments/e1",
              R"({"id":"e1","layer":"l","variants":[{"id":"a"}],"condition":{"$or":null}})"),
      HasSubstr("experiments/e1: condition: invalid condition"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/layers/l", R"({"id":"l"})"),
              HasSubstr("layers/l: domain: required"));
  EXPECT_THAT(
      ErrorOf("/capstan/experiments/config/layers/l", R"({"id":"l","launch":true,"domain":"d"})"),
      HasSubstr("layers/l: domain: a launch layer covers all traffic"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/holdouts/h", R"({"id":"h","fraction":2})"),
              HasSubstr("holdouts/h: fraction: must be in [0,1]"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/flags/f",
                      R"({"id":"f","rules":[{"type":"rollout","value":1}]})"),
              HasSubstr("flags/f: rules[0].coverage: required"));
  EXPECT_THAT(
      ErrorOf("/capstan/experiments/config/flags/f", R"({"id":"f","rules":[{"type":"maybe"}]})"),
      HasSubstr("flags/f: rules[0].type: must be force, rollout or experiment"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/layers/l", "{"),
              HasSubstr("layers/l: not valid JSON"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/layers/l",
                      std::string(100, '[') + std::string(100, ']')),
              HasSubstr("nested deeper than"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/units/u", R"({"id":"u"})"),
              HasSubstr("units/u: attribute: required"));
}

TEST(ModelParseTest, ExperimentAnalysisSettings) {
  auto defaults = ParseModelDocument("/capstan/experiments/config/experiments/e1",
                                     R"({"id":"e1","layer":"l","variants":[{"id":"a"}]})");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  const AnalysisDoc& d = std::get<ExperimentDoc>(defaults->object).analysis;
  EXPECT_EQ(d.control, "");
  EXPECT_FALSE(d.sequential);
  EXPECT_DOUBLE_EQ(d.alpha, 0.05);
  EXPECT_EQ(d.correction, PValueCorrection::kHolm);
  EXPECT_DOUBLE_EQ(d.sequential_tuning, 5000);

  auto set = ParseModelDocument("/capstan/experiments/config/experiments/e1",
                                R"({"id":"e1","layer":"l","variants":[{"id":"a"},{"id":"b"}],
                                    "analysis":{"control":"b","sequential":true,"alpha":0.1,
                                                "correction":"bh","sequential_tuning":800}})");
  ASSERT_TRUE(set.ok()) << set.status();
  const AnalysisDoc& a = std::get<ExperimentDoc>(set->object).analysis;
  EXPECT_EQ(a.control, "b");
  EXPECT_TRUE(a.sequential);
  EXPECT_DOUBLE_EQ(a.alpha, 0.1);
  EXPECT_EQ(a.correction, PValueCorrection::kBenjaminiHochberg);
  EXPECT_DOUBLE_EQ(a.sequential_tuning, 800);

  std::string error = ErrorOf("/capstan/experiments/config/experiments/e1",
                              R"({"id":"e1","layer":"l","variants":[{"id":"a"}],
                                  "analysis":{"control":"z","alpha":1,"correction":"bonferroni",
                                              "sequential_tuning":0,"sequental":true}})");
  EXPECT_THAT(error, HasSubstr("experiments/e1: analysis.control: names no variant"));
  EXPECT_THAT(error, HasSubstr("experiments/e1: analysis.alpha: must be a number in (0, 1)"));
  EXPECT_THAT(error, HasSubstr("experiments/e1: analysis.correction: must be one of holm, bh"));
  EXPECT_THAT(error, HasSubstr("experiments/e1: analysis.sequential_tuning: must be a number > 0"));
  EXPECT_THAT(error, HasSubstr("experiments/e1: analysis.sequental: unknown field"));
}

TEST(ModelParseTest, OverloadWithoutKeyUsesTheDocumentsId) {
  auto doc = ParseModelDocument(DocumentKind::kLayer,
                                Json::parse(R"({"id":"l","domain":"main","salt":"s"})"));
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(doc->id, "l");
  EXPECT_EQ(std::get<LayerDoc>(doc->object).salt, "s");
}

TEST(LifecycleTest, LegalTransitions) {
  using S = ExperimentState;
  const S all[] = {S::kDraft, S::kRunning, S::kStopped, S::kLaunched};
  std::set<std::pair<S, S>> legal = {{S::kDraft, S::kRunning},
                                     {S::kRunning, S::kStopped},
                                     {S::kRunning, S::kLaunched},
                                     {S::kStopped, S::kLaunched}};
  for (S from : all) {
    for (S to : all) {
      EXPECT_EQ(IsLegalTransition(from, to), legal.count({from, to}) == 1)
          << ExperimentStateName(from) << " -> " << ExperimentStateName(to);
    }
  }
}

TEST(LifecycleTest, HistoryMustFollowTheLifecycle) {
  const char* good = R"({"id":"e1","layer":"l","state":"launched","launched_variant":"b",
      "variants":[{"id":"a"},{"id":"b"}],
      "history":[{"state":"draft","by":"ann","at":"2026-12-01T10:00:00Z"},
                 {"state":"running","by":"ann","at":"2026-12-02T10:00:00Z"},
                 {"state":"stopped","by":"bob","at":"2026-12-09T10:00:00Z"},
                 {"state":"launched","by":"bob","at":"2026-12-10T10:00:00Z"}]})";
  auto doc = ParseModelDocument("/capstan/experiments/config/experiments/e1", good);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(std::get<ExperimentDoc>(doc->object).history.size(), 4u);

  EXPECT_THAT(
      ErrorOf("/capstan/experiments/config/experiments/e1",
              R"({"id":"e1","layer":"l","state":"running","variants":[{"id":"a"}],
      "history":[{"state":"draft","by":"ann","at":"t1"},{"state":"stopped","by":"ann","at":"t2"},
                 {"state":"running","by":"ann","at":"t3"}]})"),
      ::testing::AllOf(HasSubstr("history[1].state: illegal transition draft -> stopped"),
                       HasSubstr("history[2].state: illegal transition stopped -> running")));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/experiments/e1",
                      R"({"id":"e1","layer":"l","state":"running","variants":[{"id":"a"}],
      "history":[{"state":"draft","by":"ann","at":"t1"}]})"),
              HasSubstr("history: its last entry must be the current state"));
  EXPECT_THAT(ErrorOf("/capstan/experiments/config/experiments/e1",
                      R"({"id":"e1","layer":"l","state":"launched","variants":[{"id":"a"}]})"),
              HasSubstr("launched_variant: required when the state is launched"));
}

ExperimentDoc Experiment(std::string_view json) {
  auto doc = ParseModelDocument("/capstan/experiments/config/experiments/e1", json);
  EXPECT_TRUE(doc.ok()) << doc.status();
  return doc.ok() ? std::get<ExperimentDoc>(doc->object) : ExperimentDoc{};
}

TEST(LifecycleTest, UpdatesKeepWhatAssignmentDependsOn) {
  ExperimentDoc draft = Experiment(R"({"id":"e1","layer":"l","coverage":0.1,
      "variants":[{"id":"a"},{"id":"b"}]})");
  ExperimentDoc running = Experiment(R"({"id":"e1","layer":"l","state":"running","coverage":0.1,
      "variants":[{"id":"a"},{"id":"b"}]})");
  ExperimentDoc ramped = Experiment(R"({"id":"e1","layer":"l","state":"running","coverage":0.5,
      "variants":[{"id":"a"},{"id":"b"}]})");
  ExperimentDoc reweighted = Experiment(R"({"id":"e1","layer":"l","state":"running","coverage":0.5,
      "variants":[{"id":"a","weight":0.9},{"id":"b","weight":0.1}]})");
  ExperimentDoc moved = Experiment(R"({"id":"e1","layer":"other","state":"stopped",
      "coverage":0.5,"variants":[{"id":"a"},{"id":"b"}]})");

  EXPECT_TRUE(CheckExperimentUpdate(draft, running).ok());
  EXPECT_TRUE(CheckExperimentUpdate(running, ramped).ok());
  EXPECT_THAT(std::string(CheckExperimentUpdate(ramped, running).message()),
              HasSubstr("experiments/e1: coverage: may only grow"));
  EXPECT_THAT(std::string(CheckExperimentUpdate(ramped, reweighted).message()),
              HasSubstr("experiments/e1: variants: ids, order and weights cannot change"));
  EXPECT_THAT(std::string(CheckExperimentUpdate(ramped, moved).message()),
              HasSubstr("experiments/e1: layer: cannot change once the experiment ran"));
  EXPECT_THAT(std::string(CheckExperimentUpdate(running, draft).message()),
              HasSubstr("experiments/e1: state: illegal transition running -> draft"));
  // A draft may still change anything.
  EXPECT_TRUE(CheckExperimentUpdate(draft, draft).ok());
}

TEST(SnapshotBuildTest, CrossReferencesAreChecked) {
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/experiments/e1",
                              R"({"id":"e1","layer":"nope","variants":[{"id":"a"}]})"}}),
              HasSubstr("experiments/e1: layer: names no layer \"nope\""));
  EXPECT_THAT(SnapshotError({kLayer}), HasSubstr("layers/checkout: domain: names no domain"));
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/experiments/e1",
                              R"({"id":"e1","layer":"checkout","variants":[{"id":"a",
                          "parameters":{"colour":"red"}}]})"}}),
              HasSubstr("experiments/e1: variants[0].parameters.colour: not a parameter of layer"));
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/experiments/e1",
                              R"({"id":"e1","layer":"checkout","state":"running","range":[0,0.5],
                                  "variants":[{"id":"a"}]})"},
                             {"/capstan/experiments/config/experiments/e2",
                              R"({"id":"e2","layer":"checkout","state":"running","range":[0.4,1],
                                  "variants":[{"id":"a"}]})"}}),
              HasSubstr("experiments/e2: range: overlaps experiment \"e1\""));
  // A draft may overlap: it takes no traffic yet.
  EXPECT_EQ(SnapshotError({kDomain,
                           kLayer,
                           {"/capstan/experiments/config/experiments/e1",
                            R"({"id":"e1","layer":"checkout","state":"running","range":[0,0.5],
                                "variants":[{"id":"a"}]})"},
                           {"/capstan/experiments/config/experiments/e2",
                            R"({"id":"e2","layer":"checkout","range":[0.4,1],
                                "variants":[{"id":"a"}]})"}}),
            "");
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/layers/other",
                              R"({"id":"other","domain":"main","parameters":{"color":"blue"}})"}}),
              HasSubstr("parameters.color: already owned by layer"));
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/layers/launch",
                              R"({"id":"launch","launch":true,"parameters":{"color":"red"}})"}}),
              HasSubstr("parameters.color: default differs"));
  EXPECT_THAT(SnapshotError({{"/capstan/experiments/config/flags/a",
                              R"({"id":"a","prerequisites":[{"flag":"b","condition":{}}]})"},
                             {"/capstan/experiments/config/flags/b",
                              R"({"id":"b","prerequisites":[{"flag":"a","condition":{}}]})"}}),
              HasSubstr("flags/a: prerequisites: form a cycle"));
  EXPECT_THAT(SnapshotError({{"/capstan/experiments/config/flags/a",
                              R"({"id":"a","rules":[{"type":"experiment","experiment":"x",
                                  "values":{}}]})"}}),
              HasSubstr("flags/a: rules[0].experiment: names no experiment \"x\""));
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/experiments/e1",
                              R"({"id":"e1","layer":"checkout","variants":[{"id":"a"}],
                                  "condition":{"id":{"$inGroup":"beta"}}})"}}),
              HasSubstr("experiments/e1: condition: $inGroup names no saved group \"beta\""));
  EXPECT_THAT(SnapshotError({kDomain,
                             {"/capstan/experiments/config/domains/second",
                              R"({"id":"second","range":[0.5,1]})"}}),
              HasSubstr("range: overlaps domain"));
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/holdouts/h",
                              R"({"id":"h","fraction":0.1,"layers":["nope"]})"}}),
              HasSubstr("holdouts/h: layers[0]: names no layer \"nope\""));
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/experiments/e1",
                              R"({"id":"e1","layer":"checkout","variants":[{"id":"a"}],
                                  "forced_variants":{"u1":"a"}})"},
                             {"/capstan/experiments/config/experiments/e2",
                              R"({"id":"e2","layer":"checkout","variants":[{"id":"a"}],
                                  "forced_variants":{"u1":"a"}})"}}),
              HasSubstr("experiments/e2: forced_variants.u1: the unit is already forced"));
  EXPECT_THAT(SnapshotError({kDomain, kDomain}), HasSubstr("domains/main: defined twice"));
  EXPECT_THAT(SnapshotError({kDomain,
                             kLayer,
                             {"/capstan/experiments/config/layers/twin",
                              R"({"id":"twin","domain":"main","salt":"checkout"})"}}),
              HasSubstr("layers/twin: salt: same as layer \"checkout\"'s"));
}

TEST(SnapshotBuildTest, ParseErrorsOfAllDocumentsAreReportedTogether) {
  std::string error = SnapshotError({{"/capstan/experiments/config/layers/a", R"({"id":"a"})"},
                                     {"/capstan/experiments/config/layers/b", R"({"id":"b"})"}});
  EXPECT_THAT(error, HasSubstr("layers/a: domain: required"));
  EXPECT_THAT(error, HasSubstr("layers/b: domain: required"));
}

TEST(SnapshotBuildTest, RevisionIsTheNewestDocuments) {
  std::vector<ConfigSnapshot::StoredDocument> stored = {{kDomain.first, kDomain.second, 7},
                                                        {kLayer.first, kLayer.second, 12}};
  auto snapshot = ConfigSnapshot::BuildFromStore(stored);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ((*snapshot)->revision(), 12);
  EXPECT_EQ((*snapshot)->parameter_names(), (std::vector<std::string>{"color", "size"}));
}

}  // namespace
}  // namespace capstan::experiments
