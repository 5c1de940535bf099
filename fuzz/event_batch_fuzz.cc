// Fuzz target: the event batch decoder (src/experiments/events.h). Any bytes
// must give events or an InvalidArgument error naming a line and field, never
// a crash, an exception or a hang; a decoded batch respects the limits, and
// each event's canonical line decodes back to the same event.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "experiments/events.h"

namespace ex = capstan::experiments;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
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
  }
  return 0;
}
