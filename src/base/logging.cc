#include "base/logging.h"

#include "spdlog/sinks/stdout_sinks.h"

namespace capstan {

bool InitLogging(std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") return false;
  // A second call (a subcommand's --log-level after main's default) only
  // changes the level: the logger, its sink and its format stay one.
  auto logger = spdlog::get("capstan");
  if (logger == nullptr) {
    logger = spdlog::stderr_logger_mt("capstan");
    logger->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%fZ level=%l %v", spdlog::pattern_time_type::utc);
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(logger);
  }
  logger->set_level(lvl);
  return true;
}

}  // namespace capstan
