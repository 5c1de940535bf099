#include "base/config.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "yaml-cpp/yaml.h"

namespace capstan {

absl::StatusOr<std::vector<std::string>> LoadConfigFileAsArgs(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": ", e.what()));
  }
  if (root.IsNull()) return std::vector<std::string>{};
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, ": expected a map of flag-name: value"));
  }
  std::vector<std::string> args;
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    std::string value;
    if (kv.second.IsScalar()) {
      value = kv.second.as<std::string>();
    } else if (kv.second.IsSequence()) {
      for (const auto& item : kv.second) {
        if (!item.IsScalar()) {
          return absl::InvalidArgumentError(
              absl::StrCat("config file ", path, ": key \"", key, "\" must be a list of values"));
        }
        if (!value.empty()) value += ",";
        value += item.as<std::string>();
      }
    } else if (kv.second.IsNull()) {
      continue;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path, ": key \"", key, "\" must be a value or a list"));
    }
    args.push_back(absl::StrCat("--", key, "=", value));
  }
  return args;
}

absl::StatusOr<int64_t> ParseDurationMillis(const std::string& text) {
  struct Unit {
    const char* suffix;
    int64_t millis;
  };
  for (Unit u : {Unit{"ms", 1}, Unit{"s", 1000}, Unit{"m", 60'000}, Unit{"h", 3'600'000},
                 Unit{"d", 86'400'000}}) {
    std::string s(u.suffix);
    if (text.size() > s.size() && text.compare(text.size() - s.size(), s.size(), s) == 0) {
      int64_t n;
      if (absl::SimpleAtoi(text.substr(0, text.size() - s.size()), &n) && n >= 0) {
        return n * u.millis;
      }
      break;
    }
  }
  int64_t n;
  if (absl::SimpleAtoi(text, &n) && n >= 0) return n;
  return absl::InvalidArgumentError(
      absl::StrCat("invalid duration \"", text, "\": use e.g. 500ms, 10s, 5m, 1h or 7d"));
}

}  // namespace capstan
