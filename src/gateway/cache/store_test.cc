#include "gateway/cache/store.h"

#include <set>

#include "gtest/gtest.h"

namespace capstan::gateway::cache {
namespace {

std::shared_ptr<StoredResponse> Object(const std::string& key, size_t body_bytes,
                                       std::vector<std::pair<std::string, std::string>> vary = {},
                                       std::vector<std::string> tags = {}) {
  auto o = std::make_shared<StoredResponse>();
  o->key = key;
  o->vary = std::move(vary);
  o->body = net::Buffer(std::string(body_bytes, 'x'));
  o->tags = std::move(tags);
  return o;
}

TEST(MemoryStore, HitSharesTheBody) {
  MemoryStore store({.max_bytes = 1 << 20, .shards = 1});
  auto o = Object("h/a", 1000);
  const char* bytes = o->body.slice(0).data();
  ASSERT_TRUE(store.Insert(o));
  Fields req;
  ObjectRef hit = store.Lookup("h/a", req);
  ASSERT_NE(hit, nullptr);
  net::Buffer shared = hit->body.Share();
  EXPECT_EQ(shared.slice(0).data(), bytes);  // the same block: no copy
  EXPECT_EQ(store.Lookup("h/b", req), nullptr);
  EXPECT_EQ(store.stats().objects, 1u);
  EXPECT_GE(store.stats().bytes, 1000u);
}

TEST(MemoryStore, VaryVariants) {
  MemoryStore store({.max_bytes = 1 << 20, .shards = 1});
  store.Insert(Object("h/v", 10, {{"accept-encoding", "gzip"}}));
  store.Insert(Object("h/v", 20, {{"accept-encoding", "br"}}));
  Fields gzip, br, none;
  gzip.Add("Accept-Encoding", "gzip");
  br.Add("accept-encoding", " br");
  ASSERT_NE(store.Lookup("h/v", gzip), nullptr);
  EXPECT_EQ(store.Lookup("h/v", gzip)->body.size(), 10u);
  EXPECT_EQ(store.Lookup("h/v", br)->body.size(), 20u);
  EXPECT_EQ(store.Lookup("h/v", none), nullptr);
  // Same Vary values: replaced, not added.
  store.Insert(Object("h/v", 30, {{"accept-encoding", "gzip"}}));
  EXPECT_EQ(store.Lookup("h/v", gzip)->body.size(), 30u);
  EXPECT_EQ(store.stats().objects, 2u);
  EXPECT_EQ(store.Remove("h/v"), 2u);
  EXPECT_EQ(store.stats().objects, 0u);
  EXPECT_EQ(store.stats().bytes, 0u);
}

TEST(MemoryStore, BudgetEvicts) {
  MemoryStore store({.max_bytes = 100 << 10, .shards = 1});
  for (int i = 0; i < 100; ++i) store.Insert(Object("h/" + std::to_string(i), 4 << 10));
  StoreStats s = store.stats();
  EXPECT_LE(s.bytes, 100u << 10);
  EXPECT_GT(s.evictions, 70u);
  EXPECT_EQ(s.objects + s.evictions, 100u);
  // Larger than the budget: refused.
  EXPECT_FALSE(store.Insert(Object("h/big", 200 << 10)));
  EXPECT_EQ(store.Lookup("h/big", Fields()), nullptr);
}

TEST(MemoryStore, RemoveTag) {
  MemoryStore store({.max_bytes = 1 << 20, .shards = 4});
  store.Insert(Object("h/1", 10, {}, {"product-1", "all"}));
  store.Insert(Object("h/2", 10, {}, {"product-2", "all"}));
  store.Insert(Object("h/3", 10, {}, {}));
  EXPECT_EQ(store.RemoveTag("product-1"), 1u);
  EXPECT_EQ(store.Lookup("h/1", Fields()), nullptr);
  EXPECT_NE(store.Lookup("h/2", Fields()), nullptr);
  EXPECT_EQ(store.RemoveTag("all"), 1u);
  EXPECT_EQ(store.stats().objects, 1u);
  EXPECT_EQ(store.Clear(), 1u);
  EXPECT_EQ(store.stats().bytes, 0u);
}

TEST(MemoryStore, RemoveKeyPrefix) {
  MemoryStore store({.max_bytes = 1 << 20, .shards = 4});
  store.Insert(Object("h/a#v1", 10));
  store.Insert(Object("h/a#v2", 10));
  store.Insert(Object("h/ab", 10));
  EXPECT_EQ(store.RemoveKeyPrefix("h/a#"), 2u);
  EXPECT_NE(store.Lookup("h/ab", Fields()), nullptr);
  EXPECT_EQ(store.stats().objects, 1u);
}

// The policies themselves, on unit charges.
class Policies : public ::testing::TestWithParam<EvictionKind> {};

TEST_P(Policies, NeverExceedsCapacityAndKeepsAHotEntry) {
  auto p = MakeEvictionPolicy(GetParam(), 10);
  std::vector<uint64_t> evicted;
  std::set<uint64_t> resident;
  for (uint64_t i = 1; i <= 1000; ++i) {
    // Entry 0 is requested every other time: it must survive the scan.
    for (uint64_t id : {uint64_t{0}, i}) {
      if (resident.count(id)) {
        p->Access(id);
        continue;
      }
      evicted.clear();
      p->Insert(id, 1, &evicted);
      resident.insert(id);
      for (uint64_t v : evicted) resident.erase(v);
      ASSERT_LE(p->bytes(), 10u);
      ASSERT_EQ(p->entries(), resident.size());
    }
  }
  EXPECT_TRUE(resident.count(0));
}

TEST_P(Policies, EraseAndOversized) {
  auto p = MakeEvictionPolicy(GetParam(), 100);
  std::vector<uint64_t> evicted;
  p->Insert(1, 10, &evicted);
  p->Insert(2, 500, &evicted);
  EXPECT_EQ(evicted, std::vector<uint64_t>{2});
  p->Erase(1);
  p->Erase(42);
  EXPECT_EQ(p->bytes(), 0u);
  EXPECT_EQ(p->entries(), 0u);
}

INSTANTIATE_TEST_SUITE_P(All, Policies,
                         ::testing::Values(EvictionKind::kLru, EvictionKind::kS3Fifo,
                                           EvictionKind::kTinyLfu));

}  // namespace
}  // namespace capstan::gateway::cache
