// The store's state machine: applies log entries (puts, deletes, txns,
// compactions, lease grants and revocations, alarms) to the MVCC store with
// etcd's exact semantics, and serves the requests that do not need the log
// (ranges and read-only txns).
//
// Thread-safety: Apply is called from the log's applier thread only. Range,
// ReadOnlyTxn and the alarm getters may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "base/mutex.h"
#include "capstan/store/internal.pb.h"
#include "etcd/etcdserverpb/rpc.pb.h"
#include "google/protobuf/message.h"
#include "store/lease.h"
#include "store/mvcc.h"
#include "store/watch.h"

namespace capstan::store {

// Receives the outcome of an applied entry: an error, or the response (the
// callee may take it with Swap). Called exactly once.
using ApplyDone = std::function<void(absl::Status, google::protobuf::Message*)>;

class Applier {
 public:
  Applier(Backend* backend, Mvcc* mvcc, Lessor* lessor, WatchHub* hub);

  // Loads alarms persisted by earlier runs.
  absl::Status Restore();

  // Applies the entry at `index`. `done` may be null (nobody waits, e.g. replay).
  void Apply(uint64_t index, const LogEntry& entry, const ApplyDone& done);

  // Requests served without the log.
  absl::Status Range(const etcdserverpb::RangeRequest& req, etcdserverpb::RangeResponse* resp);
  absl::Status ReadOnlyTxn(const etcdserverpb::TxnRequest& req, etcdserverpb::TxnResponse* resp);

  std::vector<etcdserverpb::AlarmMember> Alarms() const;
  bool NoSpaceAlarm() const;

  // Set once a backend write failed (disk full, I/O error). Applying stops
  // there, so that the outcome of every entry depends only on the log: the
  // entries are applied again, in order, when the member restarts. Reads keep
  // serving the state up to the last applied entry.
  absl::Status failure() const;

 private:
  absl::Status ApplyPut(uint64_t index, const etcdserverpb::PutRequest& req,
                        etcdserverpb::PutResponse* resp);
  absl::Status ApplyDelete(uint64_t index, const etcdserverpb::DeleteRangeRequest& req,
                           etcdserverpb::DeleteRangeResponse* resp);
  absl::Status ApplyTxn(uint64_t index, const etcdserverpb::TxnRequest& req,
                        etcdserverpb::TxnResponse* resp);
  absl::Status ApplyLeaseGrant(uint64_t index, const etcdserverpb::LeaseGrantRequest& req,
                               etcdserverpb::LeaseGrantResponse* resp);
  absl::Status ApplyLeaseRevoke(uint64_t index, const etcdserverpb::LeaseRevokeRequest& req,
                                etcdserverpb::LeaseRevokeResponse* resp);
  absl::Status ApplyAlarm(uint64_t index, const etcdserverpb::AlarmRequest& req,
                          etcdserverpb::AlarmResponse* resp);
  void ApplyCompaction(uint64_t index, const etcdserverpb::CompactionRequest& req,
                       const ApplyDone& done);
  // Commits the txn with the applied index and publishes its events.
  absl::Status Commit(uint64_t index, Mvcc::WriteTxn* txn);
  // Writes a batch that is not part of a txn (leases, alarms, compaction).
  absl::Status WriteBatch(rocksdb::WriteBatch* batch);
  // Records a backend failure; returns the error every later entry gets.
  absl::Status Fail(const absl::Status& st);
  // Adds the applied index to a batch.
  void RecordIndex(uint64_t index, rocksdb::WriteBatch* batch);

  Backend* backend_;
  Mvcc* mvcc_;
  Lessor* lessor_;
  WatchHub* hub_;
  mutable Mutex alarms_mu_;
  std::vector<etcdserverpb::AlarmMember> alarms_ ABSL_GUARDED_BY(alarms_mu_);
  absl::Status failure_ ABSL_GUARDED_BY(alarms_mu_);
};

}  // namespace capstan::store
