// Google Benchmark of GrowthBook evaluation (not a test): the assignment
// primitives and whole evaluations through the in-process SDK.
//
//   build/release/src/experiments/experiments_bench
#include <string>

#include "benchmark/benchmark.h"
#include "experiments/bucketing.h"
#include "experiments/condition.h"
#include "experiments/evaluator.h"
#include "experiments/sdk.h"
#include "experiments/url_redirect.h"
#include "experiments/url_target.h"
#include "experiments/whatwg_url.h"

namespace capstan::experiments {
namespace {

void BM_HashV2(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Hash("checkout-test", "user-123456", 2));
}
BENCHMARK(BM_HashV2);

void BM_ChooseVariation(benchmark::State& state) {
  std::vector<double> weights = {0.5, 0.3, 0.2};
  auto ranges = GetBucketRanges(3, 0.8, &weights);
  double n = 0.42;
  for (auto _ : state) benchmark::DoNotOptimize(ChooseVariation(n, ranges));
}
BENCHMARK(BM_ChooseVariation);

// A payload with `count` features, each one experiment rule with a condition.
std::shared_ptr<const FeaturePayload> Payload(int count) {
  Json features = Json::object();
  for (int i = 0; i < count; ++i) {
    features["feature-" + std::to_string(i)] = Json::parse(R"({"defaultValue":"control","rules":[
        {"id":"r","condition":{"country":{"$in":["US","CA"]}},"key":"exp","hashVersion":2,
         "variations":["control","treatment"],"weights":[0.5,0.5],
         "meta":[{"key":"0"},{"key":"1"}]}]})");
  }
  return *FeaturePayload::Parse(Json{{"features", features}}.dump());
}

void BM_EvalFeature(benchmark::State& state) {
  int count = static_cast<int>(state.range(0));
  GrowthBookClient client(Payload(count));
  Json user = Json::parse(R"({"attributes":{"id":"user-123456","country":"US"}})");
  std::string key = "feature-" + std::to_string(count - 1);  // the last: worst lookup
  for (auto _ : state) benchmark::DoNotOptimize(client.EvalFeature(key, user));
}
BENCHMARK(BM_EvalFeature)->Arg(1)->Arg(10)->Arg(100);

// The same FeatureResult as a typed view into the payload (no JSON built).
void BM_EvalFeatureView(benchmark::State& state) {
  int count = static_cast<int>(state.range(0));
  GrowthBookClient client(Payload(count));
  Json attributes = Json::parse(R"({"id":"user-123456","country":"US"})");
  std::string key = "feature-" + std::to_string(count - 1);
  FeatureView view;
  for (auto _ : state) {
    benchmark::DoNotOptimize(client.EvalFeatureView(key, attributes, &view));
    benchmark::DoNotOptimize(view);
  }
}
BENCHMARK(BM_EvalFeatureView)->Arg(1)->Arg(10)->Arg(100);

// The hot path: the compiled payload, no JSON result.
void BM_IsOn(benchmark::State& state) {
  int count = static_cast<int>(state.range(0));
  GrowthBookClient client(Payload(count));
  Json attributes = Json::parse(R"({"id":"user-123456","country":"US"})");
  std::string key = "feature-" + std::to_string(count - 1);
  for (auto _ : state) benchmark::DoNotOptimize(client.IsOn(key, attributes));
}
BENCHMARK(BM_IsOn)->Arg(1)->Arg(10)->Arg(100);

// The reference evaluator on the same work, for comparison.
void BM_ReferenceEvalFeature(benchmark::State& state) {
  auto payload = Payload(1);
  Json user = Json::parse(R"({"attributes":{"id":"user-123456","country":"US"}})");
  for (auto _ : state) {
    GrowthBookEvaluator evaluator(payload->json(), user);
    benchmark::DoNotOptimize(evaluator.EvalFeature("feature-0"));
  }
}
BENCHMARK(BM_ReferenceEvalFeature);

void BM_EvalCondition(benchmark::State& state) {
  Json attributes = Json::parse(R"({"id":"u","country":"US","version":"2.3.1","age":31})");
  Json condition = Json::parse(
      R"({"country":{"$in":["US","CA"]},"age":{"$gte":18},"version":{"$vgte":"2.0.0"}})");
  Json groups = Json::object();
  ConditionEvaluator evaluator(groups);
  for (auto _ : state) benchmark::DoNotOptimize(evaluator.Evaluate(attributes, condition));
}
BENCHMARK(BM_EvalCondition);

// URL targeting and redirects (whatwg_url.h, url_target.h, url_redirect.h).
void BM_ParseWhatwgUrl(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        ParseWhatwgUrl("https://Shop.Example.com:443/a/../landing?utm=mail&x=a%20b#top"));
  }
}
BENCHMARK(BM_ParseWhatwgUrl);

// The same URL with an internationalized host (Cyrillic, an ideographic
// dot), through idna.h; and one whose host is already punycode (checked).
void BM_ParseWhatwgUrlIdnaHost(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(ParseWhatwgUrl(
        "https://\xd0\x9f\xd1\x80\xd0\xb8\xd0\xbc\xd0\xb5\xd1\x80\xe3\x80\x82\xd1\x80\xd1\x84:"
        "443/a/../landing?utm=mail&x=a%20b#top"));
  }
}
BENCHMARK(BM_ParseWhatwgUrlIdnaHost);

void BM_ParseWhatwgUrlPunycodeHost(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        ParseWhatwgUrl("https://xn--e1afmkfd.xn--p1ai:443/a/../landing?utm=mail&x=a%20b#top"));
  }
}
BENCHMARK(BM_ParseWhatwgUrlPunycodeHost);

void BM_UrlTargetedSimple(benchmark::State& state) {
  Json targets = Json::parse(
      R"([{"type": "simple", "pattern": "shop.example.com/landing*?utm=*"},
          {"type": "simple", "pattern": "shop.example.com/landing/admin", "include": false}])");
  for (auto _ : state) {
    benchmark::DoNotOptimize(UrlTargeted("https://shop.example.com/landing?utm=mail&x=1", targets));
  }
}
BENCHMARK(BM_UrlTargetedSimple);

void BM_UrlRedirect(benchmark::State& state) {
  Json context = Json::parse(R"({"attributes": {"id": "7"},
      "url": "https://shop.example.com/landing?utm=mail",
      "experiments": [{"key": "landing", "weights": [0.05, 0.95], "persistQueryString": true,
        "urlPatterns": [{"type": "simple", "pattern": "https://shop.example.com/landing"}],
        "variations": [{}, {"urlRedirect": "https://shop.example.com/landing-b"}]}]})");
  for (auto _ : state) benchmark::DoNotOptimize(UrlRedirect(context));
}
BENCHMARK(BM_UrlRedirect);

}  // namespace
}  // namespace capstan::experiments

BENCHMARK_MAIN();
