// A watcher whose client stops reading must not stall writes or other
// watchers, must not make the server buffer without bound, and must get every
// event, in order, once it reads again.
#include <atomic>
#include <thread>

#include "diff_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::e2e {
namespace {

using namespace etcdserverpb;

int64_t Metric(int port, const std::string& name) {
  auto r = RunCommand({"curl", "-s", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
  auto pos = r.out.find("\n" + name + " ");
  if (pos == std::string::npos) return -1;
  return std::stoll(r.out.substr(pos + name.size() + 2));
}

TEST(SlowWatcher, FallsBehindWithoutStallingAndCatchesUp) {
  TempDir dir("capstan-slow-watch");
  StoreProcess server(StoreProcess::Kind::kCapstan, dir.path() + "/data");
  ASSERT_TRUE(server.Start()) << server.Log();

  auto open_watch = [&](Stubs& stubs, grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto stream = stubs.watch->Watch(&ctx);
    WatchRequest req;
    req.mutable_create_request()->set_key("s/");
    req.mutable_create_request()->set_range_end("s0");
    EXPECT_TRUE(stream->Write(req));
    WatchResponse created;
    EXPECT_TRUE(stream->Read(&created));
    EXPECT_TRUE(created.created());
    return stream;
  };
  // Separate channels: gRPC flow control is per connection.
  Stubs slow_stubs(server.endpoint()), fast_stubs(server.endpoint()), writer(server.endpoint());
  grpc::ClientContext slow_ctx, fast_ctx;
  auto slow = open_watch(slow_stubs, slow_ctx);  // never read until the end
  auto fast = open_watch(fast_stubs, fast_ctx);

  constexpr int kPuts = 1500;
  std::atomic<int> fast_events{0};
  std::thread reader([&] {
    WatchResponse resp;
    while (fast_events < kPuts && fast->Read(&resp)) fast_events += resp.events_size();
  });
  std::string value(32 << 10, 'x');  // 1500 x 32 KiB = 47 MiB of events
  for (int i = 0; i < kPuts; ++i) {
    PutRequest p;
    p.set_key("s/" + std::to_string(100000 + i));
    p.set_value(value);
    PutResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    ASSERT_TRUE(writer.kv->Put(&ctx, p, &resp).ok()) << "writes must not stall behind a watcher";
  }
  reader.join();
  EXPECT_EQ(fast_events.load(), kPuts) << "the reading watcher got everything";
  EXPECT_GE(Metric(server.metrics_port(), "capstan_store_watchers_unsynced"), 1)
      << "the stalled watcher was moved to catch up from history instead of buffering";

  // The slow client reads at last: every event, in revision order, once.
  int64_t last_rev = 0;
  int seen = 0;
  WatchResponse resp;
  while (seen < kPuts && slow->Read(&resp)) {
    for (const auto& ev : resp.events()) {
      ASSERT_GT(ev.kv().mod_revision(), last_rev) << "events out of order or duplicated";
      last_rev = ev.kv().mod_revision();
      ++seen;
    }
  }
  EXPECT_EQ(seen, kPuts);
  EXPECT_TRUE(Eventually(
      [&] { return Metric(server.metrics_port(), "capstan_store_watchers_unsynced") == 0; }));
  slow_ctx.TryCancel();
  fast_ctx.TryCancel();
}

}  // namespace
}  // namespace capstan::e2e
