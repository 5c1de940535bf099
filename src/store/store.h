// Store: one member's state machine and everything around it. It owns the
// backend (RocksDB), the MVCC index, the lessor, the watch hub and the
// replicated log, applies committed entries, and gives the API services a
// small surface: Propose a write and hear back when it is applied, read,
// fill response headers, check the space quota.
//
// The write path: service validates -> Propose (entry gets a request id and a
// waiter) -> log makes it durable -> ApplyBatch applies it -> the waiter's
// callback completes the RPC. See src/store/README.md.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/metrics.h"
#include "raft/replicated_log.h"
#include "store/apply.h"
#include "store/backend.h"
#include "store/lease.h"
#include "store/mvcc.h"
#include "store/watch.h"

namespace capstan::store {

// The etcd API version Capstan implements and reports in Status.version.
inline constexpr char kEtcdApiVersion[] = "3.5.17";

struct StoreOptions {
  std::string name = "default";
  std::string data_dir = "default.etcd";
  std::vector<std::string> advertise_client_urls;
  std::vector<std::string> advertise_peer_urls;
  int64_t quota_backend_bytes = int64_t{2} << 30;
  size_t max_request_bytes = 1536 * 1024;
  int max_txn_ops = 128;
  int64_t min_lease_ttl_seconds = 2;
  std::chrono::milliseconds progress_notify_interval{600'000};
  std::chrono::milliseconds request_timeout{7'000};
  size_t max_watch_stream_bytes = 8 << 20;
  metrics::Registry* metrics = nullptr;
};

class Store final : public raft::StateMachine {
 public:
  static absl::StatusOr<std::unique_ptr<Store>> Open(StoreOptions options);
  ~Store() override;

  // Proposes a mutating request. `done` runs exactly once: on apply with the
  // response, or with an error (rejected, timed out, stopped).
  void Propose(LogEntry entry, ApplyDone done);

  // Raises NOSPACE and fails when a write of `cost` bytes would exceed the quota.
  absl::Status CheckQuota(size_t cost);

  // Sets cluster and member id and raft term; sets the revision when unset.
  void FillHeader(etcdserverpb::ResponseHeader* header) const;
  void FillHeader(etcdserverpb::ResponseHeader* header, int64_t rev) const;

  // Blocks until the store revision exceeds `rev`, the deadline passes, or the
  // store stops. Returns the current revision.
  int64_t WaitRevisionAbove(int64_t rev, std::chrono::steady_clock::time_point deadline);

  // Maintenance.Status as this member sees it.
  etcdserverpb::StatusResponse Status() const;
  // Writes a consistent snapshot of the backend into `dir`.
  absl::Status Checkpoint(const std::string& dir) const { return backend_->Checkpoint(dir); }
  absl::Status Defragment() { return backend_->CompactAll(); }
  uint32_t BackendHash() const;

  Applier* applier() { return applier_.get(); }
  Mvcc* mvcc() { return mvcc_.get(); }
  Lessor* lessor() { return lessor_.get(); }
  WatchHub* watch_hub() { return hub_.get(); }
  const StoreOptions& options() const { return options_; }
  uint64_t member_id() const { return member_id_; }
  uint64_t cluster_id() const { return cluster_id_; }
  // Why the member cannot serve writes ("" when it can).
  std::string Unhealthy() const;

  // Stops accepting writes, applies what is durable, stops threads.
  void Stop();

 private:
  explicit Store(StoreOptions options);
  absl::Status Init();
  void ApplyBatch(const std::vector<raft::WalEntry>& entries) override;
  void BackgroundLoop();

  StoreOptions options_;
  const Clock* clock_ = RealClock::Get();
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Mvcc> mvcc_;
  std::unique_ptr<Lessor> lessor_;
  std::unique_ptr<WatchHub> hub_;
  std::unique_ptr<Applier> applier_;
  std::unique_ptr<raft::ReplicatedLog> log_;
  uint64_t member_id_ = 0;
  uint64_t cluster_id_ = 0;
  uint64_t request_nonce_ = 0;
  std::atomic<uint64_t> next_request_{1};

  struct Waiter {
    ApplyDone done;
    std::chrono::steady_clock::time_point deadline;
  };
  std::mutex waiters_mu_;
  std::unordered_map<uint64_t, Waiter> waiters_;  // GUARDED_BY(waiters_mu_)

  std::mutex rev_mu_;
  std::condition_variable rev_cv_;  // signalled after every applied batch
  std::mutex bg_mu_;
  std::condition_variable bg_cv_;  // wakes the background loop to stop
  std::atomic<bool> stopping_{false};
  std::atomic<bool> nospace_raised_{false};
  std::thread background_;

  metrics::Counter* proposals_ = nullptr;
  metrics::Counter* proposals_failed_ = nullptr;
  metrics::Gauge* applied_index_ = nullptr;
};

}  // namespace capstan::store
