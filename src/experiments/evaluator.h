// Evaluates GrowthBook features and experiments exactly as the JavaScript SDK
// (@growthbook/growthbook 1.7, core.ts `evalFeature` and `runExperiment`) does,
// on the JSON payload and context the SDK takes.
//
// This is the reference evaluator: it walks the JSON documents directly and
// returns the SDK's FeatureResult and Result objects as JSON, which is what
// `capstan experiments eval` and the differential test against the npm SDK
// need. The in-process SDK's fast path (compiled.h) covers the common forms
// and falls back to this evaluator for the rest; the two must agree, which the
// npm differential checks against each.
//
// Context fields read: attributes, features, savedGroups, forcedVariations,
// qaMode, enabled, url, contextualBandits. Not read: forcedFeatureValues,
// overrides and the context's groups (so an experiment's `groups` excludes
// everyone, as in the SDK without them). An experiment's `urlPatterns` is
// decided by url_target.h (Unimplemented only outside whatwg_url.h's URLs);
// an old-style `url` is decided as the SDK does.
//
// Thread-safety: an evaluator is single-threaded (it holds the evaluation
// stack and a regex cache). Build one per request or per thread; the context
// JSON must outlive it and must not change while it is in use.
//
// Example:
//   Json context = Json::parse(R"({"attributes":{"id":"1"},
//       "features":{"f":{"defaultValue":1,"rules":[{"force":2}]}}})");
//   GrowthBookEvaluator evaluator(context);
//   absl::StatusOr<Json> result = evaluator.EvalFeature("f");
//   // (*result)["value"] == 2, (*result)["source"] == "force"
#ifndef CAPSTAN_EXPERIMENTS_EVALUATOR_H_
#define CAPSTAN_EXPERIMENTS_EVALUATOR_H_

#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "experiments/condition.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

// Thrown inside an evaluation that needs a feature this evaluator does not
// have (a URL outside whatwg_url.h); the public calls return Unimplemented.
class Unsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class GrowthBookEvaluator {
 public:
  // Prerequisite chains longer than this fail the evaluation (as a too deep
  // recursion fails in JavaScript, only sooner).
  static constexpr size_t kMaxPrerequisiteDepth = 256;

  explicit GrowthBookEvaluator(const Json& context);
  // The same with the payload part (features, savedGroups, contextualBandits,
  // experiments) and the user part (attributes, url, forcedVariations, qaMode,
  // enabled) in separate documents, so a shared payload is never copied.
  GrowthBookEvaluator(const Json& payload, const Json& user);

  GrowthBookEvaluator(const GrowthBookEvaluator&) = delete;
  GrowthBookEvaluator& operator=(const GrowthBookEvaluator&) = delete;

  // Turns on sticky bucketing, as a GrowthBook instance with a
  // stickyBucketService: `assignment_docs` maps "attribute||value" to
  // {attributeName, attributeValue, assignments}; evaluations read it and add
  // new assignments to it (see sticky_bucket_assignment_docs()).
  void EnableStickyBucketing(Json assignment_docs);
  const Json& sticky_bucket_assignment_docs() const { return sticky_docs_; }

  // The attribute names whose sticky-bucket documents an evaluation may read
  // (the SDK's deriveStickyBucketIdentifierAttributes), with the value each
  // document is keyed by: {name: toString(value)}.
  Json StickyBucketAttributes() const;

  // The SDK's tracking calls (core.ts onExperimentViewed), for the redirect
  // flow (url_redirect.h): once set, every run that reaches the SDK's step 14
  // (hashed into the experiment, also inside features evaluated as
  // prerequisites) and each entry of an applied force rule's `tracks`
  // (remote evaluation) is appended, in evaluation order, with the SDK's
  // dedupe key (hashAttribute + hashValue + experiment key + variationId).
  struct TrackingCall {
    std::string dedupe_key;
    Json result;
  };
  void RecordTrackingCalls(std::vector<TrackingCall>* calls) { tracking_calls_ = calls; }

  // growthbook.evalFeature(key): the FeatureResult object.
  absl::StatusOr<Json> EvalFeature(const std::string& key);

  // growthbook.run(experiment): the Result object.
  absl::StatusOr<Json> Run(const Json& experiment);

  // The Experiment evalFeature builds from an experiment rule (before any
  // contextual-bandit fields): {variations, key} plus the rule's fields the
  // SDK copies. Throws JsTypeError where the SDK would throw.
  static Json ExperimentFromRule(const Json& rule, const Json& variations,
                                 const std::string& feature_id);

 private:
  struct HashAttribute {
    Json attribute;  // the attribute's name as given (usually a string)
    Json value;      // its value, or "" when missing or falsy
  };

  Json EvalFeatureImpl(const std::string& id);
  Json RunExperiment(Json& experiment, const Json& feature_id);
  Json FeatureResult(const Json* value, const char* source, const Json* rule_id,
                     const Json* experiment = nullptr, const Json* result = nullptr);
  Json ExperimentResult(const Json& experiment, Json variation_index, bool hash_used,
                        const Json& feature_id, std::optional<double> bucket,
                        bool sticky_bucket_used);
  HashAttribute GetHashAttribute(const Json* attribute, const Json* fallback) const;
  const Json* FallbackAttributeFor(const Json& experiment_or_rule) const;
  bool ConditionPasses(const Json& condition);
  bool IsFilteredOut(const Json& filters);
  bool IsIncludedInRollout(const Json& seed, const Json& rule);
  void BuildContextualBanditExperiment(Json& experiment, const Json& bandit_ref);
  // {assigned variation or -1, version blocked}
  std::pair<int, bool> GetStickyBucketVariation(const Json& experiment);
  Json GetStickyBucketAssignments(const Json* hash_attribute, const Json* fallback_attribute);
  void SaveStickyBucketAssignment(const HashAttribute& hash, const Json& experiment,
                                  const Json& variation_key);
  void RecordTrackingCall(const Json* experiment, const Json* result);

  const Json& context_;
  const Json& attributes_;
  const Json& features_;
  const Json& saved_groups_;
  const Json& forced_variations_;
  const Json& contextual_bandits_;
  std::string url_;
  bool enabled_;
  bool qa_mode_;
  bool sticky_bucketing_ = false;
  Json sticky_docs_ = Json::object();
  // ctx.stack.evaluatedFeatures: the features on the current prerequisite path.
  std::set<std::string> evaluated_features_;
  ConditionEvaluator conditions_;
  std::vector<TrackingCall>* tracking_calls_ = nullptr;  // not owned; null: not recorded
};

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_EVALUATOR_H_
