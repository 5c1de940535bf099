#include "experiments/analyze.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "experiments/eval_protocol.h"

namespace capstan::experiments {
namespace {

constexpr double kRelativeTolerance = 1e-9;

// Compares an answer with the reference: the same key sets, nulls where the
// reference has null, numbers to 1e-9 relative.
void ExpectClose(const Json& got, const Json& want, const std::string& path,
                 std::vector<std::string>& problems) {
  if (want.is_object()) {
    if (!got.is_object() || got.size() != want.size()) {
      problems.push_back(path + ": " + got.dump() + " vs " + want.dump());
      return;
    }
    for (auto it = want.begin(); it != want.end(); ++it) {
      if (!got.contains(it.key())) {
        problems.push_back(path + ": missing " + it.key());
        continue;
      }
      ExpectClose(got[it.key()], it.value(), path + "." + it.key(), problems);
    }
  } else if (want.is_array()) {
    if (!got.is_array() || got.size() != want.size()) {
      problems.push_back(path + ": " + got.dump() + " vs " + want.dump());
      return;
    }
    for (size_t i = 0; i < want.size(); ++i) {
      ExpectClose(got[i], want[i], path + "[" + std::to_string(i) + "]", problems);
    }
  } else if (want.is_null() || got.is_null()) {
    if (!(want.is_null() && got.is_null())) {
      problems.push_back(path + ": " + got.dump() + " vs " + want.dump());
    }
  } else if (!got.is_number()) {
    problems.push_back(path + ": not a number: " + got.dump());
  } else {
    double g = got.get<double>(), w = want.get<double>();
    if (std::fabs(g - w) > kRelativeTolerance * std::max(std::fabs(g), std::fabs(w))) {
      problems.push_back(path + ": " + got.dump() + " vs " + want.dump());
    }
  }
}

// tests/stats/golden.jsonl: requests with scipy/statsmodels answers, written by
// tests/stats/reference.py (which also checks the binary when python is here).
TEST(AnalyzeGolden, AgreesWithScipyAndStatsmodels) {
  std::ifstream golden(CAPSTAN_STATS_GOLDEN);
  ASSERT_TRUE(golden) << "cannot open " << CAPSTAN_STATS_GOLDEN;
  std::string line;
  int cases = 0;
  std::vector<std::string> problems;
  while (std::getline(golden, line)) {
    if (line.empty()) continue;
    Json entry = Json::parse(line);
    absl::StatusOr<Json> answer = AnalyzeJson(entry["request"]);
    std::string where = "case " + std::to_string(cases) + " " + entry["request"].dump();
    ++cases;
    if (!answer.ok()) {
      problems.push_back(where + ": " + std::string(answer.status().message()));
      continue;
    }
    ExpectClose(*answer, entry["response"], where, problems);
  }
  EXPECT_GE(cases, 70);
  for (const std::string& p : problems) ADD_FAILURE() << p;
}

std::string ErrorOf(const std::string& request) {
  absl::StatusOr<Json> answer = AnalyzeJson(Json::parse(request));
  if (answer.ok()) return "ok: " + answer->dump();
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(answer.status().message());
}

TEST(AnalyzeErrors, NameTheField) {
  EXPECT_EQ(ErrorOf(R"({"op":"welchTTest","a":{"n":1,"mean":1,"variance":1},
                        "b":{"n":5,"mean":1,"variance":1}})"),
            "a.n must be a finite number >= 2");
  EXPECT_EQ(ErrorOf(R"({"op":"welchTTest","a":{"n":5,"mean":1,"variance":1}})"),
            "missing field: b");
  EXPECT_EQ(ErrorOf(R"({"op":"relativeLift","a":{"n":5,"mean":1,"variance":-1},
                        "b":{"n":5,"mean":1,"variance":1}})"),
            "a.variance must be a finite number >= 0");
  EXPECT_EQ(ErrorOf(R"({"op":"welchTTest","a":{"n":5,"sum":1},
                        "b":{"n":5,"mean":1,"variance":1}})"),
            "missing field: a.sum_squares");
  EXPECT_EQ(ErrorOf(R"({"op":"welchTTest","a":{"n":5},"b":{"n":5,"mean":1,"variance":1}})"),
            "a must have mean and variance, or sum and sum_squares");
  EXPECT_EQ(ErrorOf(R"({"op":"welchTTest","a":{"n":5,"mean":1,"variance":1},
                        "b":{"n":5,"mean":1,"variance":1},"alpha":1.5})"),
            "alpha must be a number in (0, 1)");
  EXPECT_EQ(ErrorOf(R"({"op":"ratioMetric",
      "a":{"n":5,"numerator":{"sum":"x","sum_squares":1},"denominator":{"sum":1,"sum_squares":1},
           "sum_of_products":1}})"),
            "a.numerator.sum must be a number");
  EXPECT_EQ(ErrorOf(R"({"op":"cuped",
      "a":{"n":5,"post":{"sum":1,"sum_squares":1},"pre":{"sum":1,"sum_squares":1},
           "post_pre_sum_of_products":1},
      "b":{"n":5,"post":{"sum":1,"sum_squares":1},"pre":{"sum":1,"sum_squares":1}}})"),
            "missing field: b.post_pre_sum_of_products");
  EXPECT_EQ(ErrorOf(R"({"op":"cuped",
      "a":{"n":5,"post":{"sum":1,"sum_squares":1},"pre":{"sum":1,"sum_squares":-1},
           "post_pre_sum_of_products":1},
      "b":{"n":5,"post":{"sum":1,"sum_squares":1},"pre":{"sum":1,"sum_squares":1},
           "post_pre_sum_of_products":1}})"),
            "a.pre.sum_squares must be >= 0");
  const std::string ratio_arm =
      R"("n":5,"numerator":{"sum":1,"sum_squares":1},"denominator":{"sum":2,"sum_squares":4},)"
      R"("sum_of_products":2)";
  const std::string pre =
      R"("pre":{"numerator":{"sum":1,"sum_squares":1},"denominator":{"sum":3,"sum_squares":9},)"
      R"("sum_of_products":3})";
  const std::string cross =
      R"("post_pre_sum_of_products":{"numerator_numerator":1,"numerator_denominator":3,)"
      R"("denominator_numerator":2,"denominator_denominator":6})";
  const std::string arm_a = "{" + ratio_arm + "," + pre + "," + cross + "}";
  EXPECT_EQ(
      ErrorOf(R"({"op":"cupedRatio","a":)" + arm_a + R"(,"b":{)" + ratio_arm + "," + pre + "}}"),
      "missing field: b.post_pre_sum_of_products");
  EXPECT_EQ(ErrorOf(R"({"op":"cupedRatio","a":)" + arm_a + R"(,"b":{)" + ratio_arm + "," + cross +
                    R"(,"pre":{"numerator":{"sum":1,"sum_squares":1},"sum_of_products":1}}})"),
            "missing field: b.pre.denominator");
  EXPECT_EQ(
      ErrorOf(R"({"op":"cupedRatio","a":)" + arm_a + R"(,"b":{)" + ratio_arm + "," + pre +
              R"(,"post_pre_sum_of_products":{"numerator_numerator":1,"numerator_denominator":3,)"
              R"("denominator_numerator":"2","denominator_denominator":6}}})"),
      "b.post_pre_sum_of_products.denominator_numerator must be a number");
  EXPECT_EQ(ErrorOf(R"({"op":"cupedRatio","a":)" + arm_a + R"(,"b":{)" + ratio_arm + "," + cross +
                    R"(,"pre":{"numerator":{"sum":1,"sum_squares":-1},"denominator":{"sum":3,)"
                    R"("sum_squares":9},"sum_of_products":3}}})"),
            "b.pre.numerator.sum_squares must be >= 0");
  EXPECT_EQ(ErrorOf(R"({"op":"srm","counts":[1.5,2],"weights":[1,1]})"),
            "counts[0] must be an integer >= 0");
  EXPECT_EQ(ErrorOf(R"({"op":"srm","counts":[1,2],"weights":[1]})"),
            "counts and weights must have the same length");
  EXPECT_EQ(ErrorOf(R"({"op":"srm","counts":[1,2],"weights":[0,0]})"),
            "weights must have a positive, finite sum");
  EXPECT_EQ(ErrorOf(R"({"op":"pAdjust","p_values":[0.5,2]})"),
            "p_values[1] must be a number in [0, 1]");
  EXPECT_EQ(ErrorOf(R"({"op":"pAdjust","p_values":[0.5,true]})"), "p_values[1] must be a number");
  EXPECT_EQ(ErrorOf(R"({"op":"power","variance":1,"n_per_arm":10,"effect":1})"),
            "power needs exactly one of n_per_arm and effect");
  EXPECT_EQ(ErrorOf(R"({"op":"power","variance":1,"n_per_arm":10,"power":0.01})"),
            "power must be a number in (alpha, 1)");
  EXPECT_EQ(ErrorOf(R"({"op":"sequentialTTest","a":{"n":5,"mean":1,"variance":1},
                        "b":{"n":5,"mean":1,"variance":1},"sequential_tuning_parameter":0})"),
            "sequential_tuning_parameter must be a finite number > 0");
  EXPECT_EQ(ErrorOf(R"({"op":"median"})"), "unknown op: median");
}

bool HasNonFinite(const Json& value) {
  if (value.is_number_float()) return !std::isfinite(value.get<double>());
  if (value.is_structured()) {
    for (const Json& child : value) {
      if (HasNonFinite(child)) return true;
    }
  }
  return false;
}

// Every numeric field of every op replaced by values at the edges of double:
// each answer is a clean error or an answer without NaN or infinity, and
// nothing throws.
TEST(AnalyzeRobustness, ExtremeNumbersNeverThrowNorGiveNaN) {
  const char* templates[] = {
      R"({"op":"welchTTest","a":{"n":10,"mean":1,"variance":2},"b":{"n":12,"mean":1.5,"variance":3},"alpha":0.05})",
      R"({"op":"relativeLift","a":{"n":10,"sum":10,"sum_squares":30},"b":{"n":12,"sum":18,"sum_squares":60},"alpha":0.05})",
      R"({"op":"sequentialTTest","a":{"n":10,"mean":1,"variance":2},"b":{"n":12,"mean":1.5,"variance":3},"sequential_tuning_parameter":5000})",
      R"({"op":"ratioMetric","a":{"n":10,"numerator":{"sum":5,"sum_squares":8},"denominator":{"sum":20,"sum_squares":50},"sum_of_products":12},"b":{"n":10,"numerator":{"sum":6,"sum_squares":9},"denominator":{"sum":21,"sum_squares":52},"sum_of_products":14}})",
      R"({"op":"cuped","a":{"n":10,"post":{"sum":5,"sum_squares":8},"pre":{"sum":20,"sum_squares":50},"post_pre_sum_of_products":12},"b":{"n":10,"post":{"sum":6,"sum_squares":9},"pre":{"sum":21,"sum_squares":52},"post_pre_sum_of_products":14}})",
      R"({"op":"cupedRatio","a":{"n":10,"numerator":{"sum":5,"sum_squares":8},"denominator":{"sum":20,"sum_squares":50},"sum_of_products":12,"pre":{"numerator":{"sum":4,"sum_squares":6},"denominator":{"sum":18,"sum_squares":40},"sum_of_products":9},"post_pre_sum_of_products":{"numerator_numerator":5,"numerator_denominator":11,"denominator_numerator":10,"denominator_denominator":41}},"b":{"n":10,"numerator":{"sum":6,"sum_squares":9},"denominator":{"sum":21,"sum_squares":52},"sum_of_products":14,"pre":{"numerator":{"sum":5,"sum_squares":7},"denominator":{"sum":19,"sum_squares":45},"sum_of_products":11},"post_pre_sum_of_products":{"numerator_numerator":6,"numerator_denominator":12,"denominator_numerator":11,"denominator_denominator":44}}})",
      R"({"op":"srm","counts":[510,490],"weights":[1,1]})",
      R"({"op":"pAdjust","p_values":[0.01,0.5]})",
      R"({"op":"power","variance":1,"n_per_arm":100,"alpha":0.05,"power":0.8})",
      R"({"op":"power","variance":1,"effect":0.1,"alpha":0.05,"power":0.8})",
  };
  const double extremes[] = {0,      -1,      1e-308, 5e-324, -1e-308, 1e308,
                             -1e308, 1.7e308, 2,      1e15,   0.5,     1 - 1e-16};
  int answered = 0, rejected = 0;
  for (const char* text : templates) {
    const Json base = Json::parse(text);
    // Every path to a number in the request.
    std::vector<Json::json_pointer> paths;
    auto collect = [&](auto&& self, const Json& node, const Json::json_pointer& at) -> void {
      if (node.is_number()) paths.push_back(at);
      if (node.is_object()) {
        for (auto it = node.begin(); it != node.end(); ++it) self(self, it.value(), at / it.key());
      } else if (node.is_array()) {
        for (size_t i = 0; i < node.size(); ++i) self(self, node[i], at / i);
      }
    };
    collect(collect, base, Json::json_pointer());
    for (const Json::json_pointer& path : paths) {
      for (double extreme : extremes) {
        Json request = base;
        request[path] = extreme;
        absl::StatusOr<Json> answer;
        ASSERT_NO_THROW(answer = AnalyzeJson(request)) << request.dump();
        if (answer.ok()) {
          ++answered;
          EXPECT_FALSE(HasNonFinite(*answer)) << request.dump() << " -> " << answer->dump();
        } else {
          ++rejected;
          EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
        }
      }
    }
  }
  EXPECT_GT(answered, 100);
  EXPECT_GT(rejected, 100);
}

TEST(AnalyzeJson, UndefinedResultsAreNull) {
  absl::StatusOr<Json> answer = AnalyzeJson(Json::parse(
      R"({"op":"welchTTest","a":{"n":50,"mean":2,"variance":0},"b":{"n":60,"mean":2.5,"variance":0}})"));
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(answer->dump(), R"({"diff":0.5,"se":0.0,"t":null,"df":null,"p_value":null,"ci":null})");
}

TEST(EvalProtocol, AnswersTheStatisticsOps) {
  EXPECT_EQ(HandleEvalRequest(R"({"op":"pAdjust","p_values":[0.01,0.04,0.03],"seq":7})"),
            // 0.01 / (1/3) rounds up, in statsmodels too.
            R"({"holm":[0.03,0.06,0.06],"bh":[0.030000000000000002,0.04,0.04],"seq":7})");
  EXPECT_EQ(HandleEvalRequest(R"({"op":"srm","counts":[1,2],"weights":[1],"seq":8})"),
            R"({"error":"counts and weights must have the same length","seq":8})");
  std::string welch = HandleEvalRequest(
      R"({"op":"welchTTest","a":{"n":100,"mean":1,"variance":2},"b":{"n":120,"mean":1.3,"variance":3}})");
  Json parsed = Json::parse(welch);
  EXPECT_EQ(parsed.size(), 6u) << welch;
  EXPECT_NEAR(parsed["p_value"].get<double>(), 0.15872631848787838, 1e-15);
}

}  // namespace
}  // namespace capstan::experiments
