#include "net/buffer.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace capstan::net {
namespace {

TEST(BufferTest, AppendCutConsumeKeepBytesInOrder) {
  Buffer b;
  b.Append("hello ");
  b.Append("world");
  EXPECT_EQ(b.size(), 11u);
  EXPECT_EQ(b.slice_count(), 1u);  // small appends share the tail block
  Buffer head = b.Cut(5);
  EXPECT_EQ(head.ToString(), "hello");
  EXPECT_EQ(b.ToString(), " world");
  b.Consume(1);
  EXPECT_EQ(b.ToString(), "world");
}

// AppendTo adds every slice, in order, after what the string held.
TEST(BufferTest, AppendToAddsEverySliceInOrder) {
  Buffer b;
  b.Append(std::string(Buffer::kDefaultBlockSize - 3, 'a'));
  b.Append("bcdefg");  // spills into a second block
  Buffer other("xyz");
  b.Append(std::move(other));
  ASSERT_GE(b.slice_count(), 2u);
  std::string out = "head:";
  b.AppendTo(&out);
  const std::string expected =
      "head:" + std::string(Buffer::kDefaultBlockSize - 3, 'a') + "bcdefg" + "xyz";
  EXPECT_EQ(out, expected);
  Buffer().AppendTo(&out);  // empty: nothing added
  EXPECT_EQ(out, expected);
}

TEST(BufferTest, CutSharesBlocksAndOwnersExtendWithoutOverwriting) {
  Buffer b;
  b.Append("abc");
  Buffer shared = b.Share();
  // Both end at the block's high-water mark; only the first to append may
  // grow into the block, the other must not overwrite those bytes.
  b.Append("XYZ");
  shared.Append("123");
  EXPECT_EQ(b.ToString(), "abcXYZ");
  EXPECT_EQ(shared.ToString(), "abc123");
  EXPECT_EQ(shared.slice_count(), 2u);
}

TEST(BufferTest, ShareRangeSpansSlicesWithoutCopying) {
  Buffer b;
  b.Append(std::string(Buffer::kDefaultBlockSize - 2, 'a'));
  b.Append("bcdef");  // crosses into a second block
  ASSERT_EQ(b.slice_count(), 2u);
  Buffer part = b.ShareRange(Buffer::kDefaultBlockSize - 4, 6);
  EXPECT_EQ(part.ToString(), "aabcde");
  EXPECT_EQ(part.slice_count(), 2u);
  EXPECT_EQ(part.slice(0).data(), b.slice(0).data() + Buffer::kDefaultBlockSize - 4);
  EXPECT_EQ(b.ShareRange(0, 0).size(), 0u);
  EXPECT_EQ(b.ShareRange(b.size() - 1, 1).ToString(), "f");
  // The original keeps its bytes when the part is appended to.
  part.Append("Z");
  EXPECT_EQ(b.ToString().substr(b.size() - 3), "def");
}

TEST(BufferTest, AppendBufferMovesLargeSlicesAndCopiesSmallOnes) {
  Buffer big;
  big.Append(std::string(100000, 'x'));
  Buffer out;
  out.Append("header");
  size_t before = out.slice_count();
  out.Append(std::move(big));
  EXPECT_TRUE(big.empty());
  EXPECT_GT(out.slice_count(), before);
  Buffer small("tail");
  size_t slices = out.slice_count();
  out.Append(std::move(small));
  EXPECT_LE(out.slice_count(), slices + 1);
  EXPECT_EQ(out.size(), 6u + 100000u + 4u);
  EXPECT_EQ(out.ToString().substr(100006), "tail");
}

TEST(BufferTest, ReserveCommitWritesInPlace) {
  Buffer b;
  b.Append("ab");
  std::span<char> space = b.Reserve(10);
  ASSERT_GE(space.size(), 10u);
  std::memcpy(space.data(), "cdef", 4);
  b.Commit(4);
  EXPECT_EQ(b.ToString(), "abcdef");
  EXPECT_EQ(b.slice_count(), 1u);
  // The unused reservation is returned: a later append continues in place.
  b.Append("g");
  EXPECT_EQ(b.slice_count(), 1u);
  EXPECT_EQ(b.ToString(), "abcdefg");
  // Reserve then commit nothing leaves the buffer unchanged.
  b.Reserve(1 << 20);
  b.Commit(0);
  EXPECT_EQ(b.ToString(), "abcdefg");
}

TEST(BufferTest, AReservationNeverCommittedIsFreedWithTheBuffer) {
  // LeakSanitizer (make test-asan) fails this test if the block stays.
  {
    Buffer fresh;
    fresh.Reserve(5000, 5000);
  }
  Buffer b;
  b.Append("ab");
  b.Reserve(1 << 16);  // a block of its own
  b.Clear();
  EXPECT_EQ(b.size(), 0u);
  b.Append("cd");
  b.Reserve(4);  // the tail of the last block
  b.Clear();
  b.Append("ef");
  EXPECT_EQ(b.ToString(), "ef");
}

TEST(BufferTest, PeekFlattenAndIovecs) {
  Buffer b;
  b.Append(std::string(Buffer::kDefaultBlockSize, 'a'));
  Buffer other = b.Share();  // forces the next append into a new block
  b.Append("bcd");
  ASSERT_EQ(b.slice_count(), 2u);
  std::string scratch;
  std::string_view first = b.Peek(4, &scratch);
  EXPECT_EQ(first, "aaaa");
  EXPECT_TRUE(scratch.empty());  // no copy needed
  b.Consume(Buffer::kDefaultBlockSize - 2);
  EXPECT_EQ(b.Peek(4, &scratch), "aabc");
  iovec iov[4];
  EXPECT_EQ(b.FillIovecs(iov, 4), 2);
  EXPECT_EQ(iov[0].iov_len + iov[1].iov_len, 5u);
  EXPECT_EQ(b.Flatten(), "aabcd");
  EXPECT_EQ(b.slice_count(), 1u);
}

// Random operations against a std::string model.
TEST(BufferTest, RandomOperationsMatchAStringModel) {
  std::mt19937 rng(7);
  Buffer b;
  std::string model;
  std::vector<std::pair<Buffer, std::string>> kept;
  for (int step = 0; step < 20000; ++step) {
    int op = static_cast<int>(rng() % 6);
    if (op <= 1) {
      std::string piece(rng() % 3000, static_cast<char>('a' + rng() % 26));
      b.Append(piece);
      model += piece;
    } else if (op == 2 && !model.empty()) {
      size_t n = rng() % (model.size() + 1);
      Buffer head = b.Cut(n);
      ASSERT_EQ(head.ToString(), model.substr(0, n));
      if (kept.size() < 8) kept.emplace_back(std::move(head), model.substr(0, n));
      model.erase(0, n);
    } else if (op == 3 && !model.empty()) {
      size_t n = rng() % (model.size() + 1);
      b.Consume(n);
      model.erase(0, n);
    } else if (op == 4) {
      std::span<char> space = b.Reserve(1 + rng() % 5000);
      size_t n = rng() % (space.size() + 1);
      for (size_t i = 0; i < n; ++i) space[i] = static_cast<char>('A' + i % 26);
      b.Commit(n);
      for (size_t i = 0; i < n; ++i) model += static_cast<char>('A' + i % 26);
    } else if (op == 5 && !kept.empty()) {
      // Kept heads still read what they held, whatever happened since.
      auto& [buf, text] = kept[rng() % kept.size()];
      ASSERT_EQ(buf.ToString(), text);
      buf.Append("!");
      text += "!";
    }
    ASSERT_EQ(b.size(), model.size());
  }
  EXPECT_EQ(b.ToString(), model);
  for (auto& [buf, text] : kept) EXPECT_EQ(buf.ToString(), text);
}

}  // namespace
}  // namespace capstan::net
