// Fuzz target: the WAL record decoder and the segment scan/repair logic.
// Arbitrary bytes must produce records, "end", "incomplete" or "corrupt",
// never a crash, hang or out-of-bounds read; a segment file built from the
// bytes must open (repaired) or be refused with an error.
#include <unistd.h>

#include <cstdint>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include "spdlog/spdlog.h"

#include "base/coding.h"
#include "base/crc32c.h"
#include "raft/wal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);  // expected repairs are not news here
    return true;
  }();
  (void)quiet;
  using namespace capstan::raft;
  std::string_view buf(reinterpret_cast<const char*>(data), size);
  WalRecord record;
  size_t off = 0;
  while (off < buf.size()) {
    size_t consumed = 0;
    if (DecodeRecord(buf.substr(off), &record, &consumed) != DecodeResult::kOk) break;
    if (consumed == 0 || consumed > buf.size() - off) __builtin_trap();
    off += consumed;
  }

  // Half the inputs also go through Wal::Open as the body of a segment file.
  if (size > 0 && (data[0] & 1)) {
    namespace fs = std::filesystem;
    static const fs::path dir = [] {
      fs::path d = fs::temp_directory_path() / ("wal_fuzz_" + std::to_string(::getpid()));
      static std::string cleanup = d.string();
      std::atexit([] {
        std::error_code ec;
        std::filesystem::remove_all(cleanup, ec);
      });
      return d;
    }();
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::string header("CAPSWAL1", 8);
    capstan::PutFixed64LE(&header, 1);
    capstan::PutFixed32LE(&header, capstan::crc32c::Mask(capstan::crc32c::Value(header)));
    std::ofstream(dir / "0000000000000001-0000000000000001.wal", std::ios::binary)
        << header << buf.substr(1);
    WalState state;
    auto wal = Wal::Open(dir.string(), {}, &state);
    if (wal.ok()) {
      // What opened must be one consistent log.
      uint64_t expect = state.snapshot_index + 1;
      for (const Entry& e : state.entries) {
        if (e.index != expect++) __builtin_trap();
      }
      if (!state.entries.empty() && state.entries.back().index != (*wal)->last_index()) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
