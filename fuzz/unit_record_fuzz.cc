// Fuzz target: the event store's unit state record decoder
// (event_format::DecodeUnitRecord in src/experiments/event_store_format.h),
// which reads bytes a crash or a bad disk may have left under "s" keys. It
// refuses or accepts without reading outside the input; what it accepts
// encodes again to a record that decodes to the same fields (numbers
// compared bit for bit). Seeds: fuzz/make_seeds.cc.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "experiments/event_store_format.h"

namespace format = capstan::experiments::event_format;

namespace {

bool Same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

bool SameRecord(const format::UnitRecord& a, const format::UnitRecord& b) {
  if (a.key != b.key || a.variant != b.variant || a.exposure_ms != b.exposure_ms ||
      a.metrics.size() != b.metrics.size() || a.held.size() != b.held.size()) {
    return false;
  }
  for (size_t i = 0; i < a.metrics.size(); ++i) {
    const auto &x = a.metrics[i], &y = b.metrics[i];
    if (x.metric != y.metric || !Same(x.x, y.x) || !Same(x.den, y.den) ||
        !Same(x.covariate, y.covariate)) {
      return false;
    }
  }
  for (size_t i = 0; i < a.held.size(); ++i) {
    const auto &x = a.held[i], &y = b.held[i];
    if (x.metric != y.metric || x.timestamp_ms != y.timestamp_ms || !Same(x.value, y.value) ||
        !Same(x.denominator, y.denominator)) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  format::UnitRecord record;
  if (!format::DecodeUnitRecord(input, &record)) return 0;
  if (record.key.data() < input.data() ||
      record.key.data() + record.key.size() > input.data() + size) {
    std::abort();
  }
  std::string key = "u" + std::string(record.key);
  std::string encoded;
  format::EncodeUnitRecord(key, record.variant, record.exposure_ms, record.metrics, record.held,
                           &encoded);
  format::UnitRecord again;
  if (!format::DecodeUnitRecord(encoded, &again) || !SameRecord(record, again)) std::abort();
  return 0;
}
