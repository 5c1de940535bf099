#include "experiments/compiled.h"

#include <utility>

#include "experiments/evaluator.h"

namespace capstan::experiments {
namespace {

const Json kNull = nullptr;

// Thrown inside compilation when a feature uses a form we leave to the
// reference evaluator; never escapes CompiledPayload's constructor.
struct NotCompiled {};

const Json* Find(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// `version || default_version` and the SDK's `=== 1` / `=== 2` tests.
int HashVersionOf(const Json* version, int default_version) {
  if (!JsTruthy(version)) return default_version;
  if (version->is_number()) {
    double v = version->get<double>();
    if (v == 1) return 1;
    if (v == 2) return 2;
  }
  return 0;
}

// A falsy value, or a string: the two forms compiled for names and seeds.
const Json* StringOrFalsy(const Json* value) {
  if (!JsTruthy(value)) return nullptr;
  if (!value->is_string()) throw NotCompiled{};
  return value;
}

VariationRange NumericRange(const Json& range) {
  if (!range.is_array() || range.size() != 2 || !range[0].is_number() || !range[1].is_number()) {
    throw NotCompiled{};
  }
  return {range[0].get<double>(), range[1].get<double>()};
}

std::vector<VariationRange> NumericRanges(const Json& ranges) {
  if (!ranges.is_array()) throw NotCompiled{};
  std::vector<VariationRange> out;
  for (const Json& r : ranges) out.push_back(NumericRange(r));
  return out;
}

std::vector<CompiledFilter> CompileFilters(const Json& filters) {
  if (!filters.is_array()) throw NotCompiled{};
  std::vector<CompiledFilter> out;
  for (const Json& filter : filters) {
    if (!filter.is_object()) throw NotCompiled{};
    CompiledFilter f;
    const Json* seed = Find(filter, "seed");
    if (seed == nullptr || !seed->is_string()) throw NotCompiled{};
    f.seed = *seed;
    const Json* attribute = StringOrFalsy(Find(filter, "attribute"));
    f.attribute = attribute != nullptr ? *attribute : Json("id");
    f.hash_version = HashVersionOf(Find(filter, "hashVersion"), 2);
    const Json* ranges = Find(filter, "ranges");
    if (ranges == nullptr) throw NotCompiled{};
    f.ranges = NumericRanges(*ranges);
    out.push_back(std::move(f));
  }
  return out;
}

const Json* HashValue(const Json& attributes, const Json& attribute) {
  auto it = attributes.find(attribute.get_ref<const std::string&>());
  if (it == attributes.end() || !JsTruthy(*it)) return nullptr;
  return &*it;
}

bool FilteredOut(const std::vector<CompiledFilter>& filters, const Json& attributes) {
  for (const CompiledFilter& f : filters) {
    const Json* value = HashValue(attributes, f.attribute);
    if (value == nullptr) return true;
    std::optional<double> n = HashJsValues(&f.seed, *value, f.hash_version);
    if (!n.has_value()) return true;
    bool in_any = false;
    for (const VariationRange& r : f.ranges) in_any |= InRange(*n, r);
    if (!in_any) return true;
  }
  return false;
}

// std::nullopt for a rule the SDK always skips (an experiment rule without
// variations, or a rule with neither force nor variations).
std::optional<CompiledRule> CompileRule(const Json& rule, const std::string& feature_id) {
  if (!rule.is_object()) throw NotCompiled{};
  if (JsTruthy(Find(rule, "parentConditions")) || Find(rule, "contextualVariations") != nullptr ||
      JsTruthy(Find(rule, "contextualBanditRef"))) {
    throw NotCompiled{};
  }
  CompiledRule c;
  c.rule = &rule;
  if (const Json* id = Find(rule, "id"); id != nullptr && id->is_string()) {
    c.id = id->get_ref<const std::string&>();
  }
  const Json* condition = Find(rule, "condition");
  if (JsTruthy(condition)) c.condition = condition;
  const Json* filters = Find(rule, "filters");
  if (JsTruthy(filters)) {
    c.filters = CompileFilters(*filters);
    c.has_filters = true;
  }
  if (const Json* attribute = StringOrFalsy(Find(rule, "hashAttribute")))
    c.hash_attribute = *attribute;
  c.hash_version = HashVersionOf(Find(rule, "hashVersion"), 1);
  const Json* seed = StringOrFalsy(Find(rule, "seed"));

  if (rule.contains("force")) {
    c.kind = CompiledRule::Kind::kForce;
    c.force = &rule["force"];
    c.seed = seed != nullptr ? *seed : Json(feature_id);
    const Json* range = Find(rule, "range");
    if (JsTruthy(range)) {
      c.range = NumericRange(*range);
      c.has_range = true;
    }
    const Json* coverage = Find(rule, "coverage");
    if (coverage != nullptr && !coverage->is_number()) throw NotCompiled{};
    if (coverage != nullptr) c.coverage = coverage->get<double>();
    c.everyone = !c.has_range && coverage == nullptr;
    c.no_one = !c.has_range && coverage != nullptr && c.coverage == 0;
    return c;
  }

  c.kind = CompiledRule::Kind::kExperiment;
  const Json* variations = Find(rule, "variations");
  if (!JsTruthy(variations)) return std::nullopt;  // skipped after its filters, which cannot throw
  if (!variations->is_array() || variations->size() < 2) throw NotCompiled{};
  c.variations = variations;
  const Json* key = StringOrFalsy(Find(rule, "key"));
  c.seed = seed != nullptr ? *seed : (key != nullptr ? *key : Json(feature_id));
  const Json* meta = Find(rule, "meta");
  if (JsTruthy(meta)) {
    if (!meta->is_array() || meta->size() != variations->size()) throw NotCompiled{};
    for (const Json& m : *meta) {
      if (!m.is_object()) throw NotCompiled{};
    }
    c.meta = meta;
  }
  const Json* ns = Find(rule, "namespace");
  if (JsTruthy(ns)) {
    if (!ns->is_array() || ns->size() < 3 || !(*ns)[0].is_string() || !(*ns)[1].is_number() ||
        !(*ns)[2].is_number()) {
      throw NotCompiled{};
    }
    c.has_namespace = true;
    c.namespace_seed = "__" + (*ns)[0].get<std::string>();
    c.namespace_start = (*ns)[1].get<double>();
    c.namespace_end = (*ns)[2].get<double>();
  }
  const Json* ranges = Find(rule, "ranges");
  if (JsTruthy(ranges)) {
    c.ranges = NumericRanges(*ranges);
  } else {
    const Json* coverage = Find(rule, "coverage");
    if (coverage != nullptr && !coverage->is_number()) throw NotCompiled{};
    const Json* weights = Find(rule, "weights");
    std::vector<double> weight_list;
    if (JsTruthy(weights)) {
      if (!weights->is_array()) throw NotCompiled{};
      for (const Json& w : *weights) {
        if (!w.is_number()) throw NotCompiled{};
        weight_list.push_back(w.get<double>());
      }
    }
    c.ranges = GetBucketRanges(static_cast<int>(variations->size()),
                               coverage != nullptr ? coverage->get<double>() : 1.0,
                               JsTruthy(weights) ? &weight_list : nullptr);
  }
  c.experiment = GrowthBookEvaluator::ExperimentFromRule(rule, *variations, feature_id);
  return c;
}

}  // namespace

CompiledPayload::CompiledPayload(const Json& payload) {
  static const Json kEmptyObject = Json::object();
  const Json* groups = Find(payload, "savedGroups");
  saved_groups_ = JsTruthy(groups) ? groups : &kEmptyObject;
  const Json* features = Find(payload, "features");
  if (features == nullptr || !features->is_object()) return;
  for (auto it = features->begin(); it != features->end(); ++it) {
    const Json& definition = it.value();
    if (!definition.is_object()) continue;  // falsy or odd: the reference decides
    try {
      CompiledFeature feature;
      feature.default_value = Find(definition, "defaultValue");
      const Json* rules = Find(definition, "rules");
      if (JsTruthy(rules)) {
        if (!rules->is_array()) throw NotCompiled{};
        for (const Json& rule : *rules) {
          std::optional<CompiledRule> compiled = CompileRule(rule, it.key());
          if (compiled.has_value()) feature.rules.push_back(*std::move(compiled));
        }
      }
      features_.emplace(it.key(), std::move(feature));
    } catch (const NotCompiled&) {
      // Left to the reference evaluator.
    }
  }
}

bool CompiledPayload::IsCompiled(std::string_view feature) const {
  return features_.contains(absl::string_view(feature.data(), feature.size()));
}

std::optional<FastFeatureResult> CompiledPayload::Evaluate(std::string_view feature_id,
                                                           const Json& attributes,
                                                           ConditionEvaluator& conditions) const {
  auto found = features_.find(absl::string_view(feature_id.data(), feature_id.size()));
  if (found == features_.end()) return std::nullopt;
  const CompiledFeature& feature = found->second;
  FastFeatureResult result;
  for (const CompiledRule& rule : feature.rules) {
    if (rule.has_filters && FilteredOut(rule.filters, attributes)) continue;
    if (rule.kind == CompiledRule::Kind::kForce) {
      if (rule.condition != nullptr && !conditions.Evaluate(attributes, *rule.condition)) continue;
      if (!rule.everyone) {
        if (rule.no_one) continue;
        const Json* value = HashValue(attributes, rule.hash_attribute);
        if (value == nullptr) continue;
        std::optional<double> n = HashJsValues(&rule.seed, *value, rule.hash_version);
        if (!n.has_value()) continue;
        if (rule.has_range ? !InRange(*n, rule.range) : !(*n <= rule.coverage)) continue;
      }
      result.source = FastFeatureResult::Source::kForce;
      result.value = rule.force;
      result.rule = &rule;
      return result;
    }
    // runExperiment without sticky buckets, overrides or QA mode.
    const Json* value = HashValue(attributes, rule.hash_attribute);
    if (value == nullptr) continue;
    if (!rule.has_filters && rule.has_namespace) {
      std::optional<double> n = HashJsValues(&rule.namespace_seed, *value, 1);
      if (!n.has_value() || !(*n >= rule.namespace_start && *n < rule.namespace_end)) continue;
    }
    if (rule.condition != nullptr && !conditions.Evaluate(attributes, *rule.condition)) continue;
    std::optional<double> n = HashJsValues(&rule.seed, *value, rule.hash_version);
    if (!n.has_value()) continue;
    int assigned = ChooseVariation(*n, rule.ranges);
    if (assigned < 0) continue;
    if (rule.meta != nullptr) {
      auto passthrough = (*rule.meta)[assigned].find("passthrough");
      if (passthrough != (*rule.meta)[assigned].end() && JsTruthy(*passthrough)) continue;
    }
    result.source = FastFeatureResult::Source::kExperiment;
    result.value = &(*rule.variations)[assigned];
    result.rule = &rule;
    result.variation = assigned;
    result.bucket = *n;
    result.hash_value = value;
    return result;
  }
  result.value = feature.default_value != nullptr ? feature.default_value : &kNull;
  return result;
}

Json FastFeatureResult::ToJson(const std::string& feature_id) const {
  Json out = Json::object();
  out["value"] = *value;
  out["on"] = JsTruthy(*value);
  out["off"] = !JsTruthy(*value);
  switch (source) {
    case Source::kDefaultValue:
      out["source"] = "defaultValue";
      out["ruleId"] = "";
      return out;
    case Source::kForce:
      out["source"] = "force";
      break;
    case Source::kExperiment:
      out["source"] = "experiment";
      break;
  }
  const Json* id = Find(*rule->rule, "id");
  out["ruleId"] = JsTruthy(id) ? *id : Json("");
  if (source == Source::kForce) return out;

  const Json* meta = rule->meta != nullptr ? &(*rule->meta)[variation] : nullptr;
  const Json* meta_key = meta != nullptr ? Find(*meta, "key") : nullptr;
  Json result = Json::object();
  result["key"] = JsTruthy(meta_key) ? *meta_key : Json(std::to_string(variation));
  result["featureId"] = feature_id;
  result["inExperiment"] = true;
  result["hashUsed"] = true;
  result["variationId"] = variation;
  result["value"] = *value;
  result["hashAttribute"] = rule->hash_attribute;
  result["hashValue"] = *hash_value;
  result["stickyBucketUsed"] = false;
  const Json* name = meta != nullptr ? Find(*meta, "name") : nullptr;
  if (JsTruthy(name)) result["name"] = *name;
  result["bucket"] = bucket;
  out["experiment"] = rule->experiment;
  out["experimentResult"] = std::move(result);
  return out;
}

}  // namespace capstan::experiments
