#include "experiments/eval_protocol.h"

#include <algorithm>
#include <istream>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "experiments/analyze.h"
#include "experiments/bucketing.h"
#include "experiments/condition.h"
#include "experiments/decrypt.h"
#include "experiments/evaluator.h"
#include "experiments/js_value.h"
#include "experiments/sdk.h"
#include "experiments/url_redirect.h"

namespace capstan::experiments {
namespace {

// Thrown for a request the protocol cannot answer (missing or mistyped field).
class BadRequest : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

const Json& Field(const Json& request, const char* name) {
  auto it = request.find(name);
  if (it == request.end()) throw BadRequest(std::string("missing field: ") + name);
  return *it;
}

const Json& FieldOr(const Json& request, const char* name, const Json& fallback) {
  auto it = request.find(name);
  return it == request.end() ? fallback : *it;
}

std::string StringField(const Json& request, const char* name) {
  const Json& value = Field(request, name);
  if (!value.is_string()) throw BadRequest(std::string(name) + " must be a string");
  return value.get<std::string>();
}

double NumberField(const Json& request, const char* name) {
  const Json& value = Field(request, name);
  if (!value.is_number()) throw BadRequest(std::string(name) + " must be a number");
  return value.get<double>();
}

int IntField(const Json& request, const char* name) {
  double d = NumberField(request, name);
  if (d != static_cast<double>(static_cast<int>(d))) {
    throw BadRequest(std::string(name) + " must be an integer");
  }
  return static_cast<int>(d);
}

Json ValueOrError(absl::StatusOr<Json> result) {
  if (!result.ok()) {
    Json error = Json::object();
    error["error"] = std::string(result.status().message());
    return error;
  }
  return *std::move(result);
}

Json Result(Json value) {
  Json out = Json::object();
  out["result"] = std::move(value);
  return out;
}

const Json kEmptyObject = Json::object();

Json StickyBucket(const Json& request) {
  const Json& context = Field(request, "context");
  // The store before evaluation, keyed by each doc's own attribute; then the
  // context's docs written into it (the SDK's hydration).
  Json store = Json::object();
  auto put = [&](const Json& doc) {
    if (!doc.is_object()) return;
    std::string key = JsToString(doc.contains("attributeName") ? &doc["attributeName"] : nullptr) +
                      "||" +
                      JsToString(doc.contains("attributeValue") ? &doc["attributeValue"] : nullptr);
    store[key] = doc;
  };
  const Json& initial = FieldOr(request, "stickyBucketStore", Json::array());
  if (initial.is_array()) {
    for (const Json& doc : initial) put(doc);
  }
  if (context.is_object() && context.contains("stickyBucketAssignmentDocs") &&
      context["stickyBucketAssignmentDocs"].is_object()) {
    for (const Json& doc : context["stickyBucketAssignmentDocs"]) put(doc);
  }
  GrowthBookEvaluator evaluator(context);
  Json loaded = Json::object();
  Json attributes = evaluator.StickyBucketAttributes();
  for (auto it = attributes.begin(); it != attributes.end(); ++it) {
    auto found = store.find(it.key() + "||" + it.value().get<std::string>());
    if (found == store.end()) continue;
    const Json& doc = *found;
    loaded[JsToString(doc.contains("attributeName") ? &doc["attributeName"] : nullptr) + "||" +
           JsToString(doc.contains("attributeValue") ? &doc["attributeValue"] : nullptr)] = doc;
  }
  evaluator.EnableStickyBucketing(std::move(loaded));
  absl::StatusOr<Json> feature = evaluator.EvalFeature(StringField(request, "feature"));
  if (!feature.ok()) return ValueOrError(std::move(feature));
  Json out = Json::object();
  out["experimentResult"] =
      feature->contains("experimentResult") ? (*feature)["experimentResult"] : Json(nullptr);
  out["stickyBucketAssignmentDocs"] = evaluator.sticky_bucket_assignment_docs();
  return out;
}

Json Dispatch(const Json& request, const EvalOptions& options, bool* compiled_taken) {
  const std::string op = StringField(request, "op");
  // Section 6's statistics ops (welchTTest ... pAdjust), answered by analyze.h.
  if (IsAnalyzeOp(op)) return ValueOrError(AnalyzeJson(request));
  if (op == "evalCondition") {
    const Json& groups = FieldOr(request, "savedGroups", kEmptyObject);
    ConditionEvaluator evaluator(groups.is_object() ? groups : kEmptyObject);
    // evalCondition(undefined, ...) reads every path as null, as {} does.
    return Result(evaluator.Evaluate(FieldOr(request, "attributes", kEmptyObject),
                                     Field(request, "condition")));
  }
  if (op == "hash") {
    const Json& version = Field(request, "version");
    int v = 0;
    if (version.is_number() && (version.get<double>() == 1 || version.get<double>() == 2)) {
      v = static_cast<int>(version.get<double>());
    }
    std::optional<double> n = Hash(StringField(request, "seed"), StringField(request, "value"), v);
    return Result(n.has_value() ? Json(*n) : Json(nullptr));
  }
  if (op == "getBucketRange") {
    const Json& weights_json = FieldOr(request, "weights", Json(nullptr));
    std::vector<double> weights;
    bool have_weights = !weights_json.is_null();
    if (have_weights) {
      if (!weights_json.is_array()) throw BadRequest("weights must be an array or null");
      for (const Json& w : weights_json) weights.push_back(JsToNumber(w));
    }
    const Json& coverage = FieldOr(request, "coverage", Json(nullptr));
    double coverage_number = coverage.is_null() ? 1.0 : JsToNumber(coverage);
    Json ranges = Json::array();
    for (const VariationRange& r :
         GetBucketRanges(IntField(request, "numVariations"), coverage_number,
                         have_weights ? &weights : nullptr)) {
      ranges.push_back(Json::array({r.first, r.second}));
    }
    return Result(std::move(ranges));
  }
  if (op == "chooseVariation") {
    std::vector<VariationRange> ranges;
    for (const Json& r : Field(request, "ranges")) {
      ranges.emplace_back(r.at(0).get<double>(), r.at(1).get<double>());
    }
    return Result(ChooseVariation(NumberField(request, "n"), ranges));
  }
  if (op == "inNamespace") {
    const Json& ns = Field(request, "namespace");
    if (!ns.is_array() || ns.size() < 3) throw BadRequest("namespace must be [name, start, end]");
    return Result(InNamespace(StringField(request, "id"), JsToString(ns[0]), JsToNumber(ns[1]),
                              JsToNumber(ns[2])));
  }
  if (op == "getEqualWeights") {
    Json weights = Json::array();
    for (double w : GetEqualWeights(IntField(request, "numVariations"))) weights.push_back(w);
    return Result(std::move(weights));
  }
  if (op == "versionCompare") {
    std::string op_name = StringField(request, "operator");
    Json condition = Json::object();
    condition["v"][op_name] = Field(request, "v2");
    Json attributes = Json::object();
    attributes["v"] = Field(request, "v1");
    ConditionEvaluator evaluator(kEmptyObject);
    return Result(evaluator.Evaluate(attributes, condition));
  }
  if (op == "getQueryStringOverride") {
    std::optional<int> forced =
        GetQueryStringOverride(StringField(request, "id"), StringField(request, "url"),
                               IntField(request, "numVariations"));
    return Result(forced.has_value() ? Json(*forced) : Json(nullptr));
  }
  if (op == "decrypt") {
    std::optional<std::string> plain =
        DecryptPayload(StringField(request, "encryptedString"), StringField(request, "key"));
    return Result(plain.has_value() ? Json(*plain) : Json(nullptr));
  }
  if (op == "feature") {
    const Json& context = Field(request, "context");
    std::string feature = StringField(request, "feature");
    if (options.compiled_engine) {
      // The context's payload part becomes a FeaturePayload (compiled once),
      // the rest describes the user, as a service would hold them.
      Json payload = Json::object(), user = Json::object();
      if (context.is_object()) {
        for (auto it = context.begin(); it != context.end(); ++it) {
          static const std::string_view kPayloadKeys[] = {"features", "savedGroups",
                                                          "contextualBandits", "experiments"};
          bool payload_key = false;
          for (std::string_view k : kPayloadKeys) payload_key |= it.key() == k;
          (payload_key ? payload : user)[it.key()] = it.value();
        }
      }
      absl::StatusOr<std::shared_ptr<const FeaturePayload>> parsed =
          FeaturePayload::FromJson(std::move(payload));
      if (!parsed.ok()) throw BadRequest(std::string(parsed.status().message()));
      if (compiled_taken != nullptr) *compiled_taken = (*parsed)->compiled().IsCompiled(feature);
      GrowthBookClient client(*std::move(parsed));
      return ValueOrError(client.EvalFeature(feature, user));
    }
    GrowthBookEvaluator evaluator(context);
    return ValueOrError(evaluator.EvalFeature(feature));
  }
  if (op == "run") {
    GrowthBookEvaluator evaluator(Field(request, "context"));
    return ValueOrError(evaluator.Run(Field(request, "experiment")));
  }
  if (op == "stickyBucket") return StickyBucket(request);
  if (op == "urlRedirect") {
    absl::StatusOr<Json> entries = UrlRedirect(Field(request, "context"));
    if (!entries.ok()) return ValueOrError(entries.status());
    return Result(*std::move(entries));
  }
  throw BadRequest("unknown op: " + op);
}

std::string Dump(const Json& value) {
  // Invalid UTF-8 (only possible in an echoed error) is replaced, never thrown.
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The deepest nesting of arrays and objects in a JSON text (strings skipped),
// checked before parsing: evaluation recurses on nesting.
size_t JsonNestingDepth(std::string_view text) {
  size_t depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

}  // namespace

std::string HandleEvalRequest(std::string_view line, const EvalOptions& options,
                              bool* compiled_taken) {
  if (compiled_taken != nullptr) *compiled_taken = false;
  if (JsonNestingDepth(line) > kMaxRequestNesting) {
    return Dump(Json::object(
        {{"error", "request nested deeper than " + std::to_string(kMaxRequestNesting)}}));
  }
  Json request;
  try {
    request = Json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    Json error = Json::object();
    error["error"] = std::string("malformed request: ") + e.what();
    return Dump(error);
  }
  Json response;
  try {
    if (!request.is_object()) throw BadRequest("request must be a JSON object");
    response = Dispatch(request, options, compiled_taken);
  } catch (const BadRequest& e) {
    response = Json::object({{"error", e.what()}});
  } catch (const JsTypeError& e) {
    response = Json::object({{"error", std::string("TypeError: ") + e.what()}});
  } catch (const nlohmann::json::exception& e) {
    response = Json::object({{"error", std::string("bad request: ") + e.what()}});
  }
  if (request.is_object() && request.contains("seq")) response["seq"] = request["seq"];
  return Dump(response);
}

int RunEvalLoop(std::istream& in, std::ostream& out, const EvalOptions& options,
                std::ostream* log) {
  std::string line;
  size_t compiled = 0;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    bool compiled_taken = false;
    out << HandleEvalRequest(line, options, &compiled_taken) << '\n';
    out.flush();
    if (compiled_taken) ++compiled;
  }
  if (options.compiled_engine && log != nullptr) {
    *log << "capstan experiments eval: the compiled engine answered " << compiled
         << " feature requests\n";
  }
  return 0;
}

}  // namespace capstan::experiments
