// Structured logging. One line per event in logfmt (`ts=... level=info
// msg="..." key=value`), which both people and log pipelines read.
//
//   CAPSTAN_LOG(info, "wal opened", "dir", dir, "segments", n);
// Levels are spdlog's: trace, debug, info, warn, err, critical.
//
// Thread-safe once initialised. Every main (capstan's, the examples', the
// tools') calls InitLogging before it starts a thread, so no line is ever
// written in spdlog's default pattern; calling it again later only changes
// the level.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

#include "spdlog/spdlog.h"

namespace capstan {

// level: trace|debug|info|warn|err|critical|off. Returns false for an
// unknown level.
bool InitLogging(std::string_view level);

namespace logging_internal {

inline void AppendValue(std::ostringstream& os, std::string_view v) {
  bool quote = v.empty() || v.find_first_of(" =\"\t\n") != std::string_view::npos;
  if (!quote) {
    os << v;
    return;
  }
  os << '"';
  for (char c : v) {
    if (c == '"' || c == '\\') os << '\\';
    if (c == '\n') {
      os << "\\n";
      continue;
    }
    os << c;
  }
  os << '"';
}
inline void AppendValue(std::ostringstream& os, const std::string& v) {
  AppendValue(os, std::string_view(v));
}
inline void AppendValue(std::ostringstream& os, const char* v) {
  AppendValue(os, std::string_view(v));
}
template <typename T>
void AppendValue(std::ostringstream& os, const T& v) {
  os << v;
}

inline void AppendFields(std::ostringstream&) {}
template <typename K, typename V, typename... Rest>
void AppendFields(std::ostringstream& os, const K& key, const V& value, const Rest&... rest) {
  os << ' ' << key << '=';
  AppendValue(os, value);
  AppendFields(os, rest...);
}

template <typename... Fields>
std::string Format(std::string_view msg, const Fields&... fields) {
  std::ostringstream os;
  os << "msg=";
  AppendValue(os, msg);
  AppendFields(os, fields...);
  return os.str();
}

}  // namespace logging_internal
}  // namespace capstan

#define CAPSTAN_LOG(lvl, msg, ...)                                                      \
  do {                                                                                  \
    if (spdlog::should_log(spdlog::level::lvl)) {                                       \
      spdlog::log(spdlog::level::lvl, "{}",                                             \
                  ::capstan::logging_internal::Format(msg __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                                   \
  } while (0)
