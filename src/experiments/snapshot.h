// A ConfigSnapshot: the whole experiment model (model.h documents) checked
// across documents and compiled into an immutable structure that assigns a
// unit to every layer's experiment in one pass, without building JSON.
//
//   documents (store) ─► ParseModelDocument ─► ConfigSnapshot::Build
//       (cross-references, slices, parameter ownership, flag order)
//   ─► Evaluate(attributes, &result): holdouts, domain, each layer's
//      experiment and variant, merged parameters, flags
//
// The assignment algorithm (docs/experiments-model.md has it in full):
//  1. The unit of each unit type: its attribute, or the fallback attribute.
//  2. Holdouts: the unit is held out when Hash(holdout.salt, unit, 2) <
//     fraction; a held-out unit gets no experiment in the holdout's layers.
//  3. Domain: the one whose range holds Hash("capstan-domains", unit, 2).
//  4. Launch layers, then the domain's layers. In each: an allow-listed unit
//     gets its forced variant; otherwise the layer bucket Hash(layer.salt,
//     unit, 2) picks the experiment whose slice holds it (slices do not
//     overlap: at most one experiment per layer), its condition must hold, and
//     Hash(experiment.salt, unit, 2) picks the variant from GetBucketRanges
//     (coverage, weights): a unit past the coverage is in no variant.
//  5. Parameters: layer defaults, then launch-layer variants, then normal-layer
//     variants; a later source replaces an earlier one. Normal layers of one
//     domain own disjoint parameters, so no two experiments fight over one.
//  6. Flags, prerequisites first: enabled, prerequisites, then the first rule
//     that matches (force, rollout, experiment), else the default value.
//
// Thread-safety: immutable once built; Evaluate may run on any number of
// threads at once, each with its own EvaluationResult.
//
// Example:
//   auto snapshot = ConfigSnapshot::Build(std::move(documents));
//   EvaluationResult result;  // reuse it: no allocation once warmed up
//   (*snapshot)->Evaluate(attributes, &result);
//   for (const Assignment& a : result.assignments()) { ... }
//   const Json* color = result.parameter("button_color");
#ifndef CAPSTAN_EXPERIMENTS_SNAPSHOT_H_
#define CAPSTAN_EXPERIMENTS_SNAPSHOT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "experiments/model.h"

namespace capstan::experiments {

// The salt of the hash that splits traffic between domains.
inline constexpr std::string_view kDomainSalt = "capstan-domains";

class ConfigSnapshot;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename T>
using StringMap = std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

struct SnapshotUnitType {
  std::string id;
  std::string attribute;
  std::string fallback_attribute;
};

struct SnapshotHoldout {
  std::string id;
  uint32_t unit_type = 0;
  std::string salt;
  double fraction = 0;
  bool global = false;
};

struct SnapshotExperiment {
  std::string id;
  uint32_t index = 0;  // in ConfigSnapshot::experiments()
  uint32_t layer = 0;
  ExperimentState state = ExperimentState::kDraft;
  int64_t revision = 0;
  std::string salt;
  VariationRange range{0, 1};
  std::vector<std::string> variant_ids;
  std::vector<VariationRange> variant_ranges;  // GetBucketRanges(n, coverage, weights)
  // Per variant: (parameter index, value) pairs.
  std::vector<std::vector<std::pair<uint32_t, const Json*>>> variant_parameters;
  const Json* condition = nullptr;  // nullptr: everyone
  int launched_variant = -1;
};

struct SnapshotLayer {
  std::string id;
  bool launch = false;
  int domain = -1;  // -1: a launch layer (all traffic)
  std::string salt;
  uint32_t unit_type = 0;
  // Running and launched experiments, by slice start; slices are disjoint.
  std::vector<uint32_t> slices;
  // Holdouts that cover this layer (global ones included).
  std::vector<uint32_t> holdouts;
  // Allow-list of draft and running experiments: unit value -> (experiment, variant).
  StringMap<std::pair<uint32_t, int>> forced;
};

struct SnapshotDomain {
  std::string id;
  uint32_t unit_type = 0;
  VariationRange range{0, 1};
  std::vector<uint32_t> layers;  // normal layers, in evaluation order
};

struct SnapshotFlagRule {
  FlagRuleDoc::Type type = FlagRuleDoc::Type::kForce;
  const Json* condition = nullptr;
  const Json* value = nullptr;  // force, rollout
  double coverage = 1;
  uint32_t unit_type = 0;
  std::string salt;
  uint32_t experiment = 0;
  std::vector<const Json*> variant_values;  // by variant index; nullptr: falls through
};

struct SnapshotFlag {
  std::string id;
  bool enabled = true;
  const Json* default_value = nullptr;  // never null (a JSON null when unset)
  std::vector<std::pair<uint32_t, const Json*>> prerequisites;  // (flag, condition)
  std::vector<SnapshotFlagRule> rules;
};

// One experiment a unit falls into. Held-out units are reported too (variant
// -1, `holdout` set): they are the holdout's comparison group for this layer.
struct Assignment {
  const SnapshotExperiment* experiment = nullptr;
  int variant = -1;
  const SnapshotHoldout* holdout = nullptr;  // non-null: held out, no variant
  bool forced = false;                       // from the allow-list
  bool launched = false;                     // the launched variant (not an experiment any more)
  // The hashed unit value; points into the attributes or the result, valid
  // until either changes.
  std::string_view unit;

  std::string_view variant_id() const {
    return variant < 0 ? std::string_view() : experiment->variant_ids[variant];
  }
  // Whether this assignment should be logged as an exposure.
  bool exposed() const { return holdout == nullptr && !launched && variant >= 0; }
};

struct FlagValue {
  enum class Source { kDefault, kDisabled, kPrerequisite, kForce, kRollout, kExperiment };
  const Json* value = nullptr;
  Source source = Source::kDefault;
  int rule = -1;
};

// The outcome of one Evaluate. Reuse one per thread: its vectors keep their
// capacity, so a warmed-up evaluation allocates nothing. Pointers refer to the
// snapshot, which must outlive the result's use (the Assigner keeps it alive).
class EvaluationResult {
 public:
  EvaluationResult() = default;
  // Not copyable or movable: assignments hold views into unit_text_.
  EvaluationResult(const EvaluationResult&) = delete;
  EvaluationResult& operator=(const EvaluationResult&) = delete;

  const std::vector<Assignment>& assignments() const { return assignments_; }
  // The assignment in `experiment_id`, or nullptr.
  const Assignment* assignment(std::string_view experiment_id) const;
  // Merged value of a parameter, or nullptr when no layer defines it.
  const Json* parameter(std::string_view name) const;
  // Merged parameters by ConfigSnapshot::parameter_names() index.
  const std::vector<const Json*>& parameters() const { return parameters_; }
  // A flag's value, or nullptr for an unknown flag.
  const FlagValue* flag(std::string_view key) const;
  const std::vector<FlagValue>& flags() const { return flags_; }
  // Holdouts the unit is in (indices into ConfigSnapshot::holdouts()).
  const std::vector<uint32_t>& holdouts() const { return holdouts_; }
  const ConfigSnapshot* snapshot() const { return snapshot_; }

  // {"assignments": [...], "parameters": {...}, "flags": {...}, "holdouts": [...]}:
  // for APIs and debugging (allocates).
  Json ToJson() const;

 private:
  friend class ConfigSnapshot;
  friend class Assigner;
  const ConfigSnapshot* snapshot_ = nullptr;
  std::shared_ptr<const ConfigSnapshot> owner_;  // set by Assigner
  uint64_t generation_ = 0;                      // Assigner's, when owner_ was loaded
  uint64_t assigner_id_ = 0;
  std::vector<Assignment> assignments_;
  std::vector<const Json*> parameters_;
  std::vector<FlagValue> flags_;
  std::vector<uint32_t> holdouts_;
  // Per unit type: the unit value (a view) and, for numbers, its text.
  std::vector<std::string_view> units_;
  std::vector<std::string> unit_text_;
  // Per holdout: 0 unknown, 1 in, 2 out (computed on first use).
  std::vector<uint8_t> holdout_state_;
};

class ConfigSnapshot {
 public:
  // Checks the documents against each other and compiles them. Errors are
  // InvalidArgument, one line per problem, each naming the document and field
  // ("experiments/e1: layer: names no layer"). Documents must have distinct
  // (kind, id).
  static absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> Build(
      std::vector<ModelDocument> documents);

  // A stored document: its key, JSON text and revision.
  struct StoredDocument {
    std::string key;
    std::string value;
    int64_t revision = 0;
  };
  // Parses every document (ParseModelDocument), then Build. All documents'
  // errors are reported together.
  static absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> BuildFromStore(
      const std::vector<StoredDocument>& documents);

  ConfigSnapshot(const ConfigSnapshot&) = delete;
  ConfigSnapshot& operator=(const ConfigSnapshot&) = delete;

  // Assigns the unit described by `attributes` (a JSON object) everywhere.
  // `attributes` must outlive the use of `result` (units point into it).
  // Conditions that throw count as not matching.
  void Evaluate(const Json& attributes, EvaluationResult* result) const;

  // The largest revision among the documents.
  int64_t revision() const { return revision_; }
  const std::vector<SnapshotExperiment>& experiments() const { return experiments_; }
  const std::vector<SnapshotLayer>& layers() const { return layers_; }
  const std::vector<SnapshotHoldout>& holdouts() const { return holdouts_; }
  const std::vector<SnapshotFlag>& flags() const { return flags_; }  // evaluation order
  const std::vector<std::string>& parameter_names() const { return parameter_names_; }
  const std::vector<SnapshotUnitType>& unit_types() const { return unit_types_; }
  int ParameterIndex(std::string_view name) const;
  int FlagIndex(std::string_view key) const;
  int ExperimentIndex(std::string_view id) const;

 private:
  ConfigSnapshot() = default;
  class Builder;

  void EvaluateLayer(const SnapshotLayer& layer, const Json& attributes,
                     EvaluationResult* result) const;
  bool HeldOut(const SnapshotLayer& layer, EvaluationResult* result, uint32_t* holdout) const;
  bool ConditionHolds(const Json& condition, const Json& attributes) const;
  void EvaluateFlags(const Json& attributes, EvaluationResult* result) const;

  std::vector<ModelDocument> documents_;  // owns every Json the pointers below refer to
  int64_t revision_ = 0;
  Json saved_groups_ = Json::object();
  std::vector<SnapshotUnitType> unit_types_;
  std::vector<SnapshotDomain> domains_;
  bool single_full_domain_ = false;  // one domain covering everything: no domain hash
  std::vector<SnapshotLayer> layers_;
  std::vector<uint32_t> launch_layers_;
  std::vector<SnapshotExperiment> experiments_;
  std::vector<SnapshotHoldout> holdouts_;
  std::vector<SnapshotFlag> flags_;
  std::vector<std::string> parameter_names_;
  std::vector<const Json*> parameter_defaults_;
  StringMap<uint32_t> parameter_index_;
  StringMap<uint32_t> flag_index_;
  StringMap<uint32_t> experiment_index_;
};

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_SNAPSHOT_H_
