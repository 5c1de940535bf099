#include "store/apply.h"

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/logging.h"
#include "store/errors.h"
#include "store/kv_ops.h"

namespace capstan::store {

using etcdserverpb::RequestOp;
using etcdserverpb::TxnRequest;
using etcdserverpb::TxnResponse;

namespace {

// Walks the ops on the taken path of a txn (and its nested txns), calling
// check for every non-txn op, as etcd's checkRequests does.
absl::Status CheckPath(const TxnRequest& req, const std::vector<bool>& path, size_t* cursor,
                       const std::function<absl::Status(const RequestOp&)>& check) {
  bool ok = path[(*cursor)++];
  for (const auto& op : ok ? req.success() : req.failure()) {
    if (op.has_request_txn()) {
      RETURN_IF_ERROR(CheckPath(op.request_txn(), path, cursor, check));
    } else {
      RETURN_IF_ERROR(check(op));
    }
  }
  return absl::OkStatus();
}

// Ranges on the taken path must read revisions the store has (etcd's
// checkRequestRange): not in the future, not compacted. Revision 0 is "now".
absl::Status CheckRangeRevisions(const TxnRequest& req, const std::vector<bool>& path, int64_t rev,
                                 int64_t compact_rev) {
  size_t cursor = 0;
  return CheckPath(req, path, &cursor, [&](const RequestOp& op) -> absl::Status {
    if (!op.has_request_range()) return absl::OkStatus();
    int64_t want = op.request_range().revision();
    if (want == 0) return absl::OkStatus();
    if (want > rev) return ErrFutureRev();
    if (want < compact_rev) return ErrCompacted();
    return absl::OkStatus();
  });
}

// Executes a put inside `txn` (etcd's applierV3backend.Put); returns the
// lease the key ends up with. REQUIRES: ignore_value/ignore_lease were checked.
absl::StatusOr<int64_t> ExecutePut(Mvcc::WriteTxn* txn, const etcdserverpb::PutRequest& p,
                                   etcdserverpb::PutResponse* resp) {
  resp->mutable_header();
  std::string_view value = p.value();
  int64_t lease = p.lease();
  RangeResult rr;  // outlives `value`, which may point into it
  if (p.ignore_value() || p.ignore_lease() || p.prev_kv()) {
    ASSIGN_OR_RETURN(rr, txn->Range(p.key(), "", {}));
    if ((p.ignore_value() || p.ignore_lease()) && rr.kvs.empty()) return ErrKeyNotFound();
    if (p.ignore_value()) value = rr.kvs[0].value();
    if (p.ignore_lease()) lease = rr.kvs[0].lease();
    if (p.prev_kv() && !rr.kvs.empty()) *resp->mutable_prev_kv() = rr.kvs[0];
  }
  txn->Put(p.key(), value, lease);
  resp->mutable_header()->set_revision(txn->write_rev());
  return lease;
}

// Executes a delete inside `txn`; returns the deleted keys.
std::vector<std::string> ExecuteDelete(Mvcc::WriteTxn* txn,
                                       const etcdserverpb::DeleteRangeRequest& d,
                                       etcdserverpb::DeleteRangeResponse* resp) {
  std::vector<mvccpb::KeyValue> prev;
  auto keys = txn->DeleteRange(d.key(), d.range_end(), d.prev_kv() ? &prev : nullptr);
  resp->set_deleted(static_cast<int64_t>(keys.size()));
  for (auto& kv : prev) *resp->add_prev_kvs() = std::move(kv);
  resp->mutable_header()->set_revision(txn->rev());
  return keys;
}

// Lease ownership changes a txn makes, applied once it is written.
struct TxnEffects {
  std::vector<std::pair<int64_t, std::string>> attach;
  std::vector<std::string> detach;
};

// Executes the branch of `r` (and of nested txns) that `path` selects, into
// `out`. `txn` is null for read-only txns, which contain no puts or deletes.
absl::Status ExecuteTxnPath(KvView& view, Mvcc::WriteTxn* txn, const TxnRequest& r,
                            const std::vector<bool>& path, size_t* cursor, TxnResponse* out,
                            TxnEffects* effects) {
  bool ok = path[(*cursor)++];
  out->set_succeeded(ok);
  for (const auto& op : ok ? r.success() : r.failure()) {
    auto* rop = out->add_responses();
    if (op.request_case() == etcdserverpb::RequestOp::REQUEST_NOT_SET) {
      continue;  // an empty op gets an empty response, as in etcd
    } else if (op.has_request_range()) {
      RETURN_IF_ERROR(ExecuteRange(view, op.request_range(), rop->mutable_response_range()));
    } else if (op.has_request_txn()) {
      auto* nested = rop->mutable_response_txn();
      nested->mutable_header();  // etcd leaves nested headers empty
      RETURN_IF_ERROR(ExecuteTxnPath(view, txn, op.request_txn(), path, cursor, nested, effects));
    } else if (txn == nullptr) {
      return absl::InternalError("write op in a read-only txn");
    } else if (op.has_request_put()) {
      ASSIGN_OR_RETURN(int64_t lease,
                       ExecutePut(txn, op.request_put(), rop->mutable_response_put()));
      effects->attach.emplace_back(lease, op.request_put().key());
    } else if (op.has_request_delete_range()) {
      auto keys =
          ExecuteDelete(txn, op.request_delete_range(), rop->mutable_response_delete_range());
      effects->detach.insert(effects->detach.end(), keys.begin(), keys.end());
    }
  }
  return absl::OkStatus();
}

}  // namespace

Applier::Applier(Backend* backend, Mvcc* mvcc, Lessor* lessor, WatchHub* hub,
                 AuthStore::Options auth_options)
    : backend_(backend), mvcc_(mvcc), lessor_(lessor), hub_(hub), auth_(backend, auth_options) {}

absl::Status Applier::Restore() {
  RETURN_IF_ERROR(auth_.Load());
  MutexLock lock(&alarms_mu_);
  auto v = backend_->Get(MetaKey(kMetaAlarms));
  if (!absl::IsNotFound(v.status())) {
    RETURN_IF_ERROR(v.status());
    etcdserverpb::AlarmResponse stored;
    if (!stored.ParseFromString(*v)) return absl::DataLossError("undecodable alarm record");
    alarms_.assign(stored.alarms().begin(), stored.alarms().end());
  }
  auto applied = backend_->Get(MetaKey(kMetaAppliedIndex));
  if (applied.ok() && applied->size() == 16) {
    MutexLock applied_lock(&applied_mu_);
    applied_index_ = DecodeFixed64BE(applied->data());
    applied_term_ = DecodeFixed64BE(applied->data() + 8);
  }
  auto conf = backend_->Get(MetaKey(kMetaRaftConf));
  if (conf.ok()) {
    RaftConf rc;
    if (!rc.ParseFromString(*conf))
      return absl::DataLossError("undecodable raft membership record");
    conf_.voters.assign(rc.voters().begin(), rc.voters().end());
    conf_.learners.assign(rc.learners().begin(), rc.learners().end());
  }
  members_.clear();
  std::string prefix = MetaKey(kMetaMemberPrefix);
  auto it = backend_->NewIterator();
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    etcdserverpb::Member m;
    if (!m.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError("undecodable member record");
    }
    members_[m.id()] = m;
  }
  return absl::OkStatus();
}

std::vector<etcdserverpb::Member> Applier::Members() const {
  MutexLock lock(&alarms_mu_);
  std::vector<etcdserverpb::Member> out;
  for (const auto& [id, m] : members_) out.push_back(m);
  return out;
}

raft::ConfState Applier::Conf() const {
  MutexLock lock(&alarms_mu_);
  return conf_;
}

std::pair<uint64_t, uint64_t> Applier::Applied() const {
  MutexLock lock(&applied_mu_);
  return {applied_index_, applied_term_};
}

absl::Status Applier::RecordApplied(uint64_t index, uint64_t term) {
  if (absl::Status failed = failure(); !failed.ok()) return failed;
  term_ = term;
  rocksdb::WriteBatch batch;
  RecordIndex(index, &batch);
  return WriteBatch(&batch);
}

namespace {
std::string MemberKey(uint64_t id) {
  return MetaKey(absl::StrCat(kMetaMemberPrefix, absl::Hex(id, absl::kZeroPad16)));
}
}  // namespace

void Applier::ApplyConfChange(uint64_t index, uint64_t term, const raft::ConfChange& cc,
                              const raft::ConfState& conf, const ApplyDone& done) {
  term_ = term;
  if (absl::Status failed = failure(); !failed.ok()) {
    if (done) done(failed, nullptr);
    return;
  }
  ConfChangeContext ctx;
  if (!ctx.ParseFromString(cc.context)) {
    CAPSTAN_LOG(err, "membership change with an undecodable context", "index", index);
  }
  rocksdb::WriteBatch batch;
  etcdserverpb::MemberListResponse resp;
  {
    MutexLock lock(&alarms_mu_);
    if (cc.type == raft::ConfChange::Type::kRemove) {
      auto it = members_.find(cc.node);
      if (it != members_.end()) {
        *resp.mutable_header() = {};
        *resp.add_members() = it->second;  // the removed member, for the reply
        members_.erase(it);
      }
      batch.Delete(MemberKey(cc.node));
    } else {
      etcdserverpb::Member m = ctx.member();
      auto it = members_.find(cc.node);
      if (it != members_.end()) {
        // A promotion (or a repeated add): keep what the member published.
        std::string name = it->second.name();
        auto client_urls = it->second.clienturls();
        if (m.peerurls().empty()) *m.mutable_peerurls() = it->second.peerurls();
        if (m.name().empty()) m.set_name(name);
        *m.mutable_clienturls() = client_urls;
      }
      m.set_id(cc.node);
      m.set_islearner(cc.type == raft::ConfChange::Type::kAddLearner);
      members_[cc.node] = m;
      batch.Put(MemberKey(cc.node), m.SerializeAsString());
      *resp.add_members() = m;  // the changed member first, for the reply
    }
    conf_ = conf;
    RaftConf rc;
    for (uint64_t v : conf.voters) rc.add_voters(v);
    for (uint64_t l : conf.learners) rc.add_learners(l);
    batch.Put(MetaKey(kMetaRaftConf), rc.SerializeAsString());
    for (const auto& [id, m] : members_) *resp.add_members() = m;
  }
  RecordIndex(index, &batch);
  absl::Status st = WriteBatch(&batch);
  if (st.ok() && on_members_changed_) on_members_changed_();
  resp.mutable_header()->set_revision(mvcc_->current_rev());
  if (done) done(st, st.ok() ? &resp : nullptr);
}

absl::Status Applier::WriteMember(uint64_t index, const etcdserverpb::Member& m,
                                  etcdserverpb::MemberListResponse* resp) {
  rocksdb::WriteBatch batch;
  batch.Put(MemberKey(m.id()), m.SerializeAsString());
  RecordIndex(index, &batch);
  RETURN_IF_ERROR(WriteBatch(&batch));
  {
    MutexLock lock(&alarms_mu_);
    members_[m.id()] = m;
    for (const auto& [id, member] : members_) *resp->add_members() = member;
  }
  if (on_members_changed_) on_members_changed_();
  resp->mutable_header()->set_revision(mvcc_->current_rev());
  return absl::OkStatus();
}

absl::Status Applier::UpdateMember(uint64_t index, uint64_t id,
                                   const std::function<void(etcdserverpb::Member*)>& change,
                                   etcdserverpb::MemberListResponse* resp) {
  etcdserverpb::Member m;
  {
    MutexLock lock(&alarms_mu_);
    auto it = members_.find(id);
    if (it == members_.end()) return ErrMemberNotFound();
    m = it->second;
  }
  change(&m);
  return WriteMember(index, m, resp);
}

absl::Status Applier::ApplyMemberAttributes(uint64_t index, const etcdserverpb::Member& req,
                                            etcdserverpb::MemberListResponse* resp) {
  return UpdateMember(
      index, req.id(),
      [&](etcdserverpb::Member* m) {
        m->set_name(req.name());
        *m->mutable_clienturls() = req.clienturls();
      },
      resp);
}

absl::Status Applier::ApplyMemberUpdate(uint64_t index,
                                        const etcdserverpb::MemberUpdateRequest& req,
                                        etcdserverpb::MemberListResponse* resp) {
  return UpdateMember(
      index, req.id(), [&](etcdserverpb::Member* m) { *m->mutable_peerurls() = req.peerurls(); },
      resp);
}

std::vector<etcdserverpb::AlarmMember> Applier::Alarms() const {
  MutexLock lock(&alarms_mu_);
  return alarms_;
}

bool Applier::NoSpaceAlarm() const {
  MutexLock lock(&alarms_mu_);
  for (const auto& a : alarms_) {
    if (a.alarm() == etcdserverpb::NOSPACE) return true;
  }
  return false;
}

absl::Status Applier::failure() const {
  MutexLock lock(&alarms_mu_);
  return failure_;
}

absl::Status Applier::Fail(const absl::Status& st) {
  CAPSTAN_LOG(critical, "backend write failed: no more entries are applied until restart", "error",
              st.ToString());
  MutexLock lock(&alarms_mu_);
  if (failure_.ok()) {
    failure_ = absl::UnavailableError(
        absl::StrCat("etcdserver: storage failure (", st.message(),
                     "); writes stop until the member restarts with the disk fixed"));
  }
  return failure_;
}

absl::Status Applier::WriteBatch(rocksdb::WriteBatch* batch) {
  absl::Status st = backend_->Write(batch);
  return st.ok() ? st : Fail(st);
}

void Applier::RecordIndex(uint64_t index, rocksdb::WriteBatch* batch) {
  std::string v;
  PutFixed64BE(&v, index);
  PutFixed64BE(&v, term_);
  batch->Put(MetaKey(kMetaAppliedIndex), v);
  MutexLock lock(&applied_mu_);
  applied_index_ = index;
  applied_term_ = term_;
}

absl::Status Applier::Commit(uint64_t index, Mvcc::WriteTxn* txn) {
  RecordIndex(index, txn->batch());
  bool changed = !txn->events().empty();
  int64_t rev = txn->write_rev();
  absl::Status st = txn->Commit();
  if (!st.ok()) return Fail(st);
  if (changed) hub_->Publish(rev, txn->events());
  return absl::OkStatus();
}

void Applier::Apply(uint64_t index, uint64_t term, const LogEntry& entry, const ApplyDone& done) {
  term_ = term;
  if (absl::Status failed = failure(); !failed.ok()) {
    if (done) done(failed, nullptr);
    return;
  }
  auto finish = [&](absl::Status st, google::protobuf::Message* resp) {
    if (!st.ok() && !absl::IsInvalidArgument(st) && !absl::IsNotFound(st) &&
        !absl::IsOutOfRange(st) && !absl::IsFailedPrecondition(st) &&
        !absl::IsResourceExhausted(st) && !absl::IsPermissionDenied(st)) {
      CAPSTAN_LOG(err, "apply failed", "index", index, "error", st.ToString());
    }
    if (done) done(std::move(st), resp);
  };
  if (absl::Status denied = CheckAuthAtApply(entry); !denied.ok()) {
    // Refused as a whole, like a request that failed validation.
    absl::Status st = RecordApplied(index, term);
    finish(st.ok() ? denied : st, nullptr);
    return;
  }
  // Runs one Apply* method with a response of its own type.
  auto run = [&](auto method, const auto& req, auto resp) {
    absl::Status st = (this->*method)(index, req, &resp);
    finish(std::move(st), &resp);
  };
  switch (entry.request_case()) {
    case LogEntry::kPut:
      run(&Applier::ApplyPut, entry.put(), etcdserverpb::PutResponse());
      break;
    case LogEntry::kDeleteRange:
      run(&Applier::ApplyDelete, entry.delete_range(), etcdserverpb::DeleteRangeResponse());
      break;
    case LogEntry::kTxn:
      run(&Applier::ApplyTxn, entry.txn(), TxnResponse());
      break;
    case LogEntry::kCompaction:
      ApplyCompaction(index, entry.compaction(), done);
      break;
    case LogEntry::kLeaseGrant:
      run(&Applier::ApplyLeaseGrant, entry.lease_grant(), etcdserverpb::LeaseGrantResponse());
      break;
    case LogEntry::kLeaseRevoke:
      run(&Applier::ApplyLeaseRevoke, entry.lease_revoke(), etcdserverpb::LeaseRevokeResponse());
      break;
    case LogEntry::kAlarm:
      run(&Applier::ApplyAlarm, entry.alarm(), etcdserverpb::AlarmResponse());
      break;
    case LogEntry::kMemberAttributes:
      run(&Applier::ApplyMemberAttributes, entry.member_attributes(),
          etcdserverpb::MemberListResponse());
      break;
    case LogEntry::kMemberUpdate:
      run(&Applier::ApplyMemberUpdate, entry.member_update(), etcdserverpb::MemberListResponse());
      break;
    case LogEntry::kAuth:
      ApplyAuth(index, entry, done);
      break;
    default:
      finish(absl::InvalidArgumentError("unknown log entry"), nullptr);
  }
}

void Applier::ApplyAuth(uint64_t index, const LogEntry& entry, const ApplyDone& done) {
  rocksdb::WriteBatch batch;
  auto resp = auth_.Apply(entry.auth(), index,
                          entry.has_auth_header() ? &entry.auth_header() : nullptr, &batch);
  RecordIndex(index, &batch);
  absl::Status st = WriteBatch(&batch);
  if (st.ok()) st = resp.status();
  if (!st.ok()) {
    if (done) done(st, nullptr);
    return;
  }
  if (done) done(st, resp->get());
}

absl::Status Applier::CheckLeaseWritable(const AuthInfo& who, int64_t lease) const {
  if (lease == 0 || auth_.IsAdmin(who.user)) return absl::OkStatus();
  absl::StatusOr<std::vector<std::string>> keys = lessor_->Keys(lease);
  if (!keys.ok()) return absl::OkStatus();  // no such lease: the apply says so
  for (const auto& k : *keys) RETURN_IF_ERROR(auth_.CheckWrite(who, k, ""));
  return absl::OkStatus();
}

absl::Status Applier::CheckAuthAtApply(const LogEntry& entry) const {
  // Auth changes check their caller inside AuthStore::Apply.
  if (!entry.has_auth_header() || entry.has_auth() || !auth_.enabled()) return absl::OkStatus();
  AuthInfo who{entry.auth_header().username(), entry.auth_header().revision()};
  if (who.user.empty()) return ErrUserEmpty();
  if (who.revision < auth_.revision()) return ErrAuthOldRevision();
  switch (entry.request_case()) {
    case LogEntry::kPut:
      // A lease with keys the user cannot write cannot take more keys: the
      // user could not revoke it.
      return CheckLeaseWritable(who, entry.put().lease());
    case LogEntry::kLeaseRevoke:
      return CheckLeaseWritable(who, entry.lease_revoke().id());
    case LogEntry::kTxn: {
      // Every put of the txn, on both branches and in nested txns.
      std::vector<const TxnRequest*> pending{&entry.txn()};
      while (!pending.empty()) {
        const TxnRequest* t = pending.back();
        pending.pop_back();
        for (const auto* ops : {&t->success(), &t->failure()}) {
          for (const auto& op : *ops) {
            if (op.has_request_put()) {
              RETURN_IF_ERROR(CheckLeaseWritable(who, op.request_put().lease()));
            } else if (op.has_request_txn()) {
              pending.push_back(&op.request_txn());
            }
          }
        }
      }
      return absl::OkStatus();
    }
    default:
      return absl::OkStatus();
  }
}

absl::Status Applier::ApplyPut(uint64_t index, const etcdserverpb::PutRequest& req,
                               etcdserverpb::PutResponse* resp) {
  if (NoSpaceAlarm()) return ErrNoSpace();
  if (req.lease() != 0 && !lessor_->Exists(req.lease())) return ErrLeaseNotFound();
  auto txn = mvcc_->BeginWrite();
  ASSIGN_OR_RETURN(int64_t lease, ExecutePut(txn.get(), req, resp));
  RETURN_IF_ERROR(Commit(index, txn.get()));
  lessor_->Attach(lease, req.key());
  return absl::OkStatus();
}

absl::Status Applier::ApplyDelete(uint64_t index, const etcdserverpb::DeleteRangeRequest& req,
                                  etcdserverpb::DeleteRangeResponse* resp) {
  auto txn = mvcc_->BeginWrite();
  auto keys = ExecuteDelete(txn.get(), req, resp);
  RETURN_IF_ERROR(Commit(index, txn.get()));
  for (const auto& k : keys) lessor_->DetachKey(k);
  return absl::OkStatus();
}

absl::Status Applier::ApplyTxn(uint64_t index, const TxnRequest& req, TxnResponse* resp) {
  if (NoSpaceAlarm() && TxnHasPut(req)) return ErrNoSpace();
  auto txn = mvcc_->BeginWrite();
  TxnView view(txn.get());
  std::vector<bool> path = CompareToPath(view, req);

  // Validate every op on the path against the state before the txn, so a txn
  // either applies whole or not at all.
  size_t cursor = 0;
  RETURN_IF_ERROR(CheckPath(req, path, &cursor, [&](const RequestOp& op) -> absl::Status {
    if (op.has_request_put()) {
      const auto& p = op.request_put();
      if (p.ignore_value() || p.ignore_lease()) {
        ASSIGN_OR_RETURN(RangeResult rr, txn->Range(p.key(), "", {}));
        if (rr.kvs.empty()) return ErrKeyNotFound();
      }
      if (p.lease() != 0 && !lessor_->Exists(p.lease())) return ErrLeaseNotFound();
    }
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(CheckRangeRevisions(req, path, txn->rev(), mvcc_->compact_rev()));

  TxnEffects effects;
  cursor = 0;
  absl::Status st = ExecuteTxnPath(view, txn.get(), req, path, &cursor, resp, &effects);
  if (!st.ok()) {
    // Checks above make this unreachable for valid input; never commit half a txn.
    CAPSTAN_LOG(err, "txn failed after validation; discarded", "error", st.ToString());
    return st;
  }
  resp->mutable_header()->set_revision(txn->rev());
  RETURN_IF_ERROR(Commit(index, txn.get()));
  // Within one txn a key is either deleted or put (never both), so order is free.
  for (const auto& k : effects.detach) lessor_->DetachKey(k);
  for (const auto& [lease, key] : effects.attach) lessor_->Attach(lease, key);
  return absl::OkStatus();
}

absl::Status Applier::Range(const etcdserverpb::RangeRequest& req,
                            etcdserverpb::RangeResponse* resp) {
  SnapshotView view(mvcc_);
  return ExecuteRange(view, req, resp);
}

absl::Status Applier::ReadOnlyTxn(const TxnRequest& req, TxnResponse* resp) {
  SnapshotView view(mvcc_);
  std::vector<bool> path = CompareToPath(view, req);
  RETURN_IF_ERROR(CheckRangeRevisions(req, path, view.rev(), mvcc_->compact_rev()));
  size_t cursor = 0;
  RETURN_IF_ERROR(ExecuteTxnPath(view, nullptr, req, path, &cursor, resp, nullptr));
  resp->mutable_header()->set_revision(view.rev());
  return absl::OkStatus();
}

void Applier::ApplyCompaction(uint64_t index, const etcdserverpb::CompactionRequest& req,
                              const ApplyDone& done) {
  rocksdb::WriteBatch batch;
  auto dropped = mvcc_->Compact(req.revision(), &batch);
  if (!dropped.ok()) {
    if (done) done(dropped.status(), nullptr);
    return;
  }
  RecordIndex(index, &batch);
  absl::Status st = WriteBatch(&batch);
  if (!st.ok()) {
    if (done) done(st, nullptr);
    return;
  }
  auto resp = std::make_shared<etcdserverpb::CompactionResponse>();
  resp->mutable_header()->set_revision(mvcc_->current_rev());
  std::function<void()> on_deleted;
  if (req.physical() && done) {
    // `physical` answers once the records are gone from the backend.
    on_deleted = [done, resp] { done(absl::OkStatus(), resp.get()); };
  }
  mvcc_->ScheduleDeletion(*std::move(dropped), std::move(on_deleted));
  if (!req.physical() && done) done(absl::OkStatus(), resp.get());
}

absl::Status Applier::ApplyLeaseGrant(uint64_t index, const etcdserverpb::LeaseGrantRequest& req,
                                      etcdserverpb::LeaseGrantResponse* resp) {
  if (NoSpaceAlarm()) return ErrNoSpace();
  ASSIGN_OR_RETURN(int64_t ttl, lessor_->CheckGrant(req.id(), req.ttl()));
  rocksdb::WriteBatch batch;
  LeaseRecord rec;
  rec.set_id(req.id());
  rec.set_ttl_seconds(ttl);
  batch.Put(LeaseKey(req.id()), rec.SerializeAsString());
  RecordIndex(index, &batch);
  RETURN_IF_ERROR(WriteBatch(&batch));
  lessor_->Grant(req.id(), ttl);
  resp->set_id(req.id());
  resp->set_ttl(ttl);
  resp->mutable_header()->set_revision(mvcc_->current_rev());
  return absl::OkStatus();
}

absl::Status Applier::ApplyLeaseRevoke(uint64_t index, const etcdserverpb::LeaseRevokeRequest& req,
                                       etcdserverpb::LeaseRevokeResponse* resp) {
  ASSIGN_OR_RETURN(std::vector<std::string> keys, lessor_->Keys(req.id()));
  auto txn = mvcc_->BeginWrite();
  txn->batch()->Delete(LeaseKey(req.id()));
  // All attached keys go in one revision, like a txn of deletes.
  for (const auto& k : keys) txn->DeleteRange(k, "", nullptr);
  RETURN_IF_ERROR(Commit(index, txn.get()));
  lessor_->Remove(req.id());
  resp->mutable_header()->set_revision(mvcc_->current_rev());
  return absl::OkStatus();
}

absl::Status Applier::ApplyAlarm(uint64_t index, const etcdserverpb::AlarmRequest& req,
                                 etcdserverpb::AlarmResponse* resp) {
  MutexLock lock(&alarms_mu_);
  switch (req.action()) {
    case etcdserverpb::AlarmRequest::GET:
      for (const auto& a : alarms_) {
        if (req.alarm() == etcdserverpb::NONE || a.alarm() == req.alarm()) *resp->add_alarms() = a;
      }
      break;
    case etcdserverpb::AlarmRequest::ACTIVATE: {
      if (req.alarm() == etcdserverpb::NONE) break;
      bool found = false;
      for (const auto& a : alarms_) {
        if (a.memberid() == req.memberid() && a.alarm() == req.alarm()) found = true;
      }
      etcdserverpb::AlarmMember m;
      m.set_memberid(req.memberid());
      m.set_alarm(req.alarm());
      if (!found) alarms_.push_back(m);
      *resp->add_alarms() = m;
      if (!found)
        CAPSTAN_LOG(warn, "alarm raised", "alarm", etcdserverpb::AlarmType_Name(m.alarm()));
      break;
    }
    case etcdserverpb::AlarmRequest::DEACTIVATE:
      for (auto it = alarms_.begin(); it != alarms_.end(); ++it) {
        if (it->memberid() == req.memberid() && it->alarm() == req.alarm()) {
          *resp->add_alarms() = *it;
          alarms_.erase(it);
          CAPSTAN_LOG(info, "alarm cleared", "alarm", etcdserverpb::AlarmType_Name(req.alarm()));
          break;
        }
      }
      break;
    default:
      break;
  }
  rocksdb::WriteBatch batch;
  etcdserverpb::AlarmResponse stored;
  for (const auto& a : alarms_) *stored.add_alarms() = a;
  batch.Put(MetaKey(kMetaAlarms), stored.SerializeAsString());
  RecordIndex(index, &batch);
  RETURN_IF_ERROR(WriteBatch(&batch));
  resp->mutable_header()->set_revision(mvcc_->current_rev());
  return absl::OkStatus();
}

}  // namespace capstan::store
