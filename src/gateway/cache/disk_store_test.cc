// The disk tier: records round-trip (Vary values, fields, tags, times, body),
// a torn or corrupt file is a miss and is removed, the byte budget evicts
// the oldest records, a reopened directory is indexed again, failed writes
// are counted and dropped, purges remove the files.
#include "gateway/cache/disk_store.h"

#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "base/crc32c.h"
#include "base/test_dir.h"
#include "gateway/cache/disk_record.h"
#include "gtest/gtest.h"

namespace capstan::gateway::cache {
namespace {

namespace fs = std::filesystem;
constexpr auto kWait = std::chrono::seconds(10);

std::shared_ptr<StoredResponse> MakeObject(
    const std::string& key, const std::string& body,
    std::vector<std::pair<std::string, std::string>> vary = {},
    std::vector<std::string> tags = {}) {
  auto obj = std::make_shared<StoredResponse>();
  obj->key = key;
  obj->vary = std::move(vary);
  obj->tags = std::move(tags);
  obj->status = 200;
  obj->fields.Add("content-type", "text/plain");
  obj->fields.Add("cache-control", "max-age=600");
  obj->fields.Add("etag", "\"v1\"");
  // A body in several slices, as a response arrives.
  size_t half = body.size() / 2;
  obj->body.Append(std::string_view(body).substr(0, half));
  net::Buffer rest(std::string_view(body).substr(half));
  obj->body.Append(std::move(rest));
  obj->times = StoredTimes{.response_time = 1000, .corrected_initial_age = 3, .lifetime = 600};
  obj->stored_at = 1000;
  return obj;
}

Fields Request(std::vector<std::pair<std::string, std::string>> fields) {
  Fields f;
  for (const auto& [name, value] : fields) f.Add(name, value);
  return f;
}

size_t CountFiles(const fs::path& dir, std::string_view suffix) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().ends_with(suffix)) ++n;
  }
  return n;
}

class DiskStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir("cache_disk"); }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  void Open(uint64_t max_bytes = 1 << 20, std::function<int()> fault = nullptr) {
    store_.reset();
    auto opened = DiskStore::Open(
        {.dir = dir_.string(), .max_bytes = max_bytes, .inject_write_error = std::move(fault)});
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(opened).value();
    ASSERT_TRUE(store_->WaitIdle(kWait));
  }
  std::shared_ptr<StoredResponse> Load(const std::string& key, const Fields& request) {
    uint64_t seq = store_->Find(key, request);
    if (seq == 0) return nullptr;
    return store_->Read(seq, key);
  }

  fs::path dir_;
  std::unique_ptr<DiskStore> store_;
};

TEST_F(DiskStoreTest, RoundTripKeepsVaryFieldsTagsTimesAndBody) {
  Open();
  std::string body(10000, 'x');
  body[0] = 'A';
  body[9999] = 'Z';
  store_->Write(MakeObject("h/a", body, {{"accept-language", "en"}}, {"t1", "t2"}));
  store_->Write(MakeObject("h/a", "french", {{"accept-language", "fr"}}));
  ASSERT_TRUE(store_->WaitIdle(kWait));
  EXPECT_EQ(store_->stats().objects, 2u);
  EXPECT_EQ(store_->stats().writes, 2u);

  auto en = Load("h/a", Request({{"Accept-Language", "en"}}));
  ASSERT_NE(en, nullptr);
  EXPECT_EQ(en->key, "h/a");
  EXPECT_EQ(en->body.ToString(), body);
  EXPECT_EQ(en->vary,
            (std::vector<std::pair<std::string, std::string>>{{"accept-language", "en"}}));
  EXPECT_EQ(en->tags, (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(en->status, 200);
  EXPECT_EQ(en->fields.Get("etag"), "\"v1\"");
  EXPECT_EQ(en->fields.Get("cache-control"), "max-age=600");
  EXPECT_EQ(en->fields.size(), 3u);
  EXPECT_EQ(en->times.response_time, 1000);
  EXPECT_EQ(en->times.corrected_initial_age, 3);
  EXPECT_EQ(en->times.lifetime, 600);
  // The body is one block of its exact size, as the memory tier stores it.
  EXPECT_EQ(en->body.slice_count(), 1u);

  auto fr = Load("h/a", Request({{"Accept-Language", "fr"}}));
  ASSERT_NE(fr, nullptr);
  EXPECT_EQ(fr->body.ToString(), "french");
  EXPECT_EQ(Load("h/a", Request({{"Accept-Language", "de"}})), nullptr);
  EXPECT_EQ(Load("h/b", Request({})), nullptr);

  // The same variant written again replaces the older record (and its file).
  store_->Write(MakeObject("h/a", "english v2", {{"accept-language", "en"}}));
  ASSERT_TRUE(store_->WaitIdle(kWait));
  EXPECT_EQ(Load("h/a", Request({{"Accept-Language", "en"}}))->body.ToString(), "english v2");
  EXPECT_EQ(store_->stats().objects, 2u);
  EXPECT_EQ(CountFiles(dir_, ".obj"), 2u);
}

TEST_F(DiskStoreTest, CorruptOrTornFileIsAMissAndIsRemoved) {
  Open();
  store_->Write(MakeObject("h/flip", std::string(5000, 'b')));
  store_->Write(MakeObject("h/torn", std::string(5000, 'c')));
  ASSERT_TRUE(store_->WaitIdle(kWait));
  uint64_t flip = store_->Find("h/flip", Request({}));
  uint64_t torn = store_->Find("h/torn", Request({}));
  ASSERT_NE(flip, 0u);
  ASSERT_NE(torn, 0u);
  {
    // One byte of the body flipped: only the body's checksum can tell.
    std::fstream f(store_->PathOf(flip), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-10, std::ios::end);
    f.put('X');
  }
  EXPECT_EQ(store_->Read(flip, "h/flip"), nullptr);
  EXPECT_FALSE(fs::exists(store_->PathOf(flip)));
  EXPECT_EQ(store_->Find("h/flip", Request({})), 0u);
  EXPECT_EQ(store_->stats().corrupt, 1u);

  // A file cut short (a crash mid-write): refused at the next start.
  std::string torn_path = store_->PathOf(torn);
  fs::resize_file(torn_path, fs::file_size(torn_path) - 100);
  Open();
  EXPECT_EQ(store_->Find("h/torn", Request({})), 0u);
  EXPECT_FALSE(fs::exists(torn_path));
  EXPECT_EQ(store_->stats().corrupt, 1u);
  EXPECT_EQ(store_->stats().objects, 0u);
}

TEST_F(DiskStoreTest, BudgetEvictsTheOldestRecordsFirst) {
  // Each record is a little over 10 000 bytes: the budget holds three.
  Open(35000);
  for (int i = 0; i < 5; ++i) {
    store_->Write(MakeObject("h/" + std::to_string(i), std::string(10000, 'a' + i)));
    ASSERT_TRUE(store_->WaitIdle(kWait));
  }
  DiskStats s = store_->stats();
  EXPECT_EQ(s.objects, 3u);
  EXPECT_EQ(s.evictions, 2u);
  EXPECT_LE(s.bytes, 35000u);
  EXPECT_EQ(Load("h/0", Request({})), nullptr);
  EXPECT_EQ(Load("h/1", Request({})), nullptr);
  for (int i = 2; i < 5; ++i) {
    auto obj = Load("h/" + std::to_string(i), Request({}));
    ASSERT_NE(obj, nullptr) << i;
    EXPECT_EQ(obj->body.ToString(), std::string(10000, 'a' + i));
  }
  EXPECT_EQ(CountFiles(dir_, ".obj"), 3u);
  // A smaller budget at the next start trims the oldest again.
  Open(25000);
  EXPECT_EQ(store_->stats().objects, 2u);
  EXPECT_EQ(Load("h/2", Request({})), nullptr);
  EXPECT_NE(Load("h/4", Request({})), nullptr);
}

TEST_F(DiskStoreTest, ReopenedDirectoryIsIndexedAgain) {
  Open();
  store_->Write(MakeObject("h/v", "en body", {{"accept-language", "en"}}, {"news"}));
  store_->Write(MakeObject("h/v", "fr body", {{"accept-language", "fr"}}));
  store_->Write(MakeObject("h/plain", "plain body"));
  ASSERT_TRUE(store_->WaitIdle(kWait));
  // One process per directory.
  auto second = DiskStore::Open({.dir = dir_.string(), .max_bytes = 1 << 20});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  store_.reset();
  // A write a crash cut short, and a file that is not the cache's.
  std::ofstream(dir_ / "tmp-00000000000000ff") << "half a record";
  std::ofstream(dir_ / "README") << "not ours";

  Open();
  EXPECT_EQ(store_->stats().objects, 3u);
  EXPECT_EQ(Load("h/v", Request({{"Accept-Language", "en"}}))->body.ToString(), "en body");
  EXPECT_EQ(Load("h/v", Request({{"Accept-Language", "fr"}}))->body.ToString(), "fr body");
  EXPECT_EQ(Load("h/plain", Request({}))->body.ToString(), "plain body");
  EXPECT_FALSE(fs::exists(dir_ / "tmp-00000000000000ff"));
  EXPECT_TRUE(fs::exists(dir_ / "README"));
  // New writes continue after the highest sequence found (no file reused).
  store_->Write(MakeObject("h/new", "new"));
  ASSERT_TRUE(store_->WaitIdle(kWait));
  EXPECT_EQ(store_->Find("h/new", Request({})), 4u);
  // Tags survive too: purge by tag after the restart.
  EXPECT_EQ(store_->RemoveTag("news"), 1u);
  EXPECT_EQ(Load("h/v", Request({{"Accept-Language", "en"}})), nullptr);
}

TEST_F(DiskStoreTest, FailedWritesAreCountedAndDropped) {
  int calls = 0;
  Open(1 << 20, [&calls] { return ++calls == 1 ? ENOSPC : 0; });
  store_->Write(MakeObject("h/full", "no room"));
  store_->Write(MakeObject("h/later", "room again"));
  ASSERT_TRUE(store_->WaitIdle(kWait));
  DiskStats s = store_->stats();
  EXPECT_EQ(s.write_errors, 1u);
  EXPECT_EQ(s.writes, 1u);
  EXPECT_EQ(Load("h/full", Request({})), nullptr);
  EXPECT_EQ(Load("h/later", Request({}))->body.ToString(), "room again");
  EXPECT_EQ(CountFiles(dir_, ".obj"), 1u);
  EXPECT_EQ(CountFiles(dir_, "tmp-"), 0u);
}

TEST_F(DiskStoreTest, PurgesRemoveTheFiles) {
  Open();
  store_->Write(MakeObject("h/a", "a", {}, {"red"}));
  store_->Write(MakeObject("h/b", "b", {}, {"blue"}));
  store_->Write(MakeObject("h/c#one", "c1"));
  store_->Write(MakeObject("h/c#two", "c2"));
  store_->Write(MakeObject("h/d", "d"));
  ASSERT_TRUE(store_->WaitIdle(kWait));
  EXPECT_EQ(store_->Remove("h/a"), 1u);
  EXPECT_EQ(store_->Find("h/a", Request({})), 0u);  // at once, before the unlink
  EXPECT_EQ(store_->RemoveTag("blue"), 1u);
  EXPECT_EQ(store_->RemoveKeyPrefix("h/c#"), 2u);
  ASSERT_TRUE(store_->WaitIdle(kWait));
  EXPECT_EQ(CountFiles(dir_, ".obj"), 1u);
  EXPECT_EQ(store_->Clear(), 1u);
  ASSERT_TRUE(store_->WaitIdle(kWait));
  EXPECT_EQ(CountFiles(dir_, ".obj"), 0u);
  EXPECT_EQ(store_->stats().objects, 0u);
  EXPECT_EQ(store_->stats().bytes, 0u);
}

// A purge that comes while its object is being written, or is still queued,
// wins: nothing of it is left indexed or on disk afterwards.
TEST_F(DiskStoreTest, PurgeWinsOverWritesUnderWayAndQueued) {
  std::mutex mu;
  std::condition_variable cv;
  bool in_write = false, release = false;
  // The writer thread stops inside its first write until the test says go.
  Open(1 << 20, [&] {
    std::unique_lock lock(mu);
    if (!in_write) {
      in_write = true;
      cv.notify_all();
      cv.wait_for(lock, kWait, [&] { return release; });
    }
    return 0;
  });
  store_->Write(MakeObject("h/under-way", "being written", {}, {"gone"}));
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kWait, [&] { return in_write; }));
  }
  store_->Write(MakeObject("h/queued", "queued", {}, {"gone"}));
  store_->Write(MakeObject("h/kept", "kept"));
  EXPECT_EQ(store_->RemoveTag("gone"), 0u);  // nothing indexed yet
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(store_->WaitIdle(kWait));
  EXPECT_EQ(store_->Find("h/under-way", Request({})), 0u);
  EXPECT_EQ(store_->Find("h/queued", Request({})), 0u);
  EXPECT_EQ(Load("h/kept", Request({}))->body.ToString(), "kept");
  EXPECT_EQ(CountFiles(dir_, ".obj"), 1u);
  EXPECT_EQ(store_->stats().objects, 1u);
}

TEST(DiskRecord, EncodeDecodeAndEveryDamageIsRefused) {
  auto obj = MakeObject("h/r", "the body", {{"accept", "text/html"}}, {"tag"});
  uint32_t body_crc = crc32c::Value("the body");
  std::string record = EncodeRecordPrefix(*obj, 7, body_crc) + "the body";
  RecordMeta meta;
  std::string_view body;
  ASSERT_TRUE(DecodeRecord(record, &meta, &body).ok());
  EXPECT_EQ(meta.seq, 7u);
  EXPECT_EQ(meta.key, "h/r");
  EXPECT_EQ(body, "the body");
  EXPECT_EQ(meta.fields.size(), 3u);
  for (size_t cut = 0; cut < record.size(); ++cut) {
    RecordMeta m;
    EXPECT_FALSE(DecodeRecord(std::string_view(record).substr(0, cut), &m, &body).ok()) << cut;
  }
  for (size_t i = 0; i < record.size(); ++i) {
    std::string damaged = record;
    damaged[i] ^= 0x01;
    RecordMeta m;
    EXPECT_FALSE(DecodeRecord(damaged, &m, &body).ok()) << i;
  }
}

}  // namespace
}  // namespace capstan::gateway::cache
