// Kills `capstan store` with SIGKILL at random moments under concurrent
// writes, restarts it, and checks that every acknowledged write survived and
// that revisions never went back.
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>

#include "diff_util.h"
#include "gtest/gtest.h"

namespace capstan::e2e {
namespace {

using namespace etcdserverpb;

struct Ack {
  std::string key, value;
  int64_t revision;
};

// Checks that every acknowledged write is readable with its value and revision.
void ExpectAllPresent(Stubs& stubs, const std::vector<Ack>& acked, int64_t max_acked_rev) {
  for (const Ack& a : acked) {
    grpc::ClientContext ctx;
    RangeRequest r;
    r.set_key(a.key);
    RangeResponse resp;
    ASSERT_TRUE(stubs.kv->Range(&ctx, r, &resp).ok());
    ASSERT_EQ(resp.kvs_size(), 1) << "lost acknowledged write " << a.key;
    EXPECT_EQ(resp.kvs(0).value(), a.value);
    EXPECT_EQ(resp.kvs(0).mod_revision(), a.revision);
    EXPECT_GE(resp.header().revision(), max_acked_rev) << "revision went back";
  }
}

TEST(CrashTest, AcknowledgedWritesSurviveSigkill) {
  TempDir dir("capstan-crash");
  uint32_t seed = std::random_device{}();
  if (const char* env = std::getenv("CAPSTAN_CRASH_SEED")) seed = std::stoul(env);
  std::cerr << "crash test seed (CAPSTAN_CRASH_SEED to replay the kill timing): " << seed << "\n";
  std::mt19937 rng(seed);
  constexpr int kCycles = 5, kWriters = 4;
  std::vector<Ack> acked;
  int64_t max_acked_rev = 0;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    StoreProcess server(StoreProcess::Kind::kCapstan, dir.path() + "/data");
    ASSERT_TRUE(server.Start()) << server.Log();
    Stubs stubs(server.endpoint());

    // Everything acknowledged before the previous kill must be there.
    ExpectAllPresent(stubs, acked, max_acked_rev);
    if (HasFatalFailure()) return;

    std::mutex mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&, w] {
        Stubs own(server.endpoint());
        for (int seq = 0; !stop; ++seq) {
          PutRequest p;
          p.set_key("c" + std::to_string(cycle) + "/w" + std::to_string(w) + "/" +
                    std::to_string(seq));
          p.set_value(std::string(64 + seq % 512, 'a' + w));
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
          PutResponse resp;
          if (!own.kv->Put(&ctx, p, &resp).ok()) return;  // the server is gone
          std::lock_guard<std::mutex> lock(mu);
          acked.push_back({p.key(), p.value(), resp.header().revision()});
          max_acked_rev = std::max(max_acked_rev, resp.header().revision());
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
    server.Kill();  // SIGKILL mid-write
    stop = true;
    for (auto& t : writers) t.join();
    ASSERT_FALSE(acked.empty());
  }
  // One last restart to check the final cycle's writes.
  StoreProcess server(StoreProcess::Kind::kCapstan, dir.path() + "/data");
  ASSERT_TRUE(server.Start()) << server.Log();
  Stubs stubs(server.endpoint());
  RangeRequest all;
  all.set_key(std::string(1, '\0'));
  all.set_range_end(std::string(1, '\0'));
  all.set_count_only(true);
  grpc::ClientContext ctx;
  RangeResponse resp;
  ASSERT_TRUE(stubs.kv->Range(&ctx, all, &resp).ok());
  EXPECT_GE(resp.count(), static_cast<int64_t>(acked.size()));
  EXPECT_GE(resp.header().revision(), max_acked_rev);
  ExpectAllPresent(stubs, acked, max_acked_rev);
  std::cerr << "acknowledged writes checked: " << acked.size() << "\n";
}

}  // namespace
}  // namespace capstan::e2e
