#include "experiments/growthbook_service.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "experiments/decrypt.h"
#include "net/http_router.h"
#include "xxhash.h"

namespace capstan::experiments {
namespace {

absl::Status FieldError(const std::string& path, std::string_view message) {
  return absl::InvalidArgumentError(path + ": " + std::string(message));
}

std::string Path(const std::string& parent, std::string_view field) {
  return parent.empty() ? std::string(field) : parent + "." + std::string(field);
}

std::string Index(const std::string& parent, size_t i) { return absl::StrCat(parent, "[", i, "]"); }

// The optional field `name` of `object` must satisfy `ok`; `what` says what it must be.
template <typename Ok>
absl::Status CheckField(const Json& object, const std::string& parent, const char* name, Ok ok,
                        std::string_view what) {
  auto it = object.find(name);
  if (it == object.end() || ok(*it)) return absl::OkStatus();
  return FieldError(Path(parent, name), "must be " + std::string(what));
}

bool IsString(const Json& v) { return v.is_string(); }
bool IsBool(const Json& v) { return v.is_boolean(); }
bool IsObject(const Json& v) { return v.is_object(); }
bool IsArray(const Json& v) { return v.is_array(); }
bool IsNumber(const Json& v) { return v.is_number() && std::isfinite(v.get<double>()); }
bool IsFraction(const Json& v) {
  return IsNumber(v) && v.get<double>() >= 0 && v.get<double>() <= 1;
}
bool IsRange(const Json& v) {
  return v.is_array() && v.size() == 2 && IsNumber(v[0]) && IsNumber(v[1]) &&
         v[0].get<double>() <= v[1].get<double>();
}
bool IsStringArray(const Json& v) {
  if (!v.is_array()) return false;
  for (const Json& e : v) {
    if (!e.is_string()) return false;
  }
  return true;
}

absl::Status ValidateRule(const Json& rule, const std::string& path) {
  if (!rule.is_object()) return FieldError(path, "must be an object");
  RETURN_IF_ERROR(CheckField(rule, path, "id", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(rule, path, "enabled", IsBool, "true or false"));
  RETURN_IF_ERROR(CheckField(rule, path, "condition", IsObject, "an object (a condition)"));
  RETURN_IF_ERROR(CheckField(rule, path, "coverage", IsFraction, "a number between 0 and 1"));
  RETURN_IF_ERROR(CheckField(rule, path, "key", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(rule, path, "hashAttribute", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(rule, path, "fallbackAttribute", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(rule, path, "seed", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(rule, path, "name", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(rule, path, "phase", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(rule, path, "disableStickyBucketing", IsBool, "true or false"));
  RETURN_IF_ERROR(CheckField(rule, path, "bucketVersion", IsNumber, "a number"));
  RETURN_IF_ERROR(CheckField(rule, path, "minBucketVersion", IsNumber, "a number"));
  RETURN_IF_ERROR(CheckField(rule, path, "range", IsRange, "[start, end] with start <= end"));
  RETURN_IF_ERROR(CheckField(
      rule, path, "hashVersion",
      [](const Json& v) { return IsNumber(v) && (v.get<double>() == 1 || v.get<double>() == 2); },
      "1 or 2"));
  RETURN_IF_ERROR(CheckField(
      rule, path, "namespace",
      [](const Json& v) {
        return v.is_array() && v.size() == 3 && v[0].is_string() && IsFraction(v[1]) &&
               IsFraction(v[2]);
      },
      "[name, start, end] with start and end between 0 and 1"));
  RETURN_IF_ERROR(CheckField(rule, path, "filters", IsArray, "an array"));
  RETURN_IF_ERROR(CheckField(rule, path, "meta", IsArray, "an array"));
  RETURN_IF_ERROR(CheckField(rule, path, "tracks", IsArray, "an array"));
  if (auto ranges = rule.find("ranges"); ranges != rule.end()) {
    if (!ranges->is_array()) return FieldError(Path(path, "ranges"), "must be an array");
    for (size_t i = 0; i < ranges->size(); ++i) {
      if (!IsRange((*ranges)[i])) {
        return FieldError(Index(Path(path, "ranges"), i), "must be [start, end] with start <= end");
      }
    }
  }
  if (auto parents = rule.find("parentConditions"); parents != rule.end()) {
    std::string parents_path = Path(path, "parentConditions");
    if (!parents->is_array()) return FieldError(parents_path, "must be an array");
    for (size_t i = 0; i < parents->size(); ++i) {
      const Json& parent = (*parents)[i];
      std::string at = Index(parents_path, i);
      if (!parent.is_object()) return FieldError(at, "must be an object");
      if (!parent.contains("id") || !parent["id"].is_string()) {
        return FieldError(Path(at, "id"), "must be a string (the parent feature's key)");
      }
      RETURN_IF_ERROR(CheckField(parent, at, "condition", IsObject, "an object (a condition)"));
      RETURN_IF_ERROR(CheckField(parent, at, "gate", IsBool, "true or false"));
    }
  }
  auto variations = rule.find("variations");
  if (variations != rule.end() && (!variations->is_array() || variations->empty())) {
    return FieldError(Path(path, "variations"), "must be a non-empty array of values");
  }
  if (auto weights = rule.find("weights"); weights != rule.end()) {
    std::string weights_path = Path(path, "weights");
    if (!weights->is_array()) return FieldError(weights_path, "must be an array of numbers");
    double sum = 0;
    for (size_t i = 0; i < weights->size(); ++i) {
      if (!IsFraction((*weights)[i])) {
        return FieldError(Index(weights_path, i), "must be a number between 0 and 1");
      }
      sum += (*weights)[i].get<double>();
    }
    if (variations != rule.end() && weights->size() != variations->size()) {
      return FieldError(weights_path, absl::StrCat("has ", weights->size(), " weights for ",
                                                   variations->size(), " variations"));
    }
    if (std::abs(sum - 1) > 0.01) {
      return FieldError(weights_path, absl::StrCat("must add up to 1 (they add up to ", sum, ")"));
    }
  }
  if (!rule.contains("force") && variations == rule.end() && !rule.contains("tracks")) {
    return FieldError(path, "needs \"force\" (a value) or \"variations\" (an experiment)");
  }
  return absl::OkStatus();
}

absl::Status ValidateRules(const Json& rules, const std::string& path) {
  if (!rules.is_array()) return FieldError(path, "must be an array of rules");
  for (size_t i = 0; i < rules.size(); ++i) RETURN_IF_ERROR(ValidateRule(rules[i], Index(path, i)));
  return absl::OkStatus();
}

// The rules a connection's SDK sees: disabled ones dropped, Capstan's
// "enabled" removed.
Json SdkRules(const Json& rules) {
  Json out = Json::array();
  for (const Json& rule : rules) {
    if (!rule.is_object()) continue;
    auto enabled = rule.find("enabled");
    if (enabled != rule.end() && enabled->is_boolean() && !enabled->get<bool>()) continue;
    Json copy = rule;
    copy.erase("enabled");
    out.push_back(std::move(copy));
  }
  return out;
}

std::string SpecString(const Json& spec, const char* name, std::string fallback = "") {
  auto it = spec.find(name);
  return it != spec.end() && it->is_string() ? it->get<std::string>() : fallback;
}

bool SpecBool(const Json& spec, const char* name, bool fallback) {
  auto it = spec.find(name);
  return it != spec.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

net::HttpResponse InvalidApiKey() {
  // GrowthBook's answer to an unknown or unusable client key.
  return net::JsonResponse(400, R"({"status":400,"error":"Invalid API Key"})");
}

// GrowthBook's scrubExperiment: the other variations' values hidden and the
// condition dropped, so the answer reveals nothing the user was not given.
Json ScrubExperiment(const Json& experiment, const Json& variation_id) {
  Json out = experiment;
  out.erase("condition");
  auto variations = out.find("variations");
  if (variations == out.end() || !variations->is_array() || !variation_id.is_number()) return out;
  int64_t chosen = variation_id.get<int64_t>();
  for (size_t i = 0; i < variations->size(); ++i) {
    if (static_cast<int64_t>(i) != chosen) (*variations)[i] = Json::object();
  }
  return out;
}

}  // namespace

absl::Status ValidateFeature(const std::string&, const Json& spec) {
  if (!spec.is_object()) return FieldError("(document)", "must be a JSON object");
  RETURN_IF_ERROR(CheckField(spec, "", "project", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(spec, "", "archived", IsBool, "true or false"));
  RETURN_IF_ERROR(CheckField(spec, "", "description", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(spec, "", "tags", IsStringArray, "an array of strings"));
  if (auto rules = spec.find("rules"); rules != spec.end())
    RETURN_IF_ERROR(ValidateRules(*rules, "rules"));
  if (auto envs = spec.find("environments"); envs != spec.end()) {
    if (!envs->is_object()) return FieldError("environments", "must be an object of environments");
    for (auto it = envs->begin(); it != envs->end(); ++it) {
      std::string at = absl::StrCat("environments.", it.key());
      if (!it->is_object()) return FieldError(at, "must be an object ({\"enabled\", \"rules\"})");
      RETURN_IF_ERROR(CheckField(*it, at, "enabled", IsBool, "true or false"));
      if (auto rules = it->find("rules"); rules != it->end()) {
        RETURN_IF_ERROR(ValidateRules(*rules, Path(at, "rules")));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSavedGroup(const std::string&, const Json& spec) {
  if (!spec.is_object()) return FieldError("(document)", "must be a JSON object");
  auto values = spec.find("values");
  if (values == spec.end() || !values->is_array()) {
    return FieldError("values", "must be an array of strings or numbers");
  }
  for (size_t i = 0; i < values->size(); ++i) {
    const Json& v = (*values)[i];
    if (!v.is_string() && !IsNumber(v))
      return FieldError(Index("values", i), "must be a string or a number");
  }
  RETURN_IF_ERROR(CheckField(spec, "", "attributeKey", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(spec, "", "name", IsString, "a string"));
  return absl::OkStatus();
}

absl::Status ValidateSdkConnection(const std::string&, const Json& spec) {
  if (!spec.is_object()) return FieldError("(document)", "must be a JSON object");
  RETURN_IF_ERROR(CheckField(spec, "", "name", IsString, "a string"));
  RETURN_IF_ERROR(CheckField(
      spec, "", "environment",
      [](const Json& v) { return v.is_string() && !v.get<std::string>().empty(); },
      "a non-empty string"));
  RETURN_IF_ERROR(CheckField(spec, "", "projects", IsStringArray, "an array of strings"));
  RETURN_IF_ERROR(CheckField(spec, "", "encryptPayload", IsBool, "true or false"));
  RETURN_IF_ERROR(CheckField(spec, "", "remoteEvalEnabled", IsBool, "true or false"));
  RETURN_IF_ERROR(CheckField(spec, "", "encryptionKey", IsString, "a string"));
  if (SpecBool(spec, "encryptPayload", false)) {
    std::optional<std::string> key = ForgivingBase64Decode(SpecString(spec, "encryptionKey"));
    if (!key.has_value() || (key->size() != 16 && key->size() != 24 && key->size() != 32)) {
      return FieldError(
          "encryptionKey",
          "must be a base64 AES key of 16, 24 or 32 bytes when encryptPayload is true");
    }
  }
  return absl::OkStatus();
}

void RegisterGrowthBookKinds(ConfigStore* store) {
  store->RegisterKind(kFeaturesKind, ValidateFeature);
  store->RegisterKind(kSavedGroupsKind, ValidateSavedGroup);
  store->RegisterKind(kSdkConnectionsKind, ValidateSdkConnection);
}

Json BuildSdkPayload(const DocumentSnapshot& snapshot, const ConfigDocument& connection) {
  const Json& conn = connection.spec;
  std::string environment = SpecString(conn, "environment", "production");
  std::vector<std::string> projects;
  if (auto p = conn.find("projects"); p != conn.end() && p->is_array()) {
    for (const Json& name : *p) {
      if (name.is_string()) projects.push_back(name.get<std::string>());
    }
  }
  std::string date_updated = connection.updated_at;
  Json features = Json::object();
  for (const auto& [key, doc] : snapshot.Of(kFeaturesKind)) {
    const Json& spec = doc->spec;
    if (!spec.is_object() || SpecBool(spec, "archived", false)) continue;
    if (!projects.empty() && std::find(projects.begin(), projects.end(),
                                       SpecString(spec, "project")) == projects.end()) {
      continue;
    }
    const Json* rules = nullptr;
    if (auto envs = spec.find("environments"); envs != spec.end() && envs->is_object()) {
      auto env = envs->find(environment);
      if (env == envs->end() || !env->is_object() || !SpecBool(*env, "enabled", true)) continue;
      if (auto r = env->find("rules"); r != env->end()) rules = &*r;
    } else if (auto r = spec.find("rules"); r != spec.end()) {
      rules = &*r;
    }
    Json definition = Json::object();
    auto default_value = spec.find("defaultValue");
    definition["defaultValue"] = default_value != spec.end() ? *default_value : Json(nullptr);
    if (rules != nullptr && rules->is_array()) {
      Json sdk_rules = SdkRules(*rules);
      if (!sdk_rules.empty()) definition["rules"] = std::move(sdk_rules);
    }
    features[key] = std::move(definition);
    date_updated = std::max(date_updated, doc->updated_at);
  }
  Json saved_groups = Json::object();
  for (const auto& [id, doc] : snapshot.Of(kSavedGroupsKind)) {
    auto values = doc->spec.find("values");
    if (values == doc->spec.end() || !values->is_array()) continue;
    saved_groups[id] = *values;
    date_updated = std::max(date_updated, doc->updated_at);
  }
  Json payload = Json::object();
  payload["status"] = 200;
  payload["features"] = std::move(features);
  payload["experiments"] = Json::array();
  payload["dateUpdated"] = date_updated;
  payload["savedGroups"] = std::move(saved_groups);
  return payload;
}

GrowthBookEndpoints::GrowthBookEndpoints() { state_.store(std::make_shared<const State>()); }

namespace {

// `date` + 1 ms, in the same format (JavaScript's toISOString).
std::string NextMillisecond(const std::string& date) {
  absl::Time t;
  std::string error;
  if (!absl::ParseTime("%Y-%m-%d%ET%H:%M:%E*SZ", date, absl::UTCTimeZone(), &t, &error)) {
    return date;
  }
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", t + absl::Milliseconds(1), absl::UTCTimeZone());
}

// The served payload's dateUpdated must move whenever its contents do, and
// only then (see the header); `previous` is the connection's payload before.
void KeepDateMoving(const Json& previous, Json* payload) {
  const Json& before = previous.value("dateUpdated", Json(""));
  const Json& now = (*payload)["dateUpdated"];
  if (!before.is_string() || !now.is_string()) return;
  if (now.get<std::string>() > before.get<std::string>()) return;
  bool same = previous.value("features", Json()) == (*payload)["features"] &&
              previous.value("savedGroups", Json()) == (*payload)["savedGroups"];
  // Unchanged: the date it had (moved earlier by this rule, perhaps).
  (*payload)["dateUpdated"] = same ? before : Json(NextMillisecond(before.get<std::string>()));
}

}  // namespace

void GrowthBookEndpoints::OnSnapshot(const std::shared_ptr<const DocumentSnapshot>& snapshot) {
  std::shared_ptr<const State> previous = state_.load();
  auto next = std::make_shared<State>();
  next->generation = snapshot->generation;
  for (const auto& [client_key, doc] : snapshot->Of(kSdkConnectionsKind)) {
    if (!ValidateSdkConnection(client_key, doc->spec).ok()) continue;  // written by hand, badly
    auto conn = std::make_shared<Connection>();
    conn->document = doc->spec;
    conn->remote_eval = SpecBool(doc->spec, "remoteEvalEnabled", true);
    conn->payload = BuildSdkPayload(*snapshot, *doc);
    if (auto before = previous->connections.find(client_key);
        before != previous->connections.end()) {
      KeepDateMoving(before->second->payload, &conn->payload);
    }
    Json served = conn->payload;
    if (SpecBool(doc->spec, "encryptPayload", false)) {
      std::string key = SpecString(doc->spec, "encryptionKey");
      std::optional<std::string> features = EncryptPayload(JsonStringify(served["features"]), key);
      std::optional<std::string> groups = EncryptPayload(JsonStringify(served["savedGroups"]), key);
      if (!features.has_value() || !groups.has_value()) continue;
      served["features"] = Json::object();
      served["encryptedFeatures"] = *features;
      served.erase("savedGroups");
      served["encryptedSavedGroups"] = *groups;
    }
    conn->body = JsonStringify(served);
    conn->etag = absl::StrCat("\"", XXH64(conn->body.data(), conn->body.size(), 0), "\"");
    Json eval_payload = {{"features", conn->payload["features"]},
                         {"savedGroups", conn->payload["savedGroups"]}};
    absl::StatusOr<std::shared_ptr<const FeaturePayload>> parsed =
        FeaturePayload::FromJson(std::move(eval_payload));
    if (parsed.ok()) conn->client = std::make_shared<const GrowthBookClient>(*std::move(parsed));
    next->connections.emplace(client_key, std::move(conn));
  }
  state_.store(std::move(next));
}

uint64_t GrowthBookEndpoints::generation() const { return state_.load()->generation; }

std::shared_ptr<const GrowthBookEndpoints::Connection> GrowthBookEndpoints::Find(
    const std::string& client_key) const {
  std::shared_ptr<const State> state = state_.load();
  auto it = state->connections.find(client_key);
  return it == state->connections.end() ? nullptr : it->second;
}

std::shared_ptr<const GrowthBookClient> GrowthBookEndpoints::ClientFor(
    const std::string& client_key) const {
  std::shared_ptr<const Connection> conn = Find(client_key);
  return conn == nullptr ? nullptr : conn->client;
}

net::HttpResponse GrowthBookEndpoints::Features(const std::string& client_key,
                                                std::string_view if_none_match) const {
  std::shared_ptr<const Connection> conn = Find(client_key);
  if (conn == nullptr) return InvalidApiKey();
  if (!if_none_match.empty() &&
      (if_none_match == "*" || if_none_match.find(conn->etag) != std::string_view::npos)) {
    net::HttpResponse not_modified;
    not_modified.status = 304;
    not_modified.headers.emplace_back("ETag", conn->etag);
    if (streaming_) not_modified.headers.emplace_back("x-sse-support", "enabled");
    return not_modified;
  }
  net::HttpResponse response = net::JsonResponse(200, conn->body);
  response.headers.emplace_back("ETag", conn->etag);
  response.headers.emplace_back("Cache-Control", "no-cache");
  if (streaming_) response.headers.emplace_back("x-sse-support", "enabled");
  return response;
}

std::optional<GrowthBookEndpoints::ServedPayload> GrowthBookEndpoints::Served(
    const std::string& client_key) const {
  std::shared_ptr<const Connection> conn = Find(client_key);
  if (conn == nullptr) return std::nullopt;
  return ServedPayload{conn->body, conn->etag};
}

net::HttpResponse GrowthBookEndpoints::RemoteEval(const std::string& client_key,
                                                  const std::string& body) const {
  std::shared_ptr<const Connection> conn = Find(client_key);
  if (conn == nullptr || conn->client == nullptr) return InvalidApiKey();
  if (!conn->remote_eval) {
    return net::JsonResponse(
        400, R"({"status":400,"error":"Remote evaluation is disabled for this SDK connection"})");
  }
  Json request = Json::parse(body.empty() ? std::string("{}") : body, nullptr, false);
  if (request.is_discarded() || !request.is_object()) {
    return net::JsonError(400, "invalid_json", "the body must be a JSON object");
  }
  Json user = Json::object();
  auto attributes = request.find("attributes");
  user["attributes"] =
      attributes != request.end() && attributes->is_object() ? *attributes : Json::object();
  if (auto forced = request.find("forcedVariations");
      forced != request.end() && forced->is_object()) {
    user["forcedVariations"] = *forced;
  }
  if (auto url = request.find("url"); url != request.end() && url->is_string()) user["url"] = *url;
  // forcedFeatures: Array.from(Map.entries()), [[key, value], ...].
  std::map<std::string, Json> forced_features;
  if (auto forced = request.find("forcedFeatures"); forced != request.end() && forced->is_array()) {
    for (const Json& entry : *forced) {
      if (entry.is_array() && entry.size() == 2 && entry[0].is_string()) {
        forced_features[entry[0].get<std::string>()] = entry[1];
      }
    }
  }
  Json evaluated = Json::object();
  for (auto it = conn->payload["features"].begin(); it != conn->payload["features"].end(); ++it) {
    const std::string& key = it.key();
    Json result;
    if (auto forced = forced_features.find(key); forced != forced_features.end()) {
      bool on = JsTruthy(forced->second);
      result = {{"value", forced->second},
                {"on", on},
                {"off", !on},
                {"source", "override"},
                {"ruleId", ""}};
    } else {
      absl::StatusOr<Json> done = conn->client->EvalFeature(key, user);
      if (!done.ok()) continue;  // the SDK would have thrown on this feature only
      result = *std::move(done);
    }
    bool on = result.value("on", false);
    bool has_experiment = result.contains("experiment");
    if (!on && !has_experiment) continue;
    Json reduced = {{"defaultValue", result["value"]}};
    if (result.value("source", "") == "experiment") {
      Json experiment = result["experiment"];
      auto exp_result = result.find("experimentResult");
      if (exp_result != result.end() && exp_result->contains("variationId")) {
        experiment = ScrubExperiment(experiment, (*exp_result)["variationId"]);
      }
      reduced["rules"] = Json::array(
          {{{"force", result["value"]},
            {"tracks", Json::array({{{"experiment", experiment}, {"result", result}}})}}});
    }
    evaluated[key] = std::move(reduced);
  }
  Json answer = conn->payload;
  answer["features"] = std::move(evaluated);
  answer["experiments"] = Json::array();
  return net::JsonResponse(200, JsonStringify(answer));
}

}  // namespace capstan::experiments
