// Log retention (event_log.h, event_store.h "3."): which segments may go
// (SegmentsToRemove), the log after removal (read, reopen, a crash in the
// middle of a removal), and the store: only segments covered by a durable
// checkpoint and outside the dedup window are removed, by age or by the size
// cap; a crash between a checkpoint and the removal loses nothing and counts
// nothing twice; rebuild_on_open is refused naming the first retained event;
// the dedup window keeps every key it promised.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "experiments/event_log.h"
#include "experiments/event_store.h"
#include "experiments/event_store_format.h"
#include "experiments/event_store_test_util.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::system_clock;

using event_store_testing::Framed;
using event_store_testing::TempDirectory;

// ---- SegmentsToRemove -------------------------------------------------------

LogSegmentInfo Segment(uint64_t first, uint64_t end, uint64_t bytes, system_clock::time_point at,
                       bool tail = false) {
  return LogSegmentInfo{
      .first_sequence = first, .end_sequence = end, .bytes = bytes, .modified = at, .tail = tail};
}

TEST(SegmentsToRemove, OnlyACoveredPrefixOlderThanTheRetentionOrOverTheCap) {
  const system_clock::time_point now = system_clock::time_point() + hours(1000);
  const system_clock::time_point old = now - hours(200);
  const system_clock::time_point young = now - hours(1);
  std::vector<LogSegmentInfo> segments = {Segment(0, 10, 100, old), Segment(10, 20, 100, old),
                                          Segment(20, 30, 100, young), Segment(30, 40, 100, old),
                                          Segment(40, 45, 50, old, /*tail=*/true)};
  LogRetentionLimits limits{.removable_before = 40, .max_age = hours(168), .now = now};
  // The young third segment stops the prefix: the old fourth stays too.
  EXPECT_EQ(SegmentsToRemove(segments, limits), 2u);
  // Covered only up to event 15: the second segment (10..19) is not.
  limits.removable_before = 15;
  EXPECT_EQ(SegmentsToRemove(segments, limits), 1u);
  limits.removable_before = 9;
  EXPECT_EQ(SegmentsToRemove(segments, limits), 0u);
  // No time limit: nothing without a cap.
  limits = LogRetentionLimits{.removable_before = 40, .now = now};
  EXPECT_EQ(SegmentsToRemove(segments, limits), 0u);
  // The cap removes young segments too, just enough to get under it (450
  // bytes in all; <= 250 needs the first two gone, <= 200 the third too).
  limits.max_bytes = 250;
  EXPECT_EQ(SegmentsToRemove(segments, limits), 2u);
  limits.max_bytes = 200;
  EXPECT_EQ(SegmentsToRemove(segments, limits), 3u);
  limits.max_bytes = 400;
  EXPECT_EQ(SegmentsToRemove(segments, limits), 1u);
  // ...but never past what is covered, nor the tail.
  limits.max_bytes = 1;
  limits.removable_before = 20;
  EXPECT_EQ(SegmentsToRemove(segments, limits), 2u);
  limits.removable_before = UINT64_MAX;
  EXPECT_EQ(SegmentsToRemove(segments, limits), 4u);
  // Age 0: everything covered goes.
  limits = LogRetentionLimits{.removable_before = 40, .max_age = milliseconds(0), .now = now};
  EXPECT_EQ(SegmentsToRemove(segments, limits), 4u);
}

// ---- EventLog after removal ------------------------------------------------

// Every record's first sequence from `from`, or the error.
absl::StatusOr<std::vector<uint64_t>> Firsts(const EventLog& log, uint64_t from) {
  std::vector<uint64_t> firsts;
  absl::Status s = log.Read(from, [&](uint64_t first, std::string_view) -> absl::Status {
    firsts.push_back(first);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return firsts;
}

TEST(EventLogRetention, RemovesTheOldestSegmentsAndReopensFromTheFirstRetained) {
  TempDirectory dir;
  const EventLogOptions options{.segment_bytes = 1024, .preallocate_bytes = 512, .sync = false};
  std::vector<LogSegmentInfo> before;
  uint64_t bytes_after_removal = 0;
  {
    auto log = EventLog::Open(dir.path(), options);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 30; ++i) {
      std::string framed = Framed("r" + std::to_string(i), 5);
      ASSERT_TRUE((*log)->Append(&framed, 5).ok());
    }
    auto infos = (*log)->SegmentInfos();
    ASSERT_TRUE(infos.ok()) << infos.status();
    before = *infos;
    ASSERT_GE(before.size(), 4u);
    EXPECT_TRUE(before.back().tail);
    EXPECT_EQ(before.back().end_sequence, 150u);
    for (size_t i = 0; i + 1 < before.size(); ++i) {
      EXPECT_EQ(before[i].end_sequence, before[i + 1].first_sequence);
    }
    const uint64_t bytes_before = (*log)->retained_bytes();

    ASSERT_TRUE((*log)->RemoveOldestSegments(2).ok());
    EXPECT_EQ((*log)->segment_count(), before.size() - 2);
    EXPECT_EQ((*log)->first_sequence(), before[2].first_sequence);
    EXPECT_EQ((*log)->retained_bytes(), bytes_before - before[0].bytes - before[1].bytes);
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/00000000000000000000.log"));
    // Reading from before the first retained event names it.
    auto from_zero = Firsts(**log, 0);
    ASSERT_FALSE(from_zero.ok());
    EXPECT_EQ(from_zero.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(from_zero.status().message().find("log starts at event " +
                                                std::to_string(before[2].first_sequence)),
              std::string_view::npos)
        << from_zero.status();
    auto retained = Firsts(**log, before[2].first_sequence);
    ASSERT_TRUE(retained.ok()) << retained.status();
    EXPECT_EQ(retained->front(), before[2].first_sequence);
    // The tail is never removed, whatever the count.
    ASSERT_TRUE((*log)->RemoveOldestSegments(1000).ok());
    EXPECT_EQ((*log)->segment_count(), 1u);
    EXPECT_EQ((*log)->first_sequence(), before.back().first_sequence);
    bytes_after_removal = (*log)->retained_bytes();
    std::string framed = Framed("after", 5);
    ASSERT_TRUE((*log)->Append(&framed, 5).ok());
    bytes_after_removal += framed.size();
  }
  auto log = EventLog::Open(dir.path(), options);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->next_sequence(), 155u);
  EXPECT_EQ((*log)->first_sequence(), before.back().first_sequence);
  EXPECT_EQ((*log)->retained_bytes(), bytes_after_removal);
  auto all = Firsts(**log, (*log)->first_sequence());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->back(), 150u);
}

// A crash in the middle of a removal leaves a contiguous suffix (oldest
// removed first, each unlink synced): the log opens; a hole does not.
TEST(EventLogRetention, ACrashDuringRemovalLeavesALogThatOpens) {
  TempDirectory dir;
  const EventLogOptions options{.segment_bytes = 1024, .preallocate_bytes = 512, .sync = false};
  std::vector<LogSegmentInfo> infos;
  {
    auto log = EventLog::Open(dir.path(), options);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 20; ++i) {
      std::string framed = Framed("c" + std::to_string(i), 5);
      ASSERT_TRUE((*log)->Append(&framed, 5).ok());
    }
    infos = *(*log)->SegmentInfos();
  }
  ASSERT_GE(infos.size(), 4u);
  auto path = [&](uint64_t first) {
    char name[32];
    std::snprintf(name, sizeof(name), "%020llu.log", static_cast<unsigned long long>(first));
    return dir.path() + "/" + name;
  };
  ASSERT_TRUE(std::filesystem::remove(path(infos[0].first_sequence)));
  {
    auto log = EventLog::Open(dir.path(), options);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->first_sequence(), infos[1].first_sequence);
    EXPECT_EQ((*log)->next_sequence(), 100u);
    EXPECT_TRUE(Firsts(**log, infos[1].first_sequence).ok());
  }
  ASSERT_TRUE(std::filesystem::remove(path(infos[2].first_sequence)));  // a hole
  auto log = EventLog::Open(dir.path(), options);
  ASSERT_TRUE(log.ok()) << log.status();  // Open reads only the tail...
  auto read = Firsts(**log, infos[1].first_sequence);
  ASSERT_FALSE(read.ok());  // ...a read across the hole is refused naming the file
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find(path(infos[3].first_sequence)), std::string_view::npos)
      << read.status();
}

// ---- EventStore -------------------------------------------------------------

Event Exposure(const std::string& key, const std::string& unit) {
  return Event{.type = EventType::kExposure,
               .key = key,
               .experiment = "e",
               .unit = unit,
               .variant = (unit.back() - '0') % 2 == 0 ? "control" : "treatment",
               .timestamp_ms = 1000};
}

Event Value(const std::string& key, const std::string& unit, double value) {
  return Event{.type = EventType::kValue,
               .key = key,
               .experiment = "e",
               .unit = unit,
               .metric = "m",
               .value = value,
               .timestamp_ms = 2000};
}

// Batch b: 10 units, each an exposure and a value event.
std::vector<Event> Batch(int b) {
  std::vector<Event> events;
  for (int i = 0; i < 10; ++i) {
    std::string unit = "b" + std::to_string(b) + "u" + std::to_string(i);
    events.push_back(Exposure("x-" + unit, unit));
    events.push_back(Value("v-" + unit, unit, b + i));
  }
  return events;
}

// What batches 0..n-1 add up to, per variant: units and Σvalue.
std::map<std::string, std::pair<uint64_t, double>> Expected(int batches) {
  std::map<std::string, std::pair<uint64_t, double>> want;
  for (int b = 0; b < batches; ++b) {
    for (int i = 0; i < 10; ++i) {
      auto& [units, sum] = want[i % 2 == 0 ? "control" : "treatment"];
      ++units;
      sum += b + i;
    }
  }
  return want;
}

void ExpectCountedOnce(EventStore& store, int batches) {
  ExperimentSums sums = store.Sums("e");
  auto want = Expected(batches);
  ASSERT_EQ(sums.variants.size(), want.size());
  for (const auto& [variant, expected] : want) {
    const VariantSums& got = sums.variants.at(variant);
    EXPECT_EQ(got.units, expected.first) << variant;
    auto it = got.metrics.find(MetricId{EventType::kValue, "m"});
    ASSERT_NE(it, got.metrics.end()) << variant;
    EXPECT_DOUBLE_EQ(it->second.sum, expected.second) << variant;
  }
}

// Small segments, a small dedup window, retention by age 0 (as soon as
// covered) unless the test says otherwise; no background passes.
EventStoreOptions SmallOptions(const std::string& dir) {
  EventStoreOptions o;
  o.directory = dir;
  o.dedup_window_keys = 100;
  o.checkpoint_events = 200;
  o.sync = false;
  o.retention_ms = 0;
  o.segment_bytes = 2048;
  o.retention_check_interval = hours(1);
  return o;
}

// Nothing that the checkpoint or the dedup window still needs is gone.
void ExpectOnlyCoveredRemoved(const EventStoreStats& stats, uint64_t window) {
  const uint64_t covered = std::min(
      stats.checkpoint_sequence, stats.next_sequence > window ? stats.next_sequence - window : 0);
  EXPECT_LE(stats.log_first_sequence, covered);
}

TEST(EventStoreRetention, RemovesOnlySegmentsCoveredByTheCheckpointAndTheDedupWindow) {
  TempDirectory dir;
  EventStoreOptions options = SmallOptions(dir.path());
  options.checkpoint_events = 1000000;  // no checkpoint while appending
  auto store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  for (int b = 0; b < 40; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
  ExpectCountedOnce(**store, 40);
  EventStoreStats stats = (*store)->Stats();
  ASSERT_GE(stats.log_segments, 5u) << "segments too large for the test";
  // Without a checkpoint nothing is covered, however old.
  EXPECT_EQ(stats.checkpoint_sequence, 0u);
  auto removed = (*store)->EnforceRetention();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0u);
  EXPECT_EQ((*store)->Stats().log_first_sequence, 0u);
  store->reset();  // checkpoints on close

  // Reopened: the checkpoint covers the whole log; the dedup window (100
  // keys) keeps the last segments.
  auto reopened = EventStore::Open(options);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  removed = (*reopened)->EnforceRetention();  // the aggregator may have run it already
  ASSERT_TRUE(removed.ok()) << removed.status();
  stats = (*reopened)->Stats();
  EXPECT_EQ(stats.checkpoint_sequence, 800u);
  EXPECT_GT(stats.log_segments_removed, 0u);
  EXPECT_GT(stats.log_first_sequence, 0u);
  EXPECT_LE(stats.log_first_sequence, 800u - 100u);  // the window's events are all there
  // Every key of the window is still a duplicate; the results are unchanged.
  auto again = (*reopened)->Append(Batch(39));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->duplicates, 20u);
  ExpectCountedOnce(**reopened, 40);
  reopened->reset();
  // The first retained segment is the one holding event 700 (the window's
  // first): every segment before it ended at or before 700.
  auto log = EventLog::Open(dir.path() + "/events-log", EventLogOptions{.sync = false});
  ASSERT_TRUE(log.ok()) << log.status();
  auto segments = (*log)->SegmentInfos();
  ASSERT_TRUE(segments.ok());
  EXPECT_EQ(segments->front().first_sequence, stats.log_first_sequence);
  EXPECT_LE(segments->front().first_sequence, 700u);
  EXPECT_GT(segments->front().end_sequence, 700u);
  EXPECT_EQ(stats.log_segments, segments->size());
}

TEST(EventStoreRetention, KeepsSegmentsYoungerThanTheRetention) {
  TempDirectory dir;
  std::atomic<int64_t> offset_hours{0};
  EventStoreOptions options = SmallOptions(dir.path());
  options.retention_ms = int64_t{7} * 24 * 3600 * 1000;
  options.wall_clock = [&] { return system_clock::now() + hours(offset_hours.load()); };
  auto store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  for (int b = 0; b < 40; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
  ExpectCountedOnce(**store, 40);  // checkpoints every 200 events ran retention
  EventStoreStats stats = (*store)->Stats();
  EXPECT_GE(stats.checkpoint_sequence, 600u);
  EXPECT_EQ(stats.log_segments_removed, 0u);  // covered, but a week is not over
  EXPECT_EQ(stats.log_first_sequence, 0u);
  offset_hours = 6 * 24;
  EXPECT_EQ(*(*store)->EnforceRetention(), 0u);
  offset_hours = 7 * 24 + 1;
  auto removed = (*store)->EnforceRetention();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_GT(*removed, 0u);
  stats = (*store)->Stats();
  EXPECT_EQ(stats.log_segments_removed, *removed);
  ExpectOnlyCoveredRemoved(stats, options.dedup_window_keys);
  ExpectCountedOnce(**store, 40);
}

// With no traffic (no checkpoint to prompt it) the aggregator still looks
// every retention_check_interval, so segments age out of an idle store.
TEST(EventStoreRetention, AnIdleStoreRemovesSegmentsAsTheyAge) {
  TempDirectory dir;
  std::atomic<int64_t> offset_hours{0};
  EventStoreOptions options = SmallOptions(dir.path());
  options.retention_ms = 3600 * 1000;
  options.retention_check_interval = milliseconds(20);
  options.wall_clock = [&] { return system_clock::now() + hours(offset_hours.load()); };
  auto store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  for (int b = 0; b < 40; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
  ExpectCountedOnce(**store, 40);
  EXPECT_EQ((*store)->Stats().log_segments_removed, 0u);
  offset_hours = 2;  // an hour and more later, nothing sent meanwhile
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((*store)->Stats().log_segments_removed == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));  // polling, bounded by the deadline
  }
  EventStoreStats stats = (*store)->Stats();
  EXPECT_GT(stats.log_segments_removed, 0u);
  EXPECT_GT(stats.log_first_sequence, 0u);
  ExpectOnlyCoveredRemoved(stats, options.dedup_window_keys);
  ExpectCountedOnce(**store, 40);
}

TEST(EventStoreRetention, TheSizeCapRemovesYoungSegmentsButNeverUncoveredOnes) {
  TempDirectory dir;
  EventStoreOptions options = SmallOptions(dir.path());
  options.retention_ms = -1;  // no time limit: only the cap
  options.retention_bytes = 6000;
  auto store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  for (int b = 0; b < 60; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
  ExpectCountedOnce(**store, 60);
  ASSERT_TRUE((*store)->EnforceRetention().ok());
  EventStoreStats stats = (*store)->Stats();
  EXPECT_GT(stats.log_segments_removed, 0u);
  ExpectOnlyCoveredRemoved(stats, options.dedup_window_keys);
  // Under the cap, or the oldest segment left is still needed (it holds an
  // event after the checkpoint or in the dedup window).
  const uint64_t covered = std::min<uint64_t>(stats.checkpoint_sequence, stats.next_sequence - 100);
  store->reset();
  auto log = EventLog::Open(dir.path() + "/events-log", EventLogOptions{.sync = false});
  ASSERT_TRUE(log.ok());
  auto segments = *(*log)->SegmentInfos();
  EXPECT_TRUE(stats.log_bytes <= options.retention_bytes || segments.front().end_sequence > covered)
      << stats.log_bytes;
  log->reset();

  // A dedup window as large as the log: over the cap, nothing may go.
  TempDirectory dir2;
  options = SmallOptions(dir2.path());
  options.retention_ms = -1;
  options.retention_bytes = 1;
  options.dedup_window_keys = 100000;
  store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  for (int b = 0; b < 40; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
  ExpectCountedOnce(**store, 40);
  EXPECT_EQ(*(*store)->EnforceRetention(), 0u);
  stats = (*store)->Stats();
  EXPECT_EQ(stats.log_first_sequence, 0u);
  EXPECT_GT(stats.log_bytes, options.retention_bytes);
}

// The checkpoint is durable before any segment it covers goes. A crash
// right after the checkpoint (before retention ran), and one after the
// removal but before the next checkpoint, both reopen to the same counts.
TEST(EventStoreRetention, ACrashBetweenCheckpointAndRemovalLosesNothingAndCountsNothingTwice) {
  TempDirectory dir;
  EventStoreOptions options = SmallOptions(dir.path());
  options.retention_ms = -1;            // first life: checkpoints, but no removal
  options.checkpoint_on_close = false;  // and a crash: the tail after the checkpoint unwritten
  {
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    for (int b = 0; b < 33; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
    ExpectCountedOnce(**store, 33);
    EventStoreStats stats = (*store)->Stats();
    EXPECT_EQ(stats.checkpoint_sequence, 600u);  // 660 events, a checkpoint every 200
    EXPECT_EQ(stats.log_segments_removed, 0u);
  }
  options.retention_ms = 0;  // second life: retention on; it crashes again
  uint64_t first_retained = 0;
  {
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    EventStoreStats stats = (*store)->Stats();
    EXPECT_EQ(stats.replayed_on_open, 60u);
    ExpectCountedOnce(**store, 33);
    ASSERT_TRUE((*store)->EnforceRetention().ok());
    stats = (*store)->Stats();
    EXPECT_GT(stats.log_first_sequence, 0u);
    ExpectOnlyCoveredRemoved(stats, options.dedup_window_keys);
    first_retained = stats.log_first_sequence;
    // More events, no checkpoint before the crash.
    for (int b = 33; b < 37; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
    ExpectCountedOnce(**store, 37);
  }
  {
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    EventStoreStats stats = (*store)->Stats();
    EXPECT_GE(stats.log_first_sequence, first_retained);
    EXPECT_EQ(stats.next_sequence, 740u);
    ExpectCountedOnce(**store, 37);
    // Every acknowledged key still in the window is a duplicate.
    for (int b = 33; b < 37; ++b) {
      auto again = (*store)->Append(Batch(b));
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_EQ(again->duplicates, 20u) << b;
    }
    ExpectCountedOnce(**store, 37);
  }
}

TEST(EventStoreRetention, RebuildIsRefusedNamingTheFirstRetainedEvent) {
  TempDirectory dir;
  EventStoreOptions options = SmallOptions(dir.path());
  {
    // The whole log: a rebuild replays it.
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    for (int b = 0; b < 5; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
  }
  options.retention_ms = -1;
  options.rebuild_on_open = true;
  {
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->Stats().replayed_on_open, 100u);
    ExpectCountedOnce(**store, 5);
  }
  options.rebuild_on_open = false;
  options.retention_ms = 0;
  uint64_t first_retained = 0;
  {
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    for (int b = 5; b < 40; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
    ExpectCountedOnce(**store, 40);
    ASSERT_TRUE((*store)->EnforceRetention().ok());
    first_retained = (*store)->Stats().log_first_sequence;
    ASSERT_GT(first_retained, 0u);
  }
  options.rebuild_on_open = true;
  auto refused = EventStore::Open(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("the first retained event is " +
                                            std::to_string(first_retained)),
            std::string_view::npos)
      << refused.status();
  // Refused before touching anything: the checkpoint still opens.
  options.rebuild_on_open = false;
  auto store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectCountedOnce(**store, 40);
}

// The dedup guarantee with retention: a re-sent key is a duplicate while
// fewer than dedup_window_keys events were accepted after it, across
// removals and restarts; an older one is accepted again (documented).
TEST(EventStoreRetention, TheDedupWindowKeepsItsKeysAcrossRemovalAndRestart) {
  TempDirectory dir;
  EventStoreOptions options = SmallOptions(dir.path());
  options.dedup_window_keys = 200;
  {
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    for (int b = 0; b < 40; ++b) ASSERT_TRUE((*store)->Append(Batch(b)).ok());
    ExpectCountedOnce(**store, 40);  // waits for the aggregation (and its checkpoints)
    ASSERT_TRUE((*store)->EnforceRetention().ok());
    EXPECT_GT((*store)->Stats().log_first_sequence, 0u);
  }
  auto store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  EventStoreStats stats = (*store)->Stats();
  EXPECT_GT(stats.log_first_sequence, 0u);
  EXPECT_EQ(stats.dedup_keys, 200u);  // the whole window, rebuilt from what is left
  // The last 200 events (batches 30..39) are duplicates.
  for (int b = 30; b < 40; ++b) {
    auto again = (*store)->Append(Batch(b));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->duplicates, 20u) << b;
  }
  ExpectCountedOnce(**store, 40);
  // Batch 0 is far outside the window: accepted again (and counted again).
  auto old = (*store)->Append(Batch(0));
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->accepted, 20u);
}

}  // namespace
}  // namespace capstan::experiments
