#include "raft/node.h"

#include <unistd.h>

#include <filesystem>
#include <set>
#include <thread>

#include "base/test_dir.h"
#include "gtest/gtest.h"

namespace capstan::raft {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Records what it is given; checks that batches never overlap.
class RecordingMachine final : public StateMachine {
 public:
  void ApplyBatch(const CommittedBatch& batch) override {
    EXPECT_FALSE(in_apply_.exchange(true)) << "two batches applied at once";
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const Entry& e : batch.entries) {
        if (e.type == EntryType::kNormal && !e.data.empty()) applied_.push_back(e.data);
      }
    }
    cv_.notify_all();
    in_apply_ = false;
  }
  absl::StatusOr<AppliedState> CreateSnapshot(const std::string&) override {
    return absl::UnimplementedError("not in this test");
  }
  absl::Status RestoreSnapshot(const std::string&, const AppliedState&) override {
    return absl::UnimplementedError("not in this test");
  }

  std::vector<std::string> Applied() {
    std::lock_guard<std::mutex> lock(mu_);
    return applied_;
  }
  bool WaitForCount(size_t n, std::chrono::seconds limit = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return applied_.size() >= n; });
  }

 private:
  std::atomic<bool> in_apply_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> applied_;
};

class NodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshTestDir("node_test");
    fs::create_directories(dir_ / "snap");
  }
  void TearDown() override {
    node_.reset();
    fs::remove_all(dir_);
  }

  // A single-voter node. The tick is long, so the raft loop wakes only when
  // woken: what it does not pick up, a proposer must have driven.
  void StartLoneNode() {
    NodeOptions o;
    o.id = 1;
    o.wal_dir = dir_ / "wal";
    o.snapshot_dir = dir_ / "snap";
    o.tick = std::chrono::hours(1);
    o.metrics = &metrics_;
    o.bootstrap.push_back(Entry{1, 1, EntryType::kConfChange,
                                ConfChange{ConfChange::Type::kAddVoter, 1, ""}.Encode()});
    o.on_dropped = [this](const absl::Status&, std::vector<std::string> dropped) {
      dropped_ += dropped.size();
    };
    auto node = Node::Start(std::move(o), &sm_, AppliedState{});
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!node_->IsLeader() && Clock::now() < deadline) std::this_thread::yield();
    ASSERT_TRUE(node_->IsLeader());
  }

  // The loop may still be finishing its start-up round: writes until it is
  // idle and one write is driven by its proposer (each waits until applied).
  // Returns the writes made.
  size_t WriteUntilAProposerDrives() {
    size_t written = 0;
    for (; written < 100 && ProposerRounds() == 0; ++written) {
      EXPECT_TRUE(node_->Propose("warm-up", /*defer_wake=*/true).ok());
      node_->DriveOrWake(1);
      EXPECT_TRUE(sm_.WaitForCount(written + 1));
    }
    EXPECT_EQ(ProposerRounds(), 1);
    return written;
  }

  double ProposerRounds() {
    std::string text = metrics_.RenderText();
    std::string name = "capstan_raft_proposer_rounds_total ";
    size_t at = text.find("\n" + name);
    return at == std::string::npos ? -1 : std::stod(text.substr(at + 1 + name.size()));
  }

  fs::path dir_;
  metrics::Registry metrics_;
  RecordingMachine sm_;
  std::atomic<size_t> dropped_{0};
  std::unique_ptr<Node> node_;
};

// A lone leader with an idle raft loop: the proposer's own DriveOrWake
// appends, syncs and applies, so the write is applied when it returns.
TEST_F(NodeTest, IdleLoneLeaderIsDrivenByItsProposer) {
  ASSERT_NO_FATAL_FAILURE(StartLoneNode());
  size_t written = WriteUntilAProposerDrives();
  ASSERT_FALSE(HasFailure());
  for (int i = 0; i < 5; ++i) {
    std::string data = "w" + std::to_string(i);
    ASSERT_TRUE(node_->Propose(data, /*defer_wake=*/true).ok());
    node_->DriveOrWake(1);
    std::vector<std::string> applied = sm_.Applied();
    ASSERT_EQ(applied.size(), written + i + 1);
    EXPECT_EQ(applied.back(), data);
  }
  EXPECT_EQ(ProposerRounds(), 6);
  // More queued than the caller may drive: the raft loop takes them.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(node_->Propose("b" + std::to_string(i), true).ok());
  node_->DriveOrWake(1);
  ASSERT_TRUE(sm_.WaitForCount(written + 8));
  EXPECT_EQ(ProposerRounds(), 6);
}

// Proposers that drive, proposers that wake the loop, and the loop itself
// contend for the core: every write is applied exactly once, and batches
// never overlap (checked by the machine). Which thread runs which round is
// up to the scheduler, so only the outcome is asserted.
TEST_F(NodeTest, DriversAndTheLoopShareTheCore) {
  ASSERT_NO_FATAL_FAILURE(StartLoneNode());
  size_t written = WriteUntilAProposerDrives();
  constexpr int kThreads = 4, kEach = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::string data = std::to_string(t) + ":" + std::to_string(i);
        bool drive = (t + i) % 3 != 0;
        ASSERT_TRUE(node_->Propose(data, drive).ok());
        if (drive) node_->DriveOrWake(1000);  // any batch: drive whenever the core is idle
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(sm_.WaitForCount(written + kThreads * kEach));
  std::vector<std::string> applied = sm_.Applied();
  applied.erase(applied.begin(), applied.begin() + static_cast<ptrdiff_t>(written));
  EXPECT_EQ(applied.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(std::set<std::string>(applied.begin(), applied.end()).size(), applied.size());
}

// Stop while proposers are driving: it waits for the round in progress, and
// every proposal is either applied or reported dropped, none lost silently.
TEST_F(NodeTest, StopWhileProposersDrive) {
  ASSERT_NO_FATAL_FAILURE(StartLoneNode());
  std::atomic<bool> go{true};
  std::atomic<size_t> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; go && i < 100000; ++i) {
        if (!node_->Propose(std::to_string(t) + ":" + std::to_string(i), true).ok()) break;
        ++accepted;
        node_->DriveOrWake(1);
      }
    });
  }
  ASSERT_TRUE(sm_.WaitForCount(50));
  node_->Stop();
  go = false;
  for (auto& th : threads) th.join();
  EXPECT_EQ(sm_.Applied().size() + dropped_, accepted.load());
}

}  // namespace
}  // namespace capstan::raft
