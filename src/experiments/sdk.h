// The in-process GrowthBook SDK: a service holds the current features payload
// and evaluates features and experiments for its users without a network
// round trip, with the results the @growthbook/growthbook JavaScript SDK gives.
//
// A FeaturePayload is parsed once and then immutable; a GrowthBookClient holds
// the current one and swaps it atomically when the configuration changes, so
// an evaluation in flight finishes on the payload it started with.
//
// Thread-safety: FeaturePayload is immutable and shareable. GrowthBookClient's
// methods may be called from any number of threads at once, SetPayload
// included.
//
// Example:
//   auto payload = FeaturePayload::Parse(R"({"features":{"new-checkout":{
//       "defaultValue":false,"rules":[{"force":true,"coverage":0.2}]}}})");
//   GrowthBookClient client(*std::move(payload));
//   absl::StatusOr<Json> result =
//       client.EvalFeature("new-checkout", Json{{"attributes", {{"id", "user-17"}}}});
//   bool on = result.ok() && (*result)["on"].get<bool>();
#ifndef CAPSTAN_EXPERIMENTS_SDK_H_
#define CAPSTAN_EXPERIMENTS_SDK_H_

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "experiments/compiled.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

// A parsed GrowthBook features payload, as `GET /api/features/{clientKey}`
// serves it: {"features", "savedGroups", "experiments", "contextualBandits"}.
class FeaturePayload {
 public:
  // Parses a payload. Encrypted fields ("encryptedFeatures",
  // "encryptedSavedGroups", "encryptedExperiments",
  // "encryptedContextualBandits") are decrypted with `decryption_key`
  // (base64); where the JavaScript SDK logs a failed decryption and goes on
  // without the field, Parse fails with InvalidArgument instead, so a wrong key
  // is noticed.
  static absl::StatusOr<std::shared_ptr<const FeaturePayload>> Parse(
      std::string_view json, std::string_view decryption_key = "");
  // The same for a payload already parsed.
  static absl::StatusOr<std::shared_ptr<const FeaturePayload>> FromJson(
      Json document, std::string_view decryption_key = "");

  // Not copyable or movable: compiled_ points into json_.
  FeaturePayload(const FeaturePayload&) = delete;
  FeaturePayload& operator=(const FeaturePayload&) = delete;

  // The decrypted payload document.
  const Json& json() const { return json_; }
  // The payload compiled for the fast path (features it does not cover are
  // evaluated by the reference evaluator).
  const CompiledPayload& compiled() const { return compiled_; }

 private:
  explicit FeaturePayload(Json json) : json_(std::move(json)), compiled_(json_) {}
  Json json_;
  CompiledPayload compiled_;  // points into json_
};

// growthbook.evalFeature's FeatureResult as a typed view (GrowthBookClient::
// EvalFeatureView): the same fields, pointing into the payload instead of
// being copied into JSON.
struct FeatureView {
  const Json* value = nullptr;  // never null once evaluated (JSON null for none)
  bool on = false;              // JavaScript truthiness of *value
  // "defaultValue", "force", "experiment", "unknownFeature", "cyclicPrerequisite",
  // "prerequisite", "override" — as the SDK's FeatureResult.source.
  std::string_view source;
  std::string_view rule_id;  // rule.id when a non-empty string, else ""
  // With source "experiment": the rule's Experiment and the assignment
  // (FeatureResult.experimentResult): the variation, its meta entry (whose
  // "key", else the variation's index, is the result's key), the bucket, the
  // attribute hashed and its value.
  const Json* experiment = nullptr;
  int variation_id = -1;
  const Json* variation_meta = nullptr;
  double bucket = 0;
  std::string_view hash_attribute;
  const Json* hash_value = nullptr;
};

class GrowthBookClient {
 public:
  // A client without a payload: every feature is unknown.
  GrowthBookClient();
  explicit GrowthBookClient(std::shared_ptr<const FeaturePayload> payload);

  // Replaces the payload for evaluations that start afterwards.
  void SetPayload(std::shared_ptr<const FeaturePayload> payload);
  std::shared_ptr<const FeaturePayload> payload() const;

  // growthbook.evalFeature(key) for `user`: {"attributes": {...}} plus,
  // optionally, "url", "forcedVariations", "qaMode" and "enabled". Returns the
  // SDK's FeatureResult; an error only for a payload the SDK would throw on.
  absl::StatusOr<Json> EvalFeature(const std::string& key, const Json& user) const;

  // evalFeature(key) for a user with these attributes only, as a typed view
  // (no JSON built, no allocation on the compiled path): what a service reads
  // per request. The view points into this thread's current payload (or, for
  // a feature the fast path does not cover, into a result kept per thread)
  // and is valid until this thread's next call on any GrowthBookClient.
  // Fills `*view` (an out-parameter: the hot path copies no StatusOr).
  absl::Status EvalFeatureView(std::string_view key, const Json& attributes,
                               FeatureView* view) const;

  // The hot path: is feature `key` on for a user with these attributes? Uses
  // the compiled payload (no JSON is built) when the feature compiled, the
  // reference evaluator otherwise; the answer is FeatureResult.on either way.
  absl::StatusOr<bool> IsOn(const std::string& key, const Json& attributes) const;

  // growthbook.run(experiment) for `user`: the SDK's Result.
  absl::StatusOr<Json> Run(const Json& experiment, const Json& user) const;

 private:
  // The payload for this call: from a per-thread cache, refreshed under mu_
  // when the generation moved. (Not std::atomic<std::shared_ptr>: libstdc++
  // 12's lock bit inside it is invisible to ThreadSanitizer, which reports
  // races, and the Assigner's readers saw stale values through it.) A
  // thread keeps the payload it used last alive until its next call; the
  // reference is to that per-thread copy (no reference count touched on
  // the hot path), valid until this thread's next call.
  const std::shared_ptr<const FeaturePayload>& Current() const;

  const uint64_t id_;  // tells the caches of different clients apart
  mutable Mutex mu_;
  std::shared_ptr<const FeaturePayload> payload_ ABSL_GUARDED_BY(mu_);
  // Bumped under mu_ with every SetPayload; read without it.
  std::atomic<uint64_t> generation_{1};
};

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_SDK_H_
