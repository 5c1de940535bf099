#include "store/index.h"

#include "gtest/gtest.h"

namespace capstan::store {
namespace {

TEST(KeyIndex, VersionsAndGenerations) {
  KeyIndex ki;
  ki.Put({2, 0});
  ki.Put({4, 0});
  ki.Tombstone({6, 0});
  ki.Put({8, 1});
  IndexHit hit;
  EXPECT_FALSE(ki.Get(1, &hit)) << "before creation";
  ASSERT_TRUE(ki.Get(3, &hit));
  EXPECT_EQ(hit.modified.main, 2);
  EXPECT_EQ(hit.create_main, 2);
  EXPECT_EQ(hit.version, 1);
  ASSERT_TRUE(ki.Get(5, &hit));
  EXPECT_EQ(hit.modified.main, 4);
  EXPECT_EQ(hit.version, 2);
  EXPECT_FALSE(ki.Get(6, &hit)) << "deleted at 6";
  EXPECT_FALSE(ki.Get(7, &hit));
  ASSERT_TRUE(ki.Get(100, &hit));
  EXPECT_EQ(hit.modified, (Revision{8, 1}));
  EXPECT_EQ(hit.create_main, 8);
  EXPECT_EQ(hit.version, 1) << "a new generation restarts the version";
}

TEST(KeyIndex, CompactKeepsWhatReadsAtOrAfterTheRevisionNeed) {
  KeyIndex ki;
  ki.Put({2, 0});
  ki.Put({4, 0});
  ki.Tombstone({6, 0});
  ki.Put({8, 0});
  ki.Put({9, 0});
  std::vector<DroppedRevision> dropped;
  EXPECT_FALSE(ki.Compact(5, &dropped));
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0].rev.main, 2);
  IndexHit hit;
  ASSERT_TRUE(ki.Get(5, &hit));
  EXPECT_EQ(hit.version, 2) << "versions survive compaction";

  dropped.clear();
  EXPECT_FALSE(ki.Compact(6, &dropped));
  EXPECT_EQ(dropped.size(), 1u) << "the put at 4 goes; the tombstone at exactly 6 stays";

  dropped.clear();
  EXPECT_FALSE(ki.Compact(9, &dropped));
  ASSERT_EQ(dropped.size(), 2u);
  EXPECT_TRUE(dropped[0].tombstone);
  EXPECT_EQ(dropped[1].rev.main, 8);
  ASSERT_TRUE(ki.Get(9, &hit));
  EXPECT_EQ(hit.version, 2);
  EXPECT_EQ(hit.create_main, 8);
}

TEST(KeyIndex, CompactRemovesDeletedKeys) {
  KeyIndex ki;
  ki.Put({2, 0});
  ki.Tombstone({3, 0});
  std::vector<DroppedRevision> dropped;
  EXPECT_TRUE(ki.Compact(4, &dropped));
  EXPECT_EQ(dropped.size(), 2u);
}

TEST(TreeIndex, RangeEndSemantics) {
  TreeIndex t;
  for (const char* k : {"a", "ab", "b", "c"}) t.Put(k, {2, 0});
  auto keys = [&](std::string_view key, std::string_view end) {
    std::vector<std::string> out;
    t.Range(key, end, 2, [&](const std::string& k, const IndexHit&) {
      out.push_back(k);
      return true;
    });
    return out;
  };
  EXPECT_EQ(keys("a", ""), (std::vector<std::string>{"a"}));
  EXPECT_EQ(keys("a", "b"), (std::vector<std::string>{"a", "ab"}));
  EXPECT_EQ(keys("ab", std::string_view("\0", 1)), (std::vector<std::string>{"ab", "b", "c"}));
  EXPECT_EQ(keys(std::string_view("\0", 1), std::string_view("\0", 1)).size(), 4u);
  EXPECT_TRUE(keys("c", "a").empty()) << "end before key is an empty range";
  EXPECT_TRUE(InRange("b", "a", std::string_view("\0", 1)));
  EXPECT_FALSE(InRange("b", "a", "b"));
}

}  // namespace
}  // namespace capstan::store
