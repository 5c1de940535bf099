#include "mesh/balancer.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace capstan::mesh {
namespace {

struct Fixture {
  explicit Fixture(std::vector<uint32_t> weights) {
    for (size_t i = 0; i < weights.size(); ++i) {
      Endpoint e{"10.0.0." + std::to_string(i + 1), 7000, weights[i], ""};
      e.id = absl::StrCat(e.host, ":", e.port);
      states.push_back(std::make_unique<EndpointState>(e));
    }
    for (auto& s : states) pointers.push_back(s.get());
  }
  std::vector<std::unique_ptr<EndpointState>> states;
  std::vector<EndpointState*> pointers;
};

std::map<const EndpointState*, int> Count(Balancer& b, int picks, const PickContext& ctx = {}) {
  std::map<const EndpointState*, int> counts;
  for (int i = 0; i < picks; ++i) counts[b.Pick(ctx)]++;
  return counts;
}

TEST(BalancerTest, RoundRobinGivesEachEndpointTheSameShareAndSkipsExcluded) {
  Fixture f({1, 1, 1});
  auto b = NewBalancer("round_robin").value();
  b->Update(f.pointers);
  auto counts = Count(*b, 3000);
  for (auto* s : f.pointers) EXPECT_EQ(counts[s], 1000);
  absl::flat_hash_set<const EndpointState*> exclude{f.pointers[1]};
  counts = Count(*b, 1000, {.exclude = &exclude});
  EXPECT_EQ(counts[f.pointers[1]], 0);
  EXPECT_EQ(counts[f.pointers[0]] + counts[f.pointers[2]], 1000);
}

TEST(BalancerTest, WeightedRoundRobinFollowsWeightsEvenlyInTime) {
  Fixture f({1, 2, 3});
  auto b = NewBalancer("weighted_round_robin").value();
  b->Update(f.pointers);
  std::vector<const EndpointState*> picks;
  for (int i = 0; i < 6000; ++i) picks.push_back(b->Pick({}));
  std::map<const EndpointState*, int> total;
  for (auto* p : picks) total[p]++;
  EXPECT_EQ(total[f.pointers[0]], 1000);
  EXPECT_EQ(total[f.pointers[1]], 2000);
  EXPECT_EQ(total[f.pointers[2]], 3000);
  // Smooth: every window of 6 consecutive picks holds exactly 1, 2 and 3.
  for (size_t start = 0; start + 6 <= picks.size(); start += 6) {
    std::map<const EndpointState*, int> window;
    for (size_t i = start; i < start + 6; ++i) window[picks[i]]++;
    ASSERT_EQ(window[f.pointers[2]], 3) << "at " << start;
  }
}

TEST(BalancerTest, RandomFollowsWeightsWithinSamplingError) {
  Fixture f({1, 3});
  auto b = NewBalancer("random").value();
  b->Update(f.pointers);
  auto counts = Count(*b, 40000);
  // Binomial sd at p=0.25, n=40000 is about 87: allow 6 sd.
  EXPECT_NEAR(counts[f.pointers[0]], 10000, 520);
  EXPECT_NEAR(counts[f.pointers[1]], 30000, 520);
}

TEST(BalancerTest, PowerOfTwoChoicesAvoidsTheLoadedAndTheSlow) {
  Fixture f({1, 1, 1, 1});
  auto b = NewBalancer("p2c").value();
  b->Update(f.pointers);
  for (auto* s : f.pointers) s->RecordLatency(std::chrono::microseconds(100));
  f.pointers[0]->outstanding = 50;                              // overloaded
  f.pointers[1]->RecordLatency(std::chrono::milliseconds(50));  // slow
  f.pointers[1]->RecordLatency(std::chrono::milliseconds(50));
  auto counts = Count(*b, 12000);
  // The slow one (score ~25 ms) loses every comparison; the loaded one
  // (51 x 0.1 ms) wins only against the slow one: 1 pair in 6. The healthy
  // two win every other pair and split theirs: 5 in 12 each.
  EXPECT_EQ(counts[f.pointers[1]], 0);
  EXPECT_NEAR(counts[f.pointers[0]], 2000, 300);
  EXPECT_NEAR(counts[f.pointers[2]], 5000, 400);
  EXPECT_NEAR(counts[f.pointers[3]], 5000, 400);
  // With equal load the picks spread over all.
  f.pointers[0]->outstanding = 0;
  f.pointers[1]->ewma_latency_ns = f.pointers[0]->ewma_latency_ns;
  counts = Count(*b, 8000);
  for (auto* s : f.pointers) EXPECT_NEAR(counts[s], 2000, 300);
}

TEST(BalancerTest, MaglevKeepsKeysOnTheirEndpointAndMovesFewWhenOneLeaves) {
  Fixture f({1, 1, 1, 1, 1});
  auto b = NewBalancer("maglev").value();
  b->Update(f.pointers);
  constexpr int kKeys = 50000;
  std::vector<const EndpointState*> before;
  std::map<const EndpointState*, int> counts;
  for (int k = 0; k < kKeys; ++k) {
    uint64_t h = HashKey("user-" + std::to_string(k));
    before.push_back(b->Pick({.hash = h}));
    counts[before.back()]++;
    ASSERT_EQ(b->Pick({.hash = h}), before.back());  // stable
  }
  for (auto* s : f.pointers) EXPECT_NEAR(counts[s], kKeys / 5, kKeys / 5 * 0.05);
  // Remove endpoint 2: only its keys (about a fifth) move.
  std::vector<EndpointState*> fewer = f.pointers;
  fewer.erase(fewer.begin() + 2);
  b->Update(fewer);
  int moved = 0;
  for (int k = 0; k < kKeys; ++k) {
    const EndpointState* now = b->Pick({.hash = HashKey("user-" + std::to_string(k))});
    if (now != before[static_cast<size_t>(k)]) {
      ++moved;
      EXPECT_NE(now, f.pointers[2]);
    }
  }
  EXPECT_GT(moved, kKeys / 5 * 0.9);
  EXPECT_LT(moved, kKeys / 5 * 1.3);
}

TEST(BalancerTest, EveryPolicyReturnsNullWhenAllAreExcluded) {
  Fixture f({1, 2});
  absl::flat_hash_set<const EndpointState*> all(f.pointers.begin(), f.pointers.end());
  for (const std::string& name : BalancerNames()) {
    auto b = NewBalancer(name).value();
    b->Update(f.pointers);
    EXPECT_EQ(b->Pick({.exclude = &all}), nullptr) << name;
    b->Update({});
    EXPECT_EQ(b->Pick({}), nullptr) << name;
  }
}

TEST(BalancerTest, UnknownNamesListTheKnownOnesAndCustomPoliciesRegister) {
  auto bad = NewBalancer("least_conn");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("maglev"), std::string::npos);
  class First final : public Balancer {
   public:
    void Update(const std::vector<EndpointState*>& e) override { e_ = e; }
    EndpointState* Pick(const PickContext&) override { return e_.empty() ? nullptr : e_[0]; }
    std::string_view name() const override { return "first"; }
    std::vector<EndpointState*> e_;
  };
  RegisterBalancer("first", [] { return std::make_unique<First>(); });
  auto b = NewBalancer("first");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->name(), "first");
}

}  // namespace
}  // namespace capstan::mesh
