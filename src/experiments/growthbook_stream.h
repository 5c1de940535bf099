// GrowthBook's streaming endpoint, GET /sub/{clientKey}: server-sent events
// that push a connection's SDK payload to every subscribed SDK each time it
// changes, so SDKs started with `streaming: true` (JavaScript, React and the
// others that read `x-sse-support`) update without polling or refetching.
//
// What a subscriber gets (text/event-stream, chunked):
//   retry: 1000                       reconnect after 1 s if the stream breaks
//   id: <etag>                        the payload's ETag (unquoted), once on
//   event: features                   subscribing — unless Last-Event-ID is that
//   data: <GET /api/features' body>  ETag already — and then after every change
//   : heartbeat                       a comment when nothing was sent for
//                                     `heartbeat_interval`, so proxies keep it open
// The data is exactly what GET /api/features/{clientKey} answers at that
// moment (encrypted when the connection is), on one line. The first event
// closes the gap between the SDK's fetch and its subscription; the SDK
// ignores a payload whose dateUpdated it already has, so it costs nothing
// when nothing changed. A deleted SDK connection ends its streams (the SDK
// reconnects, gets 400 and backs off as it does for any error).
//
// Changes arrive by the store watch (OnSnapshot runs after
// GrowthBookEndpoints has swapped in the new payloads); nothing polls.
// Each subscriber keeps the ETag it was last sent, so a payload is sent to
// each subscriber at most once, whichever of Subscribe and OnSnapshot saw
// it first.
//
// Limits: at most `max_subscribers` streams at once over all client keys;
// one more is answered 503 {"error": {"code": "too_many_subscribers",
// "limit": N}} with Retry-After. A subscriber that falls far behind is ended
// by the HTTP server (HttpServerOptions::max_stream_pending_bytes); a
// subscriber that goes away is removed when its connection closes.
//
// Thread-safety: every method from any thread; OnSnapshot on the watcher's
// thread. Streams' end callbacks run on the HTTP server's loop, so the
// server must stop before this object is destroyed.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/metrics.h"
#include "experiments/growthbook_service.h"
#include "net/http_server.h"

namespace capstan::experiments {

struct GrowthBookStreamOptions {
  // Streams open at once, over all client keys (0: streaming off, GET
  // /sub/{clientKey} answers 404 and /api/features does not advertise it).
  size_t max_subscribers = 1000;
  // A comment is sent on a stream idle this long.
  std::chrono::milliseconds heartbeat_interval{20000};
  // The reconnection delay the stream asks of its client (SSE `retry:`).
  std::chrono::milliseconds client_retry{1000};
};

class GrowthBookStreams {
 public:
  GrowthBookStreams(const GrowthBookEndpoints* endpoints, GrowthBookStreamOptions options);
  ~GrowthBookStreams();
  GrowthBookStreams(const GrowthBookStreams&) = delete;
  GrowthBookStreams& operator=(const GrowthBookStreams&) = delete;

  bool enabled() const { return options_.max_subscribers > 0; }
  // GET /sub/{clientKey}: a streamed answer, or 400 (unknown key), 404
  // (streaming off), 503 (too many subscribers).
  net::HttpResponse Subscribe(const std::string& client_key, std::string_view last_event_id);
  // After GrowthBookEndpoints::OnSnapshot: sends each subscriber whose
  // payload changed the new one; ends the streams of deleted connections.
  void OnSnapshot();

  // Counts every event sent too (the service's metric). REQUIRES: before use.
  void set_events_counter(metrics::Counter* counter) { events_counter_ = counter; }

  size_t subscribers() const;
  // Events sent (the initial ones included) since the start.
  uint64_t events_sent() const;

 private:
  struct Subscriber {
    std::shared_ptr<net::HttpStream> stream;
    std::string etag;  // of the payload last sent
  };
  // The SSE event carrying `served`.
  static std::string FeaturesEvent(const GrowthBookEndpoints::ServedPayload& served);
  void Remove(const std::string& client_key, uint64_t id);
  // REQUIRES: mu_ held.
  void CountEvent();

  const GrowthBookEndpoints* endpoints_;
  GrowthBookStreamOptions options_;
  mutable std::mutex mu_;
  // client key -> subscriber id -> subscriber. GUARDED_BY(mu_).
  std::map<std::string, std::map<uint64_t, Subscriber>, std::less<>> channels_;
  size_t subscribers_ = 0;    // GUARDED_BY(mu_)
  uint64_t next_id_ = 1;      // GUARDED_BY(mu_)
  uint64_t events_sent_ = 0;  // GUARDED_BY(mu_)
  metrics::Counter* events_counter_ = nullptr;
};

}  // namespace capstan::experiments
