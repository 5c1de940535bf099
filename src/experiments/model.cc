#include "experiments/model.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "experiments/condition.h"

namespace capstan::experiments {
namespace {

constexpr std::pair<DocumentKind, std::string_view> kDirectories[] = {
    {DocumentKind::kUnitType, "units"},   {DocumentKind::kDomain, "domains"},
    {DocumentKind::kLayer, "layers"},     {DocumentKind::kExperiment, "experiments"},
    {DocumentKind::kHoldout, "holdouts"}, {DocumentKind::kSavedGroup, "groups"},
    {DocumentKind::kFlag, "flags"},
};

constexpr std::pair<ExperimentState, std::string_view> kStateNames[] = {
    {ExperimentState::kDraft, "draft"},
    {ExperimentState::kRunning, "running"},
    {ExperimentState::kStopped, "stopped"},
    {ExperimentState::kLaunched, "launched"},
};

// absl::StrCat takes absl::string_view, which Debian's abseil keeps distinct
// from std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The problems found in one document, each "<kind>/<id>: <path>: <message>".
class Errors {
 public:
  explicit Errors(std::string document) : document_(std::move(document)) {}

  void Add(std::string_view path, std::string_view message) {
    if (lines_.size() < kMaxReportedErrors) {
      lines_.push_back(path.empty() ? absl::StrCat(document_, ": ", Sv(message))
                                    : absl::StrCat(document_, ": ", Sv(path), ": ", Sv(message)));
    }
    ++count_;
  }
  bool ok() const { return count_ == 0; }
  absl::Status ToStatus() const {
    if (ok()) return absl::OkStatus();
    std::string text = absl::StrJoin(lines_, "\n");
    if (count_ > lines_.size()) absl::StrAppend(&text, "\n(", count_ - lines_.size(), " more)");
    return absl::InvalidArgumentError(text);
  }

 private:
  std::string document_;
  std::vector<std::string> lines_;
  size_t count_ = 0;
};

std::string JoinPath(std::string_view prefix, std::string_view key) {
  if (prefix.empty()) return std::string(key);
  return absl::StrCat(Sv(prefix), ".", Sv(key));
}

std::string IndexPath(std::string_view prefix, size_t index) {
  return absl::StrCat(Sv(prefix), "[", index, "]");
}

// Reads the fields of one JSON object, reporting wrong types and, at the end,
// fields it does not know (a typo such as "coverge" is an error, not a
// silently ignored field).
class ObjectReader {
 public:
  ObjectReader(const Json& object, std::string path, Errors* errors)
      : object_(object), path_(std::move(path)), errors_(errors) {
    if (!object_.is_object()) errors_->Add(path_, "must be an object");
  }
  ~ObjectReader() {
    if (!object_.is_object()) return;
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (seen_.count(it.key()) == 0) errors_->Add(JoinPath(path_, it.key()), "unknown field");
    }
  }

  const std::string& path() const { return path_; }
  std::string Path(std::string_view key) const { return JoinPath(path_, key); }

  // The field, or nullptr when absent (a JSON null counts as absent).
  const Json* Get(std::string_view key) {
    seen_.insert(std::string(key));
    if (!object_.is_object()) return nullptr;
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::string String(std::string_view key, std::string fallback = "", bool required = false) {
    const Json* value = Get(key);
    if (value == nullptr) {
      if (required) errors_->Add(Path(key), "required");
      return fallback;
    }
    if (!value->is_string()) {
      errors_->Add(Path(key), "must be a string");
      return fallback;
    }
    return value->get<std::string>();
  }

  // An id-shaped string (see IsValidModelId).
  std::string Id(std::string_view key, std::string fallback = "", bool required = false) {
    const Json* value = Get(key);
    std::string id = String(key, std::move(fallback), required);
    if (value != nullptr && value->is_string() && !IsValidModelId(id)) {
      errors_->Add(Path(key), "must be 1-128 characters of [A-Za-z0-9._-]");
    }
    return id;
  }

  // A number in [0, 1].
  double Fraction(std::string_view key, double fallback) {
    const Json* value = Get(key);
    if (value == nullptr) return fallback;
    if (!value->is_number() || !(value->get<double>() >= 0 && value->get<double>() <= 1)) {
      errors_->Add(Path(key), "must be in [0,1]");
      return fallback;
    }
    return value->get<double>();
  }

  bool Bool(std::string_view key, bool fallback) {
    const Json* value = Get(key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) {
      errors_->Add(Path(key), "must be true or false");
      return fallback;
    }
    return value->get<bool>();
  }

  // [start, end] with 0 <= start <= end <= 1.
  VariationRange Range(std::string_view key, VariationRange fallback) {
    const Json* value = Get(key);
    if (value == nullptr) return fallback;
    if (!value->is_array() || value->size() != 2 || !(*value)[0].is_number() ||
        !(*value)[1].is_number()) {
      errors_->Add(Path(key), "must be [start, end], two numbers");
      return fallback;
    }
    double start = (*value)[0].get<double>(), end = (*value)[1].get<double>();
    if (!(start >= 0 && start <= end && end <= 1)) {
      errors_->Add(Path(key), "must satisfy 0 <= start <= end <= 1");
      return fallback;
    }
    return {start, end};
  }

  // A GrowthBook condition: an object, which a dry run against no attributes
  // does not throw on (`{"$or": null}` would throw at every evaluation).
  Json Condition(std::string_view key, const Json& saved_groups) {
    const Json* value = Get(key);
    if (value == nullptr) return Json();
    if (!value->is_object()) {
      errors_->Add(Path(key), "must be an object (a GrowthBook condition)");
      return Json();
    }
    try {
      ConditionEvaluator evaluator(saved_groups);
      evaluator.Evaluate(Json::object(), *value);
    } catch (const JsTypeError& e) {
      errors_->Add(Path(key), absl::StrCat("invalid condition: ", e.what()));
      return Json();
    }
    return *value;
  }

  // The elements of an array field (empty when absent or not an array).
  const Json* Array(std::string_view key) {
    const Json* value = Get(key);
    if (value == nullptr) return nullptr;
    if (!value->is_array()) {
      errors_->Add(Path(key), "must be an array");
      return nullptr;
    }
    return value;
  }

  const Json* Object(std::string_view key) {
    const Json* value = Get(key);
    if (value == nullptr) return nullptr;
    if (!value->is_object()) {
      errors_->Add(Path(key), "must be an object");
      return nullptr;
    }
    return value;
  }

  Errors* errors() { return errors_; }

 private:
  const Json& object_;
  std::string path_;
  Errors* errors_;
  std::set<std::string, std::less<>> seen_;
};

// Every document's "id" must be present, well formed, and (when the caller
// knows it from the key) equal to the key's.
std::string ReadDocumentId(ObjectReader& reader, std::string_view expected) {
  std::string id = reader.Id("id", "", /*required=*/true);
  if (!expected.empty() && !id.empty() && id != expected) {
    reader.errors()->Add("id", absl::StrCat("must equal the key's id \"", Sv(expected), "\""));
  }
  return id;
}

std::vector<std::string> IdList(ObjectReader& reader, std::string_view key) {
  std::vector<std::string> ids;
  const Json* list = reader.Array(key);
  if (list == nullptr) return ids;
  std::set<std::string> seen;
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& item = (*list)[i];
    std::string path = IndexPath(reader.Path(key), i);
    if (!item.is_string() || !IsValidModelId(item.get<std::string>())) {
      reader.errors()->Add(path, "must be an id");
    } else if (!seen.insert(item.get<std::string>()).second) {
      reader.errors()->Add(path, "duplicate");
    } else {
      ids.push_back(item.get<std::string>());
    }
  }
  return ids;
}

UnitTypeDoc ParseUnitType(ObjectReader& r, std::string_view id) {
  UnitTypeDoc doc;
  doc.id = ReadDocumentId(r, id);
  doc.attribute = r.String("attribute", "", /*required=*/true);
  if (r.Get("attribute") != nullptr && doc.attribute.empty()) {
    r.errors()->Add("attribute", "must not be empty");
  }
  doc.fallback_attribute = r.String("fallback_attribute");
  return doc;
}

DomainDoc ParseDomain(ObjectReader& r, std::string_view id) {
  DomainDoc doc;
  doc.id = ReadDocumentId(r, id);
  doc.unit_type = r.Id("unit_type", "user");
  doc.range = r.Range("range", {0, 1});
  return doc;
}

LayerDoc ParseLayer(ObjectReader& r, std::string_view id) {
  LayerDoc doc;
  doc.id = ReadDocumentId(r, id);
  doc.launch = r.Bool("launch", false);
  doc.domain = r.Id("domain");
  if (doc.launch && !doc.domain.empty()) {
    r.errors()->Add("domain", "a launch layer covers all traffic and has no domain");
  } else if (!doc.launch && doc.domain.empty() && r.Get("domain") == nullptr) {
    r.errors()->Add("domain", "required (unless \"launch\": true)");
  }
  doc.salt = r.String("salt", doc.id);
  if (doc.salt.empty()) r.errors()->Add("salt", "must not be empty");
  doc.unit_type = r.Id("unit_type", "user");
  if (const Json* parameters = r.Object("parameters")) doc.parameters = *parameters;
  r.String("description");
  return doc;
}

ExperimentDoc ParseExperiment(ObjectReader& r, std::string_view id) {
  static const Json kNoGroups = Json::object();
  ExperimentDoc doc;
  doc.id = ReadDocumentId(r, id);
  doc.layer = r.Id("layer", "", /*required=*/true);
  std::string state = r.String("state", "draft");
  if (std::optional<ExperimentState> parsed = ParseExperimentState(state)) {
    doc.state = *parsed;
  } else {
    r.errors()->Add("state", "must be one of draft, running, stopped, launched");
  }
  doc.salt = r.String("salt", doc.id);
  if (doc.salt.empty()) r.errors()->Add("salt", "must not be empty");
  doc.range = r.Range("range", {0, 1});
  doc.coverage = r.Fraction("coverage", 1);
  // Saved groups are checked when the snapshot is built; here an empty set
  // only catches conditions that throw whatever the groups hold.
  doc.condition = r.Condition("condition", kNoGroups);
  r.String("description");

  const Json* variants = r.Array("variants");
  if (variants == nullptr) {
    r.errors()->Add("variants", "required");
  } else if (variants->size() < 1) {
    r.errors()->Add("variants", "must have at least one variant");
  } else {
    std::set<std::string> ids;
    int weighted = 0;
    double total = 0;
    bool bad_weight = false;
    for (size_t i = 0; i < variants->size(); ++i) {
      ObjectReader v((*variants)[i], IndexPath("variants", i), r.errors());
      VariantDoc variant;
      variant.id = v.Id("id", "", /*required=*/true);
      if (!variant.id.empty() && !ids.insert(variant.id).second) {
        r.errors()->Add(v.Path("id"), "duplicate variant id");
      }
      if (const Json* weight = v.Get("weight")) {
        ++weighted;
        variant.weight = v.Fraction("weight", 0);
        total += variant.weight;
        // An invalid weight is reported once, not again as a wrong sum.
        if (!weight->is_number() || variant.weight != weight->get<double>()) bad_weight = true;
      }
      if (const Json* parameters = v.Object("parameters")) variant.parameters = *parameters;
      v.String("description");
      doc.variants.push_back(std::move(variant));
    }
    if (weighted == 0) {
      for (VariantDoc& variant : doc.variants) variant.weight = 1.0 / doc.variants.size();
    } else if (weighted != static_cast<int>(doc.variants.size())) {
      r.errors()->Add("variants", "either every variant has a weight or none does");
    } else if (!bad_weight && std::abs(total - 1) > 1e-6) {
      r.errors()->Add("variants", absl::StrCat("weights must sum to 1 (they sum to ", total, ")"));
    }
  }

  if (const Json* forced = r.Object("forced_variants")) {
    for (auto it = forced->begin(); it != forced->end(); ++it) {
      std::string path = JoinPath("forced_variants", it.key());
      if (it.key().empty()) r.errors()->Add(path, "the unit value must not be empty");
      if (!it->is_string()) {
        r.errors()->Add(path, "must be a variant id");
        continue;
      }
      bool known = false;
      for (const VariantDoc& variant : doc.variants) known |= variant.id == it->get<std::string>();
      if (!known) r.errors()->Add(path, "names no variant of this experiment");
      doc.forced_variants.emplace_back(it.key(), it->get<std::string>());
    }
  }

  doc.launched_variant = r.String("launched_variant");
  if (!doc.launched_variant.empty()) {
    bool known = false;
    for (const VariantDoc& variant : doc.variants) known |= variant.id == doc.launched_variant;
    if (!known) r.errors()->Add("launched_variant", "names no variant of this experiment");
  }
  if (doc.state == ExperimentState::kLaunched && doc.launched_variant.empty()) {
    r.errors()->Add("launched_variant", "required when the state is launched");
  } else if (doc.state != ExperimentState::kLaunched && !doc.launched_variant.empty()) {
    r.errors()->Add("launched_variant", "only a launched experiment has one");
  }

  if (const Json* analysis = r.Object("analysis")) {
    ObjectReader a(*analysis, "analysis", r.errors());
    doc.analysis.control = a.String("control");
    if (a.Get("control") != nullptr) {
      bool known = false;
      for (const VariantDoc& variant : doc.variants) known |= variant.id == doc.analysis.control;
      if (!known) r.errors()->Add(a.Path("control"), "names no variant of this experiment");
    }
    doc.analysis.sequential = a.Bool("sequential", false);
    if (const Json* alpha = a.Get("alpha")) {
      if (alpha->is_number() && alpha->get<double>() > 0 && alpha->get<double>() < 1) {
        doc.analysis.alpha = alpha->get<double>();
      } else {
        r.errors()->Add(a.Path("alpha"), "must be a number in (0, 1)");
      }
    }
    std::string correction = a.String("correction", "holm");
    if (std::optional<PValueCorrection> parsed = ParsePValueCorrection(correction)) {
      doc.analysis.correction = *parsed;
    } else {
      r.errors()->Add(a.Path("correction"), "must be one of holm, bh, none");
    }
    if (const Json* tuning = a.Get("sequential_tuning")) {
      if (tuning->is_number() && tuning->get<double>() > 0 &&
          std::isfinite(tuning->get<double>())) {
        doc.analysis.sequential_tuning = tuning->get<double>();
      } else {
        r.errors()->Add(a.Path("sequential_tuning"), "must be a number > 0");
      }
    }
  }

  if (const Json* history = r.Array("history")) {
    ExperimentState previous = ExperimentState::kDraft;
    for (size_t i = 0; i < history->size(); ++i) {
      ObjectReader h((*history)[i], IndexPath("history", i), r.errors());
      HistoryEntry entry;
      std::string state_name = h.String("state", "", /*required=*/true);
      std::optional<ExperimentState> parsed = ParseExperimentState(state_name);
      if (!parsed.has_value()) {
        if (!state_name.empty()) r.errors()->Add(h.Path("state"), "unknown state");
        continue;
      }
      entry.state = *parsed;
      entry.by = h.String("by", "", /*required=*/true);
      entry.at = h.String("at", "", /*required=*/true);
      h.String("note");
      bool legal = i == 0 ? entry.state == ExperimentState::kDraft
                          : IsLegalTransition(previous, entry.state);
      if (!legal) {
        r.errors()->Add(h.Path("state"),
                        i == 0
                            ? std::string("the history starts in draft")
                            : absl::StrCat("illegal transition ", Sv(ExperimentStateName(previous)),
                                           " -> ", Sv(ExperimentStateName(entry.state))));
      }
      previous = entry.state;
      doc.history.push_back(std::move(entry));
    }
    if (!doc.history.empty() && doc.history.back().state != doc.state) {
      r.errors()->Add("history", "its last entry must be the current state");
    }
  }
  return doc;
}

HoldoutDoc ParseHoldout(ObjectReader& r, std::string_view id) {
  HoldoutDoc doc;
  doc.id = ReadDocumentId(r, id);
  doc.unit_type = r.Id("unit_type", "user");
  doc.salt = r.String("salt", doc.id);
  if (doc.salt.empty()) r.errors()->Add("salt", "must not be empty");
  if (r.Get("fraction") == nullptr) r.errors()->Add("fraction", "required");
  doc.fraction = r.Fraction("fraction", 0);
  doc.layers = IdList(r, "layers");
  r.String("description");
  return doc;
}

SavedGroupDoc ParseSavedGroup(ObjectReader& r, std::string_view id) {
  SavedGroupDoc doc;
  doc.id = ReadDocumentId(r, id);
  const Json* values = r.Array("values");
  if (values == nullptr) {
    if (r.Get("values") == nullptr) r.errors()->Add("values", "required");
  } else {
    doc.values = *values;
  }
  r.String("description");
  return doc;
}

FlagDoc ParseFlag(ObjectReader& r, std::string_view id) {
  static const Json kNoGroups = Json::object();
  FlagDoc doc;
  doc.id = ReadDocumentId(r, id);
  doc.enabled = r.Bool("enabled", true);
  if (const Json* value = r.Get("default_value")) doc.default_value = *value;
  r.String("description");

  if (const Json* prerequisites = r.Array("prerequisites")) {
    for (size_t i = 0; i < prerequisites->size(); ++i) {
      ObjectReader p((*prerequisites)[i], IndexPath("prerequisites", i), r.errors());
      PrerequisiteDoc prerequisite;
      prerequisite.flag = p.Id("flag", "", /*required=*/true);
      if (prerequisite.flag == doc.id && !doc.id.empty()) {
        r.errors()->Add(p.Path("flag"), "a flag cannot require itself");
      }
      prerequisite.condition = p.Condition("condition", kNoGroups);
      if (prerequisite.condition.is_null() && p.Get("condition") == nullptr) {
        r.errors()->Add(p.Path("condition"), "required");
      }
      doc.prerequisites.push_back(std::move(prerequisite));
    }
  }

  if (const Json* rules = r.Array("rules")) {
    std::set<std::string> ids;
    for (size_t i = 0; i < rules->size(); ++i) {
      ObjectReader rr((*rules)[i], IndexPath("rules", i), r.errors());
      FlagRuleDoc rule;
      rule.id = rr.Id("id", std::to_string(i));
      if (!ids.insert(rule.id).second) r.errors()->Add(rr.Path("id"), "duplicate rule id");
      rule.condition = rr.Condition("condition", kNoGroups);
      std::string type = rr.String("type", "", /*required=*/true);
      if (type == "force" || type == "rollout") {
        rule.type = type == "force" ? FlagRuleDoc::Type::kForce : FlagRuleDoc::Type::kRollout;
        const Json* value = rr.Get("value");
        if (value == nullptr && (*rules)[i].is_object() && !(*rules)[i].contains("value")) {
          r.errors()->Add(rr.Path("value"), "required");
        }
        if (value != nullptr) rule.value = *value;
        if (rule.type == FlagRuleDoc::Type::kRollout) {
          if (rr.Get("coverage") == nullptr) r.errors()->Add(rr.Path("coverage"), "required");
          rule.coverage = rr.Fraction("coverage", 0);
          rule.unit_type = rr.Id("unit_type", "user");
          rule.salt = rr.String("salt", absl::StrCat(Sv(doc.id), "/", Sv(rule.id)));
          if (rule.salt.empty()) r.errors()->Add(rr.Path("salt"), "must not be empty");
        }
      } else if (type == "experiment") {
        rule.type = FlagRuleDoc::Type::kExperiment;
        rule.experiment = rr.Id("experiment", "", /*required=*/true);
        const Json* values = rr.Object("values");
        if (values == nullptr) {
          r.errors()->Add(rr.Path("values"), "required: {variant id: value}");
        } else {
          for (auto it = values->begin(); it != values->end(); ++it) {
            rule.variant_values.emplace_back(it.key(), *it);
          }
        }
      } else if (!type.empty()) {
        r.errors()->Add(rr.Path("type"), "must be force, rollout or experiment");
      }
      doc.rules.push_back(std::move(rule));
    }
  }
  return doc;
}

}  // namespace

std::string_view DocumentKindDirectory(DocumentKind kind) {
  for (const auto& [k, name] : kDirectories) {
    if (k == kind) return name;
  }
  return "";
}

std::string ModelDocumentKey(DocumentKind kind, std::string_view id) {
  return absl::StrCat(Sv(kModelPrefix), Sv(DocumentKindDirectory(kind)), "/", Sv(id));
}

absl::StatusOr<std::pair<DocumentKind, std::string>> ParseModelDocumentKey(std::string_view key) {
  if (key.substr(0, kModelPrefix.size()) != kModelPrefix) {
    return absl::InvalidArgumentError(
        absl::StrCat("key \"", Sv(key), "\" is not under ", Sv(kModelPrefix)));
  }
  std::string_view rest = key.substr(kModelPrefix.size());
  size_t slash = rest.find('/');
  if (slash != std::string_view::npos) {
    std::string_view directory = rest.substr(0, slash);
    std::string_view id = rest.substr(slash + 1);
    for (const auto& [kind, name] : kDirectories) {
      if (name == directory && IsValidModelId(id)) {
        return std::make_pair(kind, std::string(id));
      }
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("key \"", Sv(key), "\" is not ", Sv(kModelPrefix),
                   "{units,domains,layers,experiments,holdouts,groups,flags}/<id>"));
}

bool IsValidModelId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return id != "." && id != "..";
}

std::string_view ExperimentStateName(ExperimentState state) {
  for (const auto& [s, name] : kStateNames) {
    if (s == state) return name;
  }
  return "";
}

std::string_view PValueCorrectionName(PValueCorrection correction) {
  switch (correction) {
    case PValueCorrection::kHolm:
      return "holm";
    case PValueCorrection::kBenjaminiHochberg:
      return "bh";
    case PValueCorrection::kNone:
      return "none";
  }
  return "holm";
}

std::optional<PValueCorrection> ParsePValueCorrection(std::string_view name) {
  if (name == "holm") return PValueCorrection::kHolm;
  if (name == "bh") return PValueCorrection::kBenjaminiHochberg;
  if (name == "none") return PValueCorrection::kNone;
  return std::nullopt;
}

std::optional<ExperimentState> ParseExperimentState(std::string_view name) {
  for (const auto& [state, n] : kStateNames) {
    if (n == name) return state;
  }
  return std::nullopt;
}

bool IsLegalTransition(ExperimentState from, ExperimentState to) {
  using S = ExperimentState;
  switch (from) {
    case S::kDraft:
      return to == S::kRunning;
    case S::kRunning:
      return to == S::kStopped || to == S::kLaunched;
    case S::kStopped:
      return to == S::kLaunched;
    case S::kLaunched:
      return false;
  }
  return false;
}

namespace {

// The deepest nesting of arrays and objects, counted without recursion (the
// recursive walks after this check, copies and condition evaluation, then
// stay within the stack).
size_t JsonDepth(const Json& root) {
  size_t deepest = 0;
  std::vector<std::pair<const Json*, size_t>> pending = {{&root, 1}};
  while (!pending.empty()) {
    auto [value, depth] = pending.back();
    pending.pop_back();
    if (!value->is_structured()) continue;
    deepest = std::max(deepest, depth);
    if (deepest > kMaxDocumentNesting) break;
    for (const Json& child : *value) pending.emplace_back(&child, depth + 1);
  }
  return deepest;
}

// `key_id` empty: the caller knows no key, and the document's own id is used.
absl::StatusOr<ModelDocument> ParseDocument(DocumentKind kind, std::string_view key_id,
                                            const Json& json, int64_t revision) {
  std::string_view shown_id = key_id;
  if (shown_id.empty() && json.is_object() && json.contains("id") && json["id"].is_string()) {
    shown_id = json["id"].get_ref<const std::string&>();
  }
  Errors errors(absl::StrCat(Sv(DocumentKindDirectory(kind)), "/",
                             shown_id.empty() ? absl::string_view("?") : Sv(shown_id)));
  if (JsonDepth(json) > kMaxDocumentNesting) {
    errors.Add("", absl::StrCat("nested deeper than ", kMaxDocumentNesting, " levels"));
    return errors.ToStatus();
  }
  ModelDocument document;
  document.kind = kind;
  document.revision = revision;
  {
    ObjectReader reader(json, "", &errors);
    switch (kind) {
      case DocumentKind::kUnitType:
        document.object = ParseUnitType(reader, key_id);
        break;
      case DocumentKind::kDomain:
        document.object = ParseDomain(reader, key_id);
        break;
      case DocumentKind::kLayer:
        document.object = ParseLayer(reader, key_id);
        break;
      case DocumentKind::kExperiment:
        document.object = ParseExperiment(reader, key_id);
        break;
      case DocumentKind::kHoldout:
        document.object = ParseHoldout(reader, key_id);
        break;
      case DocumentKind::kSavedGroup:
        document.object = ParseSavedGroup(reader, key_id);
        break;
      case DocumentKind::kFlag:
        document.object = ParseFlag(reader, key_id);
        break;
    }
  }  // the reader reports unknown fields as it goes out of scope
  if (!errors.ok()) return errors.ToStatus();
  std::visit([&document](const auto& object) { document.id = object.id; }, document.object);
  return document;
}

}  // namespace

absl::StatusOr<ModelDocument> ParseModelDocument(DocumentKind kind, const Json& json,
                                                 int64_t revision) {
  return ParseDocument(kind, "", json, revision);
}

absl::StatusOr<ModelDocument> ParseModelDocument(std::string_view key, std::string_view text,
                                                 int64_t revision) {
  absl::StatusOr<std::pair<DocumentKind, std::string>> parsed = ParseModelDocumentKey(key);
  if (!parsed.ok()) return parsed.status();
  auto [kind, id] = *std::move(parsed);
  std::string name = absl::StrCat(Sv(DocumentKindDirectory(kind)), "/", id);
  if (text.size() > kMaxDocumentBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": larger than ", kMaxDocumentBytes, " bytes"));
  }
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid JSON"));
  // The service writes an envelope around the document (config_store.h).
  if (json.is_object() && json.contains("kind") && json.contains("spec")) {
    return ParseDocument(kind, id, json["spec"], revision);
  }
  return ParseDocument(kind, id, json, revision);
}

absl::Status CheckExperimentUpdate(const ExperimentDoc& before, const ExperimentDoc& after) {
  std::string name = absl::StrCat("experiments/", after.id);
  Errors errors(name);
  if (before.id != after.id) errors.Add("id", "cannot change");
  if (before.state != after.state && !IsLegalTransition(before.state, after.state)) {
    errors.Add("state", absl::StrCat("illegal transition ", Sv(ExperimentStateName(before.state)),
                                     " -> ", Sv(ExperimentStateName(after.state))));
  }
  if (before.state != ExperimentState::kDraft) {
    // Units have been assigned: keep what their assignment is computed from.
    if (before.layer != after.layer) errors.Add("layer", "cannot change once the experiment ran");
    if (before.salt != after.salt) errors.Add("salt", "cannot change once the experiment ran");
    bool same_variants = before.variants.size() == after.variants.size();
    for (size_t i = 0; same_variants && i < before.variants.size(); ++i) {
      same_variants = before.variants[i].id == after.variants[i].id &&
                      before.variants[i].weight == after.variants[i].weight;
    }
    if (!same_variants) {
      errors.Add("variants", "ids, order and weights cannot change once the experiment ran");
    }
    if (after.range.first != before.range.first || after.range.second < before.range.second) {
      errors.Add("range", "may only grow, keeping its start, once the experiment ran");
    }
    if (after.coverage < before.coverage) {
      errors.Add("coverage", "may only grow once the experiment ran (shrinking reshuffles)");
    }
  }
  return errors.ToStatus();
}

}  // namespace capstan::experiments
