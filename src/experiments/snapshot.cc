#include "experiments/snapshot.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "experiments/condition.h"

namespace capstan::experiments {
namespace {

const Json kNull = nullptr;

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Unit types every snapshot has unless a document replaces them.
const UnitTypeDoc kBuiltinUnitTypes[] = {
    {"user", "id", ""},
    {"device", "device_id", ""},
    {"session", "session_id", ""},
};

// The saved-group ids a condition names with $inGroup / $notInGroup.
void CollectGroups(const Json& condition, std::set<std::string>* groups) {
  if (condition.is_object()) {
    for (auto it = condition.begin(); it != condition.end(); ++it) {
      if ((it.key() == "$inGroup" || it.key() == "$notInGroup") && it->is_string()) {
        groups->insert(it->get<std::string>());
      }
      CollectGroups(*it, groups);
    }
  } else if (condition.is_array()) {
    for (const Json& item : condition) CollectGroups(item, groups);
  }
}

bool Overlap(const VariationRange& a, const VariationRange& b) {
  return a.first < b.second && b.first < a.second;
}

}  // namespace

// Cross-document checks and compilation, collecting every problem found.
class ConfigSnapshot::Builder {
 public:
  explicit Builder(ConfigSnapshot* snapshot) : s_(snapshot) {}

  absl::Status Build();

 private:
  void Error(DocumentKind kind, std::string_view id, std::string_view path,
             std::string_view message) {
    std::string line = absl::StrCat(Sv(DocumentKindDirectory(kind)), "/", Sv(id), ": ");
    if (!path.empty()) absl::StrAppend(&line, Sv(path), ": ");
    absl::StrAppend(&line, Sv(message));
    errors_.push_back(std::move(line));
  }
  int UnitType(DocumentKind kind, std::string_view id, std::string_view path,
               const std::string& unit_type) {
    for (size_t i = 0; i < s_->unit_types_.size(); ++i) {
      if (s_->unit_types_[i].id == unit_type) return static_cast<int>(i);
    }
    Error(kind, id, path, absl::StrCat("names no unit type \"", unit_type, "\""));
    return 0;
  }
  void CheckGroups(DocumentKind kind, std::string_view id, std::string_view path,
                   const Json& condition) {
    std::set<std::string> groups;
    CollectGroups(condition, &groups);
    for (const std::string& group : groups) {
      if (!s_->saved_groups_.contains(group)) {
        Error(kind, id, path, absl::StrCat("$inGroup names no saved group \"", group, "\""));
      }
    }
  }

  void BuildUnitTypes();
  void BuildDomains();
  void BuildLayers();
  void BuildExperiments();
  void BuildHoldouts();
  void BuildFlags();

  template <typename T>
  std::vector<const T*> All() {
    std::vector<const T*> out;
    for (const ModelDocument& d : s_->documents_) {
      if (const T* object = std::get_if<T>(&d.object)) out.push_back(object);
    }
    std::sort(out.begin(), out.end(), [](const T* a, const T* b) { return a->id < b->id; });
    return out;
  }

  ConfigSnapshot* s_;
  std::vector<std::string> errors_;
  StringMap<uint32_t> domain_index_;
  StringMap<uint32_t> layer_index_;
  StringMap<std::string> layer_by_salt_;
  // Parameter -> owning layers, for the ownership rules.
  std::map<std::string, std::vector<uint32_t>> parameter_owners_;
  std::vector<const LayerDoc*> layer_docs_;
  std::vector<const ExperimentDoc*> experiment_docs_;
};

absl::Status ConfigSnapshot::Builder::Build() {
  std::set<std::pair<DocumentKind, std::string>> seen;
  for (const ModelDocument& d : s_->documents_) {
    s_->revision_ = std::max(s_->revision_, d.revision);
    if (!seen.emplace(d.kind, d.id).second) Error(d.kind, d.id, "", "defined twice");
  }
  for (const SavedGroupDoc* group : All<SavedGroupDoc>())
    s_->saved_groups_[group->id] = group->values;
  BuildUnitTypes();
  BuildDomains();
  BuildLayers();
  BuildExperiments();
  BuildHoldouts();
  BuildFlags();
  if (errors_.empty()) return absl::OkStatus();
  std::string text = absl::StrJoin(
      errors_.begin(), errors_.begin() + std::min(errors_.size(), kMaxReportedErrors), "\n");
  if (errors_.size() > kMaxReportedErrors) {
    absl::StrAppend(&text, "\n(", errors_.size() - kMaxReportedErrors, " more)");
  }
  return absl::InvalidArgumentError(text);
}

void ConfigSnapshot::Builder::BuildUnitTypes() {
  std::vector<UnitTypeDoc> types(std::begin(kBuiltinUnitTypes), std::end(kBuiltinUnitTypes));
  for (const UnitTypeDoc* doc : All<UnitTypeDoc>()) {
    auto same = std::find_if(types.begin(), types.end(),
                             [doc](const UnitTypeDoc& t) { return t.id == doc->id; });
    if (same != types.end()) {
      *same = *doc;
    } else {
      types.push_back(*doc);
    }
  }
  for (const UnitTypeDoc& t : types) {
    s_->unit_types_.push_back({t.id, t.attribute, t.fallback_attribute});
  }
}

void ConfigSnapshot::Builder::BuildDomains() {
  for (const DomainDoc* doc : All<DomainDoc>()) {
    SnapshotDomain domain;
    domain.id = doc->id;
    domain.unit_type = UnitType(DocumentKind::kDomain, doc->id, "unit_type", doc->unit_type);
    domain.range = doc->range;
    for (const SnapshotDomain& other : s_->domains_) {
      if (other.unit_type == domain.unit_type && Overlap(other.range, domain.range)) {
        Error(DocumentKind::kDomain, doc->id, "range",
              absl::StrCat("overlaps domain \"", other.id, "\""));
      }
    }
    domain_index_[domain.id] = static_cast<uint32_t>(s_->domains_.size());
    s_->domains_.push_back(std::move(domain));
  }
  s_->single_full_domain_ = s_->domains_.size() == 1 && s_->domains_[0].range.first == 0 &&
                            s_->domains_[0].range.second >= 1;
}

void ConfigSnapshot::Builder::BuildLayers() {
  layer_docs_ = All<LayerDoc>();
  for (const LayerDoc* doc : layer_docs_) {
    uint32_t index = static_cast<uint32_t>(s_->layers_.size());
    SnapshotLayer layer;
    layer.id = doc->id;
    layer.launch = doc->launch;
    layer.salt = doc->salt;
    layer.unit_type = UnitType(DocumentKind::kLayer, doc->id, "unit_type", doc->unit_type);
    if (!doc->launch) {
      auto domain = domain_index_.find(doc->domain);
      if (domain == domain_index_.end()) {
        Error(DocumentKind::kLayer, doc->id, "domain",
              absl::StrCat("names no domain \"", doc->domain, "\""));
      } else {
        layer.domain = static_cast<int>(domain->second);
        s_->domains_[domain->second].layers.push_back(index);
      }
    } else {
      s_->launch_layers_.push_back(index);
    }
    for (auto it = doc->parameters.begin(); it != doc->parameters.end(); ++it) {
      parameter_owners_[it.key()].push_back(index);
    }
    // Two layers hashing with one salt would bucket every unit identically:
    // correlated, not orthogonal.
    auto [same_salt, inserted] = layer_by_salt_.emplace(layer.salt, layer.id);
    if (!inserted) {
      Error(DocumentKind::kLayer, doc->id, "salt",
            absl::StrCat("same as layer \"", same_salt->second,
                         "\"'s (layers sharing a salt are not orthogonal)"));
    }
    layer_index_[layer.id] = index;
    s_->layers_.push_back(std::move(layer));
  }
  // Ownership: normal layers of one domain own disjoint parameters, and so do
  // launch layers among themselves; every owner agrees on the default.
  for (const auto& [name, owners] : parameter_owners_) {
    for (size_t i = 0; i < owners.size(); ++i) {
      const SnapshotLayer& a = s_->layers_[owners[i]];
      const LayerDoc& a_doc = *layer_docs_[owners[i]];
      for (size_t j = 0; j < i; ++j) {
        const SnapshotLayer& b = s_->layers_[owners[j]];
        const LayerDoc& b_doc = *layer_docs_[owners[j]];
        std::string path = absl::StrCat("parameters.", name);
        if (a.launch == b.launch && a.domain == b.domain) {
          Error(DocumentKind::kLayer, a.id, path,
                absl::StrCat("already owned by layer \"", b.id, "\" (",
                             a.launch ? "launch layers" : "layers of one domain",
                             " own disjoint parameters)"));
        } else if (a_doc.parameters[name] != b_doc.parameters[name]) {
          Error(DocumentKind::kLayer, a.id, path,
                absl::StrCat("default differs from layer \"", b.id, "\"'s"));
        }
      }
    }
    s_->parameter_index_[name] = static_cast<uint32_t>(s_->parameter_names_.size());
    s_->parameter_names_.push_back(name);
    s_->parameter_defaults_.push_back(&layer_docs_[owners[0]]->parameters[name]);
  }
}

void ConfigSnapshot::Builder::BuildExperiments() {
  experiment_docs_ = All<ExperimentDoc>();
  for (const ExperimentDoc* doc : experiment_docs_) {
    const DocumentKind kind = DocumentKind::kExperiment;
    uint32_t index = static_cast<uint32_t>(s_->experiments_.size());
    SnapshotExperiment e;
    e.id = doc->id;
    e.index = index;
    e.state = doc->state;
    e.salt = doc->salt;
    e.range = doc->range;
    for (const ModelDocument& d : s_->documents_) {
      if (std::get_if<ExperimentDoc>(&d.object) == doc) e.revision = d.revision;
    }
    std::vector<double> weights;
    for (const VariantDoc& v : doc->variants) {
      e.variant_ids.push_back(v.id);
      weights.push_back(v.weight);
      if (v.id == doc->launched_variant)
        e.launched_variant = static_cast<int>(e.variant_ids.size()) - 1;
    }
    e.variant_ranges =
        GetBucketRanges(static_cast<int>(doc->variants.size()), doc->coverage, &weights);
    if (!doc->condition.is_null()) {
      e.condition = &doc->condition;
      CheckGroups(kind, doc->id, "condition", doc->condition);
    }
    auto layer_it = layer_index_.find(doc->layer);
    if (layer_it == layer_index_.end()) {
      Error(kind, doc->id, "layer", absl::StrCat("names no layer \"", doc->layer, "\""));
      s_->experiments_.push_back(std::move(e));
      continue;
    }
    e.layer = layer_it->second;
    const LayerDoc& layer_doc = *layer_docs_[e.layer];
    for (size_t v = 0; v < doc->variants.size(); ++v) {
      std::vector<std::pair<uint32_t, const Json*>> values;
      const Json& parameters = doc->variants[v].parameters;
      for (auto it = parameters.begin(); it != parameters.end(); ++it) {
        if (!layer_doc.parameters.contains(it.key())) {
          Error(kind, doc->id, absl::StrCat("variants[", v, "].parameters.", it.key()),
                absl::StrCat("not a parameter of layer \"", layer_doc.id, "\""));
          continue;
        }
        values.emplace_back(s_->parameter_index_.at(it.key()), &*it);
      }
      e.variant_parameters.push_back(std::move(values));
    }
    SnapshotLayer& layer = s_->layers_[e.layer];
    bool live = doc->state == ExperimentState::kRunning || doc->state == ExperimentState::kLaunched;
    if (live) {
      for (uint32_t other : layer.slices) {
        const SnapshotExperiment& o = s_->experiments_[other];
        if (Overlap(o.range, e.range)) {
          Error(kind, doc->id, "range",
                absl::StrCat("overlaps experiment \"", o.id, "\" in layer \"", layer.id,
                             "\" (a unit is in at most one experiment per layer)"));
        }
      }
      if (e.range.first < e.range.second) layer.slices.push_back(index);
    }
    if (doc->state == ExperimentState::kDraft || doc->state == ExperimentState::kRunning) {
      for (const auto& [unit, variant_id] : doc->forced_variants) {
        int variant =
            static_cast<int>(std::find(e.variant_ids.begin(), e.variant_ids.end(), variant_id) -
                             e.variant_ids.begin());
        auto [it, inserted] = layer.forced.emplace(unit, std::make_pair(index, variant));
        if (!inserted) {
          Error(kind, doc->id, absl::StrCat("forced_variants.", unit),
                absl::StrCat("the unit is already forced into experiment \"",
                             s_->experiments_[it->second.first].id, "\" of layer \"", layer.id,
                             "\""));
        }
      }
    }
    s_->experiment_index_[e.id] = index;
    s_->experiments_.push_back(std::move(e));
  }
  for (SnapshotLayer& layer : s_->layers_) {
    std::sort(layer.slices.begin(), layer.slices.end(), [this](uint32_t a, uint32_t b) {
      return s_->experiments_[a].range.first < s_->experiments_[b].range.first;
    });
  }
}

void ConfigSnapshot::Builder::BuildHoldouts() {
  for (const HoldoutDoc* doc : All<HoldoutDoc>()) {
    uint32_t index = static_cast<uint32_t>(s_->holdouts_.size());
    SnapshotHoldout holdout;
    holdout.id = doc->id;
    holdout.unit_type = UnitType(DocumentKind::kHoldout, doc->id, "unit_type", doc->unit_type);
    holdout.salt = doc->salt;
    holdout.fraction = doc->fraction;
    holdout.global = doc->layers.empty();
    if (holdout.global) {
      for (SnapshotLayer& layer : s_->layers_) layer.holdouts.push_back(index);
    }
    for (size_t i = 0; i < doc->layers.size(); ++i) {
      auto layer = layer_index_.find(doc->layers[i]);
      if (layer == layer_index_.end()) {
        Error(DocumentKind::kHoldout, doc->id, absl::StrCat("layers[", i, "]"),
              absl::StrCat("names no layer \"", doc->layers[i], "\""));
      } else {
        s_->layers_[layer->second].holdouts.push_back(index);
      }
    }
    s_->holdouts_.push_back(std::move(holdout));
  }
}

void ConfigSnapshot::Builder::BuildFlags() {
  std::vector<const FlagDoc*> docs = All<FlagDoc>();
  StringMap<uint32_t> by_id;
  for (uint32_t i = 0; i < docs.size(); ++i) by_id[docs[i]->id] = i;
  // Prerequisites first (Kahn's algorithm); what is left over is in a cycle.
  std::vector<std::vector<uint32_t>> dependents(docs.size());
  std::vector<int> pending(docs.size(), 0);
  for (uint32_t i = 0; i < docs.size(); ++i) {
    for (size_t p = 0; p < docs[i]->prerequisites.size(); ++p) {
      auto parent = by_id.find(docs[i]->prerequisites[p].flag);
      if (parent == by_id.end()) {
        Error(DocumentKind::kFlag, docs[i]->id, absl::StrCat("prerequisites[", p, "].flag"),
              absl::StrCat("names no flag \"", docs[i]->prerequisites[p].flag, "\""));
        continue;
      }
      dependents[parent->second].push_back(i);
      ++pending[i];
    }
  }
  std::vector<uint32_t> order;
  for (uint32_t i = 0; i < docs.size(); ++i) {
    if (pending[i] == 0) order.push_back(i);
  }
  for (size_t next = 0; next < order.size(); ++next) {
    for (uint32_t d : dependents[order[next]]) {
      if (--pending[d] == 0) order.push_back(d);
    }
  }
  for (uint32_t i = 0; i < docs.size(); ++i) {
    if (pending[i] > 0) Error(DocumentKind::kFlag, docs[i]->id, "prerequisites", "form a cycle");
  }

  for (uint32_t i : order) {
    const FlagDoc& doc = *docs[i];
    SnapshotFlag flag;
    flag.id = doc.id;
    flag.enabled = doc.enabled;
    flag.default_value = &doc.default_value;
    s_->flag_index_[flag.id] = static_cast<uint32_t>(s_->flags_.size());
    for (size_t p = 0; p < doc.prerequisites.size(); ++p) {
      auto parent = s_->flag_index_.find(doc.prerequisites[p].flag);
      if (parent == s_->flag_index_.end()) continue;  // reported above
      flag.prerequisites.emplace_back(parent->second, &doc.prerequisites[p].condition);
      CheckGroups(DocumentKind::kFlag, doc.id, absl::StrCat("prerequisites[", p, "].condition"),
                  doc.prerequisites[p].condition);
    }
    for (size_t r = 0; r < doc.rules.size(); ++r) {
      const FlagRuleDoc& rule_doc = doc.rules[r];
      std::string path = absl::StrCat("rules[", r, "]");
      SnapshotFlagRule rule;
      rule.type = rule_doc.type;
      if (!rule_doc.condition.is_null()) {
        rule.condition = &rule_doc.condition;
        CheckGroups(DocumentKind::kFlag, doc.id, path + ".condition", rule_doc.condition);
      }
      rule.value = &rule_doc.value;
      rule.coverage = rule_doc.coverage;
      rule.salt = rule_doc.salt;
      if (rule.type == FlagRuleDoc::Type::kRollout) {
        rule.unit_type =
            UnitType(DocumentKind::kFlag, doc.id, path + ".unit_type", rule_doc.unit_type);
      }
      if (rule.type == FlagRuleDoc::Type::kExperiment) {
        auto experiment = s_->experiment_index_.find(rule_doc.experiment);
        if (experiment == s_->experiment_index_.end()) {
          Error(DocumentKind::kFlag, doc.id, path + ".experiment",
                absl::StrCat("names no experiment \"", rule_doc.experiment, "\""));
        } else {
          rule.experiment = experiment->second;
          const SnapshotExperiment& e = s_->experiments_[rule.experiment];
          rule.variant_values.assign(e.variant_ids.size(), nullptr);
          for (const auto& [variant_id, value] : rule_doc.variant_values) {
            auto v = std::find(e.variant_ids.begin(), e.variant_ids.end(), variant_id);
            if (v == e.variant_ids.end()) {
              Error(DocumentKind::kFlag, doc.id, absl::StrCat(path, ".values.", variant_id),
                    absl::StrCat("names no variant of experiment \"", e.id, "\""));
            } else {
              rule.variant_values[v - e.variant_ids.begin()] = &value;
            }
          }
        }
      }
      flag.rules.push_back(std::move(rule));
    }
    s_->flags_.push_back(std::move(flag));
  }
}

absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> ConfigSnapshot::Build(
    std::vector<ModelDocument> documents) {
  std::shared_ptr<ConfigSnapshot> snapshot(new ConfigSnapshot());
  // From here on documents_ is never resized: the compiled structures point
  // into it.
  snapshot->documents_ = std::move(documents);
  Builder builder(snapshot.get());
  absl::Status status = builder.Build();
  if (!status.ok()) return status;
  return std::shared_ptr<const ConfigSnapshot>(std::move(snapshot));
}

absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> ConfigSnapshot::BuildFromStore(
    const std::vector<StoredDocument>& stored) {
  std::vector<ModelDocument> documents;
  std::vector<std::string> errors;
  for (const StoredDocument& d : stored) {
    absl::StatusOr<ModelDocument> parsed = ParseModelDocument(d.key, d.value, d.revision);
    if (parsed.ok()) {
      documents.push_back(*std::move(parsed));
    } else {
      errors.emplace_back(parsed.status().message());
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  return Build(std::move(documents));
}

int ConfigSnapshot::ParameterIndex(std::string_view name) const {
  auto it = parameter_index_.find(name);
  return it == parameter_index_.end() ? -1 : static_cast<int>(it->second);
}

int ConfigSnapshot::FlagIndex(std::string_view key) const {
  auto it = flag_index_.find(key);
  return it == flag_index_.end() ? -1 : static_cast<int>(it->second);
}

int ConfigSnapshot::ExperimentIndex(std::string_view id) const {
  auto it = experiment_index_.find(id);
  return it == experiment_index_.end() ? -1 : static_cast<int>(it->second);
}

// ---------------------------------------------------------------------------
// Evaluation

namespace {

// The unit a unit type names: a non-empty string, or a number written as
// JavaScript writes it (so 17 and "17" are the same unit). Anything else is
// absent. Numbers are written into `text`, which must not move afterwards.
bool ReadUnit(const Json& attributes, const std::string& name, std::string_view* unit,
              std::string* text) {
  if (name.empty()) return false;
  auto it = attributes.find(name);
  if (it == attributes.end()) return false;
  if (it->is_string()) {
    const std::string& value = it->get_ref<const std::string&>();
    if (value.empty()) return false;
    *unit = value;
    return true;
  }
  if (it->is_number_integer()) {
    char digits[24];
    auto end = it->is_number_unsigned()
                   ? std::to_chars(digits, digits + sizeof(digits), it->get<uint64_t>()).ptr
                   : std::to_chars(digits, digits + sizeof(digits), it->get<int64_t>()).ptr;
    text->assign(digits, end - digits);
  } else if (it->is_number_float()) {
    *text = JsNumberToString(it->get<double>());
  } else {
    return false;
  }
  *unit = *text;
  return true;
}

double Bucket(std::string_view salt, std::string_view unit) {
  return *Hash(salt, unit, 2);  // version 2 always has a value
}

}  // namespace

bool ConfigSnapshot::ConditionHolds(const Json& condition, const Json& attributes) const {
  // A ConditionEvaluator is cheap to make (no allocation until a regex is
  // compiled), so each condition gets its own: no state shared between threads.
  ConditionEvaluator evaluator(saved_groups_);
  try {
    return evaluator.Evaluate(attributes, condition);
  } catch (const JsTypeError&) {
    return false;
  }
}

void ConfigSnapshot::Evaluate(const Json& attributes, EvaluationResult* r) const {
  r->snapshot_ = this;
  r->assignments_.clear();
  r->holdouts_.clear();
  r->parameters_.assign(parameter_defaults_.begin(), parameter_defaults_.end());
  // Sized before any view into unit_text_ is taken: the strings must not move.
  r->units_.assign(unit_types_.size(), std::string_view());
  if (r->unit_text_.size() != unit_types_.size()) r->unit_text_.resize(unit_types_.size());
  r->holdout_state_.assign(holdouts_.size(), 0);

  if (attributes.is_object()) {
    for (size_t i = 0; i < unit_types_.size(); ++i) {
      const SnapshotUnitType& type = unit_types_[i];
      if (!ReadUnit(attributes, type.attribute, &r->units_[i], &r->unit_text_[i])) {
        ReadUnit(attributes, type.fallback_attribute, &r->units_[i], &r->unit_text_[i]);
      }
    }
  }
  for (uint32_t h = 0; h < holdouts_.size(); ++h) {
    std::string_view unit = r->units_[holdouts_[h].unit_type];
    bool in = !unit.empty() && Bucket(holdouts_[h].salt, unit) < holdouts_[h].fraction;
    r->holdout_state_[h] = in ? 1 : 2;
    if (in) r->holdouts_.push_back(h);
  }
  // Launch layers first: normal layers' variants override their values.
  for (uint32_t layer : launch_layers_) EvaluateLayer(layers_[layer], attributes, r);
  for (const SnapshotDomain& domain : domains_) {
    std::string_view unit = r->units_[domain.unit_type];
    if (unit.empty()) continue;
    if (!single_full_domain_ && !InRange(Bucket(kDomainSalt, unit), domain.range)) continue;
    for (uint32_t layer : domain.layers) EvaluateLayer(layers_[layer], attributes, r);
  }
  EvaluateFlags(attributes, r);
}

bool ConfigSnapshot::HeldOut(const SnapshotLayer& layer, EvaluationResult* r,
                             uint32_t* holdout) const {
  for (uint32_t h : layer.holdouts) {
    if (r->holdout_state_[h] == 1) {
      *holdout = h;
      return true;
    }
  }
  return false;
}

void ConfigSnapshot::EvaluateLayer(const SnapshotLayer& layer, const Json& attributes,
                                   EvaluationResult* r) const {
  std::string_view unit = r->units_[layer.unit_type];
  if (unit.empty()) return;
  auto apply = [r](const SnapshotExperiment& e, int variant) {
    for (const auto& [parameter, value] : e.variant_parameters[variant]) {
      r->parameters_[parameter] = value;
    }
  };
  // The allow-list wins over holdouts, slices, conditions and coverage.
  if (!layer.forced.empty()) {
    auto forced = layer.forced.find(unit);
    if (forced != layer.forced.end()) {
      const SnapshotExperiment& e = experiments_[forced->second.first];
      Assignment& a = r->assignments_.emplace_back();
      a.experiment = &e;
      a.variant = forced->second.second;
      a.forced = true;
      a.unit = unit;
      apply(e, a.variant);
      return;
    }
  }
  if (layer.slices.empty()) return;
  double bucket = Bucket(layer.salt, unit);
  // The last slice starting at or before the bucket is the only candidate.
  auto slice =
      std::upper_bound(layer.slices.begin(), layer.slices.end(), bucket,
                       [this](double b, uint32_t e) { return b < experiments_[e].range.first; });
  if (slice == layer.slices.begin()) return;
  const SnapshotExperiment& e = experiments_[*(slice - 1)];
  if (!InRange(bucket, e.range)) return;
  if (e.condition != nullptr && !ConditionHolds(*e.condition, attributes)) return;
  uint32_t holdout = 0;
  if (!layer.holdouts.empty() && HeldOut(layer, r, &holdout)) {
    Assignment& a = r->assignments_.emplace_back();
    a.experiment = &e;
    a.holdout = &holdouts_[holdout];
    a.unit = unit;
    return;
  }
  int variant = e.launched_variant;
  if (e.state != ExperimentState::kLaunched) {
    variant = ChooseVariation(Bucket(e.salt, unit), e.variant_ranges);
    if (variant < 0) return;  // past the coverage
  }
  Assignment& a = r->assignments_.emplace_back();
  a.experiment = &e;
  a.variant = variant;
  a.launched = e.state == ExperimentState::kLaunched;
  a.unit = unit;
  apply(e, variant);
}

void ConfigSnapshot::EvaluateFlags(const Json& attributes, EvaluationResult* r) const {
  r->flags_.resize(flags_.size());
  for (size_t i = 0; i < flags_.size(); ++i) {
    const SnapshotFlag& flag = flags_[i];
    FlagValue& out = r->flags_[i];
    out = FlagValue{flag.default_value, FlagValue::Source::kDefault, -1};
    if (!flag.enabled) {
      out.source = FlagValue::Source::kDisabled;
      continue;
    }
    bool prerequisites_hold = true;
    for (const auto& [parent, condition] : flag.prerequisites) {
      // Prerequisites are the one place that builds JSON per evaluation.
      Json parent_value = Json::object();
      parent_value["value"] = *r->flags_[parent].value;
      if (!ConditionHolds(*condition, parent_value)) {
        prerequisites_hold = false;
        break;
      }
    }
    if (!prerequisites_hold) {
      out = FlagValue{&kNull, FlagValue::Source::kPrerequisite, -1};
      continue;
    }
    for (size_t k = 0; k < flag.rules.size(); ++k) {
      const SnapshotFlagRule& rule = flag.rules[k];
      if (rule.condition != nullptr && !ConditionHolds(*rule.condition, attributes)) continue;
      const Json* value = nullptr;
      FlagValue::Source source = FlagValue::Source::kForce;
      switch (rule.type) {
        case FlagRuleDoc::Type::kForce:
          value = rule.value;
          break;
        case FlagRuleDoc::Type::kRollout: {
          std::string_view unit = r->units_[rule.unit_type];
          if (!unit.empty() && Bucket(rule.salt, unit) < rule.coverage) value = rule.value;
          source = FlagValue::Source::kRollout;
          break;
        }
        case FlagRuleDoc::Type::kExperiment:
          for (const Assignment& a : r->assignments_) {
            if (a.experiment->index == rule.experiment && a.variant >= 0) {
              value = rule.variant_values[a.variant];
              break;
            }
          }
          source = FlagValue::Source::kExperiment;
          break;
      }
      if (value != nullptr) {
        out = FlagValue{value, source, static_cast<int>(k)};
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// EvaluationResult

const Assignment* EvaluationResult::assignment(std::string_view experiment_id) const {
  for (const Assignment& a : assignments_) {
    if (a.experiment->id == experiment_id) return &a;
  }
  return nullptr;
}

const Json* EvaluationResult::parameter(std::string_view name) const {
  if (snapshot_ == nullptr) return nullptr;
  int index = snapshot_->ParameterIndex(name);
  return index < 0 ? nullptr : parameters_[index];
}

const FlagValue* EvaluationResult::flag(std::string_view key) const {
  if (snapshot_ == nullptr) return nullptr;
  int index = snapshot_->FlagIndex(key);
  return index < 0 ? nullptr : &flags_[index];
}

Json EvaluationResult::ToJson() const {
  static constexpr const char* kSources[] = {"default", "disabled", "prerequisite",
                                             "force",   "rollout",  "experiment"};
  Json out = Json::object();
  Json assignments = Json::array();
  for (const Assignment& a : assignments_) {
    Json item = {{"experiment", a.experiment->id},
                 {"layer", snapshot_->layers()[a.experiment->layer].id},
                 {"unit", std::string(a.unit)}};
    if (a.variant >= 0) item["variant"] = std::string(a.variant_id());
    if (a.holdout != nullptr) item["holdout"] = a.holdout->id;
    if (a.forced) item["forced"] = true;
    if (a.launched) item["launched"] = true;
    assignments.push_back(std::move(item));
  }
  out["assignments"] = std::move(assignments);
  Json parameters = Json::object();
  if (snapshot_ != nullptr) {
    for (size_t i = 0; i < parameters_.size(); ++i) {
      if (parameters_[i] != nullptr) parameters[snapshot_->parameter_names()[i]] = *parameters_[i];
    }
  }
  out["parameters"] = std::move(parameters);
  Json flags = Json::object();
  for (size_t i = 0; i < flags_.size(); ++i) {
    flags[snapshot_->flags()[i].id] = {{"value", *flags_[i].value},
                                       {"source", kSources[static_cast<int>(flags_[i].source)]}};
  }
  out["flags"] = std::move(flags);
  Json holdouts = Json::array();
  for (uint32_t h : holdouts_) holdouts.push_back(snapshot_->holdouts()[h].id);
  out["holdouts"] = std::move(holdouts);
  return out;
}

}  // namespace capstan::experiments
