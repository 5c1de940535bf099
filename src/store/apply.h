// The store's state machine: applies log entries (puts, deletes, txns,
// compactions, lease grants and revocations, alarms) to the MVCC store with
// etcd's exact semantics, and serves the requests that do not need the log
// (ranges and read-only txns).
//
// Thread-safety: Apply is called from the log's applier thread only. Range,
// ReadOnlyTxn and the alarm getters may be called from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "base/mutex.h"
#include "capstan/store/internal.pb.h"
#include "etcd/etcdserverpb/rpc.pb.h"
#include "google/protobuf/message.h"
#include "raft/types.h"
#include "store/auth_store.h"
#include "store/lease.h"
#include "store/mvcc.h"
#include "store/watch.h"

namespace capstan::store {

// Receives the outcome of an applied entry: an error, or the response (the
// callee may take it with Swap). Called exactly once.
using ApplyDone = std::function<void(absl::Status, google::protobuf::Message*)>;

class Applier {
 public:
  Applier(Backend* backend, Mvcc* mvcc, Lessor* lessor, WatchHub* hub,
          AuthStore::Options auth_options = {});

  AuthStore* auth() { return &auth_; }

  // Loads alarms, members and the Raft membership persisted by earlier runs.
  absl::Status Restore();

  // Applies the entry at (index, term). `done` may be null (nobody waits, e.g. replay).
  void Apply(uint64_t index, uint64_t term, const LogEntry& entry, const ApplyDone& done);
  // Records that the entry at (index, term) was applied without other effect
  // (a new leader's empty entry, a request that failed validation).
  absl::Status RecordApplied(uint64_t index, uint64_t term);
  // Applies a Raft membership change: the member record and the resulting
  // membership are written with the index. `done` gets a MemberListResponse.
  void ApplyConfChange(uint64_t index, uint64_t term, const raft::ConfChange& cc,
                       const raft::ConfState& conf, const ApplyDone& done);

  std::vector<etcdserverpb::Member> Members() const;
  raft::ConfState Conf() const;
  // The last applied index and its term, as recorded in the backend.
  std::pair<uint64_t, uint64_t> Applied() const;
  // Told (from the apply thread) whenever the member list changed.
  void set_on_members_changed(std::function<void()> fn) { on_members_changed_ = std::move(fn); }

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
  void ApplyAuth(uint64_t index, const LogEntry& entry, const ApplyDone& done);
  // What the auth header's user may do that depends on state at apply:
  // the auth revision it was checked at, the keys of the leases it puts to
  // or revokes (etcd's authApplierV3).
  absl::Status CheckAuthAtApply(const LogEntry& entry) const;
  absl::Status CheckLeaseWritable(const AuthInfo& who, int64_t lease) const;
  absl::Status ApplyMemberAttributes(uint64_t index, const etcdserverpb::Member& req,
                                     etcdserverpb::MemberListResponse* resp);
  absl::Status ApplyMemberUpdate(uint64_t index, const etcdserverpb::MemberUpdateRequest& req,
                                 etcdserverpb::MemberListResponse* resp);
  // Changes an existing member's record with `change` and writes it.
  absl::Status UpdateMember(uint64_t index, uint64_t id,
                            const std::function<void(etcdserverpb::Member*)>& change,
                            etcdserverpb::MemberListResponse* resp);
  // Writes a member record and the index; REQUIRES alarms_mu_ not held.
  absl::Status WriteMember(uint64_t index, const etcdserverpb::Member& m,
                           etcdserverpb::MemberListResponse* resp);
  // Adds the applied index (and the term of the entry being applied) to a batch.
  void RecordIndex(uint64_t index, rocksdb::WriteBatch* batch);

  Backend* backend_;
  Mvcc* mvcc_;
  Lessor* lessor_;
  WatchHub* hub_;
  mutable Mutex alarms_mu_;
  std::vector<etcdserverpb::AlarmMember> alarms_ ABSL_GUARDED_BY(alarms_mu_);
  absl::Status failure_ ABSL_GUARDED_BY(alarms_mu_);
  std::map<uint64_t, etcdserverpb::Member> members_ ABSL_GUARDED_BY(alarms_mu_);
  raft::ConfState conf_ ABSL_GUARDED_BY(alarms_mu_);
  // Its own lock: RecordIndex runs inside sections that hold alarms_mu_.
  mutable Mutex applied_mu_;
  uint64_t applied_index_ ABSL_GUARDED_BY(applied_mu_) = 0;
  uint64_t applied_term_ ABSL_GUARDED_BY(applied_mu_) = 0;
  uint64_t term_ = 0;  // of the entry being applied; apply thread only
  std::function<void()> on_members_changed_;
  AuthStore auth_;
};

}  // namespace capstan::store
