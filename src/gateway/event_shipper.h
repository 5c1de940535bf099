// EventShipper: sends experiment events (JSON lines, the experiments
// service's POST /v1/events format) from the gateway in batches, off the
// request path.
//
//   request path (any loop) ── Add(line) ──► current batch (under a mutex:
//       an append, no I/O) ── full, or flush_interval passed ──► queue of
//       batches (at most max_pending; past it the batch is DROPPED and
//       counted, never waited for) ──► the shipper thread: POST, keep-alive
//
// Delivery: a batch is retried until the service answers 2xx (connection
// failures and 5xx back off from 100 ms to 5 s; 429/503 wait the
// Retry-After, at most 10 s), so while the service is down batches queue and
// the oldest are kept — new ones are dropped once the queue is full. Events
// carry idempotency keys, so a batch sent twice (an answer lost after the
// service stored it) is counted once. A 4xx other than 429 means the batch
// itself is refused (a bug, not a state): it is dropped, counted, logged.
//
// Thread-safety: Add and the counters from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "base/status.h"

namespace capstan::gateway {

struct EventShipperOptions {
  std::string url;  // http://HOST:PORT/PATH
  size_t batch_events = 500;
  std::chrono::milliseconds flush_interval{1000};
  size_t max_pending_batches = 64;
  std::chrono::milliseconds io_timeout{5000};  // connect, send and each read
};

class EventShipper {
 public:
  // Fails on a URL that is not http://HOST:PORT/PATH with a numeric host or
  // one that resolves.
  static absl::StatusOr<std::unique_ptr<EventShipper>> Start(EventShipperOptions options);
  // Sends what is queued for up to `io_timeout`, then stops.
  ~EventShipper();
  EventShipper(const EventShipper&) = delete;
  EventShipper& operator=(const EventShipper&) = delete;

  // Queues one event (a JSON object, without the newline).
  void Add(std::string_view json_line);

  struct Stats {
    uint64_t events_sent = 0;  // in batches the service acknowledged
    uint64_t batches_sent = 0;
    uint64_t batches_dropped = 0;  // the queue was full
    uint64_t batches_refused = 0;  // a 4xx answer: the batch was invalid
    uint64_t send_failures = 0;    // attempts that will be retried
    uint64_t pending_batches = 0;  // queued now
  };
  Stats stats() const;

 private:
  explicit EventShipper(EventShipperOptions options) : options_(std::move(options)) {}
  void Run();
  // Moves the current batch to the queue. REQUIRES: mu_ held.
  void SealLocked();
  // One POST; returns the status (0: no answer) and fills *retry_after.
  int Post(const std::string& body, std::chrono::milliseconds* retry_after);
  void CloseConnection();

  const EventShipperOptions options_;
  std::string host_, path_, host_header_;
  int port_ = 0;
  int fd_ = -1;  // the keep-alive connection (shipper thread only)

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::string current_;  // JSON lines
  size_t current_events_ = 0;
  std::chrono::steady_clock::time_point current_started_;
  std::deque<std::pair<std::string, size_t>> queue_;  // (body, events)
  bool stopping_ = false;

  std::atomic<uint64_t> events_sent_{0}, batches_sent_{0}, batches_dropped_{0}, batches_refused_{0},
      send_failures_{0};
  std::thread thread_;
};

}  // namespace capstan::gateway
