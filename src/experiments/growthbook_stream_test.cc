#include "experiments/growthbook_stream.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "net/http_router.h"

namespace capstan::experiments {
namespace {

std::shared_ptr<const ConfigDocument> Doc(std::string kind, std::string id, Json spec,
                                          std::string updated_at = "2026-12-07T00:00:00.000Z") {
  auto doc = std::make_shared<ConfigDocument>();
  doc->kind = std::move(kind);
  doc->id = std::move(id);
  doc->spec = std::move(spec);
  doc->version = 1;
  doc->updated_at = std::move(updated_at);
  return doc;
}

// Waits for `condition` (bounded: 10 s).
template <typename Condition>
bool Eventually(Condition condition) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A blocking subscriber on 127.0.0.1 that keeps everything it received.
class RawClient {
 public:
  RawClient(int port, const std::string& request) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval bound{10, 0};  // a hang fails the test instead of blocking it
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL);
  }
  ~RawClient() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Reads until `what` has arrived (true) or the server closes or 10 s pass.
  bool ReadUntil(std::string_view what) {
    while (received_.find(what) == std::string::npos) {
      if (!ReadSome()) return false;
    }
    return true;
  }
  // Reads until the server closes (true) or 10 s pass.
  bool ReadToClose() {
    while (true) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) return true;
      if (n < 0) return false;
      received_.append(buf, static_cast<size_t>(n));
    }
  }
  const std::string& received() const { return received_; }
  size_t Count(std::string_view what) const {
    size_t n = 0;
    for (size_t at = received_.find(what); at != std::string::npos;
         at = received_.find(what, at + 1)) {
      ++n;
    }
    return n;
  }

 private:
  bool ReadSome() {
    char buf[4096];
    ssize_t n;
    do {
      n = ::recv(fd_, buf, sizeof(buf), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    received_.append(buf, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string received_;
};

std::string Subscribe(std::string_view key, std::string_view last_event_id = "") {
  std::string request = "GET /sub/" + std::string(key) + " HTTP/1.1\r\nHost: a\r\n";
  if (!last_event_id.empty()) request += "Last-Event-ID: " + std::string(last_event_id) + "\r\n";
  return request + "\r\n";
}

class StreamsTest : public ::testing::Test {
 protected:
  void Start(GrowthBookStreamOptions options) {
    streams_ = std::make_unique<GrowthBookStreams>(&endpoints_, options);
    endpoints_.set_streaming(streams_->enabled());
    Publish("blue");
    router_.Add(
        "GET", "/sub/{clientKey}", [this](const net::HttpRequest& r, const net::PathParams& p) {
          return streams_->Subscribe(p.at("clientKey"), r.Header("Last-Event-ID").value_or(""));
        });
    server_ = std::make_unique<net::HttpServer>(net::HttpServerOptions{.worker_threads = 2});
    server_->HandleAll([this](const net::HttpRequest& r) { return router_.Dispatch(r); });
    ASSERT_TRUE(server_->Start("127.0.0.1", 0).ok());
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Stop();  // before streams_: streams call it
  }
  // A new snapshot where feature "banner" defaults to `color` (the SDK
  // connection "sdk-a" present unless `with_connection` is false).
  void Publish(const std::string& color, bool with_connection = true,
               const std::string& updated_at = "2026-12-07T00:00:00.000Z") {
    auto snapshot = std::make_shared<DocumentSnapshot>();
    snapshot->generation = ++generation_;
    snapshot->kinds["features"]["banner"] =
        Doc("features", "banner", Json{{"defaultValue", color}}, updated_at);
    if (with_connection) {
      snapshot->kinds["sdk-connections"]["sdk-a"] =
          Doc("sdk-connections", "sdk-a", Json::parse(R"({"environment": "production"})"));
    }
    endpoints_.OnSnapshot(snapshot);
    if (streams_ != nullptr) streams_->OnSnapshot();
  }
  std::string CurrentEvent() {
    auto served = endpoints_.Served("sdk-a");
    std::string id = served->etag.substr(1, served->etag.size() - 2);
    return "id: " + id + "\nevent: features\ndata: " + served->body + "\n\n";
  }

  GrowthBookEndpoints endpoints_;
  std::unique_ptr<GrowthBookStreams> streams_;
  net::HttpRouter router_;
  std::unique_ptr<net::HttpServer> server_;
  uint64_t generation_ = 0;
};

TEST_F(StreamsTest, ASubscriberGetsTheCurrentPayloadThenEachChange) {
  Start({.max_subscribers = 4});
  RawClient sdk(server_->port(), Subscribe("sdk-a"));
  ASSERT_TRUE(sdk.ReadUntil(CurrentEvent())) << sdk.received();
  EXPECT_NE(sdk.received().find("Content-Type: text/event-stream"), std::string::npos);
  EXPECT_NE(sdk.received().find("retry: 1000\n\n"), std::string::npos);
  EXPECT_NE(CurrentEvent().find(R"("banner":{"defaultValue":"blue"})"), std::string::npos);
  ASSERT_TRUE(Eventually([&] { return streams_->subscribers() == 1; }));

  Publish("red", true, "2026-12-07T00:00:01.000Z");
  ASSERT_TRUE(sdk.ReadUntil(CurrentEvent())) << sdk.received();
  EXPECT_NE(CurrentEvent().find(R"("banner":{"defaultValue":"red"})"), std::string::npos);
  // The same payload again (another snapshot, nothing of sdk-a changed): no event.
  uint64_t sent = streams_->events_sent();
  Publish("red", true, "2026-12-07T00:00:01.000Z");
  EXPECT_EQ(streams_->events_sent(), sent);
  EXPECT_EQ(sdk.Count("event: features"), 2u);
}

TEST_F(StreamsTest, ALastEventIdThatIsCurrentSkipsTheFirstEvent) {
  Start({.max_subscribers = 4, .heartbeat_interval = std::chrono::milliseconds(10)});
  std::string etag = endpoints_.Served("sdk-a")->etag;
  RawClient sdk(server_->port(), Subscribe("sdk-a", etag.substr(1, etag.size() - 2)));
  ASSERT_TRUE(sdk.ReadUntil(": heartbeat\n\n")) << sdk.received();
  EXPECT_EQ(sdk.Count("event: features"), 0u);
  Publish("green", true, "2026-12-07T00:00:02.000Z");
  ASSERT_TRUE(sdk.ReadUntil(CurrentEvent())) << sdk.received();
  // A stale Last-Event-ID gets the current payload at once.
  RawClient stale(server_->port(), Subscribe("sdk-a", "12345"));
  ASSERT_TRUE(stale.ReadUntil(CurrentEvent())) << stale.received();
}

TEST_F(StreamsTest, SubscribersAreBoundedAndRemovedWhenTheyLeave) {
  Start({.max_subscribers = 2});
  auto first = std::make_unique<RawClient>(server_->port(), Subscribe("sdk-a"));
  RawClient second(server_->port(), Subscribe("sdk-a"));
  ASSERT_TRUE(first->ReadUntil("event: features"));
  ASSERT_TRUE(second.ReadUntil("event: features"));
  RawClient third(server_->port(), Subscribe("sdk-a"));
  ASSERT_TRUE(third.ReadUntil("too_many_subscribers")) << third.received();
  EXPECT_NE(third.received().find("HTTP/1.1 503"), std::string::npos);
  EXPECT_NE(third.received().find("Retry-After: 5"), std::string::npos);
  EXPECT_NE(third.received().find(R"("limit":2)"), std::string::npos);
  first->Close();
  ASSERT_TRUE(Eventually([&] { return streams_->subscribers() == 1; }));
  RawClient fourth(server_->port(), Subscribe("sdk-a"));
  EXPECT_TRUE(fourth.ReadUntil("event: features")) << fourth.received();
}

TEST_F(StreamsTest, UnknownKeysAre400AndADeletedConnectionEndsItsStreams) {
  Start({.max_subscribers = 4});
  RawClient unknown(server_->port(), Subscribe("nope"));
  ASSERT_TRUE(unknown.ReadUntil("Invalid API Key"));
  EXPECT_NE(unknown.received().find("HTTP/1.1 400"), std::string::npos);
  RawClient sdk(server_->port(), Subscribe("sdk-a"));
  ASSERT_TRUE(sdk.ReadUntil("event: features"));
  Publish("blue", /*with_connection=*/false);
  EXPECT_TRUE(sdk.ReadToClose());
  EXPECT_TRUE(Eventually([&] { return streams_->subscribers() == 0; }));
}

TEST_F(StreamsTest, StreamingOffIs404AndNotAdvertised) {
  Start({.max_subscribers = 0});
  RawClient sdk(server_->port(), Subscribe("sdk-a"));
  ASSERT_TRUE(sdk.ReadUntil("streaming_off"));
  EXPECT_NE(sdk.received().find("HTTP/1.1 404"), std::string::npos);
  for (const auto& [name, value] : endpoints_.Features("sdk-a").headers) {
    EXPECT_NE(name, "x-sse-support");
  }
}

TEST(EndpointsDateTest, DateUpdatedMovesWheneverThePayloadDoes) {
  GrowthBookEndpoints endpoints;
  endpoints.set_streaming(true);
  auto build = [](bool with_extra, std::string banner_updated) {
    auto snapshot = std::make_shared<DocumentSnapshot>();
    snapshot->kinds["features"]["banner"] =
        Doc("features", "banner", Json{{"defaultValue", 1}}, std::move(banner_updated));
    if (with_extra) {
      snapshot->kinds["features"]["extra"] =
          Doc("features", "extra", Json{{"defaultValue", 2}}, "2026-12-07T00:00:05.000Z");
    }
    snapshot->kinds["sdk-connections"]["k"] = Doc("sdk-connections", "k", Json::object());
    return snapshot;
  };
  auto date = [&] { return Json::parse(endpoints.Features("k").body)["dateUpdated"]; };
  endpoints.OnSnapshot(build(true, "2026-12-07T00:00:01.000Z"));
  EXPECT_EQ(date(), "2026-12-07T00:00:05.000Z");
  bool advertised = false;
  for (const auto& [name, value] : endpoints.Features("k").headers) {
    advertised |= name == "x-sse-support" && value == "enabled";
  }
  EXPECT_TRUE(advertised);
  // "extra" deleted: the newest updatedAt left is older, yet the SDK must see a change.
  endpoints.OnSnapshot(build(false, "2026-12-07T00:00:01.000Z"));
  EXPECT_EQ(date(), "2026-12-07T00:00:05.001Z");
  // Nothing changed: the date stays.
  endpoints.OnSnapshot(build(false, "2026-12-07T00:00:01.000Z"));
  EXPECT_EQ(date(), "2026-12-07T00:00:05.001Z");
  // A newer write moves it as usual.
  endpoints.OnSnapshot(build(false, "2026-12-07T00:00:09.000Z"));
  EXPECT_EQ(date(), "2026-12-07T00:00:09.000Z");
}

}  // namespace
}  // namespace capstan::experiments
