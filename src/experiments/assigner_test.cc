// Assignment by a ConfigSnapshot and the Assigner: orthogonal layers, mutual
// exclusion, ramping, holdouts, allow-lists, parameters, flags, snapshot swap
// under concurrent evaluation, exposure dedup, and no allocation per
// evaluation once warmed up.
#include "experiments/assigner.h"

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Counts heap allocations made by the current thread while counting is on
// (replacing the global operator new is the only way to see allocations made
// inside the standard library). Everything else passes straight to malloc.
namespace {
thread_local bool counting_allocations = false;
thread_local long allocations = 0;
}  // namespace

void* operator new(size_t size) {
  if (counting_allocations) ++allocations;
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
// Out of line so GCC does not inline free() into callers of new and then warn
// about a mismatched pair (-Wmismatched-new-delete): new here is malloc.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, size_t) noexcept { std::free(p); }
// Every other replaceable form too, so that all of them allocate and free
// with malloc: a form left to the library (or to AddressSanitizer's own
// operator new) would be freed here by free(), a mismatch ASan aborts on
// (std::stable_sort's nothrow temporary buffer is one).
void* operator new[](size_t size) { return operator new(size); }
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  if (counting_allocations) ++allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](size_t size, const std::nothrow_t& tag) noexcept {
  return operator new(size, tag);
}
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace capstan::experiments {
namespace {

using Documents = std::vector<std::pair<std::string, std::string>>;

// Documents keyed "<kind>/<id>" (the prefix is added).
std::shared_ptr<const ConfigSnapshot> Build(const Documents& documents) {
  std::vector<ConfigSnapshot::StoredDocument> stored;
  for (const auto& [key, value] : documents) {
    stored.push_back({std::string(kModelPrefix) + key, value, 1});
  }
  auto snapshot = ConfigSnapshot::BuildFromStore(stored);
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  return snapshot.ok() ? *snapshot : nullptr;
}

Json User(int i) { return Json{{"id", "user-" + std::to_string(i)}}; }

const std::pair<std::string, std::string> kDomain = {"domains/main", R"({"id":"main"})"};

// A layer with one running 50/50 experiment over the whole layer.
Documents LayerWithExperiment(const std::string& layer, const std::string& experiment) {
  return {{"layers/" + layer, R"({"id":")" + layer + R"(","domain":"main"})"},
          {"experiments/" + experiment,
           R"({"id":")" + experiment + R"(","layer":")" + layer +
               R"(","state":"running","variants":[{"id":"a"},{"id":"b"}]})"}};
}

constexpr int kUnits = 100000;

TEST(AssignmentTest, LayersAreOrthogonal) {
  Documents documents = {kDomain};
  for (const auto& d : LayerWithExperiment("l1", "e1")) documents.push_back(d);
  for (const auto& d : LayerWithExperiment("l2", "e2")) documents.push_back(d);
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  // Contingency table of (variant in l1, variant in l2) over many units: if
  // the layers are independent, each cell holds a quarter.
  double cells[2][2] = {};
  EvaluationResult result;
  for (int i = 0; i < kUnits; ++i) {
    Json user = User(i);
    snapshot->Evaluate(user, &result);
    const Assignment* a1 = result.assignment("e1");
    const Assignment* a2 = result.assignment("e2");
    ASSERT_NE(a1, nullptr);
    ASSERT_NE(a2, nullptr);
    cells[a1->variant][a2->variant] += 1;
  }
  double chi_square = 0;
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 2; ++c) {
      double row = cells[r][0] + cells[r][1], column = cells[0][c] + cells[1][c];
      double expected = row * column / kUnits;
      chi_square += (cells[r][c] - expected) * (cells[r][c] - expected) / expected;
    }
  }
  // Independence: chi-square with 1 degree of freedom under 10.83 (p > 0.001).
  EXPECT_LT(chi_square, 10.83);
  // And each layer splits 50/50 (within 1%).
  EXPECT_NEAR((cells[0][0] + cells[0][1]) / kUnits, 0.5, 0.01);
  EXPECT_NEAR((cells[0][0] + cells[1][0]) / kUnits, 0.5, 0.01);
}

TEST(AssignmentTest, AUnitIsInAtMostOneExperimentPerLayer) {
  Documents documents = {kDomain,
                         {"layers/l", R"({"id":"l","domain":"main"})"},
                         {"experiments/e1", R"({"id":"e1","layer":"l","state":"running",
                             "range":[0,0.3],"variants":[{"id":"a"},{"id":"b"}]})"},
                         {"experiments/e2", R"({"id":"e2","layer":"l","state":"running",
                             "range":[0.3,0.6],"variants":[{"id":"a"},{"id":"b"}]})"},
                         {"experiments/e3", R"({"id":"e3","layer":"l","state":"running",
                             "range":[0.6,1],"variants":[{"id":"a"},{"id":"b"}]})"}};
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  std::map<std::string, int> counts;
  EvaluationResult result;
  for (int i = 0; i < kUnits; ++i) {
    Json user = User(i);
    snapshot->Evaluate(user, &result);
    ASSERT_EQ(result.assignments().size(), 1u) << "unit " << i;
    ++counts[result.assignments()[0].experiment->id];
  }
  EXPECT_NEAR(counts["e1"] / double(kUnits), 0.3, 0.01);
  EXPECT_NEAR(counts["e2"] / double(kUnits), 0.3, 0.01);
  EXPECT_NEAR(counts["e3"] / double(kUnits), 0.4, 0.01);
}

Documents Ramp(const std::string& coverage, const std::string& range_end) {
  return {kDomain,
          {"layers/l", R"({"id":"l","domain":"main"})"},
          {"experiments/e", R"({"id":"e","layer":"l","state":"running","coverage":)" + coverage +
                                R"(,"range":[0,)" + range_end +
                                R"(],"variants":[{"id":"a","weight":0.2},{"id":"b","weight":0.3},
                                 {"id":"c","weight":0.5}]})"}};
}

// Maps each assigned unit to its variant.
std::map<int, std::string> Assignments(const ConfigSnapshot& snapshot) {
  std::map<int, std::string> out;
  EvaluationResult result;
  for (int i = 0; i < kUnits; ++i) {
    Json user = User(i);
    snapshot.Evaluate(user, &result);
    if (const Assignment* a = result.assignment("e")) out[i] = std::string(a->variant_id());
  }
  return out;
}

TEST(AssignmentTest, RampingKeepsEveryAssignedUnitInItsVariant) {
  // By coverage (within the slice) and by widening the slice.
  for (auto [before, after] : {std::pair{Ramp("0.1", "1"), Ramp("0.5", "1")},
                               std::pair{Ramp("1", "0.1"), Ramp("1", "0.5")},
                               std::pair{Ramp("0.1", "0.5"), Ramp("1", "1")}}) {
    auto small = Build(before), large = Build(after);
    ASSERT_NE(small, nullptr);
    ASSERT_NE(large, nullptr);
    std::map<int, std::string> was = Assignments(*small), is = Assignments(*large);
    EXPECT_GT(is.size(), was.size() * 4);  // 10% -> 50% (or 5% -> 100%)
    for (const auto& [unit, variant] : was) {
      auto now = is.find(unit);
      ASSERT_NE(now, is.end()) << "unit " << unit << " left the experiment";
      ASSERT_EQ(now->second, variant) << "unit " << unit << " was reshuffled";
    }
  }
  std::map<int, std::string> ten = Assignments(*Build(Ramp("0.1", "1")));
  EXPECT_NEAR(ten.size() / double(kUnits), 0.1, 0.01);
}

TEST(AssignmentTest, HoldoutsExcludeUnitsFromEveryExperimentInScope) {
  Documents documents = {kDomain};
  for (const auto& d : LayerWithExperiment("l1", "e1")) documents.push_back(d);
  for (const auto& d : LayerWithExperiment("l2", "e2")) documents.push_back(d);
  documents.push_back({"holdouts/global", R"({"id":"global","fraction":0.1})"});
  documents.push_back({"holdouts/l2-only", R"({"id":"l2-only","fraction":0.2,"layers":["l2"]})"});
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  ExposureLogger exposures(1 << 20, [](const Exposure&) {});
  int global = 0, l2_only = 0;
  EvaluationResult result;
  for (int i = 0; i < kUnits; ++i) {
    Json user = User(i);
    snapshot->Evaluate(user, &result);
    std::set<std::string> holdouts;
    for (uint32_t h : result.holdouts()) holdouts.insert(snapshot->holdouts()[h].id);
    const Assignment* a1 = result.assignment("e1");
    const Assignment* a2 = result.assignment("e2");
    ASSERT_NE(a1, nullptr);
    ASSERT_NE(a2, nullptr);
    if (holdouts.count("global")) {
      ++global;
      EXPECT_EQ(a1->variant, -1);
      EXPECT_EQ(a2->variant, -1);
      EXPECT_EQ(a1->holdout->id, "global");
      EXPECT_EQ(exposures.Log(result), 0u);
    } else if (holdouts.count("l2-only")) {
      ++l2_only;
      EXPECT_GE(a1->variant, 0);
      EXPECT_EQ(a2->variant, -1);
      EXPECT_EQ(a2->holdout->id, "l2-only");
      EXPECT_EQ(exposures.Log(result), 1u);
    } else {
      EXPECT_GE(a1->variant, 0);
      EXPECT_GE(a2->variant, 0);
      EXPECT_EQ(exposures.Log(result), 2u);
    }
  }
  EXPECT_NEAR(global / double(kUnits), 0.1, 0.01);
  // The two holdouts have their own salts: independent, so 0.9 * 0.2.
  EXPECT_NEAR(l2_only / double(kUnits), 0.18, 0.01);
}

TEST(AssignmentTest, AllowListWins) {
  Documents documents = {
      kDomain,
      {"layers/l", R"({"id":"l","domain":"main","parameters":{"color":"blue"}})"},
      {"experiments/e", R"({"id":"e","layer":"l","state":"running","range":[0,0.01],
          "coverage":0.01,"condition":{"country":"NZ"},
          "variants":[{"id":"a"},{"id":"b","parameters":{"color":"red"}}],
          "forced_variants":{"vip":"b"}})"},
      {"holdouts/all", R"({"id":"all","fraction":1})"}};
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  EvaluationResult result;
  Json vip = {{"id", "vip"}, {"country", "US"}};
  snapshot->Evaluate(vip, &result);
  const Assignment* a = result.assignment("e");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->variant_id(), "b");
  EXPECT_TRUE(a->forced);
  EXPECT_EQ(a->holdout, nullptr);
  EXPECT_EQ(*result.parameter("color"), "red");
  // Everyone else is held out (fraction 1).
  Json other = {{"id", "someone"}, {"country", "NZ"}};
  snapshot->Evaluate(other, &result);
  EXPECT_TRUE(result.assignment("e") == nullptr || result.assignment("e")->variant == -1);
  EXPECT_EQ(*result.parameter("color"), "blue");
}

TEST(AssignmentTest, OnlyRunningAndLaunchedExperimentsTakeTraffic) {
  auto in_state = [](const std::string& state) {
    std::string launched = state == "launched" ? R"("launched_variant":"b",)" : "";
    return Build(
        {kDomain,
         {"layers/l", R"({"id":"l","domain":"main"})"},
         {"experiments/e", R"({"id":"e","layer":"l","state":")" + state + R"(",)" + launched +
                               R"("variants":[{"id":"a"},{"id":"b"}],
                                        "forced_variants":{"qa":"a"}})"}});
  };
  Json qa = {{"id", "qa"}};
  for (const std::string state : {"draft", "running", "stopped", "launched"}) {
    auto snapshot = in_state(state);
    ASSERT_NE(snapshot, nullptr) << state;
    EvaluationResult result;
    int assigned = 0, launched = 0;
    for (int i = 0; i < 1000; ++i) {
      Json user = User(i);
      snapshot->Evaluate(user, &result);
      if (const Assignment* a = result.assignment("e")) {
        ++assigned;
        launched += a->launched && a->variant_id() == "b";
      }
    }
    snapshot->Evaluate(qa, &result);
    const Assignment* forced = result.assignment("e");
    if (state == "draft") {
      EXPECT_EQ(assigned, 0);
      ASSERT_NE(forced, nullptr);  // the allow-list works before launch, for QA
      EXPECT_TRUE(forced->forced);
    } else if (state == "running") {
      EXPECT_EQ(assigned, 1000);
      ASSERT_NE(forced, nullptr);
      EXPECT_EQ(forced->variant_id(), "a");
    } else if (state == "stopped") {
      EXPECT_EQ(assigned, 0);
      EXPECT_EQ(forced, nullptr);
    } else {
      EXPECT_EQ(launched, 1000);  // everyone gets the launched variant
      ASSERT_NE(forced, nullptr);
      EXPECT_FALSE(forced->forced);
    }
  }
}

TEST(AssignmentTest, ConditionsWithSavedGroupsAndFallbackUnits) {
  Documents documents = {
      kDomain,
      {"units/user", R"({"id":"user","attribute":"id","fallback_attribute":"anonymous_id"})"},
      {"groups/beta", R"({"id":"beta","values":["u1","u2"]})"},
      {"layers/l", R"({"id":"l","domain":"main"})"},
      {"experiments/e", R"({"id":"e","layer":"l","state":"running",
          "condition":{"id":{"$inGroup":"beta"}},"variants":[{"id":"a"}]})"}};
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  EvaluationResult result;
  Json in = {{"id", "u1"}}, out = {{"id", "u3"}}, anonymous = {{"anonymous_id", "anon-7"}};
  snapshot->Evaluate(in, &result);
  EXPECT_NE(result.assignment("e"), nullptr);
  snapshot->Evaluate(out, &result);
  EXPECT_EQ(result.assignment("e"), nullptr);
  // No "id": the fallback attribute is the unit (the condition reads "id", so
  // the experiment's condition fails, but the unit is still resolved).
  snapshot->Evaluate(anonymous, &result);
  EXPECT_EQ(result.assignment("e"), nullptr);
  Json number_unit = {{"id", 17}};
  Json string_unit = {{"id", "17"}};
  Documents plain_documents = {kDomain,
                               {"layers/l", R"({"id":"l","domain":"main"})"},
                               {"experiments/e", R"({"id":"e","layer":"l","state":"running",
                                   "variants":[{"id":"a"},{"id":"b"}]})"}};
  auto plain = Build(plain_documents);
  ASSERT_NE(plain, nullptr);
  plain->Evaluate(anonymous, &result);
  EXPECT_EQ(result.assignment("e"), nullptr);  // the built-in user type has no fallback
  plain_documents.push_back(
      {"units/user", R"({"id":"user","attribute":"id","fallback_attribute":"anonymous_id"})"});
  auto with_fallback = Build(plain_documents);
  ASSERT_NE(with_fallback, nullptr);
  with_fallback->Evaluate(anonymous, &result);
  ASSERT_NE(result.assignment("e"), nullptr);
  EXPECT_EQ(result.assignment("e")->unit, "anon-7");
  // A number is the unit its JavaScript text names.
  EvaluationResult number_result;
  plain->Evaluate(number_unit, &number_result);
  plain->Evaluate(string_unit, &result);
  ASSERT_NE(number_result.assignment("e"), nullptr);
  ASSERT_NE(result.assignment("e"), nullptr);
  EXPECT_EQ(number_result.assignment("e")->unit, "17");
  EXPECT_EQ(number_result.assignment("e")->variant, result.assignment("e")->variant);
}

TEST(AssignmentTest, ParametersFollowLayerPrecedence) {
  Documents documents = {
      kDomain,
      {"layers/launch",
       R"({"id":"launch","launch":true,"parameters":{"color":"blue","font":"serif"}})"},
      {"experiments/launch-red", R"({"id":"launch-red","layer":"launch","state":"launched",
          "launched_variant":"red","variants":[{"id":"old"},{"id":"red","parameters":{"color":"red"}}]})"},
      {"layers/ui", R"({"id":"ui","domain":"main","parameters":{"color":"blue"}})"},
      {"experiments/green", R"({"id":"green","layer":"ui","state":"running","range":[0,0.5],
          "variants":[{"id":"green","parameters":{"color":"green"}}]})"}};
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  EvaluationResult result;
  int green = 0, red = 0;
  for (int i = 0; i < 10000; ++i) {
    Json user = User(i);
    snapshot->Evaluate(user, &result);
    EXPECT_EQ(*result.parameter("font"), "serif");  // a default nobody overrides
    const Assignment* launched = result.assignment("launch-red");
    ASSERT_NE(launched, nullptr);
    EXPECT_TRUE(launched->launched);
    EXPECT_FALSE(launched->exposed());
    if (result.assignment("green") != nullptr) {
      EXPECT_EQ(*result.parameter("color"), "green");  // a normal layer beats a launch layer
      ++green;
    } else {
      EXPECT_EQ(*result.parameter("color"), "red");  // the launch beats the default
      ++red;
    }
  }
  EXPECT_GT(green, 4000);
  EXPECT_GT(red, 4000);
  EXPECT_EQ(result.parameter("nonexistent"), nullptr);
}

TEST(AssignmentTest, DomainsSplitTraffic) {
  auto snapshot = Build({{"domains/a", R"({"id":"a","range":[0,0.25]})"},
                         {"domains/b", R"({"id":"b","range":[0.25,1]})"},
                         {"layers/la", R"({"id":"la","domain":"a"})"},
                         {"layers/lb", R"({"id":"lb","domain":"b"})"},
                         {"experiments/ea", R"({"id":"ea","layer":"la","state":"running",
                             "variants":[{"id":"x"}]})"},
                         {"experiments/eb", R"({"id":"eb","layer":"lb","state":"running",
                             "variants":[{"id":"x"}]})"}});
  ASSERT_NE(snapshot, nullptr);
  EvaluationResult result;
  int in_a = 0;
  for (int i = 0; i < kUnits; ++i) {
    Json user = User(i);
    snapshot->Evaluate(user, &result);
    ASSERT_EQ(result.assignments().size(), 1u);
    in_a += result.assignments()[0].experiment->id == "ea";
  }
  EXPECT_NEAR(in_a / double(kUnits), 0.25, 0.01);
}

TEST(FlagTest, RulesPrerequisitesAndDefaults) {
  Documents documents = {
      kDomain,
      {"layers/l", R"({"id":"l","domain":"main"})"},
      {"experiments/e", R"({"id":"e","layer":"l","state":"running",
          "variants":[{"id":"a"},{"id":"b"}]})"},
      {"flags/checkout", R"({"id":"checkout","default_value":{"version":1},"rules":[
          {"type":"force","condition":{"country":"NZ"},"value":{"version":3}},
          {"type":"rollout","coverage":0.2,"value":{"version":2}},
          {"type":"experiment","experiment":"e","values":{"b":{"version":4}}}]})"},
      {"flags/child", R"({"id":"child","default_value":true,
          "prerequisites":[{"flag":"checkout","condition":{"value.version":3}}]})"},
      {"flags/off", R"({"id":"off","enabled":false,"default_value":"x",
          "rules":[{"type":"force","value":"y"}]})"}};
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  EvaluationResult result;
  Json nz = {{"id", "u1"}, {"country", "NZ"}};
  snapshot->Evaluate(nz, &result);
  EXPECT_EQ(*result.flag("checkout")->value, Json({{"version", 3}}));
  EXPECT_EQ(result.flag("checkout")->source, FlagValue::Source::kForce);
  EXPECT_EQ(*result.flag("child")->value, true);
  EXPECT_EQ(*result.flag("off")->value, "x");
  EXPECT_EQ(result.flag("off")->source, FlagValue::Source::kDisabled);
  EXPECT_EQ(result.flag("nope"), nullptr);

  std::map<int, int> versions;
  for (int i = 0; i < kUnits; ++i) {
    Json user = User(i);
    snapshot->Evaluate(user, &result);
    int version = (*result.flag("checkout")->value)["version"].get<int>();
    ++versions[version];
    if (version == 4) {
      EXPECT_EQ(result.assignment("e")->variant_id(), "b");
    }
    EXPECT_EQ(result.flag("child")->source, FlagValue::Source::kPrerequisite);
    EXPECT_TRUE(result.flag("child")->value->is_null());
  }
  EXPECT_NEAR(versions[2] / double(kUnits), 0.2, 0.01);
  EXPECT_NEAR(versions[4] / double(kUnits), 0.4, 0.01);  // half of the other 80%
  EXPECT_NEAR(versions[1] / double(kUnits), 0.4, 0.01);
}

TEST(AssignerTest, SwapsSnapshotsWhileEvaluationsRun) {
  // Two configurations; every evaluation must see one of them whole: the
  // experiment it is in and the parameter value must come from one snapshot.
  auto version = [](const std::string& tag) {
    return Build({kDomain,
                  {"layers/l", R"({"id":"l","domain":"main","parameters":{"tag":"none"}})"},
                  {"experiments/e-" + tag, R"({"id":"e-)" + tag + R"(","layer":"l",
                      "state":"running","variants":[{"id":"v","parameters":{"tag":")" +
                                               tag + R"("}}]})"}});
  };
  std::shared_ptr<const ConfigSnapshot> a = version("a"), b = version("b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  Assigner assigner(a);
  // Evaluator threads run until stopped, each publishing the tag it last saw.
  // The main thread swaps, then waits until every thread has evaluated on the
  // new snapshot: a thread whose result kept a stale snapshot would hang the
  // test (ctest's timeout fails it) rather than pass.
  constexpr int kThreads = 3, kSwaps = 40;
  std::atomic<bool> failed{false}, stop{false};
  std::vector<std::atomic<char>> last_tag(kThreads);
  for (auto& tag : last_tag) tag = 'a';
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      EvaluationResult result;
      for (int i = 0; !stop.load(); ++i) {
        Json user = User(t * 1000000 + i);
        assigner.Evaluate(user, &result);
        if (result.assignments().size() != 1) {
          failed = true;
          continue;
        }
        const std::string& experiment = result.assignments()[0].experiment->id;
        const std::string& tag = result.parameter("tag")->get_ref<const std::string&>();
        if (experiment != "e-" + tag) failed = true;
        last_tag[t] = tag[0];
      }
    });
  }
  for (int swap = 1; swap <= kSwaps; ++swap) {
    char tag = swap % 2 == 1 ? 'b' : 'a';
    assigner.SetSnapshot(tag == 'b' ? b : a);
    for (int t = 0; t < kThreads; ++t) {
      while (last_tag[t].load() != tag) std::this_thread::yield();
    }
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  EXPECT_FALSE(failed);
  // After the swaps settle, a result that evaluated before sees the new one.
  assigner.SetSnapshot(b);
  EvaluationResult result;
  Json user = User(1);
  assigner.Evaluate(user, &result);
  EXPECT_EQ(result.parameter("tag")->get<std::string>(), "b");
  assigner.SetSnapshot(a);
  assigner.Evaluate(user, &result);
  EXPECT_EQ(result.parameter("tag")->get<std::string>(), "a");
}

TEST(ExposureTest, LogsEachUnitAndExperimentOnce) {
  Documents documents = {kDomain};
  for (const auto& d : LayerWithExperiment("l1", "e1")) documents.push_back(d);
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  std::vector<std::string> logged;
  ExposureLogger logger(1024, [&logged](const Exposure& e) {
    logged.push_back(std::string(e.experiment) + "/" + std::string(e.variant) + "/" +
                     std::string(e.unit_type) + "/" + std::string(e.unit));
  });
  EvaluationResult result;
  Json user = User(5);
  for (int i = 0; i < 3; ++i) {
    snapshot->Evaluate(user, &result);
    logger.Log(result);
  }
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_THAT(logged[0], ::testing::MatchesRegex("e1/[ab]/user/user-5"));
  EXPECT_EQ(logger.logged(), 1u);
  EXPECT_EQ(logger.deduplicated(), 2u);
}

TEST(ExposureTest, MemoryIsBoundedAndEvictionForgets) {
  ExposureDeduper deduper(1000);
  EXPECT_EQ(deduper.capacity(), 1024u);
  EXPECT_EQ(deduper.memory_bytes(), 1024u * 8);
  constexpr int kDistinct = 20000;
  for (int i = 0; i < kDistinct; ++i) {
    EXPECT_TRUE(deduper.FirstSeen("e", "v", "unit-" + std::to_string(i)));
    EXPECT_FALSE(deduper.FirstSeen("e", "v", "unit-" + std::to_string(i)));  // just seen
  }
  // The table cannot remember more than its capacity: of 20,000 triples at
  // most 1,024 are still known (a lookup only ever adds a forgotten one after
  // looking, so the ones found were in the table when the pass began), and
  // the newest ones are among them.
  int remembered = 0;
  for (int i = kDistinct - 1; i >= 0; --i) {  // newest first: those are still there
    remembered += !deduper.FirstSeen("e", "v", "unit-" + std::to_string(i));
  }
  EXPECT_LE(remembered, 1024);
  EXPECT_GT(remembered, 0);
  EXPECT_EQ(deduper.memory_bytes(), 1024u * 8);
  // Different experiments or variants are different triples.
  ExposureDeduper small(8);
  EXPECT_TRUE(small.FirstSeen("e1", "v", "u"));
  EXPECT_TRUE(small.FirstSeen("e2", "v", "u"));
  EXPECT_TRUE(small.FirstSeen("e1", "w", "u"));
  EXPECT_FALSE(small.FirstSeen("e1", "v", "u"));
}

TEST(ExposureTest, ConcurrentCallersLogATripleExactlyOnce) {
  ExposureDeduper deduper(1 << 16);
  constexpr int kTriples = 2000, kThreads = 4;
  std::atomic<int> first{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kTriples; ++i) {
        first += deduper.FirstSeen("e", "v", "unit-" + std::to_string(i));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(first.load(), kTriples);
}

TEST(AllocationTest, WarmEvaluationAllocatesNothing) {
  Documents documents = {kDomain,
                         {"holdouts/h", R"({"id":"h","fraction":0.05})"},
                         {"flags/f", R"({"id":"f","default_value":false,"rules":[
          {"type":"rollout","coverage":0.5,"value":true}]})"}};
  for (int l = 0; l < 10; ++l) {
    std::string layer = "l" + std::to_string(l);
    documents.push_back({"layers/" + layer, R"({"id":")" + layer +
                                                R"(","domain":"main","parameters":{"p)" +
                                                std::to_string(l) + R"(":0}})"});
    documents.push_back({"experiments/e" + std::to_string(l),
                         R"({"id":"e)" + std::to_string(l) + R"(","layer":")" + layer +
                             R"(","state":"running","coverage":0.8,
                             "condition":{"country":{"$in":["US","CA"]}},
                             "variants":[{"id":"a"},{"id":"b","parameters":{"p)" +
                             std::to_string(l) + R"(":1}}]})"});
  }
  auto snapshot = Build(documents);
  ASSERT_NE(snapshot, nullptr);
  Assigner assigner(snapshot);
  std::vector<Json> users;
  for (int i = 0; i < 1000; ++i) {
    users.push_back({{"id", "user-" + std::to_string(i)}, {"country", "US"}});
  }
  users.push_back({{"id", 12345}, {"country", "CA"}});  // a numeric unit
  EvaluationResult result;
  for (const Json& user : users) assigner.Evaluate(user, &result);  // warm up
  size_t assigned = 0;
  counting_allocations = true;
  allocations = 0;
  for (const Json& user : users) {
    assigner.Evaluate(user, &result);
    assigned += result.assignments().size();
  }
  counting_allocations = false;
  EXPECT_EQ(allocations, 0);
  EXPECT_GT(assigned, users.size() * 5);
}

}  // namespace
}  // namespace capstan::experiments
