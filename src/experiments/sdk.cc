#include "experiments/sdk.h"

#include <utility>

#include "absl/status/status.h"
#include "experiments/decrypt.h"
#include "experiments/evaluator.h"

namespace capstan::experiments {
namespace {

const Json kEmptyPayload = Json::object();

}  // namespace

absl::StatusOr<std::shared_ptr<const FeaturePayload>> FeaturePayload::Parse(
    std::string_view json, std::string_view decryption_key) {
  Json document = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return absl::InvalidArgumentError("payload is not valid JSON");
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
  GrowthBookEvaluator evaluator(payload ? payload->json() : kEmptyPayload, user);
  return evaluator.EvalFeature(key);
}

absl::StatusOr<Json> GrowthBookClient::Run(const Json& experiment, const Json& user) const {
  std::shared_ptr<const FeaturePayload> payload = payload_.load();
  GrowthBookEvaluator evaluator(payload ? payload->json() : kEmptyPayload, user);
  return evaluator.Run(experiment);
}

}  // namespace capstan::experiments
