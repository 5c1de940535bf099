// Fuzz target: the request decoder and the state machine behind it. Bytes are
// decoded as a log entry (what the applier decodes from the WAL); a decodable
// entry is validated as the API layer would and applied to a real store. No
// input may crash the process or break the store's invariants.
#include <unistd.h>

#include <cstdint>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include "spdlog/spdlog.h"

#include "capstan/store/internal.pb.h"
#include "store/apply.h"
#include "store/kv_ops.h"
#include "store/validate.h"

namespace {

struct World {
  World() {
    namespace fs = std::filesystem;
    dir = fs::temp_directory_path() / ("log_entry_fuzz_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    static std::string cleanup;
    cleanup = dir.string();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(cleanup, ec);
    });
    backend = std::move(*capstan::store::Backend::Open(dir.string(), {}));
    mvcc = std::make_unique<capstan::store::Mvcc>(backend.get());
    (void)mvcc->Restore([](const std::string&, int64_t) {});
    lessor = std::make_unique<capstan::store::Lessor>(&clock, 2);
    hub = std::make_unique<capstan::store::WatchHub>(
        mvcc.get(), capstan::store::WatchHub::Options{},
        [](etcdserverpb::ResponseHeader* h, int64_t rev) { h->set_revision(rev); });
    applier = std::make_unique<capstan::store::Applier>(backend.get(), mvcc.get(), lessor.get(),
                                                        hub.get());
  }
  std::filesystem::path dir;
  capstan::ManualClock clock;
  std::unique_ptr<capstan::store::Backend> backend;
  std::unique_ptr<capstan::store::Mvcc> mvcc;
  std::unique_ptr<capstan::store::Lessor> lessor;
  std::unique_ptr<capstan::store::WatchHub> hub;
  std::unique_ptr<capstan::store::Applier> applier;
  uint64_t index = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);  // expected repairs are not news here
    return true;
  }();
  (void)quiet;
  static World* world = new World();
  capstan::store::LogEntry entry;
  if (!entry.ParseFromArray(data, static_cast<int>(size))) return 0;
  using capstan::store::LogEntry;
  // Only what the API layer would let through reaches the log.
  absl::Status st;
  if (entry.has_put()) st = capstan::store::CheckPutRequest(entry.put());
  if (entry.has_delete_range()) st = capstan::store::CheckDeleteRequest(entry.delete_range());
  if (entry.has_txn()) st = capstan::store::CheckTxn(entry.txn(), 128);
  if (!st.ok()) return 0;
  int64_t before = world->mvcc->current_rev();
  world->applier->Apply(++world->index, 1, entry, nullptr);
  int64_t after = world->mvcc->current_rev();
  if (after < before || after > before + 1) __builtin_trap();  // one revision per request
  // Reads over the whole keyspace must still work.
  etcdserverpb::RangeRequest all;
  all.set_key(std::string(1, '\0'));
  all.set_range_end(std::string(1, '\0'));
  etcdserverpb::RangeResponse resp;
  if (!world->applier->Range(all, &resp).ok()) __builtin_trap();
  return 0;
}
