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

namespace {

std::atomic<uint64_t> next_client_id{1};

// The payload a thread last used, with whose and which generation it is.
struct CachedPayload {
  uint64_t client_id = 0;
  uint64_t generation = 0;
  std::shared_ptr<const FeaturePayload> payload;
};
thread_local CachedPayload cached_payload;

}  // namespace

GrowthBookClient::GrowthBookClient() : GrowthBookClient(nullptr) {}

GrowthBookClient::GrowthBookClient(std::shared_ptr<const FeaturePayload> payload)
    : id_(next_client_id.fetch_add(1, std::memory_order_relaxed)), payload_(std::move(payload)) {}

void GrowthBookClient::SetPayload(std::shared_ptr<const FeaturePayload> payload) {
  {
    MutexLock lock(&mu_);
    payload_.swap(payload);
    generation_.fetch_add(1, std::memory_order_release);
  }
  // `payload` holds the old one, released outside the lock.
}

std::shared_ptr<const FeaturePayload> GrowthBookClient::payload() const {
  ReaderMutexLock lock(&mu_);
  return payload_;
}

const std::shared_ptr<const FeaturePayload>& GrowthBookClient::Current() const {
  CachedPayload& cache = cached_payload;
  if (cache.client_id != id_ || cache.generation != generation_.load(std::memory_order_acquire)) {
    std::shared_ptr<const FeaturePayload> previous;  // released after the lock
    ReaderMutexLock lock(&mu_);
    // Read together under the lock: a swap after this moves the generation
    // and the next call reloads.
    previous = std::exchange(cache.payload, payload_);
    cache.generation = generation_.load(std::memory_order_relaxed);
    cache.client_id = id_;
  }
  return cache.payload;
}

absl::StatusOr<Json> GrowthBookClient::EvalFeature(const std::string& key, const Json& user) const {
  const std::shared_ptr<const FeaturePayload>& payload = Current();
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

namespace {

std::string_view StringOf(const Json* j) {
  if (j == nullptr || !j->is_string()) return {};
  return j->get_ref<const std::string&>();
}

const Json* Member(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// The reference evaluator's FeatureResult, kept for the view made of it.
thread_local Json reference_result;

}  // namespace

absl::Status GrowthBookClient::EvalFeatureView(std::string_view key, const Json& attributes,
                                               FeatureView* out) const {
  const std::shared_ptr<const FeaturePayload>& payload = Current();
  FeatureView& view = *out;
  view = FeatureView();
  if (payload != nullptr && attributes.is_object()) {
    const CompiledPayload& compiled = payload->compiled();
    ConditionEvaluator conditions(compiled.saved_groups());
    try {
      std::optional<FastFeatureResult> fast = compiled.Evaluate(key, attributes, conditions);
      if (fast.has_value()) {
        view.value = fast->value;
        view.on = fast->on();
        switch (fast->source) {
          case FastFeatureResult::Source::kDefaultValue:
            view.source = "defaultValue";
            return absl::OkStatus();
          case FastFeatureResult::Source::kForce:
            view.source = "force";
            break;
          case FastFeatureResult::Source::kExperiment:
            view.source = "experiment";
            break;
        }
        view.rule_id = fast->rule->id;
        if (fast->source == FastFeatureResult::Source::kForce) return absl::OkStatus();
        view.experiment = &fast->rule->experiment;
        view.variation_id = fast->variation;
        view.variation_meta =
            fast->rule->meta != nullptr ? &(*fast->rule->meta)[fast->variation] : nullptr;
        view.bucket = fast->bucket;
        view.hash_attribute = StringOf(&fast->rule->hash_attribute);
        view.hash_value = fast->hash_value;
        return absl::OkStatus();
      }
    } catch (const JsTypeError& e) {
      return absl::InvalidArgumentError(std::string("TypeError: ") + e.what());
    }
  }
  absl::StatusOr<Json> result = EvalFeature(std::string(key), Json{{"attributes", attributes}});
  if (!result.ok()) return result.status();
  reference_result = *std::move(result);
  const Json& r = reference_result;
  view.value = &r["value"];
  view.on = r.value("on", false);
  view.source = StringOf(Member(r, "source"));
  view.rule_id = StringOf(Member(r, "ruleId"));
  if (const Json* er = Member(r, "experimentResult"); er != nullptr && er->is_object()) {
    view.experiment = Member(r, "experiment");
    view.variation_id = er->value("variationId", -1);
    view.bucket = er->value("bucket", 0.0);
    view.hash_attribute = StringOf(Member(*er, "hashAttribute"));
    view.hash_value = Member(*er, "hashValue");
    if (const Json* meta = view.experiment != nullptr ? Member(*view.experiment, "meta") : nullptr;
        meta != nullptr && meta->is_array() && view.variation_id >= 0 &&
        static_cast<size_t>(view.variation_id) < meta->size()) {
      view.variation_meta = &(*meta)[static_cast<size_t>(view.variation_id)];
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> GrowthBookClient::IsOn(const std::string& key, const Json& attributes) const {
  const std::shared_ptr<const FeaturePayload>& payload = Current();
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
  const std::shared_ptr<const FeaturePayload>& payload = Current();
  GrowthBookEvaluator evaluator(payload ? payload->json() : kEmptyPayload, user);
  return evaluator.Run(experiment);
}

}  // namespace capstan::experiments
