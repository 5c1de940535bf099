// The event store's disk layout 2 (event_store_format.h): the unit state
// record's encoding, a store written in layout 1 ("u" + experiment + NUL +
// unit keys, names inline; written here byte for byte as the earlier code
// wrote it) rewritten on open and aggregating on from there, an interrupted
// rewrite's leftovers dropped, and new units' table files placed in the
// last level (no compaction rewrites them), and eviction from the unit
// cache keeping the units in use.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "experiments/event_store.h"
#include "experiments/event_store_format.h"
#include "experiments/event_store_test_util.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/metadata.h"

namespace capstan::experiments {
namespace {

using namespace event_store_testing;  // NOLINT: the shared helpers
namespace format = event_format;
using std::string_literals::operator""s;

bool SameNumber(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;  // -0.0 apart from 0.0
}

TEST(UnitRecord, RoundTripsEveryKindOfNumberAndRefusesDamage) {
  const double numbers[] = {0.0,
                            -0.0,
                            1.0,
                            -1.0,
                            6.0,
                            0.5,
                            -1234567.25,
                            9007199254740991.0,
                            9007199254740992.0,
                            -9007199254740992.0,
                            1e300,
                            std::numeric_limits<double>::infinity(),
                            std::numeric_limits<double>::denorm_min()};
  std::vector<format::UnitRecordMetric> metrics;
  std::vector<format::UnitRecordHeld> held;
  uint32_t id = 0;
  for (double a : numbers) {
    for (double b : numbers) {
      metrics.push_back({id % 300, a, b, -a});
      held.push_back({id % 7, -static_cast<int64_t>(id) * 1000003, b, a});
      ++id;
    }
  }
  held.resize(kMaxHeldEventsPerUnit);
  const std::string key = "ue\0unit-1"s;
  std::string encoded;
  format::EncodeUnitRecord(key, 4, -1700000000000, metrics, held, &encoded);
  format::UnitRecord record;
  ASSERT_TRUE(format::DecodeUnitRecord(encoded, &record));
  EXPECT_EQ(record.key, std::string_view(key).substr(1));
  EXPECT_EQ(record.variant, 4u);
  EXPECT_EQ(record.exposure_ms, -1700000000000);
  ASSERT_EQ(record.metrics.size(), metrics.size());
  for (size_t i = 0; i < metrics.size(); ++i) {
    EXPECT_EQ(record.metrics[i].metric, metrics[i].metric);
    EXPECT_TRUE(SameNumber(record.metrics[i].x, metrics[i].x)) << i;
    EXPECT_TRUE(SameNumber(record.metrics[i].den, metrics[i].den)) << i;
    EXPECT_TRUE(SameNumber(record.metrics[i].covariate, metrics[i].covariate)) << i;
  }
  ASSERT_EQ(record.held.size(), held.size());
  for (size_t i = 0; i < held.size(); ++i) {
    EXPECT_EQ(record.held[i].metric, held[i].metric);
    EXPECT_EQ(record.held[i].timestamp_ms, held[i].timestamp_ms);
    EXPECT_TRUE(SameNumber(record.held[i].value, held[i].value)) << i;
    EXPECT_TRUE(SameNumber(record.held[i].denominator, held[i].denominator)) << i;
  }
  // The common state (one metric, small integers) is small: layout 1 took
  // 1 + 8 + 8 + 4 + (1 + 8 + 24) + 4 bytes besides the names.
  std::vector<format::UnitRecordMetric> one = {{0, 3, 0, 0}};
  std::vector<format::UnitRecordHeld> none;
  std::string small;
  format::EncodeUnitRecord("ubench-exp\0m31-1-12345-17"s, 2, 1700000000000, one, none, &small);
  EXPECT_LE(small.size(), 24 + 1 + 14u);

  // Every strict prefix, a trailing byte, a wrong version, unknown tag bits
  // and too many held events are refused.
  for (size_t n = 0; n < small.size(); ++n) {
    EXPECT_FALSE(format::DecodeUnitRecord(std::string_view(small).substr(0, n), &record)) << n;
  }
  EXPECT_FALSE(format::DecodeUnitRecord(small + "x", &record));
  std::string bad = small;
  bad[1 + 24] = 2;  // the version byte, after the key's length and bytes
  EXPECT_FALSE(format::DecodeUnitRecord(bad, &record));
  held.resize(kMaxHeldEventsPerUnit + 1);
  format::EncodeUnitRecord(key, 0, 0, one, held, &encoded);
  EXPECT_FALSE(format::DecodeUnitRecord(encoded, &record));
  std::vector<format::UnitRecordMetric> tagged = {{0, 3, 0, 0}};
  format::EncodeUnitRecord(key, 0, 0, tagged, none, &encoded);
  // key length, key, version, variant, exposure, count, metric id, tags
  size_t tags_at = 1 + (key.size() - 1) + 1 + 1 + 1 + 1 + 1;
  ASSERT_EQ(encoded[tags_at], 1);  // x an integer, den and covariate zero
  encoded[tags_at] = 3;            // tag 3 is no encoding
  EXPECT_FALSE(format::DecodeUnitRecord(encoded, &record));
  encoded[tags_at] = 1 | 1 << 6;  // bits past the three tags
  EXPECT_FALSE(format::DecodeUnitRecord(encoded, &record));
}

// ---- layout 1, as the earlier code wrote it ----

struct Layout1Metric {
  EventType kind;
  std::string name;
  double x, den, covariate;
};
struct Layout1Held {
  EventType kind;
  std::string name;
  int64_t ts;
  double value, denominator;
};

// Version 2 of the unit state under "u" + experiment + NUL + unit.
std::string Layout1Unit(std::string_view variant, int64_t exposure_ms,
                        const std::vector<Layout1Metric>& metrics,
                        const std::vector<Layout1Held>& held) {
  std::string out(1, 2);
  format::AppendShortString(&out, variant);
  format::AppendRaw(&out, exposure_ms);
  format::AppendRaw(&out, static_cast<uint32_t>(metrics.size()));
  for (const Layout1Metric& m : metrics) {
    out.push_back(static_cast<char>(m.kind));
    format::AppendShortString(&out, m.name);
    format::AppendRaw(&out, m.x);
    format::AppendRaw(&out, m.den);
    format::AppendRaw(&out, m.covariate);
  }
  format::AppendRaw(&out, static_cast<uint32_t>(held.size()));
  for (const Layout1Held& h : held) {
    out.push_back(static_cast<char>(h.kind));
    format::AppendShortString(&out, h.name);
    format::AppendRaw(&out, h.ts);
    format::AppendRaw(&out, h.value);
    format::AppendRaw(&out, h.denominator);
  }
  return out;
}

std::unique_ptr<rocksdb::DB> OpenRaw(const std::string& directory) {
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::Options(), directory, &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return std::unique_ptr<rocksdb::DB>(raw);
}

size_t CountKeys(rocksdb::DB* db, char prefix) {
  size_t n = 0;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(std::string(1, prefix)); it->Valid() && it->key()[0] == prefix; it->Next()) ++n;
  return n;
}

constexpr int64_t kExposureMs = 100 * kDayMs;
constexpr int kExposedUnits = 300;
constexpr int kWaitingUnits = 20;

// The first phase's events, whose aggregation Layout1Store writes by hand:
// exposed units (variant by parity) with an outcome value, every third a
// pre-period conversion (the CUPED covariate) and every fifth a ratio;
// units with value events but no exposure yet (held).
std::vector<Event> FirstPhase() {
  std::vector<Event> events;
  for (int i = 0; i < kExposedUnits; ++i) {
    std::string unit = "unit-" + std::to_string(i);
    events.push_back(Exposure("x" + unit, unit, i % 2 ? "treatment" : "control", "e", kExposureMs));
    events.push_back(
        Metric(EventType::kValue, "v" + unit, unit, "revenue", i % 7, 0, kExposureMs + 1));
    if (i % 3 == 0) {
      events.push_back(
          Metric(EventType::kConversion, "c" + unit, unit, "buy", 0, 0, kExposureMs - kDayMs));
    }
    if (i % 5 == 0) {
      events.push_back(
          Metric(EventType::kRatio, "r" + unit, unit, "clicks", i % 4, 1 + i % 3, kExposureMs + 5));
    }
  }
  for (int i = 0; i < kWaitingUnits; ++i) {
    std::string unit = "waiting-" + std::to_string(i);
    events.push_back(
        Metric(EventType::kValue, "w" + unit, unit, "revenue", 2.5, 0, kExposureMs + 9));
  }
  return events;
}

// A store in layout 1 holding FirstPhase(): its log (written through the
// store with no checkpoint) and, written byte for byte, the checkpoint the
// earlier code would have written: "c" (8 bytes), "a" + "e" and the "u" states.
void Layout1Store(const std::string& directory) {
  std::vector<Event> events = FirstPhase();
  {
    auto store = EventStore::Open(
        {.directory = directory, .checkpoint_events = 1u << 30, .checkpoint_on_close = false});
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Append(events).ok());
  }
  std::unique_ptr<rocksdb::DB> db = OpenRaw(directory);
  ASSERT_EQ(CountKeys(db.get(), 'c') + CountKeys(db.get(), 's'), 0u) << "no checkpoint";
  rocksdb::WriteBatch batch;
  std::string position;
  format::AppendBigEndian(&position, events.size());
  batch.Put("c", position);
  batch.Put("ae", EncodeExperimentSums(Naive(events, "e")));
  for (int i = 0; i < kExposedUnits; ++i) {
    std::vector<Layout1Metric> metrics = {
        {EventType::kValue, "revenue", static_cast<double>(i % 7), 0, 0}};
    if (i % 3 == 0) metrics.push_back({EventType::kConversion, "buy", 0, 0, 1});
    if (i % 5 == 0) {
      metrics.push_back({EventType::kRatio, "clicks", static_cast<double>(i % 4),
                         static_cast<double>(1 + i % 3), 0});
    }
    batch.Put("ue\0unit-"s + std::to_string(i),
              Layout1Unit(i % 2 ? "treatment" : "control", kExposureMs, metrics, {}));
  }
  for (int i = 0; i < kWaitingUnits; ++i) {
    batch.Put("ue\0waiting-"s + std::to_string(i),
              Layout1Unit("", 0, {}, {{EventType::kValue, "revenue", kExposureMs + 9, 2.5, 0}}));
  }
  rocksdb::WriteOptions sync;
  sync.sync = true;
  ASSERT_TRUE(db->Write(sync, &batch).ok());
}

// The second phase: the waiting units' exposures (their held events count
// now), more revenue and conversions for exposed units, new units.
std::vector<Event> SecondPhase() {
  std::vector<Event> events;
  for (int i = 0; i < kWaitingUnits; ++i) {
    std::string unit = "waiting-" + std::to_string(i);
    events.push_back(Exposure("x" + unit, unit, "treatment", "e", kExposureMs));
  }
  for (int i = 0; i < kExposedUnits; i += 4) {
    std::string unit = "unit-" + std::to_string(i);
    events.push_back(
        Metric(EventType::kValue, "v2" + unit, unit, "revenue", 10, 0, kExposureMs + 2));
    events.push_back(
        Metric(EventType::kConversion, "c2" + unit, unit, "buy", 0, 0, kExposureMs + 3));
    events.push_back(Metric(EventType::kRatio, "r2" + unit, unit, "clicks", 1, 2, kExposureMs + 4));
  }
  for (int i = 0; i < 100; ++i) {
    std::string unit = "new-" + std::to_string(i);
    events.push_back(Exposure("x" + unit, unit, "control", "e", kExposureMs));
    events.push_back(Metric(EventType::kValue, "v" + unit, unit, "revenue", 1, 0, kExposureMs + 1));
  }
  return events;
}

TEST(EventStoreLayout, RewritesALayout1StoreOnOpenAndAggregatesOn) {
  // max_cached_units 50: most states are rewritten without being cached,
  // then read back when their units' events come.
  for (size_t cached : {size_t{50}, size_t{1000000}}) {
    SCOPED_TRACE(cached);
    TempDirectory dir;
    Layout1Store(dir.path());
    if (HasFatalFailure()) return;
    std::vector<Event> events = FirstPhase();
    const EventStoreOptions options{
        .directory = dir.path(), .checkpoint_events = 97, .max_cached_units = cached};
    {
      auto store = EventStore::Open(options);
      ASSERT_TRUE(store.ok()) << store.status();
      EXPECT_EQ((*store)->Stats().replayed_on_open, 0u) << "the layout-1 checkpoint was taken";
      ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
    }
    {
      std::unique_ptr<rocksdb::DB> db = OpenRaw(dir.path());
      EXPECT_EQ(CountKeys(db.get(), 'u'), 0u);
      EXPECT_EQ(CountKeys(db.get(), 's'), size_t{kExposedUnits + kWaitingUnits});
      std::string position;
      ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), "c", &position).ok());
      EXPECT_EQ(position.size(), format::kCheckpointLayout2Size);
    }
    std::vector<Event> second = SecondPhase();
    events.insert(events.end(), second.begin(), second.end());
    {
      auto store = EventStore::Open(options);
      ASSERT_TRUE(store.ok()) << store.status();
      for (size_t at = 0; at < second.size(); at += 31) {
        std::vector<Event> batch(
            second.begin() + static_cast<std::ptrdiff_t>(at),
            second.begin() + static_cast<std::ptrdiff_t>(std::min(second.size(), at + 31)));
        ASSERT_TRUE((*store)->Append(std::move(batch)).ok());
      }
      ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
      EXPECT_EQ((*store)->Sums("e").variants["treatment"].units,
                size_t{kExposedUnits / 2 + kWaitingUnits});
    }
    auto store = EventStore::Open(options);  // from layout 2's checkpoint
    ASSERT_TRUE(store.ok()) << store.status();
    ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
    store->reset();
    // And rebuilt from the log alone: the same.
    store = EventStore::Open({.directory = dir.path(), .rebuild_on_open = true});
    ASSERT_TRUE(store.ok()) << store.status();
    ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
  }
}

// A crash after the rewrite's ingestion and before the deletion of the "u"
// range leaves layout-1 states behind: layout 2's checkpoint is
// authoritative and the leftovers are deleted.
TEST(EventStoreLayout, DropsLayout1LeftoversOfAnInterruptedRewrite) {
  TempDirectory dir;
  Layout1Store(dir.path());
  if (HasFatalFailure()) return;
  { ASSERT_TRUE(EventStore::Open({.directory = dir.path()}).ok()); }
  {
    std::unique_ptr<rocksdb::DB> db = OpenRaw(dir.path());
    // A stale state that would add a unit and 1000 of revenue if it were read.
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "ue\0unit-1"s,
                        Layout1Unit("control", kExposureMs,
                                    {{EventType::kValue, "revenue", 1000, 0, 0}}, {}))
                    .ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "ue\0ghost"s,
                        Layout1Unit("control", kExposureMs,
                                    {{EventType::kValue, "revenue", 1000, 0, 0}}, {}))
                    .ok());
  }
  std::vector<Event> events = FirstPhase();
  auto store = EventStore::Open({.directory = dir.path(), .max_cached_units = 10});
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
  // unit-1's next event reads its layout-2 state, not the stale one.
  std::vector<Event> more = {
      Metric(EventType::kValue, "more", "unit-1", "revenue", 1, 0, kExposureMs + 1)};
  ASSERT_TRUE((*store)->Append(more).ok());
  events.push_back(more.front());
  ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
  store->reset();
  std::unique_ptr<rocksdb::DB> db = OpenRaw(dir.path());
  EXPECT_EQ(CountKeys(db.get(), 'u'), 0u);
}

// Checkpoints of new units only: their table files go to the last level,
// where no compaction rewrites them (layout 1's spanned every unit key and
// were merged into whole levels again and again).
TEST(EventStoreLayout, NewUnitsGoToTheLastLevel) {
  TempDirectory dir;
  std::vector<Event> events;
  {
    auto store = EventStore::Open({.directory = dir.path(), .checkpoint_events = 200});
    ASSERT_TRUE(store.ok()) << store.status();
    for (int batch = 0; batch < 20; ++batch) {
      std::vector<Event> b;
      for (int i = 0; i < 100; ++i) {
        // Keys in no particular order: "b19-…" sorts before "b2-…".
        std::string unit = "b" + std::to_string(batch) + "-" + std::to_string(i * 7919 % 100);
        b.push_back(Exposure("x" + unit, unit, i % 2 ? "b" : "a"));
        b.push_back(Metric(EventType::kValue, "v" + unit, unit, "m", i));
      }
      events.insert(events.end(), b.begin(), b.end());
      ASSERT_TRUE((*store)->Append(std::move(b)).ok());
      // Wait for the aggregation (Sums waits for what was acknowledged).
      (void)(*store)->Sums("e");
    }
    EXPECT_GE((*store)->Stats().checkpoints, 10u);
    ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
  }
  std::unique_ptr<rocksdb::DB> db = OpenRaw(dir.path());
  std::vector<rocksdb::LiveFileMetaData> files;
  db->GetLiveFilesMetaData(&files);
  size_t unit_files = 0;
  for (const rocksdb::LiveFileMetaData& f : files) {
    if (f.smallestkey.empty() || f.smallestkey[0] != format::kUnitStatePrefix) continue;
    ++unit_files;
    EXPECT_EQ(f.level, db->NumberLevels() - 1) << f.name;
  }
  EXPECT_GE(unit_files, 10u);
}

// Eviction keeps the units in use: hot units sent an event in every batch
// stay cached while a stream of new units passes through a cache of 50
// (evicted in place, their table slots deleted), so none is ever read back;
// the units that were evicted are read back when they come again, and the
// sums stay exact throughout.
TEST(EventStoreLayout, EvictionKeepsTheUnitsInUse) {
  TempDirectory dir;
  std::vector<Event> events;
  const EventStoreOptions options{
      .directory = dir.path(), .checkpoint_events = 60, .max_cached_units = 50};
  auto store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  auto send = [&](std::vector<Event> batch) {
    events.insert(events.end(), batch.begin(), batch.end());
    ASSERT_TRUE((*store)->Append(std::move(batch)).ok());
    (void)(*store)->Sums("e");  // waits for the aggregation (and its checkpoint)
  };
  for (int round = 0; round < 40; ++round) {
    std::vector<Event> batch;
    for (int hot = 0; hot < 5; ++hot) {
      std::string unit = "hot-" + std::to_string(hot);
      if (round == 0) batch.push_back(Exposure("x" + unit, unit, "a"));
      batch.push_back(
          Metric(EventType::kValue, "v" + unit + "-" + std::to_string(round), unit, "m", round));
    }
    for (int i = 0; i < 30; ++i) {
      std::string unit = "cold-" + std::to_string(round) + "-" + std::to_string(i);
      batch.push_back(Exposure("x" + unit, unit, i % 2 ? "a" : "b"));
      batch.push_back(Metric(EventType::kValue, "v" + unit, unit, "m", i));
    }
    send(std::move(batch));
    if (HasFatalFailure()) return;
  }
  EventStoreStats stats = (*store)->Stats();
  EXPECT_GE(stats.checkpoints, 20u);
  EXPECT_LE(stats.cached_units, 50u + 35u);
  EXPECT_EQ(stats.units_read_back, 0u) << "a unit in use was evicted";
  ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
  // The first rounds' cold units come again: read back, and counted on.
  std::vector<Event> again;
  for (int i = 0; i < 30; ++i) {
    std::string unit = "cold-0-" + std::to_string(i);
    again.push_back(Metric(EventType::kValue, "again" + unit, unit, "m", 100));
  }
  send(std::move(again));
  if (HasFatalFailure()) return;
  EXPECT_EQ((*store)->Stats().units_read_back, 30u);
  ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
  store->reset();
  store = EventStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
}

// Evicted units are read back in one MultiGet per group, before the group
// is applied: a batch whose events come back to many evicted units, each
// several times and not in a row, and to new units whose 64-bit hash equals
// an evicted one's (OneHash: all of them), counts every event once, reads
// each evicted unit back once, and survives a crash.
uint64_t OneUnitHash(std::string_view) { return 7; }

TEST(EventStoreLayout, EvictedUnitsComeBackTogetherInOneGroup) {
  for (auto* hash : {static_cast<uint64_t (*)(std::string_view)>(nullptr), &OneUnitHash}) {
    TempDirectory dir;
    const EventStoreOptions options{.directory = dir.path(),
                                    .checkpoint_events = 50,
                                    .max_cached_units = 20,
                                    .checkpoint_on_close = false,
                                    .unit_hash = hash};
    std::vector<Event> events;
    {
      auto store = EventStore::Open(options);
      ASSERT_TRUE(store.ok()) << store.status();
      auto send = [&](std::vector<Event> batch) {
        events.insert(events.end(), batch.begin(), batch.end());
        ASSERT_TRUE((*store)->Append(std::move(batch)).ok());
        (void)(*store)->Sums("e");  // aggregated, and checkpointed when due
      };
      // 100 units in batches of 10: all but the last ones evicted.
      for (int round = 0; round < 10; ++round) {
        std::vector<Event> batch;
        for (int i = 0; i < 10; ++i) {
          std::string unit = "u" + std::to_string(round * 10 + i);
          batch.push_back(Exposure("x" + unit, unit, i % 2 ? "a" : "b"));
          batch.push_back(Metric(EventType::kValue, "v" + unit, unit, "m", i + 1));
        }
        send(std::move(batch));
        if (HasFatalFailure()) return;
      }
      const uint64_t read_back_before = (*store)->Stats().units_read_back;
      // The first 40 units three times each, interleaved, and 5 new units.
      std::vector<Event> again;
      for (int pass = 0; pass < 3; ++pass) {
        for (int u = 0; u < 40; ++u) {
          std::string unit = "u" + std::to_string(u);
          again.push_back(Metric(EventType::kValue, "again-" + std::to_string(pass) + "-" + unit,
                                 unit, "m", 10));
        }
        std::string fresh = "new" + std::to_string(pass);
        again.push_back(Exposure("x" + fresh, fresh, "a"));
        again.push_back(Metric(EventType::kValue, "v" + fresh, fresh, "m", 3));
      }
      send(std::move(again));
      if (HasFatalFailure()) return;
      EventStoreStats stats = (*store)->Stats();
      EXPECT_EQ(stats.units_read_back - read_back_before, 40u) << "each evicted unit once";
      ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
    }  // closed without a final checkpoint, as a crash would
    auto store = EventStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    ExpectSumsNear((*store)->Sums("e"), Naive(events, "e"));
  }
}

}  // namespace
}  // namespace capstan::experiments
