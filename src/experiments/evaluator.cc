#include "experiments/evaluator.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "experiments/bucketing.h"
#include "experiments/url_target.h"

namespace capstan::experiments {
namespace {

const Json kNullJson = nullptr;
const Json kEmptyObject = Json::object();

// obj[key] for a JSON value: own keys of objects, indices of arrays; other
// values have no such property. Reading a property of null throws, as in
// JavaScript.
const Json* Prop(const Json& object, const std::string& key) {
  if (object.is_null()) {
    throw JsTypeError("Cannot read properties of null (reading '" + key + "')");
  }
  if (object.is_object()) {
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
  }
  if (object.is_array()) {
    if (key.empty() || key.size() > 10 || (key.size() > 1 && key[0] == '0')) return nullptr;
    uint64_t index = 0;
    for (char c : key) {
      if (c < '0' || c > '9') return nullptr;
      index = index * 10 + static_cast<uint64_t>(c - '0');
    }
    return index < object.size() ? &object[index] : nullptr;
  }
  return nullptr;
}

// `key in object`.
bool Has(const Json& object, const std::string& key) {
  if (!object.is_object() && !object.is_array()) {
    throw JsTypeError("Cannot use 'in' operator to search for '" + key + "'");
  }
  return Prop(object, key) != nullptr;
}

const Json& OrNull(const Json* value) { return value == nullptr ? kNullJson : *value; }

bool IsString(const Json* value, const char* s) {
  return value != nullptr && value->is_string() && value->get_ref<const std::string&>() == s;
}

// `version || default_version`, then the SDK's `=== 2` / `=== 1` tests: 0 means
// "no such hash version".
int HashVersionOf(const Json* version, int default_version) {
  if (!JsTruthy(version)) return default_version;
  if (version->is_number()) {
    double v = version->get<double>();
    if (v == 1) return 1;
    if (v == 2) return 2;
  }
  return 0;
}

// `for (const x of value)`: arrays only (the SDK's payloads never iterate
// strings here).
const Json& Iterable(const Json* value, const char* what) {
  if (value == nullptr || !value->is_array()) {
    throw JsTypeError(std::string(what) + " is not iterable");
  }
  return *value;
}

// inRange(n, range) with JavaScript comparisons on the range's elements.
bool InRangeJson(double n, const Json& range) {
  Json number = n;
  return JsGreaterOrEqual(&number, Prop(range, "0")) && JsLessThan(&number, Prop(range, "1"));
}

int ChooseVariationJson(double n, const Json& ranges) {
  if (!ranges.is_array()) return -1;  // `ranges.length` is undefined
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (InRangeJson(n, ranges[i])) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

namespace {

// object[key] when present (and, with `need_object`, an object), else `fallback`.
const Json& Member(const Json& object, const char* key, const Json& fallback,
                   bool need_object = false) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  if (it == object.end() || (need_object && !it->is_object())) return fallback;
  return *it;
}

}  // namespace

GrowthBookEvaluator::GrowthBookEvaluator(const Json& context)
    : GrowthBookEvaluator(context, context) {}

GrowthBookEvaluator::GrowthBookEvaluator(const Json& payload, const Json& user)
    : context_(payload),
      attributes_(Member(user, "attributes", kEmptyObject, /*need_object=*/true)),
      features_(Member(payload, "features", kNullJson)),
      saved_groups_(JsTruthy(Member(payload, "savedGroups", kNullJson))
                        ? Member(payload, "savedGroups", kNullJson)
                        : kEmptyObject),
      forced_variations_(Member(user, "forcedVariations", kEmptyObject, /*need_object=*/true)),
      contextual_bandits_(Member(payload, "contextualBandits", kNullJson)),
      enabled_(!(Member(user, "enabled", kNullJson).is_boolean() &&
                 !Member(user, "enabled", kNullJson).get<bool>())),
      qa_mode_(JsTruthy(Member(user, "qaMode", kNullJson))),
      conditions_(saved_groups_) {
  const Json& url = Member(user, "url", kNullJson);
  if (url.is_string()) url_ = url.get<std::string>();
}

void GrowthBookEvaluator::EnableStickyBucketing(Json assignment_docs) {
  sticky_bucketing_ = true;
  sticky_docs_ = assignment_docs.is_object() ? std::move(assignment_docs) : Json::object();
}

absl::StatusOr<Json> GrowthBookEvaluator::EvalFeature(const std::string& key) {
  evaluated_features_.clear();
  try {
    return EvalFeatureImpl(key);
  } catch (const JsTypeError& e) {
    return absl::InvalidArgumentError(std::string("TypeError: ") + e.what());
  } catch (const Unsupported& e) {
    return absl::UnimplementedError(e.what());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

absl::StatusOr<Json> GrowthBookEvaluator::Run(const Json& experiment) {
  evaluated_features_.clear();
  try {
    Json copy = experiment;
    return RunExperiment(copy, kNullJson);
  } catch (const JsTypeError& e) {
    return absl::InvalidArgumentError(std::string("TypeError: ") + e.what());
  } catch (const Unsupported& e) {
    return absl::UnimplementedError(e.what());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

GrowthBookEvaluator::HashAttribute GrowthBookEvaluator::GetHashAttribute(
    const Json* attribute, const Json* fallback) const {
  HashAttribute out{JsTruthy(attribute) ? *attribute : Json("id"), Json("")};
  const Json* value = Prop(attributes_, JsToString(out.attribute));
  if (JsTruthy(value)) out.value = *value;
  if (!JsTruthy(out.value) && JsTruthy(fallback)) {
    const Json* fallback_value = Prop(attributes_, JsToString(*fallback));
    if (JsTruthy(fallback_value)) {
      out.value = *fallback_value;
      out.attribute = *fallback;
    }
  }
  return out;
}

const Json* GrowthBookEvaluator::FallbackAttributeFor(const Json& experiment_or_rule) const {
  // The fallback attribute only counts when sticky bucketing is on.
  if (!sticky_bucketing_ || JsTruthy(Prop(experiment_or_rule, "disableStickyBucketing"))) {
    return nullptr;
  }
  return Prop(experiment_or_rule, "fallbackAttribute");
}

bool GrowthBookEvaluator::ConditionPasses(const Json& condition) {
  return conditions_.Evaluate(attributes_, condition);
}

bool GrowthBookEvaluator::IsFilteredOut(const Json& filters) {
  if (!filters.is_array()) throw JsTypeError("filters.some is not a function");
  for (const Json& filter : filters) {
    HashAttribute hash = GetHashAttribute(Prop(filter, "attribute"), nullptr);
    if (!JsTruthy(hash.value)) return true;
    std::optional<double> n = HashJsValues(Prop(filter, "seed"), hash.value,
                                           HashVersionOf(Prop(filter, "hashVersion"), 2));
    if (!n.has_value()) return true;
    const Json* ranges = Prop(filter, "ranges");
    if (ranges == nullptr || !ranges->is_array()) {
      throw JsTypeError("filter.ranges.some is not a function");
    }
    bool in_any = false;
    for (const Json& range : *ranges) {
      if (InRangeJson(*n, range)) {
        in_any = true;
        break;
      }
    }
    if (!in_any) return true;
  }
  return false;
}

bool GrowthBookEvaluator::IsIncludedInRollout(const Json& seed, const Json& rule) {
  const Json* range = Prop(rule, "range");
  const Json* coverage = Prop(rule, "coverage");
  if (!JsTruthy(range) && coverage == nullptr) return true;
  if (!JsTruthy(range) && coverage->is_number() && coverage->get<double>() == 0) return false;
  HashAttribute hash = GetHashAttribute(Prop(rule, "hashAttribute"), FallbackAttributeFor(rule));
  if (!JsTruthy(hash.value)) return false;
  std::optional<double> n =
      HashJsValues(&seed, hash.value, HashVersionOf(Prop(rule, "hashVersion"), 1));
  if (!n.has_value()) return false;
  if (JsTruthy(range)) return InRangeJson(*n, *range);
  if (coverage != nullptr) {
    Json number = *n;
    return JsLessOrEqual(&number, coverage);
  }
  return true;
}

void GrowthBookEvaluator::BuildContextualBanditExperiment(Json& experiment,
                                                          const Json& bandit_ref) {
  const Json* definition =
      contextual_bandits_.is_object() ? Prop(contextual_bandits_, JsToString(bandit_ref)) : nullptr;
  if (!JsTruthy(definition)) return;
  const Json* contexts = Prop(*definition, "contexts");
  const Json* banditVersion = Prop(*definition, "banditVersion");
  const Json* leaf = nullptr;
  if (JsTruthy(contexts) && contexts->is_array() && !contexts->empty()) {
    try {
      for (const Json& candidate : *contexts) {
        const Json* condition = Prop(candidate, "condition");
        if (ConditionPasses(JsTruthy(condition) ? *condition : kEmptyObject)) {
          leaf = &candidate;
          break;
        }
      }
    } catch (const JsTypeError&) {
      leaf = nullptr;  // the SDK logs and falls back to aggregate weights
    }
  }
  Json bandit = Json::object();
  if (leaf != nullptr) {
    const Json* leaf_id = Prop(*leaf, "leafId");
    const Json* weights = Prop(*leaf, "weights");
    if (weights != nullptr) {
      experiment["weights"] = *weights;
    } else {
      experiment.erase("weights");  // assigned undefined
    }
    if (leaf_id != nullptr) bandit["leafId"] = *leaf_id;
    if (weights != nullptr) bandit["variationWeights"] = *weights;
  } else {
    bandit["leafId"] = -1;
    const Json* weights = Prop(experiment, "weights");
    if (weights != nullptr && !weights->is_null()) {
      bandit["variationWeights"] = *weights;
    } else {
      Json equal = Json::array();
      for (double w : GetEqualWeights(static_cast<int>(experiment["variations"].size()))) {
        equal.push_back(w);
      }
      bandit["variationWeights"] = std::move(equal);
    }
  }
  if (banditVersion != nullptr) bandit["banditVersion"] = *banditVersion;
  experiment["contextualBandit"] = std::move(bandit);
}

Json GrowthBookEvaluator::FeatureResult(const Json* value, const char* source, const Json* rule_id,
                                        const Json* experiment, const Json* result) {
  Json out = Json::object();
  if (value != nullptr) out["value"] = *value;  // undefined is left out, as JSON.stringify does
  out["on"] = JsTruthy(value);
  out["off"] = !JsTruthy(value);
  out["source"] = source;
  out["ruleId"] = JsTruthy(rule_id) ? *rule_id : Json("");
  if (experiment != nullptr) out["experiment"] = *experiment;
  if (result != nullptr) out["experimentResult"] = *result;
  return out;
}

Json GrowthBookEvaluator::ExperimentResult(const Json& experiment, Json variation_index,
                                           bool hash_used, const Json& feature_id,
                                           std::optional<double> bucket, bool sticky_bucket_used) {
  bool in_experiment = true;
  const Json& variations = experiment["variations"];
  Json zero = 0;
  Json length = variations.size();
  if (JsLessThan(&variation_index, &zero) || JsGreaterOrEqual(&variation_index, &length)) {
    variation_index = 0;
    in_experiment = false;
  }
  std::string index_key = JsToString(variation_index);
  HashAttribute hash =
      GetHashAttribute(Prop(experiment, "hashAttribute"), FallbackAttributeFor(experiment));

  const Json* meta_list = Prop(experiment, "meta");
  const Json* meta = &kEmptyObject;
  if (JsTruthy(meta_list)) {
    meta = Prop(*meta_list, index_key);
    if (meta == nullptr || meta->is_null()) {
      throw JsTypeError("Cannot read properties of undefined (reading 'key')");
    }
  }
  const Json* meta_key = Prop(*meta, "key");
  Json out = Json::object();
  out["key"] = JsTruthy(meta_key) ? *meta_key : Json(index_key);
  out["featureId"] = feature_id;
  out["inExperiment"] = in_experiment;
  out["hashUsed"] = hash_used;
  out["variationId"] = variation_index;
  if (const Json* value = Prop(variations, index_key)) out["value"] = *value;
  out["hashAttribute"] = hash.attribute;
  out["hashValue"] = hash.value;
  out["stickyBucketUsed"] = sticky_bucket_used;
  const Json* name = Prop(*meta, "name");
  if (JsTruthy(name)) out["name"] = *name;
  if (bucket.has_value()) out["bucket"] = *bucket;
  const Json* passthrough = Prop(*meta, "passthrough");
  if (JsTruthy(passthrough)) out["passthrough"] = *passthrough;
  const Json* bandit = Prop(experiment, "contextualBandit");
  if (JsTruthy(bandit) && hash_used && in_experiment) {
    if (const Json* leaf_id = Prop(*bandit, "leafId")) out["leafId"] = *leaf_id;
    if (const Json* weights = Prop(*bandit, "variationWeights")) {
      out["variationWeights"] = *weights;
    }
    if (const Json* version = Prop(*bandit, "banditVersion")) out["banditVersion"] = *version;
  }
  return out;
}

Json GrowthBookEvaluator::ExperimentFromRule(const Json& rule, const Json& variations,
                                             const std::string& feature_id) {
  Json experiment = Json::object();
  experiment["variations"] = variations;
  const Json* rule_key = Prop(rule, "key");
  experiment["key"] = JsTruthy(rule_key) ? *rule_key : Json(feature_id);
  if (Has(rule, "coverage")) experiment["coverage"] = *Prop(rule, "coverage");
  auto copy_if_truthy = [&](const char* field) {
    const Json* value = Prop(rule, field);
    if (JsTruthy(value)) experiment[field] = *value;
  };
  auto copy_if_present = [&](const char* field) {
    const Json* value = Prop(rule, field);
    if (value != nullptr) experiment[field] = *value;
  };
  copy_if_truthy("weights");
  copy_if_truthy("hashAttribute");
  copy_if_truthy("fallbackAttribute");
  copy_if_truthy("disableStickyBucketing");
  copy_if_present("bucketVersion");
  copy_if_present("minBucketVersion");
  copy_if_truthy("namespace");
  copy_if_truthy("meta");
  copy_if_truthy("ranges");
  copy_if_truthy("name");
  copy_if_truthy("phase");
  copy_if_truthy("seed");
  copy_if_truthy("hashVersion");
  copy_if_truthy("filters");
  copy_if_truthy("condition");
  return experiment;
}

Json GrowthBookEvaluator::EvalFeatureImpl(const std::string& id) {
  if (evaluated_features_.count(id) > 0) {
    return FeatureResult(&kNullJson, "cyclicPrerequisite", nullptr);
  }
  evaluated_features_.insert(id);
  // JavaScript runs out of stack on a long enough chain too ("Maximum call
  // stack size exceeded"); this bound keeps ours well inside the stack.
  if (evaluated_features_.size() > kMaxPrerequisiteDepth) {
    throw JsTypeError("prerequisite chain deeper than " + std::to_string(kMaxPrerequisiteDepth));
  }

  const Json* feature = features_.is_object() ? Prop(features_, id) : nullptr;
  if (!JsTruthy(feature)) return FeatureResult(&kNullJson, "unknownFeature", nullptr);

  const Json* rules = Prop(*feature, "rules");
  if (JsTruthy(rules)) {
    const std::set<std::string> evaluated_before_rules = evaluated_features_;
    for (const Json& rule : Iterable(rules, "feature.rules")) {
      const Json* parents = Prop(rule, "parentConditions");
      bool skip_rule = false;
      if (JsTruthy(parents)) {
        for (const Json& parent : Iterable(parents, "rule.parentConditions")) {
          evaluated_features_ = evaluated_before_rules;
          Json parent_result = EvalFeatureImpl(JsToString(Prop(parent, "id")));
          if (parent_result["source"] == "cyclicPrerequisite") {
            return FeatureResult(&kNullJson, "cyclicPrerequisite", nullptr);
          }
          Json tested = Json::object();
          if (parent_result.contains("value")) tested["value"] = parent_result["value"];
          const Json* condition = Prop(parent, "condition");
          // The SDK passes no saved groups to prerequisite conditions.
          ConditionEvaluator parent_conditions(kEmptyObject);
          if (!parent_conditions.Evaluate(tested,
                                          JsTruthy(condition) ? *condition : kEmptyObject)) {
            if (JsTruthy(Prop(parent, "gate"))) {
              return FeatureResult(&kNullJson, "prerequisite", nullptr);
            }
            skip_rule = true;
            break;
          }
        }
      }
      if (skip_rule) continue;

      const Json* filters = Prop(rule, "filters");
      if (JsTruthy(filters) && IsFilteredOut(*filters)) continue;

      if (Has(rule, "force")) {
        const Json* condition = Prop(rule, "condition");
        if (JsTruthy(condition) && !ConditionPasses(*condition)) continue;
        const Json* seed = Prop(rule, "seed");
        if (!IsIncludedInRollout(JsTruthy(seed) ? *seed : Json(id), rule)) continue;
        // Remotely evaluated experiments' tracking calls (rule.tracks.forEach).
        const Json* tracks = Prop(rule, "tracks");
        if (tracking_calls_ != nullptr && JsTruthy(tracks)) {
          if (!tracks->is_array()) throw JsTypeError("rule.tracks.forEach is not a function");
          for (const Json& track : *tracks) {
            RecordTrackingCall(Prop(track, "experiment"), Prop(track, "result"));
          }
        }
        return FeatureResult(Prop(rule, "force"), "force", Prop(rule, "id"));
      }

      const Json* variations = Prop(rule, "contextualVariations");
      if (variations == nullptr || variations->is_null()) variations = Prop(rule, "variations");
      if (!JsTruthy(variations)) continue;

      Json experiment = ExperimentFromRule(rule, *variations, id);
      const Json* bandit_ref = Prop(rule, "contextualBanditRef");
      if (JsTruthy(bandit_ref)) BuildContextualBanditExperiment(experiment, *bandit_ref);

      Json result = RunExperiment(experiment, Json(id));
      if (JsTruthy(Prop(experiment, "contextualBandit")) &&
          !(result["hashUsed"].get<bool>() && result["inExperiment"].get<bool>())) {
        experiment.erase("contextualBandit");
      }
      if (result["inExperiment"].get<bool>() && !JsTruthy(Prop(result, "passthrough"))) {
        return FeatureResult(Prop(result, "value"), "experiment", Prop(rule, "id"), &experiment,
                             &result);
      }
    }
  }
  const Json* default_value = Prop(*feature, "defaultValue");
  return FeatureResult(default_value == nullptr ? &kNullJson : default_value, "defaultValue",
                       nullptr);
}

Json GrowthBookEvaluator::RunExperiment(Json& experiment, const Json& feature_id) {
  if (!experiment.is_object()) throw JsTypeError("experiment is not an object");
  const Json* variations = Prop(experiment, "variations");
  if (variations == nullptr || !variations->is_array()) {
    throw JsTypeError("experiment.variations is not an array");
  }
  const Json key = OrNull(Prop(experiment, "key"));
  const bool key_missing = Prop(experiment, "key") == nullptr;
  const int num_variations = static_cast<int>(variations->size());
  auto not_in = [&]() { return ExperimentResult(experiment, -1, false, feature_id, {}, false); };

  // 1. Fewer than two variations; 2. the context is disabled.
  if (num_variations < 2) return not_in();
  if (!enabled_) return not_in();

  // 2.5. A contextual bandit reports the weights actually used.
  const Json* bandit = Prop(experiment, "contextualBandit");
  const Json* weights = Prop(experiment, "weights");
  if (JsTruthy(bandit) && JsTruthy(weights)) {
    Json merged = bandit->is_object() ? *bandit : Json::object();
    merged["variationWeights"] = *weights;
    experiment["contextualBandit"] = std::move(merged);
  }

  // 2.6. URL targeting (isURLTargeted, url_target.h) for a truthy urlPatterns.
  const Json* url_patterns = Prop(experiment, "urlPatterns");
  if (JsTruthy(url_patterns)) {
    std::optional<bool> targeted = UrlTargeted(url_, *url_patterns);
    if (!targeted.has_value()) {
      throw Unsupported(
          "experiment.urlPatterns: the URL or a pattern is outside what Capstan's WHATWG URL "
          "parser supports (file: and non-http(s)/ws(s)/ftp schemes, URL "
          "parts over 4 KB; see src/experiments/whatwg_url.h)");
    }
    if (!*targeted) return not_in();
  }

  // 3. Query-string override; 4. forced variations.
  if (key.is_string()) {
    std::optional<int> forced =
        GetQueryStringOverride(key.get<std::string>(), url_, num_variations);
    if (forced.has_value()) {
      return ExperimentResult(experiment, *forced, false, feature_id, {}, false);
    }
  }
  const Json* forced = Prop(forced_variations_, key_missing ? "undefined" : JsToString(key));
  if (forced != nullptr) return ExperimentResult(experiment, *forced, false, feature_id, {}, false);

  // 5. Draft or inactive.
  if (IsString(Prop(experiment, "status"), "draft")) return not_in();
  const Json* active = Prop(experiment, "active");
  if (active != nullptr && active->is_boolean() && !active->get<bool>()) return not_in();

  // 6. The hash attribute.
  HashAttribute hash =
      GetHashAttribute(Prop(experiment, "hashAttribute"), FallbackAttributeFor(experiment));
  if (!JsTruthy(hash.value)) return not_in();

  int assigned = -1;
  bool found_sticky_bucket = false;
  bool sticky_version_blocked = false;
  if (sticky_bucketing_ && !JsTruthy(Prop(experiment, "disableStickyBucketing"))) {
    auto [variation, blocked] = GetStickyBucketVariation(experiment);
    found_sticky_bucket = variation >= 0;
    assigned = variation;
    sticky_version_blocked = blocked;
  }

  if (!found_sticky_bucket) {
    // 7. Filters, or the legacy namespace.
    const Json* filters = Prop(experiment, "filters");
    const Json* ns = Prop(experiment, "namespace");
    if (JsTruthy(filters)) {
      if (IsFilteredOut(*filters)) return not_in();
    } else if (JsTruthy(ns)) {
      Json ns_seed = "__" + JsToString(Prop(*ns, "0"));
      std::optional<double> n = HashJsValues(&ns_seed, hash.value, 1);
      if (!n.has_value()) return not_in();
      Json number = *n;
      if (!(JsGreaterOrEqual(&number, Prop(*ns, "1")) && JsLessThan(&number, Prop(*ns, "2")))) {
        return not_in();
      }
    }
    // 8. Targeting condition.
    const Json* condition = Prop(experiment, "condition");
    if (JsTruthy(condition) && !ConditionPasses(*condition)) return not_in();
    // 8.05. Prerequisites.
    const Json* parents = Prop(experiment, "parentConditions");
    if (JsTruthy(parents)) {
      const std::set<std::string> evaluated_before = evaluated_features_;
      for (const Json& parent : Iterable(parents, "experiment.parentConditions")) {
        evaluated_features_ = evaluated_before;
        Json parent_result = EvalFeatureImpl(JsToString(Prop(parent, "id")));
        if (parent_result["source"] == "cyclicPrerequisite") return not_in();
        Json tested = Json::object();
        if (parent_result.contains("value")) tested["value"] = parent_result["value"];
        const Json* parent_condition = Prop(parent, "condition");
        ConditionEvaluator parent_conditions(kEmptyObject);
        if (!parent_conditions.Evaluate(
                tested, JsTruthy(parent_condition) ? *parent_condition : kEmptyObject)) {
          return not_in();
        }
      }
    }
  }

  // 8.1. Groups: the context defines none (the protocol has no "groups"), so
  // any truthy `groups` excludes the user, as hasGroupOverlap does with {}.
  if (!found_sticky_bucket && JsTruthy(Prop(experiment, "groups"))) return not_in();
  // 8.2. Old-style URL targeting: without a URL the user is excluded; with
  // one the SDK calls .test on the string, a TypeError.
  if (JsTruthy(Prop(experiment, "url"))) {
    if (url_.empty()) return not_in();
    throw JsTypeError("urlRegex.test is not a function");
  }

  // 9. The hash, and the variation whose range holds it.
  const Json* seed = Prop(experiment, "seed");
  const Json* seed_or_key = JsTruthy(seed) ? seed : (key_missing ? nullptr : &key);
  std::optional<double> n =
      HashJsValues(seed_or_key, hash.value, HashVersionOf(Prop(experiment, "hashVersion"), 1));
  if (!n.has_value()) return not_in();

  if (!found_sticky_bucket) {
    const Json* ranges = Prop(experiment, "ranges");
    if (JsTruthy(ranges)) {
      assigned = ChooseVariationJson(*n, *ranges);
    } else {
      const Json* coverage = Prop(experiment, "coverage");
      double coverage_number = coverage == nullptr ? 1.0 : JsToNumber(*coverage);
      std::vector<double> weight_list;
      bool have_weights = false;
      if (JsTruthy(weights) && weights->is_array()) {
        have_weights = true;
        for (const Json& w : *weights) weight_list.push_back(JsToNumber(w));
      } else if (JsTruthy(weights)) {
        have_weights = true;  // no usable length: the length check replaces it
        weight_list.assign(num_variations + 1, 0);
      }
      assigned = ChooseVariation(*n, GetBucketRanges(num_variations, coverage_number,
                                                     have_weights ? &weight_list : nullptr));
    }
  }

  // 9.5. A sticky bucket from a blocked bucket version unenrolls the user.
  if (sticky_version_blocked) {
    return ExperimentResult(experiment, -1, false, feature_id, {}, true);
  }
  // 10. Not in any range.
  if (assigned < 0) return not_in();
  // 11. A forced variation.
  if (Has(experiment, "force")) {
    return ExperimentResult(experiment, *Prop(experiment, "force"), false, feature_id, {}, false);
  }
  // 12. QA mode; 12.5. stopped.
  if (qa_mode_) return not_in();
  if (IsString(Prop(experiment, "status"), "stopped")) return not_in();

  // 13. In the experiment.
  Json result = ExperimentResult(experiment, assigned, true, feature_id, n, found_sticky_bucket);
  if (sticky_bucketing_ && !JsTruthy(Prop(experiment, "disableStickyBucketing"))) {
    SaveStickyBucketAssignment(hash, experiment, result["key"]);
  }
  // 14. The tracking call.
  if (tracking_calls_ != nullptr) RecordTrackingCall(&experiment, &result);
  return result;
}

void GrowthBookEvaluator::RecordTrackingCall(const Json* experiment, const Json* result) {
  // getExperimentDedupeKey reads the result's fields, then the experiment's key.
  if (result == nullptr || experiment == nullptr) {
    throw JsTypeError("Cannot read properties of undefined (reading 'hashAttribute')");
  }
  std::string key = JsToString(Prop(*result, "hashAttribute")) +
                    JsToString(Prop(*result, "hashValue")) + JsToString(Prop(*experiment, "key")) +
                    JsToString(Prop(*result, "variationId"));
  tracking_calls_->push_back({std::move(key), *result});
}

// ---- Sticky bucketing -------------------------------------------------------

namespace {

// util.ts toString: strings as they are, anything else JSON.stringify'd.
std::string SdkToString(const Json& value) {
  return value.is_string() ? value.get<std::string>() : JsonStringify(value);
}

std::string StickyExperimentKey(const Json& experiment_key, const Json* bucket_version) {
  Json version = JsTruthy(bucket_version) ? *bucket_version : Json(0);
  return JsToString(experiment_key) + "__" + JsToString(version);
}

}  // namespace

Json GrowthBookEvaluator::GetStickyBucketAssignments(const Json* hash_attribute,
                                                     const Json* fallback_attribute) {
  Json assignments = Json::object();
  HashAttribute hash = GetHashAttribute(hash_attribute, nullptr);
  std::string hash_key = JsToString(hash.attribute) + "||" + SdkToString(hash.value);
  // The SDK looks the fallback up with getHashAttribute too, so a missing
  // fallback attribute means "id".
  HashAttribute fallback = GetHashAttribute(fallback_attribute, nullptr);
  auto merge_from = [&](const std::string& doc_key) {
    const Json* doc = Prop(sticky_docs_, doc_key);
    if (!JsTruthy(doc)) return;
    const Json* doc_assignments = Prop(*doc, "assignments");
    if (JsTruthy(doc_assignments) && doc_assignments->is_object()) {
      for (auto it = doc_assignments->begin(); it != doc_assignments->end(); ++it) {
        assignments[it.key()] = it.value();
      }
    }
  };
  if (JsTruthy(fallback.value)) {
    merge_from(JsToString(fallback.attribute) + "||" + SdkToString(fallback.value));
  }
  merge_from(hash_key);
  return assignments;
}

std::pair<int, bool> GrowthBookEvaluator::GetStickyBucketVariation(const Json& experiment) {
  const Json key = OrNull(Prop(experiment, "key"));
  const Json* min_version = Prop(experiment, "minBucketVersion");
  Json assignments = GetStickyBucketAssignments(Prop(experiment, "hashAttribute"),
                                                Prop(experiment, "fallbackAttribute"));
  if (JsTruthy(min_version)) {
    Json zero = 0;
    if (JsGreaterThan(min_version, &zero)) {
      for (int i = 0;; ++i) {
        Json index = i;
        if (!JsLessThan(&index, min_version)) break;
        Json version = i;
        if (assignments.contains(StickyExperimentKey(key, &version))) return {-1, true};
      }
    }
  }
  auto it = assignments.find(StickyExperimentKey(key, Prop(experiment, "bucketVersion")));
  if (it == assignments.end()) return {-1, false};
  const Json* meta = Prop(experiment, "meta");
  if (!JsTruthy(meta) || !meta->is_array()) return {-1, false};
  for (size_t i = 0; i < meta->size(); ++i) {
    const Json* meta_key = Prop((*meta)[i], "key");
    if (JsStrictEquals(meta_key, &*it)) return {static_cast<int>(i), false};
  }
  return {-1, false};
}

void GrowthBookEvaluator::SaveStickyBucketAssignment(const HashAttribute& hash,
                                                     const Json& experiment,
                                                     const Json& variation_key) {
  std::string attribute_value = SdkToString(hash.value);
  std::string doc_key = JsToString(hash.attribute) + "||" + attribute_value;
  Json existing = Json::object();
  if (const Json* doc = Prop(sticky_docs_, doc_key); JsTruthy(doc)) {
    const Json* doc_assignments = Prop(*doc, "assignments");
    if (JsTruthy(doc_assignments)) existing = *doc_assignments;
  }
  Json updated = existing;
  updated[StickyExperimentKey(OrNull(Prop(experiment, "key")), Prop(experiment, "bucketVersion"))] =
      variation_key;
  if (JsonStringify(existing) == JsonStringify(updated)) return;
  Json doc = Json::object();
  doc["attributeName"] = hash.attribute;
  doc["attributeValue"] = attribute_value;
  doc["assignments"] = std::move(updated);
  sticky_docs_[doc_key] = std::move(doc);
}

Json GrowthBookEvaluator::StickyBucketAttributes() const {
  // Insertion-ordered set of identifier attributes.
  std::vector<std::string> names;
  auto add = [&](const std::string& name) {
    for (const std::string& existing : names) {
      if (existing == name) return;
    }
    names.push_back(name);
  };
  if (features_.is_object()) {
    for (auto it = features_.begin(); it != features_.end(); ++it) {
      const Json* rules = Prop(it.value(), "rules");
      if (!JsTruthy(rules) || !rules->is_array()) continue;
      for (const Json& rule : *rules) {
        if (JsTruthy(Prop(rule, "variations")) || JsTruthy(Prop(rule, "contextualVariations"))) {
          const Json* hash_attribute = Prop(rule, "hashAttribute");
          add(JsTruthy(hash_attribute) ? JsToString(*hash_attribute) : "id");
          const Json* fallback = Prop(rule, "fallbackAttribute");
          if (JsTruthy(fallback)) add(JsToString(*fallback));
        }
      }
    }
  }
  if (const Json* experiments = context_.is_object() ? Prop(context_, "experiments") : nullptr;
      experiments != nullptr && experiments->is_array()) {
    for (const Json& experiment : *experiments) {
      const Json* hash_attribute = Prop(experiment, "hashAttribute");
      add(JsTruthy(hash_attribute) ? JsToString(*hash_attribute) : "id");
      const Json* fallback = Prop(experiment, "fallbackAttribute");
      if (JsTruthy(fallback)) add(JsToString(*fallback));
    }
  }
  Json out = Json::object();
  for (const std::string& name : names) {
    Json attribute = name;
    out[name] = SdkToString(GetHashAttribute(&attribute, nullptr).value);
  }
  return out;
}

}  // namespace capstan::experiments
