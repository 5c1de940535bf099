#include "mesh/discovery_hub.h"

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;

// Sources the test feeds by hand; counts how many were made and are alive.
struct FakeSources {
  std::atomic<int> made{0};
  std::atomic<int> alive{0};
  std::mutex mu;
  EndpointsCallback feed;  // the newest source's callback

  class Source final : public EndpointSource {
   public:
    Source(FakeSources* owner, std::string target) : owner_(owner), target_(std::move(target)) {
      owner_->made++;
      owner_->alive++;
    }
    ~Source() override {
      std::lock_guard lock(owner_->mu);
      owner_->feed = nullptr;
      owner_->alive--;
    }
    void Start(EndpointsCallback on_update) override {
      std::lock_guard lock(owner_->mu);
      owner_->feed = std::move(on_update);
    }
    std::string Describe() const override { return target_; }

   private:
    FakeSources* owner_;
    std::string target_;
  };

  DiscoveryHub::SourceFactory Factory() {
    return [this](std::string_view target) -> absl::StatusOr<std::unique_ptr<EndpointSource>> {
      return std::make_unique<Source>(this, std::string(target));
    };
  }
  // Delivers a set as the source's thread would (here: the test's).
  void Feed(std::vector<Endpoint> set) {
    std::lock_guard lock(mu);
    ASSERT_TRUE(feed != nullptr);
    feed(std::move(set));
  }
};

// Sets received, with the thread check done where they arrive.
struct Received {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<size_t> sizes;
  int off_loop = 0;

  EndpointsCallback On(net::EventLoop* loop) {
    return [this, loop](std::vector<Endpoint> set) {
      std::lock_guard lock(mu);
      if (loop != nullptr && !loop->InLoopThread()) off_loop++;
      sizes.push_back(set.size());
      cv.notify_all();
    };
  }
  // Waits (bounded) for the n-th set; its size.
  size_t Nth(size_t n) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, 10s, [&] { return sizes.size() >= n; });
    return sizes.size() >= n ? sizes[n - 1] : 0;
  }
};

Endpoint At(int port) {
  return {.host = "127.0.0.1", .port = port, .id = "127.0.0.1:" + std::to_string(port)};
}

class DiscoveryHubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto group = net::LoopGroup::Start({.threads = 2, .name = "hub"});
    ASSERT_TRUE(group.ok()) << group.status();
    loops_ = *std::move(group);
  }
  // Subscriptions end on their loops.
  void DropOn(net::EventLoop* loop, std::unique_ptr<DiscoveryHub::Subscription>& subscription) {
    net::RunOn(loop, [&] { subscription.reset(); });
  }

  FakeSources sources_;
  std::unique_ptr<net::LoopGroup> loops_;
};

TEST_F(DiscoveryHubTest, SubscribersOnTwoLoopsShareOneSourceAndGetSetsOnTheirLoops) {
  DiscoveryHub hub(sources_.Factory());
  net::EventLoop* a_loop = loops_->loop(0);
  net::EventLoop* b_loop = loops_->loop(1);
  Received a, b;
  auto sub_a = hub.Subscribe("store://s:1/services/echo", a_loop, a.On(a_loop)).value();
  auto sub_b = hub.Subscribe("store://s:1/services/echo", b_loop, b.On(b_loop)).value();
  EXPECT_EQ(sources_.made, 1) << "one watch per target";
  EXPECT_EQ(hub.sources(), 1u);

  sources_.Feed({At(1), At(2)});
  EXPECT_EQ(a.Nth(1), 2u);
  EXPECT_EQ(b.Nth(1), 2u);
  sources_.Feed({At(1)});
  EXPECT_EQ(a.Nth(2), 1u);
  EXPECT_EQ(b.Nth(2), 1u);
  EXPECT_EQ(a.off_loop + b.off_loop, 0) << "each set arrives on its subscriber's loop";

  // Another target is another source.
  Received c;
  auto sub_c = hub.Subscribe("store://s:1/services/other", a_loop, c.On(a_loop)).value();
  EXPECT_EQ(sources_.made, 2);
  DropOn(a_loop, sub_c);
  DropOn(a_loop, sub_a);
  DropOn(b_loop, sub_b);
}

TEST_F(DiscoveryHubTest, ALateSubscriberGetsTheCurrentSetAtOnce) {
  DiscoveryHub hub(sources_.Factory());
  net::EventLoop* loop = loops_->loop(0);
  Received first, late;
  auto sub = hub.Subscribe("dns:///echo:7000", loop, first.On(loop)).value();
  sources_.Feed({At(1), At(2), At(3)});
  EXPECT_EQ(first.Nth(1), 3u);
  auto late_sub = hub.Subscribe("dns:///echo:7000", loop, late.On(loop)).value();
  EXPECT_EQ(late.Nth(1), 3u) << "without waiting for the next change";
  EXPECT_EQ(sources_.made, 1);
  DropOn(loop, sub);
  DropOn(loop, late_sub);
}

TEST_F(DiscoveryHubTest, TheLastSubscriberToLeaveStopsTheSourceAndNoSetFollowsIt) {
  DiscoveryHub hub(sources_.Factory());
  net::EventLoop* loop = loops_->loop(0);
  Received r;
  auto one = hub.Subscribe("t", loop, r.On(loop)).value();
  auto two = hub.Subscribe("t", loop, r.On(loop)).value();
  DropOn(loop, one);
  EXPECT_EQ(sources_.alive, 1) << "one subscriber is left";
  DropOn(loop, two);
  EXPECT_EQ(sources_.alive, 0);
  EXPECT_EQ(hub.sources(), 0u);
  // A new subscriber starts it again.
  auto three = hub.Subscribe("t", loop, r.On(loop)).value();
  EXPECT_EQ(sources_.made, 2);
  EXPECT_EQ(sources_.alive, 1);
  DropOn(loop, three);
}

TEST_F(DiscoveryHubTest, AsAnEndpointSourceItSharesTooAndReplaysOnStart) {
  DiscoveryHub hub(sources_.Factory());
  auto first = hub.Source("static:///x").value();
  Received r1, r2;
  first->Start(r1.On(nullptr));
  sources_.Feed({At(1)});
  EXPECT_EQ(r1.Nth(1), 1u);
  auto second = hub.Source("static:///x").value();
  EXPECT_EQ(second->Describe(), "static:///x");
  second->Start(r2.On(nullptr));
  EXPECT_EQ(r2.Nth(1), 1u) << "the current set, replayed by Start";
  EXPECT_EQ(sources_.made, 1);
  first.reset();
  sources_.Feed({At(1), At(2)});
  EXPECT_EQ(r2.Nth(2), 2u);
  {
    std::lock_guard lock(r1.mu);
    EXPECT_EQ(r1.sizes.size(), 1u) << "a source destroyed gets no more sets";
  }
  second.reset();
  EXPECT_EQ(sources_.alive, 0);
}

TEST_F(DiscoveryHubTest, ABadTargetIsRefusedWithTheReason) {
  DiscoveryHub hub;  // the real factory: NewEndpointSource
  auto bad = hub.Subscribe("ftp://nope/x", loops_->loop(0), [](std::vector<Endpoint>) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(hub.Source("dns:///nohost").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(hub.sources(), 0u);
  // A static target works through the real factory and delivers at once.
  Received r;
  auto ok = hub.Source("static:///127.0.0.1:1,127.0.0.1:2").value();
  ok->Start(r.On(nullptr));
  EXPECT_EQ(r.Nth(1), 2u);
}

}  // namespace
}  // namespace capstan::mesh
