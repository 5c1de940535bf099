// The one config loader: a YAML file of `flag-name: value` pairs (the same
// names as the command-line flags, as in etcd's --config-file), turned into
// command-line arguments so that flags and files share one parser and one set
// of error messages. Flags given on the command line override the file.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace capstan {

// Reads `path` and returns "--name=value" arguments. Lists become
// comma-separated values. Fails with a message naming the file and the key.
absl::StatusOr<std::vector<std::string>> LoadConfigFileAsArgs(const std::string& path);

// Parses durations like "500ms", "10s", "5m", "1h", "7d" (a bare number is
// milliseconds). Fails on anything else.
absl::StatusOr<int64_t> ParseDurationMillis(const std::string& text);

}  // namespace capstan
