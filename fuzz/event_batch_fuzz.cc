// Fuzz target: the event batch decoder (src/experiments/events.h). Any bytes
// must give events or an InvalidArgument error naming a line and field, never
// a crash, an exception or a hang; a decoded batch respects the limits, and
// each event's canonical line decodes back to the same event. Per line, the
// decoder's fast path agrees with the reference decoder whenever it decodes,
// and the log record decoder (event_store.h) takes the bytes without harm;
// CheckEvent (the typed events' check) accepts every decoded event as is.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "experiments/event_store.h"
#include "experiments/events.h"

namespace ex = capstan::experiments;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)ex::DecodeLogRecord(input);
  for (std::string_view rest = input; !rest.empty();) {
    size_t end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    ex::Event fast;
    if (line.size() <= ex::kMaxEventLineBytes && ex::DecodeEventLineFast(line, &fast)) {
      auto reference = ex::DecodeEventLineReference(line);
      if (!reference.ok() || !(*reference == fast)) std::abort();
    }
  }
  ex::EventDecodeError error;
  auto events = ex::DecodeEventBatch(input, &error);
  if (!events.ok()) {
    if (events.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (error.field.empty() || error.message.empty()) std::abort();
    return 0;
  }
  if (events->empty() || events->size() > ex::kMaxEventsPerBatch) std::abort();
  for (const ex::Event& event : *events) {
    if (event.key.empty() || event.key.size() > ex::kMaxEventIdBytes) std::abort();
    if (event.type == ex::EventType::kExposure && event.variant.empty()) std::abort();
    auto again = ex::DecodeEventBatch(ex::EncodeEvent(event));
    if (!again.ok() || again->size() != 1 || !(again->front() == event)) std::abort();
    // The typed check (the RPC path's) accepts every decoded event unchanged.
    ex::Event typed = event;
    if (!ex::CheckEvent(&typed, 1, &error) || !(typed == event)) std::abort();
  }
  return 0;
}
