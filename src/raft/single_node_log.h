// A ReplicatedLog for a cluster of one: the quorum is this member's disk.
//
// Two threads: the writer takes every proposal queued since its last round,
// appends them to the WAL and fsyncs once (group commit), then hands the batch
// to the applier thread, which calls StateMachine::ApplyBatch. While batch N
// is applied, batch N+1 is being written: fsync and apply overlap.
//
// A WAL write or fsync failure is not retried (after a failed fsync the page
// cache state is unknown): the log fails, every queued and later proposal gets
// UNAVAILABLE, and the error is logged. Restart recovers from the WAL.
//
// Thread-safety: Propose, ReleaseTo and the index getters may be called from
// any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "raft/replicated_log.h"

namespace capstan::raft {

class SingleNodeLog final : public ReplicatedLog {
 public:
  struct Options {
    std::string dir;  // WAL directory
    Wal::Options wal;
    size_t max_pending_bytes = 256 << 20;  // proposals queued before RESOURCE_EXHAUSTED
    metrics::Registry* metrics = nullptr;  // optional
    // Told, once, about the proposals a WAL failure dropped (never durable,
    // never applied), so their proposers can get an error at once.
    std::function<void(const absl::Status&, std::vector<std::string>)> on_dropped;
  };

  // Opens the WAL, replays entries after `applied_index` into `sm`
  // synchronously, then starts the writer and applier threads.
  static absl::StatusOr<std::unique_ptr<SingleNodeLog>> Start(Options options, StateMachine* sm,
                                                              uint64_t applied_index);
  ~SingleNodeLog() override;

  absl::Status Propose(std::string data) override;
  void ReleaseTo(uint64_t index) override;
  uint64_t CommittedIndex() const override { return committed_.load(); }
  uint64_t AppliedIndex() const override { return applied_.load(); }
  uint64_t Term() const override { return 1; }
  absl::Status Health() const override;
  void Stop() override;

 private:
  SingleNodeLog(Options options, StateMachine* sm, std::unique_ptr<Wal> wal);
  void WriterLoop();
  void ApplierLoop();
  // REQUIRES: called by the writer with the batch it failed to make durable.
  void Fail(const absl::Status& status, std::vector<std::string> dropped);

  Options options_;
  StateMachine* sm_;
  std::unique_ptr<Wal> wal_;  // owned by the writer thread once started

  mutable std::mutex mu_;
  std::condition_variable propose_cv_;
  std::condition_variable apply_cv_;
  std::vector<std::string> pending_;            // GUARDED_BY(mu_)
  size_t pending_bytes_ = 0;                    // GUARDED_BY(mu_)
  std::deque<std::vector<WalEntry>> to_apply_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                       // GUARDED_BY(mu_)
  bool writer_done_ = false;                    // GUARDED_BY(mu_)
  absl::Status failure_;                        // GUARDED_BY(mu_)

  std::atomic<uint64_t> committed_{0};
  std::atomic<uint64_t> applied_{0};
  std::atomic<uint64_t> release_to_{0};
  std::thread writer_;
  std::thread applier_;

  metrics::Histogram* fsync_seconds_ = nullptr;
  metrics::Histogram* batch_entries_ = nullptr;
};

}  // namespace capstan::raft
