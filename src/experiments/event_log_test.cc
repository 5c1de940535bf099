// EventLog: records read back in order from any event across segment rolls,
// a torn tail (cut short, or a bad checksum with nothing after it) dropped on
// open and appended over, damage before the tail refused with the file and
// offset, and the frame decoder on edge cases.
#include "experiments/event_log.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "experiments/event_store.h"
#include "experiments/event_store_format.h"
#include "experiments/event_store_test_util.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

using event_store_testing::Framed;
using event_store_testing::TempDirectory;

struct Seen {
  uint64_t first;
  std::vector<Event> events;
};

std::vector<Seen> ReadAll(const EventLog& log, uint64_t from) {
  std::vector<Seen> seen;
  absl::Status s = log.Read(from, [&](uint64_t first, std::string_view record) -> absl::Status {
    absl::StatusOr<std::vector<Event>> events = DecodeLogRecord(record);
    if (!events.ok()) return events.status();
    seen.push_back(Seen{first, *std::move(events)});
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  return seen;
}

std::vector<std::filesystem::path> Segments(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(EventLog, ReadsRecordsInOrderFromAnyEventAcrossSegments) {
  TempDirectory dir;
  const EventLogOptions small{.segment_bytes = 600, .preallocate_bytes = 512};
  {
    auto log = EventLog::Open(dir.path(), small);
    ASSERT_TRUE(log.ok()) << log.status();
    for (uint32_t i = 0; i < 20; ++i) {
      std::string framed = Framed("r" + std::to_string(i), i % 3 + 1);
      ASSERT_TRUE((*log)->Append(&framed, i % 3 + 1).ok());
    }
    EXPECT_EQ((*log)->next_sequence(), 39u);  // 6 × (1+2+3) + 1 + 2
    EXPECT_GT((*log)->segment_count(), 3u);
  }
  auto log = EventLog::Open(dir.path(), small);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->next_sequence(), 39u);
  std::vector<Seen> all = ReadAll(**log, 0);
  ASSERT_EQ(all.size(), 20u);
  uint64_t expected = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].first, expected);
    ASSERT_EQ(all[i].events.size(), i % 3 + 1);
    EXPECT_EQ(all[i].events[0].key, "r" + std::to_string(i) + "-0");
    expected += all[i].events.size();
  }
  // From an event inside a record: that record first, then the rest.
  std::vector<Seen> tail = ReadAll(**log, 20);
  ASSERT_FALSE(tail.empty());
  EXPECT_LE(tail.front().first, 20u);
  EXPECT_GT(tail.front().first + tail.front().events.size(), 20u);
  EXPECT_EQ(tail.back().first, all.back().first);
  EXPECT_TRUE(ReadAll(**log, 39).empty());
  // Appending continues the sequence.
  std::string framed = Framed("more", 2);
  ASSERT_TRUE((*log)->Append(&framed, 2).ok());
  EXPECT_EQ((*log)->next_sequence(), 41u);
  EXPECT_EQ(ReadAll(**log, 39).size(), 1u);
}

// A crash while the last record was written leaves part of it (or all of it
// with some bytes not on disk): it was never acknowledged, so Open drops it.
TEST(EventLog, DropsATornTailAndAppendsOverIt) {
  for (int damage = 0; damage < 3; ++damage) {
    SCOPED_TRACE(damage);
    TempDirectory dir;
    size_t second_end = 0;
    {
      auto log = EventLog::Open(dir.path(), {});
      ASSERT_TRUE(log.ok()) << log.status();
      for (int i = 0; i < 3; ++i) {
        std::string framed = Framed("k" + std::to_string(i), 4);
        ASSERT_TRUE((*log)->Append(&framed, 4).ok());
        if (i == 1) second_end = EventLog::kSegmentHeaderBytes + 2 * framed.size();
      }
    }
    std::filesystem::path segment = Segments(dir.path()).back();
    {
      std::fstream file(segment, std::ios::in | std::ios::out | std::ios::binary);
      if (damage == 0) {
        file.close();
        std::filesystem::resize_file(segment, second_end + 30);  // cut short
      } else if (damage == 1) {
        file.seekp(static_cast<std::streamoff>(second_end + 40));  // a byte of the last record
        file.put('\x7f');
      } else {
        file.seekp(static_cast<std::streamoff>(second_end));  // its length: lost, zeros after
        file.write("\0\0\0\0\0\0\0\0", 8);
      }
    }
    auto log = EventLog::Open(dir.path(), {});
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->next_sequence(), 8u);
    EXPECT_EQ(std::filesystem::file_size(segment), second_end);
    std::string framed = Framed("after", 1);
    ASSERT_TRUE((*log)->Append(&framed, 1).ok());
    log->reset();
    log = EventLog::Open(dir.path(), {});
    ASSERT_TRUE(log.ok()) << log.status();
    std::vector<Seen> all = ReadAll(**log, 0);
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[2].first, 8u);
    EXPECT_EQ(all[2].events[0].key, "after-0");
  }
}

TEST(EventLog, RefusesDamageBeforeTheTailNamingFileAndOffset) {
  TempDirectory dir;
  size_t record_bytes = 0;
  {
    auto log = EventLog::Open(dir.path(), {});
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 3; ++i) {
      std::string framed = Framed("k" + std::to_string(i), 4);
      record_bytes = framed.size();
      ASSERT_TRUE((*log)->Append(&framed, 4).ok());
    }
  }
  std::filesystem::path segment = Segments(dir.path()).back();
  {
    std::fstream file(segment, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(EventLog::kSegmentHeaderBytes + record_bytes + 40));
    file.put('\x7f');  // inside the second of three records
  }
  auto log = EventLog::Open(dir.path(), {});
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(log.status().message().find(segment.string()), std::string_view::npos);
  EXPECT_NE(log.status().message().find(
                "at byte " + std::to_string(EventLog::kSegmentHeaderBytes + record_bytes)),
            std::string_view::npos)
      << log.status();
}

TEST(EventLog, RefusesAMissingSegment) {
  TempDirectory dir;
  {
    auto log = EventLog::Open(dir.path(), {.segment_bytes = 600, .preallocate_bytes = 512});
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 6; ++i) {
      std::string framed = Framed("k" + std::to_string(i), 4);
      ASSERT_TRUE((*log)->Append(&framed, 4).ok());
    }
  }
  std::vector<std::filesystem::path> segments = Segments(dir.path());
  ASSERT_GE(segments.size(), 3u);
  std::filesystem::remove(segments[1]);
  auto log = EventLog::Open(dir.path(), {.segment_bytes = 600, .preallocate_bytes = 512});
  ASSERT_TRUE(log.ok()) << log.status();  // the tail is fine; reading across the gap is not
  absl::Status s = (*log)->Read(0, [](uint64_t, std::string_view) { return absl::OkStatus(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
}

TEST(EventLog, DecodesFramesAndTellsEndFromDamage) {
  uint64_t first = 0;
  std::string_view record;
  size_t consumed = 0;
  EXPECT_EQ(DecodeLogFrame("", &first, &record, &consumed), LogFrameResult::kEnd);
  EXPECT_EQ(DecodeLogFrame(std::string(100, '\0'), &first, &record, &consumed),
            LogFrameResult::kEnd);
  EXPECT_EQ(DecodeLogFrame("\x01\x02", &first, &record, &consumed), LogFrameResult::kIncomplete);

  TempDirectory dir;
  auto log = EventLog::Open(dir.path(), {.preallocate_bytes = 0});
  ASSERT_TRUE(log.ok()) << log.status();
  std::string framed = Framed("a", 2);
  ASSERT_TRUE((*log)->Append(&framed, 2).ok());
  ASSERT_EQ(DecodeLogFrame(framed, &first, &record, &consumed), LogFrameResult::kOk);
  EXPECT_EQ(first, 0u);
  EXPECT_EQ(consumed, framed.size());
  EXPECT_EQ(DecodeLogRecord(record)->size(), 2u);
  EXPECT_EQ(DecodeLogFrame(std::string_view(framed).substr(0, framed.size() - 1), &first, &record,
                           &consumed),
            LogFrameResult::kIncomplete);
  std::string damaged = framed;
  damaged[20] ^= 1;
  EXPECT_EQ(DecodeLogFrame(damaged, &first, &record, &consumed), LogFrameResult::kCorrupt);
  std::string huge = framed;
  huge[3] = '\x7f';  // a length past any record
  EXPECT_EQ(DecodeLogFrame(huge, &first, &record, &consumed), LogFrameResult::kCorrupt);
}

}  // namespace
}  // namespace capstan::experiments
