#include "store/watch.h"

#include <unistd.h>

#include <filesystem>
#include <map>
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

// Fan-out responses are assembled from serialized pieces; they must parse to
// exactly what a WatchResponse built field by field would hold, for watch IDs
// of every varint length and for revisions with several events.
TEST_F(WatchHubTest, AssembledResponsesMatchProtobufs) {
  FakeSink sink;
  hub_->AddStream(&sink);
  std::vector<int64_t> ids = {0, 1, 127, 128, 300, 16384, int64_t{1} << 40};
  for (int64_t id : ids) {
    etcdserverpb::WatchRequest req;
    req.mutable_create_request()->set_key("a");
    req.mutable_create_request()->set_range_end("b");
    req.mutable_create_request()->set_watch_id(id);
    hub_->HandleRequest(&sink, req);
  }
  sink.Take();  // the created responses
  int64_t rev = Put("a1", "v1");
  auto txn = mvcc_->BeginWrite();
  txn->Put("a2", "v2", 0);
  txn->Put("zz", "out of range", 0);
  txn->Put("a3", std::string(300, 'x'), 0);
  int64_t rev2 = txn->write_rev();
  auto events = txn->events();
  ASSERT_TRUE(txn->Commit().ok());
  hub_->Publish(rev2, events);

  auto got = sink.Take();
  ASSERT_EQ(got.size(), 2 * ids.size());
  std::map<int64_t, std::vector<WatchResponse>> by_id;
  for (const auto& r : got) by_id[r.watch_id()].push_back(r);
  for (int64_t id : ids) {
    ASSERT_EQ(by_id[id].size(), 2u) << "watch " << id;
    WatchResponse first;
    first.mutable_header()->set_revision(rev);
    first.set_watch_id(id);
    auto* e = first.add_events();
    e->mutable_kv()->set_key("a1");
    e->mutable_kv()->set_value("v1");
    e->mutable_kv()->set_create_revision(rev);
    e->mutable_kv()->set_mod_revision(rev);
    e->mutable_kv()->set_version(1);
    EXPECT_EQ(by_id[id][0].SerializeAsString(), first.SerializeAsString()) << "watch " << id;
    WatchResponse second;
    second.mutable_header()->set_revision(rev2);
    second.set_watch_id(id);
    *second.add_events() = events[0];
    *second.add_events() = events[2];
    EXPECT_EQ(by_id[id][1].SerializeAsString(), second.SerializeAsString()) << "watch " << id;
  }
  hub_->RemoveStream(&sink);
}

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
