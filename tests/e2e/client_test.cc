// src/client against both etcd and capstan: the same calls, the same answers.
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <mutex>

#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

using namespace etcdserverpb;

class ClientTest : public ::testing::TestWithParam<StoreProcess::Kind> {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("capstan-client");
    server_ = std::make_unique<StoreProcess>(GetParam(), dir_->path() + "/data");
    ASSERT_TRUE(server_->Start()) << server_->Log();
    client::ClientOptions o;
    o.endpoints = {"http://" + server_->endpoint()};
    o.channels = 3;
    auto c = client::Client::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_P(ClientTest, KvTxnAndErrors) {
  auto put = client_->Put("a", "1");
  ASSERT_TRUE(put.ok()) << put.status();
  int64_t rev = put->header().revision();
  auto get = client_->Get("a");
  ASSERT_TRUE(get.ok());
  ASSERT_EQ(get->kvs_size(), 1);
  EXPECT_EQ(get->kvs(0).value(), "1");
  EXPECT_EQ(get->kvs(0).mod_revision(), rev);
  EXPECT_EQ(client_->Get("a", /*serializable=*/true)->kvs(0).value(), "1");

  TxnRequest txn;
  auto* cmp = txn.add_compare();
  cmp->set_key("a");
  cmp->set_target(Compare::MOD);
  cmp->set_mod_revision(rev);
  auto* p = txn.add_success()->mutable_request_put();
  p->set_key("a");
  p->set_value("2");
  auto t = client_->Txn(txn);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->succeeded());
  t = client_->Txn(txn);  // the compare now fails
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->succeeded());

  auto del = client_->Delete("a");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->deleted(), 1);
  EXPECT_EQ(client_->Get("a")->kvs_size(), 0);
  // A server error arrives as a status with etcd's message.
  auto empty = client_->Put("", "x");
  EXPECT_FALSE(empty.ok());
  EXPECT_THAT(std::string(empty.status().message()), ::testing::HasSubstr("key is not provided"));
}

TEST_P(ClientTest, AsyncCallsComplete) {
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, failed = 0;
  constexpr int kCalls = 200;
  for (int i = 0; i < kCalls; ++i) {
    PutRequest req;
    req.set_key("k" + std::to_string(i));
    req.set_value("v");
    client_->PutAsync(req, [&](absl::Status st, PutResponse) {
      std::lock_guard<std::mutex> lock(mu);
      ++done;
      failed += st.ok() ? 0 : 1;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return done == kCalls; }));
  EXPECT_EQ(failed, 0);
  RangeRequest r;
  r.set_key("k");
  r.set_range_end("l");
  r.set_count_only(true);
  EXPECT_EQ(client_->Range(r)->count(), kCalls);
}

// A client destroyed the moment its last callback has run must not crash:
// gRPC's callback threads still hold each finished call (and through it the
// channel) for a moment after the callback returns, and a channel released
// last on one of those threads tears down the queue that thread is reading.
TEST_P(ClientTest, DestroyedRightAfterItsCallbacks) {
  for (int round = 0; round < 20; ++round) {
    client::ClientOptions o;
    o.endpoints = {"http://" + server_->endpoint()};
    o.channels = 2;
    auto c = client::Client::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status();
    std::unique_ptr<client::Client> client = std::move(*c);
    std::mutex mu;
    std::condition_variable cv;
    int done = 0;
    constexpr int kCalls = 8;
    for (int i = 0; i < kCalls; ++i) {
      RangeRequest req;
      req.set_key("r" + std::to_string(i));
      client->RangeAsync(req, [&](absl::Status st, RangeResponse) {
        EXPECT_TRUE(st.ok()) << st;
        std::lock_guard<std::mutex> lock(mu);
        ++done;
        cv.notify_all();
      });
    }
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return done == kCalls; }));
    lock.unlock();
    client.reset();
  }
}

TEST_P(ClientTest, LeasesAndWatch) {
  auto grant = client_->LeaseGrant(30);
  ASSERT_TRUE(grant.ok()) << grant.status();
  ASSERT_TRUE(client_->Put("leased", "v", grant->id()).ok());
  auto ttl = client_->LeaseKeepAliveOnce(grant->id());
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_EQ(*ttl, 30);
  auto info = client_->LeaseTimeToLive(grant->id(), true);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->grantedttl(), 30);
  ASSERT_EQ(info->keys_size(), 1);

  std::mutex mu;
  std::condition_variable cv;
  std::vector<mvccpb::Event> events;
  WatchCreateRequest create;
  create.set_key("leased");
  auto watch = client_->WatchAsync(
      create,
      [&](const WatchResponse& resp) {
        std::lock_guard<std::mutex> lock(mu);
        for (const auto& e : resp.events()) events.push_back(e);
        cv.notify_all();
      },
      [](absl::Status) {});
  // Revoking the lease deletes its key: the watcher sees the DELETE.
  ASSERT_TRUE(Eventually([&] {
    (void)client_->Put("leased", "again", grant->id());
    std::lock_guard<std::mutex> lock(mu);
    return !events.empty();
  }));
  ASSERT_TRUE(client_->LeaseRevoke(grant->id()).ok());
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] {
    return !events.empty() && events.back().type() == mvccpb::Event::DELETE;
  }));
  lock.unlock();
  watch.reset();
  EXPECT_EQ(client_->Get("leased")->kvs_size(), 0);
}

INSTANTIATE_TEST_SUITE_P(Servers, ClientTest,
                         ::testing::Values(StoreProcess::Kind::kCapstan, StoreProcess::Kind::kEtcd),
                         [](const auto& info) {
                           return info.param == StoreProcess::Kind::kCapstan ? "capstan" : "etcd";
                         });

// `capstan bench store` runs every workload end to end (a smoke test so the
// tool cannot rot; no timing is asserted).
TEST(BenchSmoke, EveryWorkloadRuns) {
  TempDir dir("capstan-bench-smoke");
  StoreProcess server(StoreProcess::Kind::kCapstan, dir.path() + "/data");
  ASSERT_TRUE(server.Start()) << server.Log();
  for (std::string workload : {"put", "range", "txn-create", "txn-update"}) {
    auto r = RunCommand(
        {CapstanBinary(), "bench", "store", "--endpoints", server.endpoint(), "--workload",
         workload, "--clients", "8", "--conns", "2", "--total", "400", "--key-space", "100",
         "--pid", std::to_string(server.process()->pid()), "--json", "--no-progress"},
        "", std::chrono::seconds(60));
    EXPECT_EQ(r.exit_code, 0) << workload << ": " << r.out << r.err;
    EXPECT_THAT(r.out, ::testing::HasSubstr("\"ops\":400,\"errors\":0")) << workload;
    EXPECT_THAT(r.out, ::testing::HasSubstr("server_cpu_us_per_op")) << workload;
    // The same over the raw HTTP/2 client (txn-create makes keys past the
    // key space: a larger one keeps them apart from the first run's).
    auto raw =
        RunCommand({CapstanBinary(), "bench", "store", "--endpoints", server.endpoint(),
                    "--workload", workload, "--clients", "8", "--conns", "2", "--total", "400",
                    "--key-space", "1000", "--client", "raw", "--json", "--no-progress"},
                   "", std::chrono::seconds(60));
    EXPECT_EQ(raw.exit_code, 0) << workload << " raw: " << raw.out << raw.err;
    EXPECT_THAT(raw.out, ::testing::HasSubstr("\"ops\":400,\"errors\":0")) << workload << " raw";
  }
  // A server error reaches the raw client as the call's status, with the
  // server's message.
  auto too_large = RunCommand({CapstanBinary(), "bench", "store", "--endpoints", server.endpoint(),
                               "--workload", "put", "--clients", "1", "--conns", "1", "--total",
                               "1", "--val-size", "2000000", "--client", "raw", "--no-progress"},
                              "", std::chrono::seconds(60));
  EXPECT_THAT(too_large.out + too_large.err, ::testing::HasSubstr("request is too large"))
      << too_large.out << too_large.err;
  auto watch = RunCommand(
      {CapstanBinary(), "bench", "store", "--endpoints", server.endpoint(), "--workload", "watch",
       "--watchers", "4000", "--watchers-per-stream", "250", "--total", "20", "--rate", "200",
       "--pid", std::to_string(server.process()->pid()), "--json", "--no-progress"},
      "", std::chrono::seconds(60));
  EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  // A put's responses (about 340 KB) exceed what the loop writes per turn:
  // the rest leaves in later turns, and every event still arrives once.
  EXPECT_THAT(watch.out, ::testing::HasSubstr("\"events\":80000,")) << "20 puts x 4000 watchers";
  auto lease =
      RunCommand({CapstanBinary(), "bench", "store", "--endpoints", server.endpoint(), "--workload",
                  "lease", "--total", "20", "--lease-ttl", "2", "--json", "--no-progress"},
                 "", std::chrono::seconds(60));
  EXPECT_EQ(lease.exit_code, 0) << lease.out << lease.err;
  EXPECT_THAT(lease.out, ::testing::HasSubstr("\"events\":20,")) << "every leased key expires";
  auto bad = RunCommand({CapstanBinary(), "bench", "store", "--workload", "nope"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, ::testing::HasSubstr("unknown workload"));
}

// The null server answers the KV API without doing anything: puts succeed,
// CPU per call is reported, and SIGTERM stops it cleanly.
TEST(BenchSmoke, NullServerAnswersAndStops) {
  TempDir dir("capstan-null-server");
  std::string endpoint = "127.0.0.1:" + std::to_string(PickFreePort());
  Process server({CapstanBinary(), "bench", "null-server", "--listen", endpoint},
                 dir.path() + "/log");
  std::string out;
  ASSERT_TRUE(Eventually(
      [&] {
        auto r =
            RunCommand({CapstanBinary(), "bench", "store", "--endpoints", endpoint, "--workload",
                        "put", "--clients", "4", "--conns", "1", "--total", "200", "--pid",
                        std::to_string(server.pid()), "--json", "--no-progress"},
                       "", std::chrono::seconds(20));
        out = r.out;
        return r.exit_code == 0;
      },
      std::chrono::seconds(20)))
      << out << server.Log();
  EXPECT_THAT(out, ::testing::HasSubstr("\"ops\":200,\"errors\":0"));
  server.Signal(SIGTERM);
  int status = server.Wait(std::chrono::seconds(10));
  ASSERT_NE(status, -1) << "null server did not stop on SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server.Log();
  auto busy = RunCommand({CapstanBinary(), "bench", "null-server", "--listen", "256.0.0.1:1"});
  EXPECT_EQ(busy.exit_code, 2);
  EXPECT_THAT(busy.err, ::testing::HasSubstr("cannot listen on"));
}

}  // namespace
}  // namespace capstan::e2e
