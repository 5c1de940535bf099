// The console's assets when the build had no node/npm (CMake picks this file
// instead of the generated console_assets_data.cc): one page saying so.
#include "experiments/console_assets.h"

namespace capstan::experiments {
namespace {

constexpr std::string_view kMissingPage =
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Capstan "
    "console</title></head><body><h1>The console was not built</h1><p>node and npm were not "
    "found when this capstan binary was built. Run scripts/install-deps.sh (it installs nodejs "
    "and npm), then rebuild: the build bundles console/ with esbuild and embeds it.</p>"
    "<p>The HTTP API under /v1 works without it.</p></body></html>";

const ConsoleAsset kAssets[] = {{"index.html", kMissingPage, "\"console-not-built\""}};

}  // namespace

std::span<const ConsoleAsset> ConsoleAssets() { return kAssets; }
bool ConsoleAssetsBuilt() { return false; }

}  // namespace capstan::experiments
