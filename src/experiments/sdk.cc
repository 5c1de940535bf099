#include "experiments/sdk.h"

#include <utility>

#include "absl/status/status.h"
#include "experiments/decrypt.h"
#include "experiments/evaluator.h"

namespace capstan::experiments {
namespace {

const Json kEmptyPayload = Json::object();

// The compiled path covers a user described by attributes alone: no query-
// string override, forced variations, QA mode or disabled context.
bool AttributesOnly(const Json& user) {
  if (!user.is_object()) return true;
  auto url = user.find("url");
  if (url != user.end() && url->is_string() && !url->get_ref<const std::string&>().empty()) {
    return false;
  }
  auto forced = user.find("forcedVariations");
  if (forced != user.end() && forced->is_object() && !forced->empty()) return false;
  auto qa = user.find("qaMode");
  if (qa != user.end() && JsTruthy(*qa)) return false;
  auto enabled = user.find("enabled");
  if (enabled != user.end() && enabled->is_boolean() && !enabled->get<bool>()) return false;
  return true;
}

const Json& AttributesOf(const Json& user) {
  if (!user.is_object()) return kEmptyPayload;
  auto it = user.find("attributes");
  return it != user.end() && it->is_object() ? *it : kEmptyPayload;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const FeaturePayload>> FeaturePayload::Parse(
    std::string_view json, std::string_view decryption_key) {
  Json document = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return absl::InvalidArgumentError("payload is not valid JSON");
  return FromJson(std::move(document), decryption_key);
}

absl::StatusOr<std::shared_ptr<const FeaturePayload>> FeaturePayload::FromJson(
    Json document, std::string_view decryption_key) {
  if (!document.is_object()) return absl::InvalidArgumentError("payload is not a JSON object");
  static const std::pair<const char*, const char*> kEncryptedFields[] = {
      {"encryptedFeatures", "features"},
      {"encryptedSavedGroups", "savedGroups"},
      {"encryptedExperiments", "experiments"},
      {"encryptedContextualBandits", "contextualBandits"},
  };
  for (const auto& [encrypted, plain] : kEncryptedFields) {
    auto it = document.find(encrypted);
    if (it == document.end()) continue;
    if (!it->is_string()) {
      return absl::InvalidArgumentError(std::string(encrypted) + " is not a string");
    }
    std::optional<std::string> text = DecryptPayload(it->get<std::string>(), decryption_key);
    if (!text.has_value()) {
      return absl::InvalidArgumentError(std::string("cannot decrypt ") + encrypted +
                                        " (wrong key or corrupt payload)");
    }
    Json decrypted = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (decrypted.is_discarded()) {
      return absl::InvalidArgumentError(std::string(encrypted) + " does not decrypt to JSON");
    }
    document.erase(it);
    document[plain] = std::move(decrypted);
  }
  return std::shared_ptr<const FeaturePayload>(new FeaturePayload(std::move(document)));
}

GrowthBookClient::GrowthBookClient() = default;

GrowthBookClient::GrowthBookClient(std::shared_ptr<const FeaturePayload> payload)
    : payload_(std::move(payload)) {}

void GrowthBookClient::SetPayload(std::shared_ptr<const FeaturePayload> payload) {
  payload_.store(std::move(payload));
}

std::shared_ptr<const FeaturePayload> GrowthBookClient::payload() const { return payload_.load(); }

absl::StatusOr<Json> GrowthBookClient::EvalFeature(const std::string& key, const Json& user) const {
  std::shared_ptr<const FeaturePayload> payload = payload_.load();
  if (payload != nullptr && AttributesOnly(user)) {
    const CompiledPayload& compiled = payload->compiled();
    ConditionEvaluator conditions(compiled.saved_groups());
    try {
      std::optional<FastFeatureResult> fast =
          compiled.Evaluate(key, AttributesOf(user), conditions);
      if (fast.has_value()) return fast->ToJson(key);
    } catch (const JsTypeError& e) {
      return absl::InvalidArgumentError(std::string("TypeError: ") + e.what());
    }
  }
  GrowthBookEvaluator evaluator(payload ? payload->json() : kEmptyPayload, user);
  return evaluator.EvalFeature(key);
}

absl::StatusOr<bool> GrowthBookClient::IsOn(const std::string& key, const Json& attributes) const {
  std::shared_ptr<const FeaturePayload> payload = payload_.load();
  if (payload != nullptr && attributes.is_object()) {
    const CompiledPayload& compiled = payload->compiled();
    ConditionEvaluator conditions(compiled.saved_groups());
    try {
      std::optional<FastFeatureResult> fast = compiled.Evaluate(key, attributes, conditions);
      if (fast.has_value()) return fast->on();
    } catch (const JsTypeError& e) {
      return absl::InvalidArgumentError(std::string("TypeError: ") + e.what());
    }
  }
  absl::StatusOr<Json> result = EvalFeature(key, Json{{"attributes", attributes}});
  if (!result.ok()) return result.status();
  return (*result)["on"].get<bool>();
}

absl::StatusOr<Json> GrowthBookClient::Run(const Json& experiment, const Json& user) const {
  std::shared_ptr<const FeaturePayload> payload = payload_.load();
  GrowthBookEvaluator evaluator(payload ? payload->json() : kEmptyPayload, user);
  return evaluator.Run(experiment);
}

}  // namespace capstan::experiments
