#include "raft/single_node_log.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace capstan::raft {

SingleNodeLog::SingleNodeLog(Options options, StateMachine* sm, std::unique_ptr<Wal> wal)
    : options_(std::move(options)), sm_(sm), wal_(std::move(wal)) {
  if (options_.metrics != nullptr) {
    fsync_seconds_ = options_.metrics->AddHistogram("capstan_wal_fsync_duration_seconds",
                                                    "Latency of WAL fdatasync calls.",
                                                    metrics::LatencyBuckets());
    batch_entries_ = options_.metrics->AddHistogram(
        "capstan_wal_batch_entries", "Entries made durable by one fdatasync (group commit size).",
        {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096});
  }
}

absl::StatusOr<std::unique_ptr<SingleNodeLog>> SingleNodeLog::Start(Options options,
                                                                    StateMachine* sm,
                                                                    uint64_t applied_index) {
  ASSIGN_OR_RETURN(std::unique_ptr<Wal> wal,
                   Wal::Open(options.dir, options.wal, applied_index + 1));
  if (wal->last_index() < applied_index) {
    // The state machine is ahead of the log, e.g. the log directory was lost.
    // Continuing would reuse indexes the state machine already applied.
    return absl::DataLossError(
        absl::StrCat("wal in ", options.dir, " ends at index ", wal->last_index(),
                     " but the state machine has applied index ", applied_index,
                     "; the wal directory does not belong to this data directory"));
  }
  std::vector<WalEntry> batch;
  size_t batch_bytes = 0;
  uint64_t replayed = 0;
  RETURN_IF_ERROR(wal->Replay(applied_index + 1, [&](const WalEntry& e) {
    batch_bytes += e.data.size();
    batch.push_back(e);
    ++replayed;
    if (batch.size() >= 1024 || batch_bytes >= (8 << 20)) {
      sm->ApplyBatch(batch);
      batch.clear();
      batch_bytes = 0;
    }
    return absl::OkStatus();
  }));
  if (!batch.empty()) sm->ApplyBatch(batch);
  CAPSTAN_LOG(info, "wal replayed", "dir", options.dir, "from_index", applied_index + 1, "entries",
              replayed, "last_index", wal->last_index());

  std::unique_ptr<SingleNodeLog> log(new SingleNodeLog(std::move(options), sm, std::move(wal)));
  log->committed_ = log->wal_->last_index();
  log->applied_ = log->wal_->last_index();
  log->writer_ = std::thread([l = log.get()] { l->WriterLoop(); });
  log->applier_ = std::thread([l = log.get()] { l->ApplierLoop(); });
  return log;
}

SingleNodeLog::~SingleNodeLog() { Stop(); }

absl::Status SingleNodeLog::Propose(std::string data) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failure_.ok()) return failure_;
  if (stopping_) return absl::UnavailableError("etcdserver: server stopped");
  if (pending_bytes_ + data.size() > options_.max_pending_bytes && !pending_.empty()) {
    return absl::ResourceExhaustedError("etcdserver: too many requests");
  }
  pending_bytes_ += data.size();
  pending_.push_back(std::move(data));
  propose_cv_.notify_one();
  return absl::OkStatus();
}

absl::Status SingleNodeLog::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void SingleNodeLog::ReleaseTo(uint64_t index) {
  uint64_t cur = release_to_.load();
  while (index > cur && !release_to_.compare_exchange_weak(cur, index)) {
  }
  std::lock_guard<std::mutex> lock(mu_);
  propose_cv_.notify_one();
}

void SingleNodeLog::Fail(const absl::Status& status, std::vector<std::string> dropped) {
  CAPSTAN_LOG(err, "wal failed; the store accepts no more writes until restarted", "error",
              status.ToString());
  absl::Status failure;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = absl::UnavailableError(
        absl::StrCat("etcdserver: write-ahead log failed (", status.message(),
                     "); writes stop until the member restarts with the disk fixed"));
    failure = failure_;
    for (auto& p : pending_) dropped.push_back(std::move(p));
    pending_.clear();
    pending_bytes_ = 0;
  }
  if (options_.on_dropped) options_.on_dropped(failure, std::move(dropped));
}

void SingleNodeLog::WriterLoop() {
  std::vector<std::string> taken;
  uint64_t released = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      propose_cv_.wait(
          lock, [&] { return stopping_ || !pending_.empty() || release_to_.load() > released; });
      if (!failure_.ok() || (stopping_ && pending_.empty())) break;
      taken.swap(pending_);
      pending_bytes_ = 0;
    }
    uint64_t want_release = release_to_.load();
    if (want_release > released) {
      absl::Status st = wal_->ReleaseTo(want_release);
      if (!st.ok()) CAPSTAN_LOG(warn, "wal release failed", "error", st.ToString());
      released = want_release;
    }
    if (taken.empty()) continue;

    std::vector<WalEntry> batch;
    batch.reserve(taken.size());
    uint64_t index = wal_->last_index();
    for (std::string& data : taken) batch.push_back({++index, Term(), std::move(data)});
    taken.clear();

    auto start = std::chrono::steady_clock::now();
    absl::Status st = wal_->Append(batch);
    if (st.ok()) st = wal_->Sync();
    if (fsync_seconds_ != nullptr) {
      fsync_seconds_->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      batch_entries_->Observe(static_cast<double>(batch.size()));
    }
    if (!st.ok()) {
      std::vector<std::string> dropped;
      for (auto& e : batch) dropped.push_back(std::move(e.data));
      Fail(st, std::move(dropped));
      break;
    }
    committed_.store(index);
    std::lock_guard<std::mutex> lock(mu_);
    to_apply_.push_back(std::move(batch));
    apply_cv_.notify_one();
  }
  std::lock_guard<std::mutex> lock(mu_);
  writer_done_ = true;
  apply_cv_.notify_one();
}

void SingleNodeLog::ApplierLoop() {
  while (true) {
    std::vector<WalEntry> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      apply_cv_.wait(lock, [&] { return !to_apply_.empty() || writer_done_; });
      if (to_apply_.empty()) return;  // writer finished and everything is applied
      batch = std::move(to_apply_.front());
      to_apply_.pop_front();
    }
    sm_->ApplyBatch(batch);
    applied_.store(batch.back().index);
  }
}

void SingleNodeLog::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !writer_.joinable()) return;
    stopping_ = true;
    propose_cv_.notify_all();
  }
  if (writer_.joinable()) writer_.join();
  if (applier_.joinable()) applier_.join();
}

}  // namespace capstan::raft
