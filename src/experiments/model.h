// Capstan's native experiment model: the documents an operator writes and the
// store keeps, one versioned document per object (Google's overlapping
// design, Tang et al. KDD'10: domains -> layers -> experiments -> variants,
// plus launch layers, holdouts, unit types, saved groups and feature flags).
//
// This header parses and validates ONE document at a time, turning JSON into
// the typed structs below; every error names the document and the field path
// ("experiments/checkout-cta: variants[1].weight: must be in [0,1]").
// Cross-document checks (an experiment names an existing layer, ranges in a
// layer do not overlap, ...) happen when a ConfigSnapshot is built from the
// whole set (snapshot.h). The schemas, defaults and store layout are written
// out in docs/experiments-model.md.
//
// Store layout: the experiments service's (config_store.h): each object
// lives at `<prefix>config/<kind>/<id>` (default prefix /capstan/experiments/),
// kind one of domains, layers, experiments, holdouts, flags, groups, units;
// the value is the service's envelope {"kind","id","version",...,"spec"}
// whose "spec" is the document (a bare document, written by hand, is read
// too), its version the store's mod_revision.
//
// Thread-safety: pure functions over values.
//
// Example:
//   absl::StatusOr<ModelDocument> doc = ParseModelDocument(
//       "/capstan/experiments/config/layers/checkout", R"({"id":"checkout"})");
//   const LayerDoc& layer = std::get<LayerDoc>(doc->object);
#ifndef CAPSTAN_EXPERIMENTS_MODEL_H_
#define CAPSTAN_EXPERIMENTS_MODEL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "experiments/bucketing.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

// The prefix every model document's key starts with: the service's default
// prefix (kDefaultConfigPrefix) + "config/".
inline constexpr std::string_view kModelPrefix = "/capstan/experiments/config/";

enum class DocumentKind { kUnitType, kDomain, kLayer, kExperiment, kHoldout, kSavedGroup, kFlag };

// "units", "domains", "layers", "experiments", "holdouts", "groups", "flags".
std::string_view DocumentKindDirectory(DocumentKind kind);
// `/capstan/experiments/config/<kind>/<id>`.
std::string ModelDocumentKey(DocumentKind kind, std::string_view id);
// The kind and id a key names, or InvalidArgument for a key outside the layout.
absl::StatusOr<std::pair<DocumentKind, std::string>> ParseModelDocumentKey(std::string_view key);

// Ids: 1-128 characters of [A-Za-z0-9._-], so they are safe in keys, paths
// and metric labels.
bool IsValidModelId(std::string_view id);

// What a unit is: the attribute whose value is hashed, and a fallback used
// when the first is absent (an anonymous id before login). Built in, unless a
// document replaces them: user ("id"), device ("device_id"), session
// ("session_id").
struct UnitTypeDoc {
  std::string id;
  std::string attribute;
  std::string fallback_attribute;  // empty: none
};

// A slice of traffic: the units whose domain hash (salt "capstan-domains",
// hashed on the domain's unit type) falls in [range.first, range.second).
// Domains never overlap each other; each holds its own layers.
struct DomainDoc {
  std::string id;
  std::string unit_type = "user";
  VariationRange range{0, 1};
};

// A set of parameters and the experiments that vary them. A unit's bucket in
// a layer is Hash(salt, unit, 2), independent of every other layer's (each
// layer has its own salt), so layers are orthogonal. A launch layer belongs to
// no domain and covers all traffic; its values override the defaults and are
// overridden by normal layers' experiments.
struct LayerDoc {
  std::string id;
  std::string domain;  // "" for a launch layer
  bool launch = false;
  std::string salt;  // default: id
  std::string unit_type = "user";
  // The parameters this layer owns, with their default values. Experiments in
  // the layer set only these; two normal layers of one domain own disjoint sets.
  Json parameters = Json::object();
};

enum class ExperimentState { kDraft, kRunning, kStopped, kLaunched };

std::string_view ExperimentStateName(ExperimentState state);
std::optional<ExperimentState> ParseExperimentState(std::string_view name);
// The lifecycle: draft -> running -> stopped -> launched, and running ->
// launched directly. Nothing leaves launched; a stopped experiment does not
// run again (its units' history would bias a restart: make a new one).
bool IsLegalTransition(ExperimentState from, ExperimentState to);

struct VariantDoc {
  std::string id;
  double weight = 0;                 // default: equal shares
  Json parameters = Json::object();  // values for parameters of the layer
};

// One lifecycle change: who made it and when (RFC 3339 text, as written).
struct HistoryEntry {
  ExperimentState state = ExperimentState::kDraft;
  std::string by;
  std::string at;
};

// How the results endpoint (event_results.h) analyses the experiment; a
// query parameter overrides each. The defaults are GrowthBook's.
enum class PValueCorrection { kHolm, kBenjaminiHochberg, kNone };
// "holm", "bh", "none".
std::string_view PValueCorrectionName(PValueCorrection correction);
std::optional<PValueCorrection> ParsePValueCorrection(std::string_view name);

struct AnalysisDoc {
  std::string control;  // a variant id; empty: the first variant
  bool sequential = false;
  double alpha = 0.05;
  PValueCorrection correction = PValueCorrection::kHolm;
  double sequential_tuning = 5000;  // N*, the total units the sequence is tightest at
};

struct ExperimentDoc {
  std::string id;
  std::string layer;
  ExperimentState state = ExperimentState::kDraft;
  std::string salt;  // default: id; the variant hash's seed
  // The slice of the layer's buckets this experiment owns (mutual exclusion:
  // slices of live experiments in one layer do not overlap).
  VariationRange range{0, 1};
  // The share of the slice in the experiment; raising it keeps everyone
  // already assigned (GetBucketRanges keeps each variant's start).
  double coverage = 1;
  std::vector<VariantDoc> variants;
  Json condition;  // GrowthBook condition; null: everyone
  // Allow-list: unit value -> variant id, ahead of holdouts, slice, condition
  // and coverage. Applies while draft (for QA) or running.
  std::vector<std::pair<std::string, std::string>> forced_variants;
  std::string launched_variant;  // required when launched
  std::vector<HistoryEntry> history;
  AnalysisDoc analysis;
};

// Units held back from experiments: those whose Hash(salt, unit, 2) is below
// `fraction`. `layers` empty means global: every layer, launch layers
// included; otherwise only the layers named.
struct HoldoutDoc {
  std::string id;
  std::string unit_type = "user";
  std::string salt;  // default: id
  double fraction = 0;
  std::vector<std::string> layers;
};

// A named list for `$inGroup` / `$notInGroup` in conditions.
struct SavedGroupDoc {
  std::string id;
  Json values = Json::array();
};

struct FlagRuleDoc {
  enum class Type { kForce, kRollout, kExperiment };
  Type type = Type::kForce;
  std::string id;  // default: "<index>"
  Json condition;  // null: everyone
  Json value;      // force, rollout
  // rollout: the unit is in when Hash(salt, unit, 2) < coverage.
  double coverage = 1;
  std::string unit_type = "user";
  std::string salt;  // default: "<flag key>/<rule id>"
  // experiment: the value for the unit's variant; no match falls through.
  std::string experiment;
  std::vector<std::pair<std::string, Json>> variant_values;
};

// The flag is evaluated only when `flag` (evaluated first) has a value that
// satisfies `condition`, tested against {"value": <parent's value>}.
struct PrerequisiteDoc {
  std::string flag;
  Json condition;
};

struct FlagDoc {
  std::string id;       // the flag key
  bool enabled = true;  // false: always default_value
  Json default_value;   // null when absent
  std::vector<PrerequisiteDoc> prerequisites;
  std::vector<FlagRuleDoc> rules;
};

// One parsed document with the store revision it was read at.
struct ModelDocument {
  DocumentKind kind = DocumentKind::kLayer;
  std::string id;
  int64_t revision = 0;
  std::variant<UnitTypeDoc, DomainDoc, LayerDoc, ExperimentDoc, HoldoutDoc, SavedGroupDoc, FlagDoc>
      object;
};

// Parses and validates the document stored at `key`. Errors are
// InvalidArgument, one line per problem (up to kMaxReportedErrors), each
// "<kind>/<id>: <field path>: <what is wrong>". The document's "id" must
// equal the key's last segment. A service envelope (an object with "kind"
// and "spec") is unwrapped: its "spec" is the document.
absl::StatusOr<ModelDocument> ParseModelDocument(std::string_view key, std::string_view json,
                                                 int64_t revision = 0);
absl::StatusOr<ModelDocument> ParseModelDocument(DocumentKind kind, const Json& json,
                                                 int64_t revision = 0);

inline constexpr size_t kMaxReportedErrors = 20;
// Bigger or deeper documents are rejected (principle 4: limits are explicit).
inline constexpr size_t kMaxDocumentBytes = 1 << 20;
inline constexpr size_t kMaxDocumentNesting = 64;

// Checks an update of an experiment as the API should before writing it: the
// state change is legal (or none), and once an experiment has run, what its
// units' assignment depends on stays put (layer, salt, variant ids and
// weights; range and coverage may only grow, keeping their start).
absl::Status CheckExperimentUpdate(const ExperimentDoc& before, const ExperimentDoc& after);

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_MODEL_H_
