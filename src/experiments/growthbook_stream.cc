#include "experiments/growthbook_stream.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "net/http_router.h"

namespace capstan::experiments {

GrowthBookStreams::GrowthBookStreams(const GrowthBookEndpoints* endpoints,
                                     GrowthBookStreamOptions options)
    : endpoints_(endpoints), options_(options) {}

GrowthBookStreams::~GrowthBookStreams() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, subscribers] : channels_) {
    for (auto& [id, subscriber] : subscribers) subscriber.stream->End();
  }
}

std::string GrowthBookStreams::FeaturesEvent(const GrowthBookEndpoints::ServedPayload& served) {
  std::string_view id = served.etag;
  if (id.size() >= 2 && id.front() == '"' && id.back() == '"') id = id.substr(1, id.size() - 2);
  // The body is compact JSON (JsonStringify): one line, so one data field.
  return absl::StrCat("id: ", absl::string_view(id.data(), id.size()),
                      "\nevent: features\ndata: ", served.body, "\n\n");
}

net::HttpResponse GrowthBookStreams::Subscribe(const std::string& client_key,
                                               std::string_view last_event_id) {
  if (!enabled()) {
    return net::JsonError(404, "streaming_off",
                          "streaming is off on this service (--sse-max-subscribers 0)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Read under the lock: OnSnapshot, which also reads under it, then sees
  // this subscriber with the ETag it was given here.
  std::optional<GrowthBookEndpoints::ServedPayload> served = endpoints_->Served(client_key);
  if (!served.has_value()) {
    return net::JsonResponse(400, R"({"status":400,"error":"Invalid API Key"})");
  }
  if (subscribers_ >= options_.max_subscribers) {
    Json error = {
        {"code", "too_many_subscribers"},
        {"message", absl::StrCat("this service streams to at most ", options_.max_subscribers,
                                 " subscribers at once (--sse-max-subscribers)")},
        {"limit", options_.max_subscribers}};
    net::HttpResponse busy = net::JsonResponse(503, Json{{"error", error}}.dump());
    busy.headers.emplace_back("Retry-After", "5");
    return busy;
  }
  uint64_t id = next_id_++;
  auto stream = std::make_shared<net::HttpStream>(
      net::HttpStreamOptions{.keepalive_interval = options_.heartbeat_interval,
                             .keepalive_bytes = ": heartbeat\n\n",
                             .on_end = [this, client_key, id] { Remove(client_key, id); }});
  std::string opening = absl::StrCat("retry: ", options_.client_retry.count(), "\n\n");
  std::string_view current_id = served->etag;
  if (current_id.size() >= 2) current_id = current_id.substr(1, current_id.size() - 2);
  if (last_event_id != current_id) {
    opening += FeaturesEvent(*served);
    CountEvent();
  }
  stream->Write(opening);
  channels_[client_key].emplace(id, Subscriber{stream, served->etag});
  ++subscribers_;

  net::HttpResponse response;
  response.content_type = "text/event-stream";
  response.headers.emplace_back("Cache-Control", "no-cache");
  response.headers.emplace_back("X-Accel-Buffering", "no");  // nginx: pass events on at once
  response.stream = std::move(stream);
  return response;
}

void GrowthBookStreams::OnSnapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto channel = channels_.begin(); channel != channels_.end();) {
    std::optional<GrowthBookEndpoints::ServedPayload> served = endpoints_->Served(channel->first);
    if (!served.has_value()) {
      // The connection was deleted: its streams end (their on_end removes them).
      for (auto& [id, subscriber] : channel->second) subscriber.stream->End();
      ++channel;
      continue;
    }
    std::string event;
    for (auto it = channel->second.begin(); it != channel->second.end();) {
      Subscriber& subscriber = it->second;
      if (subscriber.etag == served->etag) {
        ++it;
        continue;
      }
      if (event.empty()) event = FeaturesEvent(*served);
      if (!subscriber.stream->Write(event)) {
        // Ended and its on_end not run yet: forget it here already.
        it = channel->second.erase(it);
        --subscribers_;
        continue;
      }
      subscriber.etag = served->etag;
      CountEvent();
      ++it;
    }
    channel = channel->second.empty() ? channels_.erase(channel) : std::next(channel);
  }
}

void GrowthBookStreams::CountEvent() {
  ++events_sent_;
  if (events_counter_ != nullptr) events_counter_->Inc();
}

void GrowthBookStreams::Remove(const std::string& client_key, uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto channel = channels_.find(client_key);
  if (channel == channels_.end()) return;
  if (channel->second.erase(id) > 0) --subscribers_;
  if (channel->second.empty()) channels_.erase(channel);
}

size_t GrowthBookStreams::subscribers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return subscribers_;
}

uint64_t GrowthBookStreams::events_sent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_sent_;
}

}  // namespace capstan::experiments
