#include "bench/raw_watch.h"

#include "etcd/etcdserverpb/rpc.pb.h"
#include "gtest/gtest.h"

namespace capstan::bench {
namespace {

TEST(ScanWatchResponse, CountsCreationsAndEventsAndTheirLatency) {
  etcdserverpb::WatchResponse created;
  created.mutable_header()->set_revision(42);
  created.set_watch_id(3);
  created.set_created(true);
  etcdserverpb::WatchResponse events;
  events.mutable_header()->set_revision(43);
  events.set_watch_id(3);
  for (const char* sent : {"1000", "1500"}) {
    auto* ev = events.add_events();
    ev->mutable_kv()->set_key("watch-bench/k1");
    ev->mutable_kv()->set_value(sent);
    ev->mutable_kv()->set_mod_revision(43);
  }
  LatencyHistogram hist;
  RawWatchCounters counters;
  counters.latency = &hist;
  ASSERT_TRUE(ScanWatchResponse(created.SerializeAsString(), 2000, &counters));
  ASSERT_TRUE(ScanWatchResponse(events.SerializeAsString(), 2000, &counters));
  EXPECT_EQ(counters.created.load(), 1);
  EXPECT_EQ(counters.events.load(), 2);
  EXPECT_EQ(hist.Count(), 2);
  // 2000 - 1000 us is the larger latency; the histogram's buckets are ~6% wide.
  EXPECT_NEAR(hist.PercentileMs(1.0), 1.0, 0.07);
  EXPECT_NEAR(hist.PercentileMs(0.0), 0.5, 0.04);
}

TEST(ScanWatchResponse, RejectsTruncatedMessages) {
  etcdserverpb::WatchResponse events;
  events.add_events()->mutable_kv()->set_value("1000");
  std::string bytes = events.SerializeAsString();
  RawWatchCounters counters;
  EXPECT_FALSE(ScanWatchResponse(bytes.substr(0, bytes.size() - 2), 2000, &counters));
}

}  // namespace
}  // namespace capstan::bench
