#include "raft/wal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/test_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::raft {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class WalTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir("wal_test"); }
  void TearDown() override { fs::remove_all(dir_); }

  static std::vector<Entry> Entries(uint64_t first, int n, size_t size = 10, uint64_t term = 1) {
    std::vector<Entry> v;
    for (int i = 0; i < n; ++i) {
      v.push_back({first + i, term, EntryType::kNormal,
                   std::string(size, static_cast<char>('a' + (first + i) % 26))});
    }
    return v;
  }

  absl::StatusOr<std::unique_ptr<Wal>> Open(WalState* state, Wal::Options opts = {}) {
    return Wal::Open(dir_, opts, state);
  }

  // Appends `entries` to the log in dir_, syncs and closes it.
  void WriteSynced(WalState* state, const std::vector<Entry>& entries) {
    auto wal = Open(state);
    ASSERT_TRUE(wal.ok()) << wal.status();
    ASSERT_TRUE((*wal)->Append(entries).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  // Overwrites bytes of the newest segment at `offset`, as a torn or corrupt
  // write would leave them; returns the segment's path.
  fs::path OverwriteNewestSegment(std::streamoff offset, std::string_view bytes) {
    fs::path seg = Segments().back();
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(offset);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return seg;
  }

  std::vector<fs::path> Segments() {
    std::vector<fs::path> v;
    for (auto& e : fs::directory_iterator(dir_)) v.push_back(e.path());
    std::sort(v.begin(), v.end());
    return v;
  }

  fs::path dir_;
};

TEST_F(WalTest, AppendSyncReopen) {
  WalState state;
  {
    auto wal = Open(&state);
    ASSERT_TRUE(wal.ok()) << wal.status();
    EXPECT_TRUE(state.entries.empty());
    auto ents = Entries(1, 100);
    ents[4].type = EntryType::kConfChange;
    ASSERT_TRUE((*wal)->Append(ents).ok());
    ASSERT_TRUE((*wal)->SaveHardState({3, 2, 90}).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
    EXPECT_EQ((*wal)->last_index(), 100u);
  }
  auto wal = Open(&state);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ((*wal)->last_index(), 100u);
  ASSERT_EQ(state.entries.size(), 100u);
  EXPECT_EQ(state.entries[50], Entries(51, 1)[0]);
  EXPECT_EQ(state.entries[4].type, EntryType::kConfChange);
  EXPECT_EQ(state.hard_state, (HardState{3, 2, 90}));
  ASSERT_TRUE((*wal)->Append(Entries(101, 1)).ok());
  EXPECT_FALSE((*wal)->Append(Entries(105, 1)).ok()) << "a gap in indexes must be refused";
}

TEST_F(WalTest, LaterEntriesReplaceAConflictingSuffix) {
  WalState state;
  {
    auto wal = Open(&state);
    ASSERT_TRUE((*wal)->Append(Entries(1, 10, 10, 1)).ok());
    ASSERT_TRUE((*wal)->Append(Entries(6, 2, 10, 2)).ok());
    EXPECT_EQ((*wal)->last_index(), 7u);
    ASSERT_TRUE((*wal)->Append(Entries(8, 1, 10, 2)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  auto wal = Open(&state);
  ASSERT_TRUE(wal.ok()) << wal.status();
  ASSERT_EQ(state.entries.size(), 8u);
  EXPECT_EQ(state.entries[4].term, 1u);
  EXPECT_EQ(state.entries[5].term, 2u);
  EXPECT_EQ(state.entries[7].index, 8u);
  EXPECT_EQ(state.entries[7].term, 2u);
}

TEST_F(WalTest, SnapshotPastTheEndRestartsTheLog) {
  WalState state;
  {
    auto wal = Open(&state);
    ASSERT_TRUE((*wal)->Append(Entries(1, 10)).ok());
    ASSERT_TRUE((*wal)->SaveSnapshot(100, 4).ok());
    EXPECT_EQ((*wal)->last_index(), 100u);
    EXPECT_FALSE((*wal)->Append(Entries(50, 1)).ok()) << "entries under the snapshot";
    ASSERT_TRUE((*wal)->Append(Entries(101, 2, 10, 4)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  auto wal = Open(&state);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ(state.snapshot_index, 100u);
  EXPECT_EQ(state.snapshot_term, 4u);
  ASSERT_EQ(state.entries.size(), 2u);
  EXPECT_EQ(state.entries[0].index, 101u);
}

TEST_F(WalTest, RollsSegmentsAndReleasesOldOnesKeepingTheHardState) {
  Wal::Options opts;
  opts.segment_bytes = 1024;
  WalState state;
  auto wal = Open(&state, opts);
  ASSERT_TRUE(wal.ok());
  ASSERT_TRUE((*wal)->SaveHardState({7, 1, 5}).ok());
  for (uint64_t i = 1; i <= 200; i += 10) ASSERT_TRUE((*wal)->Append(Entries(i, 10, 50)).ok());
  ASSERT_TRUE((*wal)->Sync().ok());
  size_t before = (*wal)->segment_count();
  EXPECT_GT(before, 5u);
  ASSERT_TRUE((*wal)->ReleaseTo(150, 1).ok());
  EXPECT_LT((*wal)->segment_count(), before);

  wal->reset();
  auto reopened = Open(&state, opts);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->last_index(), 200u);
  EXPECT_EQ(state.hard_state, (HardState{7, 1, 5})) << "the hard state lived in a released segment";
  EXPECT_EQ(state.snapshot_index, 150u);
  ASSERT_EQ(state.entries.size(), 50u);
  EXPECT_EQ(state.entries.front().index, 151u);
}

TEST_F(WalTest, RefusesAMissingSegment) {
  Wal::Options opts;
  opts.segment_bytes = 1024;
  WalState state;
  {
    auto wal = Open(&state, opts);
    for (uint64_t i = 1; i <= 100; i += 10) ASSERT_TRUE((*wal)->Append(Entries(i, 10, 50)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  auto segs = Segments();
  ASSERT_GT(segs.size(), 3u);
  fs::remove(segs[1]);
  auto wal = Open(&state, opts);
  ASSERT_FALSE(wal.ok());
  EXPECT_EQ(wal.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(wal.status().message()), HasSubstr("missing"));
}

TEST_F(WalTest, RepairsTornTail) {
  Wal::Options opts;
  opts.preallocate_bytes = 0;  // the segment ends at its last record
  WalState state;
  {
    auto wal = Open(&state, opts);
    ASSERT_TRUE((*wal)->Append(Entries(1, 10, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  fs::path seg = Segments().back();
  auto size = fs::file_size(seg);
  fs::resize_file(seg, size - 30);  // cut the last record short
  {
    auto wal = Open(&state, opts);
    ASSERT_TRUE(wal.ok()) << wal.status();
    EXPECT_EQ((*wal)->last_index(), 9u);
    ASSERT_TRUE((*wal)->Append(Entries(10, 2, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  auto wal = Open(&state, opts);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ(state.entries.size(), 11u);
}

// Segment header 20 bytes, snapshot marker 25, hard state 33, then entries:
// 125 bytes each with a 100-byte payload.
constexpr uint64_t kFirstEntryOffset = 78;
constexpr uint64_t kEntry100Bytes = 125;

TEST_F(WalTest, PreallocatedSegmentReopensAfterItsLastRecord) {
  Wal::Options opts;
  opts.preallocate_bytes = 64 << 10;
  WalState state;
  {
    auto wal = Open(&state, opts);
    ASSERT_TRUE((*wal)->Append(Entries(1, 10, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  fs::path seg = Segments().back();
  EXPECT_EQ(fs::file_size(seg), 64u << 10) << "zeros are written ahead of the records";
  {
    auto wal = Open(&state, opts);
    ASSERT_TRUE(wal.ok()) << wal.status();
    EXPECT_EQ((*wal)->last_index(), 10u);
    // Appending continues right after the last record, not at the file's end,
    // and past the zeroed part the file grows by another step.
    ASSERT_TRUE((*wal)->Append(Entries(11, 600, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  EXPECT_EQ(fs::file_size(seg), 128u << 10);
  auto wal = Open(&state, opts);
  ASSERT_TRUE(wal.ok()) << wal.status();
  ASSERT_EQ(state.entries.size(), 610u);
  EXPECT_EQ(state.entries[10], Entries(11, 1, 100)[0]);
  EXPECT_EQ(state.entries.back(), Entries(610, 1, 100)[0]);
}

TEST_F(WalTest, PreallocationStopsAtTheSegmentSize) {
  Wal::Options opts;
  opts.segment_bytes = 4096;
  opts.preallocate_bytes = 64 << 10;
  WalState state;
  auto wal = Open(&state, opts);
  for (uint64_t i = 1; i <= 200; i += 10) ASSERT_TRUE((*wal)->Append(Entries(i, 10, 100)).ok());
  ASSERT_TRUE((*wal)->Sync().ok());
  EXPECT_GT((*wal)->segment_count(), 3u);
  for (const fs::path& seg : Segments()) {
    // A batch may run past the segment size (the log rolls before the next one).
    EXPECT_LE(fs::file_size(seg), 4096u + 10 * kEntry100Bytes) << seg;
  }
}

TEST_F(WalTest, RepairsTornTailInsidePreallocatedZeros) {
  WalState state;
  WriteSynced(&state, Entries(1, 10, 100));
  // A torn write: the last record's final bytes never reached the disk.
  OverwriteNewestSegment(static_cast<std::streamoff>(kFirstEntryOffset + 10 * kEntry100Bytes - 30),
                         std::string(30, '\0'));
  {
    auto wal = Open(&state);
    ASSERT_TRUE(wal.ok()) << wal.status();
    EXPECT_EQ((*wal)->last_index(), 9u);
    ASSERT_TRUE((*wal)->Append(Entries(10, 2, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  auto wal = Open(&state);
  ASSERT_TRUE(wal.ok()) << wal.status();
  ASSERT_EQ(state.entries.size(), 11u);
  EXPECT_EQ(state.entries.back(), Entries(11, 1, 100)[0]);
}

TEST_F(WalTest, RepairsZeroFilledTail) {
  WalState state;
  WriteSynced(&state, Entries(1, 5));
  std::ofstream(Segments().back(), std::ios::app) << std::string(4096, '\0');
  auto wal = Open(&state);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ((*wal)->last_index(), 5u);
}

TEST_F(WalTest, RefusesCorruptionBeforeIntactRecords) {
  WalState state;
  WriteSynced(&state, Entries(1, 10, 100));
  // This lands inside the third entry's payload.
  fs::path seg = OverwriteNewestSegment(kFirstEntryOffset + kEntry100Bytes * 2 + 40, "X");
  auto wal = Open(&state);
  ASSERT_FALSE(wal.ok());
  EXPECT_EQ(wal.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(wal.status().message()), HasSubstr(seg.filename().string()));
  EXPECT_THAT(std::string(wal.status().message()), HasSubstr("offset 328"));
}

TEST(WalRecord, RoundTripAndRejectsDamage) {
  std::string buf;
  WalRecord in{.kind = WalRecord::Kind::kConfEntry,
               .entry = {7, 3, EntryType::kConfChange, "hello"}};
  EncodeRecord(in, &buf);
  WalRecord out;
  size_t consumed = 0;
  ASSERT_EQ(DecodeRecord(buf, &out, &consumed), DecodeResult::kOk);
  EXPECT_EQ(consumed, buf.size());
  EXPECT_EQ(out.kind, WalRecord::Kind::kConfEntry);
  EXPECT_EQ(out.entry, in.entry);
  EXPECT_EQ(DecodeRecord(buf.substr(0, buf.size() - 1), &out, &consumed),
            DecodeResult::kIncomplete);
  std::string bad = buf;
  bad[bad.size() - 1] ^= 1;
  EXPECT_EQ(DecodeRecord(bad, &out, &consumed), DecodeResult::kCorrupt);
  EXPECT_EQ(DecodeRecord(std::string(32, '\0'), &out, &consumed), DecodeResult::kEnd);

  buf.clear();
  EncodeRecord({.kind = WalRecord::Kind::kHardState, .hard_state = {5, 2, 9}}, &buf);
  EncodeRecord({.kind = WalRecord::Kind::kSnapshot, .snapshot_index = 40, .snapshot_term = 4},
               &buf);
  ASSERT_EQ(DecodeRecord(buf, &out, &consumed), DecodeResult::kOk);
  EXPECT_EQ(out.hard_state, (HardState{5, 2, 9}));
  ASSERT_EQ(DecodeRecord(std::string_view(buf).substr(consumed), &out, &consumed),
            DecodeResult::kOk);
  EXPECT_EQ(out.snapshot_index, 40u);
  EXPECT_EQ(out.snapshot_term, 4u);
}

}  // namespace
}  // namespace capstan::raft
