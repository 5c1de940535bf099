// Fuzz target: the event log's readers (src/experiments/event_log.h and
// DecodeLogRecord in event_store.h), which read bytes a crash or a bad disk
// may have left. The input is taken as a segment's records (after the
// header): DecodeLogFrame walks them without reading outside the buffer,
// every frame it accepts lies inside it, and each accepted record goes
// through DecodeLogRecord, which gives events or DataLoss, never a crash.
// Seeds: fuzz/make_seeds.cc writes them with EventLog itself.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "experiments/event_log.h"
#include "experiments/event_store.h"

namespace ex = capstan::experiments;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)ex::DecodeLogRecord(input);
  size_t offset = 0;
  for (int frames = 0; frames < 100000; ++frames) {
    uint64_t first = 0;
    std::string_view record;
    size_t consumed = 0;
    ex::LogFrameResult result =
        ex::DecodeLogFrame(input.substr(offset), &first, &record, &consumed);
    if (result != ex::LogFrameResult::kOk) break;
    if (consumed < ex::EventLog::kFrameBytes || consumed > size - offset) std::abort();
    if (record.data() < input.data() + offset ||
        record.data() + record.size() > input.data() + size) {
      std::abort();
    }
    auto events = ex::DecodeLogRecord(record);
    if (!events.ok() && events.status().code() != absl::StatusCode::kDataLoss) std::abort();
    offset += consumed;
  }
  return 0;
}
