#include "experiments/url_redirect.h"

#include <string>
#include <utility>
#include <vector>

#include "experiments/evaluator.h"
#include "experiments/url_target.h"
#include "experiments/whatwg_url.h"

namespace capstan::experiments {
namespace {

// obj[key] of an object; nullptr for other values (null throws, as reading a
// property of null does in JavaScript).
const Json* Prop(const Json& value, const char* key) {
  if (value.is_null()) {
    throw JsTypeError(std::string("Cannot read properties of null (reading '") + key + "')");
  }
  if (!value.is_object()) return nullptr;
  auto it = value.find(key);
  return it == value.end() ? nullptr : &*it;
}

// new URL(input) with no base: false when it throws.
bool ParsesAbsolute(const std::string& input) {
  UrlParseResult parsed = ParseWhatwgUrl(input);
  if (parsed.status == UrlParseResult::kUnsupported) {
    throw Unsupported("urlRedirect: a URL outside the supported WHATWG subset: " + input);
  }
  return parsed.ok();
}

enum class ChangeType { kRedirect, kVisual, kUnknown };

// getAutoExperimentChangeType.
ChangeType ChangeTypeOf(const Json& experiment, const Json& variations) {
  if (JsTruthy(Prop(experiment, "urlPatterns"))) {
    for (const Json& v : variations) {
      if (v.is_object() && v.contains("urlRedirect")) return ChangeType::kRedirect;
    }
  }
  for (const Json& v : variations) {
    if (v.is_object() &&
        (JsTruthy(Prop(v, "domMutations")) || v.contains("js") || v.contains("css"))) {
      return ChangeType::kVisual;
    }
  }
  return ChangeType::kUnknown;
}

// _isAutoExperimentBlockedByContext with the protocol's options (no
// disable* flags, no blockedChangeIds).
bool IsBlocked(ChangeType type, const Json& variations, const std::string& context_url) {
  if (type == ChangeType::kVisual) return false;
  if (type == ChangeType::kUnknown) return true;
  if (!ParsesAbsolute(context_url)) return true;
  for (const Json& v : variations) {
    if (!JsTruthy(v)) continue;
    const Json* redirect = Prop(v, "urlRedirect");
    if (!JsTruthy(redirect)) continue;
    if (!ParsesAbsolute(JsToString(*redirect))) return true;
  }
  return false;
}

// What getExperimentResult(ctx, experiment, -1, ...) throws for a blocked
// experiment: `meta.key` of a missing meta[0].
void CheckBlockedResult(const Json& experiment) {
  const Json* meta = Prop(experiment, "meta");
  if (!JsTruthy(meta)) return;
  const Json* first = nullptr;
  if (meta->is_array() && !meta->empty()) first = &(*meta)[0];
  if (meta->is_string()) return;  // "abc"[0] is "a", whose .key is undefined
  if (first == nullptr || first->is_null()) {
    throw JsTypeError("Cannot read properties of undefined (reading 'key')");
  }
}

}  // namespace

Json MergeQueryStrings(const std::string& old_url, const Json& new_url) {
  UrlParseResult current = ParseWhatwgUrl(old_url);
  UrlParseResult redirect = ParseWhatwgUrl(JsToString(new_url));
  if (current.status == UrlParseResult::kUnsupported ||
      redirect.status == UrlParseResult::kUnsupported) {
    throw Unsupported("mergeQueryStrings: a URL outside the supported WHATWG subset");
  }
  if (!current.ok() || !redirect.ok()) return new_url;
  UrlSearchParams current_params = UrlSearchParams::Parse(current.url.query.value_or(""));
  UrlSearchParams redirect_params = UrlSearchParams::Parse(redirect.url.query.value_or(""));
  bool changed = false;
  for (const auto& [name, value] : current_params.pairs()) {
    if (redirect_params.Has(name)) continue;
    redirect_params.Set(name, value);
    changed = true;
  }
  if (changed) {
    // URLSearchParams' update steps: the query is the serialization, or
    // none when that is empty.
    std::string query = redirect_params.Serialize();
    redirect.url.query = query.empty() ? std::nullopt : std::optional<std::string>(query);
  }
  return redirect.url.Href();
}

absl::StatusOr<Json> UrlRedirect(const Json& context) {
  try {
    const Json* experiments = Prop(context, "experiments");
    Json answer = Json::array();
    if (!JsTruthy(experiments)) return answer;
    if (!experiments->is_array()) throw JsTypeError("experiments is not iterable");
    const Json* url = Prop(context, "url");
    std::string context_url = JsTruthy(url) ? JsToString(*url) : "";

    GrowthBookEvaluator evaluator(context);
    std::vector<GrowthBookEvaluator::TrackingCall> calls;
    evaluator.RecordTrackingCalls(&calls);
    // The deferred tracking calls, by dedupe key in first-seen order (a
    // repeat replaces the call in place, as Map.set does).
    std::vector<std::pair<std::string, Json>> tracked;
    Json redirected_url = "";
    for (const Json& experiment : *experiments) {
      if (!experiment.is_object()) {
        throw JsTypeError("an auto experiment must be an object (reading 'variations')");
      }
      if (JsTruthy(Prop(experiment, "manual"))) continue;  // never triggered here
      const Json* variations = Prop(experiment, "variations");
      if (variations == nullptr || !variations->is_array()) {
        throw JsTypeError("experiment.variations.some is not a function");
      }
      ChangeType type = ChangeTypeOf(experiment, *variations);
      if (IsBlocked(type, *variations, context_url)) {
        CheckBlockedResult(experiment);
        continue;  // not in the experiment, nothing tracked
      }
      calls.clear();
      absl::StatusOr<Json> result = evaluator.Run(experiment);
      if (!result.ok()) return result.status();
      for (GrowthBookEvaluator::TrackingCall& call : calls) {
        bool replaced = false;
        for (auto& [k, previous] : tracked) {
          if (k == call.dedupe_key) {
            previous = call.result;
            replaced = true;
          }
        }
        if (!replaced) tracked.emplace_back(std::move(call.dedupe_key), std::move(call.result));
      }
      if (!JsTruthy(Prop(*result, "inExperiment"))) continue;
      if (type != ChangeType::kRedirect) continue;
      const Json* value = Prop(*result, "value");
      const Json* redirect = value == nullptr ? nullptr : Prop(*value, "urlRedirect");
      if (JsTruthy(redirect)) {
        Json target = JsTruthy(Prop(experiment, "persistQueryString"))
                          ? MergeQueryStrings(context_url, *redirect)
                          : *redirect;
        std::optional<bool> same_page =
            UrlTargeted(JsToString(target), *Prop(experiment, "urlPatterns"));
        if (!same_page.has_value()) {
          throw Unsupported(
              "urlRedirect: the redirect URL or a pattern is outside the "
              "supported WHATWG URL subset (file: and non-special schemes)");
        }
        if (!*same_page) redirected_url = std::move(target);
      }
      break;  // in a redirect experiment: no further experiments run
    }
    for (const auto& [key, result] : tracked) {
      Json entry = Json::object();
      entry["inExperiment"] = result["inExperiment"];
      const Json* value = Prop(result, "value");
      if (value == nullptr) throw JsTypeError("Cannot read properties of undefined");
      if (const Json* redirect = Prop(*value, "urlRedirect"); redirect != nullptr) {
        entry["urlRedirect"] = *redirect;
      }
      entry["urlWithParams"] = redirected_url;
      answer.push_back(std::move(entry));
    }
    return answer;
  } catch (const JsTypeError& e) {
    return absl::InvalidArgumentError(std::string("TypeError: ") + e.what());
  } catch (const Unsupported& e) {
    return absl::UnimplementedError(e.what());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

}  // namespace capstan::experiments
