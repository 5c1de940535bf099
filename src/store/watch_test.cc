#include "store/watch.h"

#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "gtest/gtest.h"

namespace capstan::store {
namespace {

namespace fs = std::filesystem;
using etcdserverpb::WatchResponse;

// A stream that records responses and reports whatever backlog the test sets.
class FakeSink : public WatchSink {
 public:
  void SendEncoded(std::string bytes) override {
    WatchResponse r;
    EXPECT_TRUE(r.ParseFromString(bytes));
    std::lock_guard<std::mutex> lock(mu_);
    responses_.push_back(std::move(r));
    cv_.notify_all();
  }
  size_t QueuedBytes() const override { return queued_.load(); }
  void set_queued(size_t b) { queued_ = b; }
  std::vector<WatchResponse> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(responses_, {});
  }
  // Waits until the events received (since the last Take) reach `rev`.
  bool WaitForRevision(int64_t rev) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (const auto& r : responses_) {
        for (const auto& e : r.events()) {
          if (e.kv().mod_revision() >= rev) return true;
        }
      }
      return false;
    });
  }
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return pred(responses_); });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<WatchResponse> responses_;
  std::atomic<size_t> queued_{0};
};

class WatchHubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("watch_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    backend_ = std::move(*Backend::Open(dir_, {}));
    mvcc_ = std::make_unique<Mvcc>(backend_.get());
    ASSERT_TRUE(mvcc_->Restore([](const std::string&, int64_t) {}).ok());
    WatchHub::Options opts;
    opts.max_stream_bytes = 1000;
    opts.max_request_bytes = 4096;
    hub_ = std::make_unique<WatchHub>(
        mvcc_.get(), opts,
        [](etcdserverpb::ResponseHeader* h, int64_t rev) { h->set_revision(rev); });
  }
  void TearDown() override {
    hub_.reset();
    mvcc_.reset();
    backend_.reset();
    fs::remove_all(dir_);
  }
  int64_t Put(const std::string& k, const std::string& v) {
    auto txn = mvcc_->BeginWrite();
    txn->Put(k, v, 0);
    int64_t rev = txn->write_rev();
    auto events = txn->events();
    EXPECT_TRUE(txn->Commit().ok());
    hub_->Publish(rev, events);
    return rev;
  }
  void Create(FakeSink* sink, const std::string& key, const std::string& end, int64_t start,
              bool fragment = false) {
    etcdserverpb::WatchRequest req;
    auto* c = req.mutable_create_request();
    c->set_key(key);
    c->set_range_end(end);
    c->set_start_revision(start);
    c->set_fragment(fragment);
    hub_->HandleRequest(sink, req);
  }
  static std::vector<int64_t> Revisions(const std::vector<WatchResponse>& rs) {
    std::vector<int64_t> out;
    for (const auto& r : rs) {
      for (const auto& e : r.events()) out.push_back(e.kv().mod_revision());
    }
    return out;
  }

  fs::path dir_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Mvcc> mvcc_;
  std::unique_ptr<WatchHub> hub_;
};

TEST_F(WatchHubTest, SlowWatcherFallsBehindWithoutBlockingOthersAndCatchesUp) {
  FakeSink slow, fast;
  hub_->AddStream(&slow);
  hub_->AddStream(&fast);
  Create(&slow, "k", std::string(1, '\0'), 0);
  Create(&fast, "k", std::string(1, '\0'), 0);
  slow.Take();
  fast.Take();
  slow.set_queued(1 << 20);  // its client stopped reading
  std::vector<int64_t> written;
  for (int i = 0; i < 50; ++i) written.push_back(Put("k" + std::to_string(i % 5), "v"));
  ASSERT_TRUE(fast.WaitForRevision(written.back()));
  EXPECT_EQ(Revisions(fast.Take()), written) << "the fast watcher is not held back";
  EXPECT_TRUE(Revisions(slow.Take()).empty()) << "nothing queued past the stream limit";

  slow.set_queued(0);  // the client drains
  hub_->Kick();
  ASSERT_TRUE(slow.WaitForRevision(written.back()));
  EXPECT_EQ(Revisions(slow.Take()), written) << "catch-up from history: ordered, no gap, no dup";
  int64_t next = Put("k1", "after");
  ASSERT_TRUE(slow.WaitForRevision(next));
  EXPECT_EQ(Revisions(slow.Take()), std::vector<int64_t>{next}) << "back to live delivery";
  hub_->RemoveStream(&slow);
  hub_->RemoveStream(&fast);
}

TEST_F(WatchHubTest, FragmentsLargeResponsesOnlyWhenAsked) {
  std::string big(1500, 'x');
  std::vector<int64_t> written;
  for (int i = 0; i < 6; ++i) written.push_back(Put("f" + std::to_string(i), big));
  FakeSink sink;
  hub_->AddStream(&sink);
  Create(&sink, "f", "g", 1, /*fragment=*/true);
  ASSERT_TRUE(sink.WaitForRevision(written.back()));
  auto rs = sink.Take();
  ASSERT_GE(rs.size(), 3u);  // created + at least two fragments
  EXPECT_TRUE(rs[0].created());
  int fragments = 0;
  for (size_t i = 1; i < rs.size(); ++i) {
    EXPECT_LT(rs[i].ByteSizeLong(), 4096u + 1600u);
    if (rs[i].fragment()) ++fragments;
  }
  EXPECT_GE(fragments, 1);
  EXPECT_FALSE(rs.back().fragment()) << "the last part closes the fragmented response";
  EXPECT_EQ(Revisions(rs), written);
  hub_->RemoveStream(&sink);
}

TEST_F(WatchHubTest, ProgressAndCompaction) {
  Put("a", "1");
  Put("a", "2");
  int64_t rev = Put("a", "3");
  rocksdb::WriteBatch batch;
  ASSERT_TRUE(mvcc_->Compact(rev, &batch).ok());
  FakeSink sink;
  hub_->AddStream(&sink);
  Create(&sink, "a", "", 2);  // before the compaction point
  ASSERT_TRUE(sink.WaitFor(
      [](const std::vector<WatchResponse>& rs) { return rs.size() == 2 && rs[1].canceled(); }));
  auto rs = sink.Take();
  EXPECT_EQ(rs[1].compact_revision(), rev);
  Create(&sink, "a", "", 0);
  etcdserverpb::WatchRequest progress;
  progress.mutable_progress_request();
  hub_->HandleRequest(&sink, progress);
  rs = sink.Take();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[1].watch_id(), -1);
  EXPECT_EQ(rs[1].header().revision(), rev) << "progress reports the newest revision";
  hub_->RemoveStream(&sink);
}

}  // namespace
}  // namespace capstan::store
