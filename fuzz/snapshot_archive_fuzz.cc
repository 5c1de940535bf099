// Fuzz target: the tar walker of snapshot files (store/snapshot_file.h), what
// `capstan store snapshot status|restore` run on a file from anywhere. The
// input is an archive followed, maybe, by its hash; no input may crash the
// walker, make it hand out more bytes than a file's declared size or a name
// that is not a plain file name.
#include <cstdint>
#include <sstream>
#include <string>

#include "store/snapshot_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  std::istringstream in(bytes);
  uint64_t archive = size % 512 == 32 && size >= 1056 ? size - 32 : size;
  (void)capstan::store::WalkSnapshotArchive(
      in, archive,
      [](const std::string& name, uint64_t declared) -> absl::StatusOr<capstan::store::TarSink> {
        if (name.empty() || name.find('/') != std::string::npos || name == "..") {
          __builtin_trap();
        }
        auto seen = std::make_shared<uint64_t>(0);
        return capstan::store::TarSink([seen, declared](std::string_view chunk) {
          *seen += chunk.size();
          if (*seen > declared) __builtin_trap();
          return absl::OkStatus();
        });
      });
  return 0;
}
