#include "store/watch.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "base/test_dir.h"
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
    dir_ = FreshTestDir("watch_test");
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

// A group's responses are written where the stream is sent from; the size
// the hub counts for them (its slow-stream limit) must be what is written.
TEST(GroupResponsesTest, FramedBytesIsWhatEncodeWrites) {
  // The pieces as the hub makes them: a response with only a header, and
  // one with only an event, serialized (fields 1 and 11).
  WatchResponse header_only;
  header_only.mutable_header()->set_revision(12345);
  header_only.mutable_header()->set_cluster_id(~uint64_t{0});
  WatchResponse event_only;
  event_only.add_events()->mutable_kv()->set_value(std::string(5000, 'b'));
  std::string header_field = header_only.SerializeAsString();
  std::string body = event_only.SerializeAsString();
  GroupResponses group;
  group.header_field = std::make_shared<const std::string>(header_field);
  group.body = std::make_shared<const std::string>(body);
  size_t id_bytes = 0;
  for (int64_t id : {int64_t{0}, int64_t{1}, int64_t{127}, int64_t{128}, int64_t{1} << 40}) {
    for (int copies = 0; copies < 20; ++copies) {  // past one 64 KiB block
      group.ids.push_back(id);
      id_bytes += GroupResponses::IdFieldBytes(id);
    }
  }
  group.framed_bytes =
      GroupResponses::FramedBytes(header_field.size() + body.size(), group.ids.size(), id_bytes);
  GroupResponses whole = group;
  net::Buffer out;
  whole.EncodeTo(&out);
  EXPECT_EQ(out.size(), group.framed_bytes);
  EXPECT_TRUE(whole.done());
  // In parts (as a loop writes them, a budget per turn): the same bytes, and
  // each part stops at the first response that reaches its limit.
  GroupResponses parts = group;
  net::Buffer joined;
  int calls = 0;
  while (!parts.done()) {
    net::Buffer part;
    size_t n = parts.EncodeTo(&part, 7000);
    ASSERT_EQ(n, part.size());
    EXPECT_LT(n, 7000u + 5 + header_field.size() + body.size() + 11);
    joined.Append(std::move(part));
    ++calls;
  }
  EXPECT_GT(calls, 10);
  EXPECT_EQ(joined.ToString(), out.ToString());
  FakeSink sink;
  sink.SendGroup(group);
  auto got = sink.Take();
  ASSERT_EQ(got.size(), group.ids.size()) << "each response parses on its own";
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].watch_id(), group.ids[i]);
    EXPECT_EQ(got[i].header().revision(), 12345);
    ASSERT_EQ(got[i].events_size(), 1);
    EXPECT_EQ(got[i].events(0).kv().value().size(), 5000u);
  }
}

// The fan-out shares work between watchers (a range is tested once per
// revision, a stream's responses are written into one buffer, synced watchers
// sit in vectors that removal reorders). Every watcher must still get exactly
// the events its own range and filters select, whatever its neighbours do.
TEST_F(WatchHubTest, FanOutGivesEachWatcherItsOwnEvents) {
  struct Spec {
    std::string key, end;
    bool no_put = false, no_delete = false;
  };
  const std::vector<Spec> specs = {
      {"k1", ""},
      {"k2", ""},
      {"k", "l"},
      {"k", "l", true},
      {"k", "l", false, true},
      {"k1", "k3"},
      {"\0", std::string(1, '\0')},
      {"m", "n"},
  };
  constexpr int kStreams = 3, kPerSpec = 7;
  std::vector<std::unique_ptr<FakeSink>> sinks;
  // (stream, watch id) -> spec index; ids are assigned 0, 1, ... per stream.
  std::map<std::pair<int, int64_t>, size_t> spec_of;
  for (int st = 0; st < kStreams; ++st) {
    sinks.push_back(std::make_unique<FakeSink>());
    hub_->AddStream(sinks.back().get());
    int64_t id = 0;
    for (int copy = 0; copy < kPerSpec; ++copy) {
      for (size_t i = 0; i < specs.size(); ++i) {
        etcdserverpb::WatchRequest req;
        auto* c = req.mutable_create_request();
        c->set_key(specs[i].key);
        c->set_range_end(specs[i].end);
        if (specs[i].no_put) c->add_filters(etcdserverpb::WatchCreateRequest::NOPUT);
        if (specs[i].no_delete) c->add_filters(etcdserverpb::WatchCreateRequest::NODELETE);
        hub_->HandleRequest(sinks.back().get(), req);
        spec_of[{st, id++}] = i;
      }
    }
    sinks.back()->Take();
  }
  // Cancel a few watchers in the middle of the synced lists, and then the
  // ones that were moved into their slots (ids 55 and 48 were last in their
  // stream's range list and in the key "k1"'s list).
  std::set<std::pair<int, int64_t>> cancelled = {{0, 3}, {0, 17}, {0, 55},
                                                 {1, 0}, {1, 48}, {2, 40}};
  for (auto [st, id] : cancelled) {
    etcdserverpb::WatchRequest req;
    req.mutable_cancel_request()->set_watch_id(id);
    hub_->HandleRequest(sinks[st].get(), req);
    sinks[st]->Take();
  }
  // Revisions: single puts, a delete, and a txn with several events.
  std::vector<std::pair<int64_t, std::vector<mvccpb::Event>>> published;
  auto publish = [&](auto&& fill) {
    auto txn = mvcc_->BeginWrite();
    fill(txn.get());
    int64_t rev = txn->write_rev();
    auto events = txn->events();
    ASSERT_TRUE(txn->Commit().ok());
    hub_->Publish(rev, events);
    published.emplace_back(rev, events);
  };
  publish([](auto* t) { t->Put("k1", "a", 0); });
  publish([](auto* t) { t->Put("k2", "b", 0); });
  publish([](auto* t) { t->Put("m5", "c", 0); });
  publish([](auto* t) {
    t->Put("k1", "d", 0);
    t->Put("k25", "e", 0);
    t->Put("z", "f", 0);
  });
  publish([](auto* t) { EXPECT_EQ(t->DeleteRange("k2", "", nullptr).size(), 1u); });

  for (int st = 0; st < kStreams; ++st) {
    std::map<int64_t, std::vector<std::pair<int64_t, std::string>>> got;  // id -> (rev, key)
    for (const auto& r : sinks[st]->Take()) {
      for (const auto& e : r.events()) {
        got[r.watch_id()].emplace_back(r.header().revision(), e.kv().key());
      }
    }
    for (const auto& [where, spec_index] : spec_of) {
      if (where.first != st) continue;
      const Spec& spec = specs[spec_index];
      std::vector<std::pair<int64_t, std::string>> want;
      if (!cancelled.contains(where)) {
        for (const auto& [rev, events] : published) {
          for (const auto& e : events) {
            if (!InRange(e.kv().key(), spec.key, spec.end)) continue;
            if (e.type() == mvccpb::Event::PUT && spec.no_put) continue;
            if (e.type() == mvccpb::Event::DELETE && spec.no_delete) continue;
            want.emplace_back(rev, e.kv().key());
          }
        }
      }
      EXPECT_EQ(got[where.second], want) << "stream " << st << " watch " << where.second << " ["
                                         << spec.key << ", " << spec.end << ")";
    }
  }
  for (auto& sink : sinks) hub_->RemoveStream(sink.get());
}

// Plain range watchers that are level with the hub are sent to as a group;
// one that starts at a later revision joins its group only when the fan-out
// reaches that revision, and one that leaves and rejoins (cancel, a new
// watcher in its slot) keeps getting exactly its own events.
TEST_F(WatchHubTest, WatchersStartingLaterJoinTheirGroupAtTheirRevision) {
  FakeSink sink;
  hub_->AddStream(&sink);
  int64_t now = Put("s0", "before");
  // ids 0..5: starts now+1 (level), now+1, now+2, now+3, now+5, now+1.
  const std::vector<int64_t> starts = {0, now + 1, now + 2, now + 3, now + 5, 0};
  for (int64_t start : starts) Create(&sink, "s", "t", start);
  sink.Take();
  std::vector<int64_t> written;
  for (int i = 0; i < 6; ++i) {
    written.push_back(Put("s" + std::to_string(i), "v"));
    if (i == 2) {  // the group's first member leaves; the last takes its slot
      etcdserverpb::WatchRequest cancel;
      cancel.mutable_cancel_request()->set_watch_id(0);
      hub_->HandleRequest(&sink, cancel);
    }
  }
  std::map<int64_t, std::vector<int64_t>> by_id;
  for (const auto& r : sink.Take()) {
    for (const auto& e : r.events()) by_id[r.watch_id()].push_back(e.kv().mod_revision());
  }
  for (int64_t id = 0; id < static_cast<int64_t>(starts.size()); ++id) {
    int64_t start =
        starts[static_cast<size_t>(id)] == 0 ? now + 1 : starts[static_cast<size_t>(id)];
    std::vector<int64_t> want;
    for (int64_t rev : written) {
      if (rev >= start && (id != 0 || rev <= written[2])) want.push_back(rev);
    }
    EXPECT_EQ(by_id[id], want) << "watch " << id << " starting at " << start;
  }
  hub_->RemoveStream(&sink);
}

// A watcher asking for progress notifications gets one when its group has
// sent it nothing for an interval.
TEST(WatchHubProgressTest, IdleGroupedWatcherGetsProgressNotifications) {
  fs::path dir = FreshTestDir("watch_progress_test");
  auto backend = std::move(*Backend::Open(dir, {}));
  Mvcc mvcc(backend.get());
  ASSERT_TRUE(mvcc.Restore([](const std::string&, int64_t) {}).ok());
  WatchHub::Options opts;
  opts.progress_interval = std::chrono::milliseconds(20);
  opts.sync_interval = std::chrono::milliseconds(5);
  WatchHub hub(&mvcc, opts,
               [](etcdserverpb::ResponseHeader* h, int64_t rev) { h->set_revision(rev); });
  FakeSink sink;
  hub.AddStream(&sink);
  for (int i = 0; i < 2; ++i) {
    etcdserverpb::WatchRequest req;
    req.mutable_create_request()->set_key("p");
    req.mutable_create_request()->set_range_end("q");
    req.mutable_create_request()->set_progress_notify(i == 0);
    hub.HandleRequest(&sink, req);
  }
  ASSERT_TRUE(sink.WaitFor([](const std::vector<WatchResponse>& rs) {
    for (const auto& r : rs) {
      if (!r.created() && r.events_size() == 0 && r.watch_id() == 0) return true;
    }
    return false;
  })) << "the idle watcher that asked for progress gets a notification";
  for (const auto& r : sink.Take()) {
    EXPECT_FALSE(!r.created() && r.watch_id() == 1) << "the one that did not ask gets none";
  }
  hub.RemoveStream(&sink);
  fs::remove_all(dir);
}

// A stream over its limit: all its matching watchers (many, so removal from
// the synced list reorders it during the fan-out) fall behind together and
// all catch up, each with every revision once.
TEST_F(WatchHubTest, ManyWatchersOfASlowStreamAllCatchUp) {
  FakeSink slow;
  hub_->AddStream(&slow);
  constexpr int kWatchers = 40;
  for (int i = 0; i < kWatchers; ++i) Create(&slow, i % 2 ? "p" : "p1", i % 2 ? "q" : "", 0);
  slow.Take();
  slow.set_queued(1 << 20);
  std::vector<int64_t> written;
  for (int i = 0; i < 5; ++i) written.push_back(Put("p1", std::to_string(i)));
  int64_t other = Put("p2", "only the range watchers");
  slow.set_queued(0);
  hub_->Kick();
  ASSERT_TRUE(slow.WaitFor([&](const std::vector<WatchResponse>& rs) {
    size_t events = 0;
    for (const auto& r : rs) events += static_cast<size_t>(r.events_size());
    return events >= kWatchers * written.size() + kWatchers / 2;
  }));
  std::map<int64_t, std::vector<int64_t>> by_id;
  for (const auto& r : slow.Take()) {
    for (const auto& e : r.events()) by_id[r.watch_id()].push_back(e.kv().mod_revision());
  }
  ASSERT_EQ(by_id.size(), static_cast<size_t>(kWatchers));
  for (const auto& [id, revs] : by_id) {
    std::vector<int64_t> want = written;
    if (id % 2) want.push_back(other);
    EXPECT_EQ(revs, want) << "watch " << id;
  }
  hub_->RemoveStream(&slow);
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
