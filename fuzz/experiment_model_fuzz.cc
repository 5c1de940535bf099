// Fuzz target: the native experiment model's document parser and snapshot
// builder (src/experiments/model.h, snapshot.h). The input is a set of
// documents, one per line as "<kind>/<id> <json>" (the store's key without
// its prefix, then the value). Any bytes must give documents and a snapshot
// or errors that name a document, never a crash, an exception or a hang; a
// snapshot that builds must evaluate a few units keeping its invariants (at
// most one experiment per layer, variants in range, exposures only for
// assigned units).
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "experiments/assigner.h"
#include "experiments/model.h"
#include "experiments/snapshot.h"

namespace ex = capstan::experiments;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<ex::ConfigSnapshot::StoredDocument> documents;
  int64_t revision = 0;
  while (!input.empty()) {
    size_t end = input.find('\n');
    std::string_view line = input.substr(0, end);
    input = end == std::string_view::npos ? std::string_view() : input.substr(end + 1);
    size_t space = line.find(' ');
    if (space == std::string_view::npos) continue;
    std::string key = std::string(ex::kModelPrefix) + std::string(line.substr(0, space));
    std::string value(line.substr(space + 1));
    // Each document alone: parsed, or refused with an error naming it.
    auto parsed = ex::ParseModelDocument(key, value, ++revision);
    if (!parsed.ok() && parsed.status().message().empty()) std::abort();
    documents.push_back({key, value, revision});
  }
  auto snapshot = ex::ConfigSnapshot::BuildFromStore(documents);
  if (!snapshot.ok()) {
    if (snapshot.status().message().empty()) std::abort();
    return 0;
  }
  ex::Assigner assigner(*snapshot);
  ex::ExposureLogger exposures(64, [](const ex::Exposure& e) {
    if (e.experiment.empty() || e.variant.empty()) std::abort();
  });
  ex::EvaluationResult result;
  const ex::Json users[] = {
      ex::Json::object(),
      {{"id", "user-1"}, {"country", "US"}, {"device_id", "d1"}},
      {{"id", 42}, {"session_id", "s"}, {"tags", {"a", "b"}}},
      {{"id", ""}, {"anonymous_id", "anon"}},
  };
  for (const ex::Json& user : users) {
    assigner.Evaluate(user, &result);
    std::set<uint32_t> layers;
    for (const ex::Assignment& a : result.assignments()) {
      if (!layers.insert(a.experiment->layer).second) std::abort();  // two in one layer
      if (a.variant >= static_cast<int>(a.experiment->variant_ids.size())) std::abort();
      if (a.holdout == nullptr && a.variant < 0) std::abort();
    }
    exposures.Log(result);
    result.ToJson().dump();
  }
  return 0;
}
