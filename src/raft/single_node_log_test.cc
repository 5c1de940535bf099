#include "raft/single_node_log.h"

#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"

namespace capstan::raft {
namespace {

namespace fs = std::filesystem;

class RecordingStateMachine : public StateMachine {
 public:
  void ApplyBatch(const std::vector<WalEntry>& entries) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : entries) {
      EXPECT_EQ(e.index, last_ + 1) << "entries must arrive in order, without gaps";
      last_ = e.index;
      data_.push_back(e.data);
    }
    cv_.notify_all();
  }
  void WaitFor(uint64_t index) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return last_ >= index; });
  }
  uint64_t last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }
  std::vector<std::string> data() {
    std::lock_guard<std::mutex> lock(mu_);
    return data_;
  }
  void set_last(uint64_t v) { last_ = v; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t last_ = 0;
  std::vector<std::string> data_;
};

TEST(SingleNodeLog, AppliesConcurrentProposalsInOrderAndReplaysAfterRestart) {
  fs::path dir = fs::temp_directory_path() / ("snl_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  constexpr int kThreads = 8, kPerThread = 200;
  {
    RecordingStateMachine sm;
    auto log = SingleNodeLog::Start({.dir = dir}, &sm, 0);
    ASSERT_TRUE(log.ok()) << log.status();
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          ASSERT_TRUE((*log)->Propose(std::to_string(t) + ":" + std::to_string(i)).ok());
        }
      });
    }
    for (auto& t : threads) t.join();
    sm.WaitFor(kThreads * kPerThread);
    (*log)->Stop();  // joins the applier, which publishes AppliedIndex after each batch
    EXPECT_EQ((*log)->AppliedIndex(), uint64_t{kThreads * kPerThread});
    EXPECT_FALSE((*log)->Propose("late").ok());
  }
  {
    // The state machine says it applied half: the log must replay the rest.
    RecordingStateMachine sm;
    sm.set_last(kThreads * kPerThread / 2);
    auto log = SingleNodeLog::Start({.dir = dir}, &sm, kThreads * kPerThread / 2);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ(sm.last(), uint64_t{kThreads * kPerThread});
    ASSERT_TRUE((*log)->Propose("next").ok());
    sm.WaitFor(kThreads * kPerThread + 1);
    EXPECT_EQ(sm.data().back(), "next");
  }
  {
    // A state machine ahead of the log means the WAL belongs to someone else.
    RecordingStateMachine sm;
    auto log = SingleNodeLog::Start({.dir = dir}, &sm, 1'000'000);
    EXPECT_FALSE(log.ok());
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace capstan::raft
