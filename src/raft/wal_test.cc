#include "raft/wal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::raft {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class WalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("wal_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<WalEntry> ReadAll(Wal& wal, uint64_t from = 1) {
    std::vector<WalEntry> out;
    EXPECT_TRUE(wal.Replay(from,
                           [&](const WalEntry& e) {
                             out.push_back(e);
                             return absl::OkStatus();
                           })
                    .ok());
    return out;
  }

  static std::vector<WalEntry> Entries(uint64_t first, int n, size_t size = 10) {
    std::vector<WalEntry> v;
    for (int i = 0; i < n; ++i) {
      v.push_back({first + i, 1, std::string(size, static_cast<char>('a' + (first + i) % 26))});
    }
    return v;
  }

  std::vector<fs::path> Segments() {
    std::vector<fs::path> v;
    for (auto& e : fs::directory_iterator(dir_)) v.push_back(e.path());
    std::sort(v.begin(), v.end());
    return v;
  }

  fs::path dir_;
};

TEST_F(WalTest, AppendSyncReopenReplay) {
  {
    auto wal = Wal::Open(dir_, {});
    ASSERT_TRUE(wal.ok()) << wal.status();
    ASSERT_TRUE((*wal)->Append(Entries(1, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
    EXPECT_EQ((*wal)->last_index(), 100u);
  }
  auto wal = Wal::Open(dir_, {});
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ((*wal)->last_index(), 100u);
  auto all = ReadAll(**wal, 51);
  ASSERT_EQ(all.size(), 50u);
  EXPECT_EQ(all.front().index, 51u);
  EXPECT_EQ(all.front().data, Entries(51, 1)[0].data);
  ASSERT_TRUE((*wal)->Append(Entries(101, 1)).ok());
  EXPECT_FALSE((*wal)->Append(Entries(105, 1)).ok()) << "a gap in indexes must be refused";
}

TEST_F(WalTest, NewLogStartsAtRequestedIndex) {
  auto wal = Wal::Open(dir_, {}, 42);
  ASSERT_TRUE(wal.ok());
  EXPECT_EQ((*wal)->last_index(), 41u);
  ASSERT_TRUE((*wal)->Append(Entries(42, 3)).ok());
  EXPECT_EQ(ReadAll(**wal, 42).size(), 3u);
}

TEST_F(WalTest, RollsSegmentsAndReleasesOldOnes) {
  Wal::Options opts;
  opts.segment_bytes = 1024;
  auto wal = Wal::Open(dir_, opts);
  ASSERT_TRUE(wal.ok());
  for (uint64_t i = 1; i <= 200; i += 10) ASSERT_TRUE((*wal)->Append(Entries(i, 10, 50)).ok());
  ASSERT_TRUE((*wal)->Sync().ok());
  size_t before = (*wal)->segment_count();
  EXPECT_GT(before, 5u);
  ASSERT_TRUE((*wal)->ReleaseTo(150).ok());
  EXPECT_LT((*wal)->segment_count(), before);
  EXPECT_LE((*wal)->first_index(), 151u);
  auto rest = ReadAll(**wal, 151);
  ASSERT_EQ(rest.size(), 50u);
  EXPECT_EQ(rest.front().index, 151u);
  EXPECT_FALSE((*wal)->Replay(1, [](const WalEntry&) { return absl::OkStatus(); }).ok())
      << "replay from a released index must fail loudly";

  wal->reset();
  auto reopened = Wal::Open(dir_, opts);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->last_index(), 200u);
}

TEST_F(WalTest, RepairsTornTail) {
  {
    auto wal = Wal::Open(dir_, {});
    ASSERT_TRUE((*wal)->Append(Entries(1, 10, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  fs::path seg = Segments().back();
  auto size = fs::file_size(seg);
  fs::resize_file(seg, size - 30);  // cut the last record short
  {
    auto wal = Wal::Open(dir_, {});
    ASSERT_TRUE(wal.ok()) << wal.status();
    EXPECT_EQ((*wal)->last_index(), 9u);
    ASSERT_TRUE((*wal)->Append(Entries(10, 2, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  auto wal = Wal::Open(dir_, {});
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ(ReadAll(**wal).size(), 11u);
}

TEST_F(WalTest, RepairsZeroFilledTail) {
  {
    auto wal = Wal::Open(dir_, {});
    ASSERT_TRUE((*wal)->Append(Entries(1, 5)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  std::ofstream(Segments().back(), std::ios::app) << std::string(4096, '\0');
  auto wal = Wal::Open(dir_, {});
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ((*wal)->last_index(), 5u);
}

TEST_F(WalTest, RefusesCorruptionBeforeIntactRecords) {
  {
    auto wal = Wal::Open(dir_, {});
    ASSERT_TRUE((*wal)->Append(Entries(1, 10, 100)).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  fs::path seg = Segments().back();
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20 + 125 * 2 + 40);  // inside the third record's payload
    f.put('X');
  }
  auto wal = Wal::Open(dir_, {});
  ASSERT_FALSE(wal.ok());
  EXPECT_EQ(wal.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(wal.status().message()), HasSubstr(seg.filename().string()));
  EXPECT_THAT(std::string(wal.status().message()), HasSubstr("offset 270"));
}

TEST(WalRecord, RoundTripAndRejectsDamage) {
  std::string buf;
  EncodeRecord({7, 3, "hello"}, &buf);
  WalEntry e;
  size_t consumed = 0;
  ASSERT_EQ(DecodeRecord(buf, &e, &consumed), DecodeResult::kOk);
  EXPECT_EQ(consumed, buf.size());
  EXPECT_EQ(e.index, 7u);
  EXPECT_EQ(e.term, 3u);
  EXPECT_EQ(e.data, "hello");
  EXPECT_EQ(DecodeRecord(buf.substr(0, buf.size() - 1), &e, &consumed), DecodeResult::kIncomplete);
  std::string bad = buf;
  bad[bad.size() - 1] ^= 1;
  EXPECT_EQ(DecodeRecord(bad, &e, &consumed), DecodeResult::kCorrupt);
  EXPECT_EQ(DecodeRecord(std::string(32, '\0'), &e, &consumed), DecodeResult::kEnd);
}

}  // namespace
}  // namespace capstan::raft
