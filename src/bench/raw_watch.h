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

// Scans one serialized WatchResponse: counts a creation, and for each event
// records the latency from the microsecond timestamp in its value. False
// when the bytes are not a well-formed message.
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
