// client::PrefixWatcher against a real `capstan store`, and the two mesh
// consumers built on it (the registry's StoreEndpoints and PolicyWatcher):
// the listing, puts and deletes arriving by the watch, and a store that
// comes back without the keys it had (restarted on a wiped data directory),
// after which the new listing must report the vanished keys as deleted.
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/client.h"
#include "client/prefix_watcher.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "mesh/policy.h"
#include "mesh/registry.h"

namespace capstan::e2e {
namespace {

using namespace std::chrono_literals;

TEST(PrefixRangeEndTest, CoversEveryKeyWithThePrefix) {
  EXPECT_EQ(client::PrefixRangeEnd("/t/"), "/t0");
  EXPECT_EQ(client::PrefixRangeEnd("a\xff"), "b");
  EXPECT_EQ(client::PrefixRangeEnd("\xff\xff"), std::string(1, '\0'));
  EXPECT_EQ(client::PrefixRangeEnd(""), std::string(1, '\0'));
}

// What a consumer sees: the keys as the batches leave them, and every key
// reported deleted.
class View {
 public:
  void Apply(const std::vector<client::PrefixChange>& batch) {
    std::lock_guard lock(mu_);
    for (const client::PrefixChange& change : batch) {
      if (change.value) {
        keys_[change.key] = *change.value;
      } else {
        keys_.erase(change.key);
        deleted_.insert(change.key);
      }
    }
  }
  std::map<std::string, std::string> keys() const {
    std::lock_guard lock(mu_);
    return keys_;
  }
  std::set<std::string> deleted() const {
    std::lock_guard lock(mu_);
    return deleted_;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> keys_;
  std::set<std::string> deleted_;
};

class PrefixWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("capstan-prefix-watcher");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, DataDir());
    ASSERT_TRUE(store_->Start()) << store_->Log();
    auto client = client::Client::Connect({.endpoints = {store_->endpoint()}, .timeout = 10000ms});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  std::string DataDir() const { return dir_->path() + "/store"; }

  void Put(const std::string& key, const std::string& value) {
    auto put = client_->Put(key, value);
    ASSERT_TRUE(put.ok()) << put.status();
  }

  // The store goes away and comes back on the same port without its data
  // (as if restored from nothing): keys it had vanish with no delete event
  // any watch could see. Then `key` is written into the new store, once the
  // client has reconnected.
  void RestartWipedAndPut(const std::string& key, const std::string& value) {
    store_->Stop();
    std::filesystem::remove_all(DataDir());
    ASSERT_TRUE(store_->Start()) << store_->Log();
    ASSERT_TRUE(Eventually([&] { return client_->Put(key, value).ok(); }, 30s));
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::shared_ptr<client::Client> client_;
};

TEST_F(PrefixWatcherTest, ListsThenFollowsPutsAndDeletesByTheWatch) {
  Put("/t/a", "1");
  Put("/t/b", "2");
  Put("/t", "outside");    // below the prefix "/t/"
  Put("/u/x", "outside");  // after it
  View view;
  auto watcher = client::PrefixWatcher::Start(
      client_, {.prefix = "/t/", .retry = 100ms, .what = "test keys"},
      [&](const std::vector<client::PrefixChange>& batch) { view.Apply(batch); });
  using Keys = std::map<std::string, std::string>;
  ASSERT_TRUE(Eventually([&] {
    return view.keys() == Keys{{"/t/a", "1"}, {"/t/b", "2"}};
  })) << view.keys().size();
  EXPECT_EQ(watcher->listings(), 1u);

  Put("/t/c", "3");
  Put("/t/b", "2'");
  auto deleted = client_->Delete("/t/a");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  Put("/u/y", "outside");
  ASSERT_TRUE(Eventually([&] {
    return view.keys() == Keys{{"/t/b", "2'"}, {"/t/c", "3"}};
  })) << view.keys().size();
  EXPECT_EQ(view.deleted(), std::set<std::string>{"/t/a"});
  // Delivered by the watch: no second listing.
  EXPECT_EQ(watcher->listings(), 1u);
}

TEST_F(PrefixWatcherTest, ListingAgainAfterTheWatchBrokeReportsVanishedKeysAsDeleted) {
  Put("/t/a", "1");
  Put("/t/b", "2");
  View view;
  auto watcher = client::PrefixWatcher::Start(
      client_, {.prefix = "/t/", .retry = 100ms, .what = "test keys"},
      [&](const std::vector<client::PrefixChange>& batch) { view.Apply(batch); });
  using Keys = std::map<std::string, std::string>;
  ASSERT_TRUE(Eventually([&] { return view.keys().size() == 2; }));

  RestartWipedAndPut("/t/c", "3");
  // Whether the new listing or the new watch brings /t/c, the view ends as
  // the new store is; /t/a and /t/b only a listing can take away.
  ASSERT_TRUE(Eventually(
      [&] {
        return view.keys() == Keys{{"/t/c", "3"}};
      },
      30s))
      << view.keys().size() << "\n"
      << store_->Log();
  EXPECT_EQ(view.deleted(), (std::set<std::string>{"/t/a", "/t/b"}));
  EXPECT_GE(watcher->listings(), 2u);
}

// The registry source and the policy watcher stand on the same loop: after
// the store comes back without their keys, the instance leaves the set and
// the policy is withdrawn (its subscribers go back to their own options).
TEST_F(PrefixWatcherTest, RegistryAndPoliciesDropWhatVanishedWhileTheWatchWasDown) {
  mesh::Endpoint instance = mesh::ParseEndpoint("127.0.0.1:7001").value();
  Put("services/echo/one", mesh::EncodeRegistryValue(instance));
  Put(std::string(mesh::kPolicyPrefix) + "echo", R"({"balancer": "round_robin"})");

  std::mutex mu;
  std::vector<std::vector<std::string>> sets;  // ids of every set delivered
  auto source = mesh::StoreEndpoints(client_, "services/echo", {.retry = 100ms});
  source->Start([&](std::vector<mesh::Endpoint> set) {
    std::vector<std::string> ids;
    for (const mesh::Endpoint& e : set) ids.push_back(e.id);
    std::lock_guard lock(mu);
    sets.push_back(std::move(ids));
  });
  auto last_set = [&]() -> std::optional<std::vector<std::string>> {
    std::lock_guard lock(mu);
    if (sets.empty()) return std::nullopt;
    return sets.back();
  };
  auto policies = mesh::PolicyWatcher::Start(client_, {.retry = 100ms});

  ASSERT_TRUE(Eventually([&] { return last_set() == std::vector<std::string>{"one"}; }));
  ASSERT_TRUE(Eventually([&] { return policies->Current("echo").has_value(); }));
  EXPECT_EQ(policies->Current("echo")->balancer, "round_robin");
  EXPECT_EQ(policies->accepted(), 1u);

  RestartWipedAndPut("services/echo/two", mesh::EncodeRegistryValue(instance));
  ASSERT_TRUE(Eventually([&] { return last_set() == std::vector<std::string>{"two"}; }, 30s))
      << store_->Log();
  ASSERT_TRUE(Eventually([&] { return !policies->Current("echo").has_value(); }, 30s));
  EXPECT_EQ(policies->accepted(), 1u);
  EXPECT_EQ(policies->refused(), 0u);
}

}  // namespace
}  // namespace capstan::e2e
