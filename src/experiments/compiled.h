// A features payload compiled for fast evaluation: the in-process SDK's hot
// path (internal to src/experiments; users go through sdk.h).
//
// Compilation checks each feature against the forms GrowthBook's own payloads
// use (force and rollout rules, experiment rules with numeric weights,
// coverage, ranges, namespaces, filters, meta; conditions of any shape) and
// precomputes what does not depend on the user: bucket ranges, filter ranges,
// the Experiment object a rule yields. A feature using anything else
// (prerequisites, contextual bandits, odd types the SDK coerces) is not
// compiled and the caller falls back to GrowthBookEvaluator, so answers are
// always the reference evaluator's; the npm differential runs against both.
//
// Evaluation here covers a user given by attributes only: no sticky
// bucketing, forced variations, query-string overrides, QA mode or disabled
// context (sdk.h falls back for those).
//
// Thread-safety: immutable after construction; Evaluate may run on many
// threads at once (each with its own ConditionEvaluator).
//
// Example:
//   CompiledPayload compiled(payload_json);  // payload_json must outlive it
//   ConditionEvaluator conditions(compiled.saved_groups());
//   std::optional<FastFeatureResult> r = compiled.Evaluate("f", attributes, conditions);
//   if (!r) { /* not compiled: use GrowthBookEvaluator */ }
#ifndef CAPSTAN_EXPERIMENTS_COMPILED_H_
#define CAPSTAN_EXPERIMENTS_COMPILED_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "experiments/bucketing.h"
#include "experiments/condition.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

struct CompiledFilter {
  Json seed;
  Json attribute;  // null: "id"
  int hash_version = 2;
  std::vector<VariationRange> ranges;
};

struct CompiledRule {
  enum class Kind { kForce, kExperiment };
  Kind kind = Kind::kForce;
  const Json* rule = nullptr;       // the rule document (its "id")
  std::string_view id;              // `rule.id` when a truthy string, else ""
  const Json* condition = nullptr;  // nullptr when falsy
  std::vector<CompiledFilter> filters;
  bool has_filters = false;
  Json hash_attribute = "id";  // `rule.hashAttribute || "id"`
  Json seed;                   // `rule.seed || key` (force: `|| featureId`)
  int hash_version = 1;        // 0: no such version, never hashed in

  // kForce
  const Json* force = nullptr;
  bool everyone = false;  // neither coverage nor range
  bool no_one = false;    // coverage 0 without a range
  bool has_range = false;
  VariationRange range;
  double coverage = 1;

  // kExperiment
  const Json* variations = nullptr;
  const Json* meta = nullptr;  // nullptr when falsy
  std::vector<VariationRange> ranges;
  bool has_namespace = false;
  Json namespace_seed;  // "__" + name
  double namespace_start = 0, namespace_end = 0;
  Json experiment;  // the Experiment object of the FeatureResult
};

struct CompiledFeature {
  std::vector<CompiledRule> rules;
  const Json* default_value = nullptr;  // nullptr: undefined, reported as null
};

// One evaluation's outcome; pointers point into the payload or the attributes.
struct FastFeatureResult {
  enum class Source { kDefaultValue, kForce, kExperiment };
  Source source = Source::kDefaultValue;
  const Json* value = nullptr;  // never null (a JSON null for none)
  const CompiledRule* rule = nullptr;
  int variation = -1;
  double bucket = 0;
  const Json* hash_value = nullptr;

  bool on() const { return JsTruthy(*value); }
  // The SDK's FeatureResult object for this outcome.
  Json ToJson(const std::string& feature_id) const;
};

class CompiledPayload {
 public:
  // `payload` ({"features", "savedGroups", ...}) must outlive this object.
  explicit CompiledPayload(const Json& payload);

  const Json& saved_groups() const { return *saved_groups_; }
  bool IsCompiled(std::string_view feature) const;

  // The feature's result for `attributes`, or std::nullopt when the feature is
  // not compiled (or unknown). Throws JsTypeError where the SDK throws.
  std::optional<FastFeatureResult> Evaluate(std::string_view feature, const Json& attributes,
                                            ConditionEvaluator& conditions) const;

 private:
  const Json* saved_groups_;
  // Looked up by string_view without building a string.
  absl::flat_hash_map<std::string, CompiledFeature> features_;
};

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_COMPILED_H_
