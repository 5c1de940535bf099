#include "store/mvcc.h"

#include <unistd.h>

#include <filesystem>

#include "base/test_dir.h"
#include "gtest/gtest.h"
#include "store/errors.h"

namespace capstan::store {
namespace {

namespace fs = std::filesystem;

class MvccTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshTestDir("mvcc_test");
    Open();
  }
  void TearDown() override {
    mvcc_.reset();
    backend_.reset();
    fs::remove_all(dir_);
  }
  void Open() {
    mvcc_.reset();
    backend_.reset();
    auto b = Backend::Open(dir_, {});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    mvcc_ = std::make_unique<Mvcc>(backend_.get());
    ASSERT_TRUE(mvcc_->Restore([](const std::string&, int64_t) {}).ok());
  }
  void Put(const std::string& k, const std::string& v) {
    auto txn = mvcc_->BeginWrite();
    txn->Put(k, v, 0);
    ASSERT_TRUE(txn->Commit().ok());
  }
  std::vector<std::string> Values(std::string_view key, std::string_view end, int64_t rev = 0) {
    RangeOptions o;
    o.rev = rev;
    auto r = mvcc_->Range(key, end, o);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<std::string> out;
    for (const auto& kv : r->kvs) out.push_back(kv.key() + "=" + kv.value());
    return out;
  }

  fs::path dir_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Mvcc> mvcc_;
};

TEST_F(MvccTest, RevisionsVersionsAndHistory) {
  EXPECT_EQ(mvcc_->current_rev(), 1) << "an empty store is at revision 1, as etcd";
  Put("a", "1");
  Put("a", "2");
  Put("b", "1");
  EXPECT_EQ(mvcc_->current_rev(), 4);
  auto r = mvcc_->Range("a", "", {});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].create_revision(), 2);
  EXPECT_EQ(r->kvs[0].mod_revision(), 3);
  EXPECT_EQ(r->kvs[0].version(), 2);
  EXPECT_EQ(Values("a", "", 2), (std::vector<std::string>{"a=1"}));
  EXPECT_EQ(mvcc_->Range("a", "", {.rev = 5}).status(), ErrFutureRev());
}

TEST_F(MvccTest, TxnSeesOwnWritesAndDeleteIsOneRevision) {
  Put("k1", "x");
  Put("k2", "y");
  {
    auto txn = mvcc_->BeginWrite();
    EXPECT_EQ(txn->rev(), 3);
    txn->Put("k3", "z", 0);
    EXPECT_EQ(txn->rev(), 4) << "reads inside a writing txn see its revision";
    auto r = txn->Range("k3", "", {});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->kvs.size(), 1u);
    EXPECT_EQ(r->kvs[0].value(), "z");
    std::vector<mvccpb::KeyValue> prev;
    auto deleted = txn->DeleteRange("k1", "k3", &prev);
    EXPECT_EQ(deleted.size(), 2u);
    EXPECT_EQ(prev.size(), 2u);
    EXPECT_EQ(txn->events().size(), 3u);
    ASSERT_TRUE(txn->Commit().ok());
  }
  EXPECT_EQ(mvcc_->current_rev(), 4);
  EXPECT_EQ(Values("k", "l"), (std::vector<std::string>{"k3=z"}));
  std::vector<mvccpb::Event> events;
  int64_t next = 0;
  ASSERT_TRUE(mvcc_->History(2, 4, 1 << 20, &events, &next).ok());
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[2].kv().key(), "k3");
  EXPECT_EQ(events[3].type(), mvccpb::Event::DELETE);
  EXPECT_EQ(events[3].kv().mod_revision(), 4);
  EXPECT_EQ(next, 5);
}

TEST_F(MvccTest, CompactionAndRestart) {
  for (int i = 0; i < 10; ++i) Put("k", std::to_string(i));
  Put("gone", "x");
  {
    auto txn = mvcc_->BeginWrite();
    txn->DeleteRange("gone", "", nullptr);
    ASSERT_TRUE(txn->Commit().ok());
  }
  rocksdb::WriteBatch batch;
  std::atomic<bool> done{false};
  auto dropped = mvcc_->Compact(8, &batch);
  ASSERT_TRUE(dropped.ok());
  ASSERT_TRUE(backend_->Write(&batch).ok());
  mvcc_->ScheduleDeletion(*std::move(dropped), [&] { done = true; });
  EXPECT_EQ(mvcc_->Compact(8, &batch).status(), ErrCompacted());
  EXPECT_EQ(mvcc_->Compact(100, &batch).status(), ErrFutureRev());
  EXPECT_EQ(mvcc_->Range("k", "", {.rev = 7}).status(), ErrCompacted());
  EXPECT_EQ(Values("k", "", 8), (std::vector<std::string>{"k=6"}));
  while (!done) std::this_thread::yield();

  Open();  // restart from the backend
  EXPECT_EQ(mvcc_->current_rev(), 13);
  EXPECT_EQ(mvcc_->compact_rev(), 8);
  auto r = mvcc_->Range("k", "", {});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].version(), 10) << "version survives compaction and restart";
  EXPECT_EQ(r->kvs[0].create_revision(), 2);
  EXPECT_TRUE(Values("gone", "").empty());
}

}  // namespace
}  // namespace capstan::store
