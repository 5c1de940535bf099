// Watch streams over raw HTTP/2 for the watch benchmark. With 100k watchers
// every put becomes 100k WatchResponses; a gRPC C++ client spends ~3 us on
// each (its reactor, then a protobuf parse), ten times what the server spends
// sending it, so on a shared machine the measured latency was the
// generator's backlog. These streams speak gRPC framing directly through
// nghttp2 and read only the fields the benchmark needs (created, and each
// event's value: the put's send time), so the generator's cost per event
// stays well below the server's.
//
// Thread-safety: each connection runs on its own thread; the counters are
// atomic.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"
#include "bench/measure.h"

namespace capstan::bench {

struct RawWatchCounters {
  std::atomic<int64_t> created{0};  // watchers the server confirmed
  std::atomic<int64_t> events{0};
  LatencyHistogram* latency = nullptr;  // now - the event value's microseconds
};

// What a connection thread saw since it last flushed into the shared
// counters. The shared counters are atomics every connection thread adds to;
// one atomic add per event made the threads fight over the cache lines (half
// the scan's time), so a thread adds up a whole received chunk first. Events
// of one put carry the same send time, so latencies come in runs.
struct WatchTally {
  int64_t created = 0;
  int64_t events = 0;
  int64_t run_latency_us = 0;  // the current run of equal latencies
  int64_t run_length = 0;
  // The last timestamp parsed and its text: the events of one put repeat
  // it, and comparing the bytes is cheaper than parsing the digits again.
  std::string last_value;
  int64_t last_sent_us = -1;

  void AddLatency(int64_t us, RawWatchCounters* counters) {
    if (run_length > 0 && us != run_latency_us) FlushLatencies(counters);
    run_latency_us = us;
    ++run_length;
  }
  void FlushLatencies(RawWatchCounters* counters);
  void FlushTo(RawWatchCounters* counters);
};

// Scans one serialized WatchResponse: counts a creation, and for each event
// the latency from the microsecond timestamp in its value, into `tally`
// (flushed into `counters` when a latency run ends). False when the bytes
// are not a well-formed message.
bool ScanWatchResponse(std::string_view message, int64_t now_us, WatchTally* tally,
                       RawWatchCounters* counters);
// The same, flushed into `counters` at once.
bool ScanWatchResponse(std::string_view message, int64_t now_us, RawWatchCounters* counters);

class RawWatchConnection {
 public:
  // Connects to `endpoint` (host:port) and opens one Watch stream per entry
  // of `watchers_per_stream`, each creating that many watchers on the range
  // [prefix, prefix with its last byte incremented).
  static absl::StatusOr<std::unique_ptr<RawWatchConnection>> Start(
      const std::string& endpoint, const std::vector<int>& watchers_per_stream,
      const std::string& prefix, RawWatchCounters* counters);
  ~RawWatchConnection();

  RawWatchConnection(const RawWatchConnection&) = delete;
  RawWatchConnection& operator=(const RawWatchConnection&) = delete;

  // Why the connection ended early ("" while it runs or after a clean stop).
  std::string error() const;

 private:
  struct Stream;
  struct Session;
  RawWatchConnection() = default;
  void Run();

  int fd_ = -1;
  std::unique_ptr<Session> session_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace capstan::bench
