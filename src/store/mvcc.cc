#include "store/mvcc.h"

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "base/logging.h"
#include "base/thread_name.h"
#include "store/errors.h"

namespace capstan::store {

Mvcc::Mvcc(Backend* backend) : backend_(backend) {
  compactor_ = std::thread([this] {
    SetThreadName("mvcc-compact");
    CompactorLoop();
  });
}

Mvcc::~Mvcc() {
  {
    std::lock_guard<std::mutex> lock(compactor_mu_);
    compactor_stop_ = true;
    compactor_cv_.notify_all();
  }
  compactor_.join();
}

size_t Mvcc::key_count() const {
  ReaderMutexLock lock(&mu_);
  return index_.key_count();
}

absl::Status Mvcc::Restore(const std::function<void(const std::string&, int64_t)>& on_lease) {
  MutexLock lock(&mu_);
  index_ = TreeIndex();  // a restore after a snapshot starts from scratch
  compact_rev_.store(-1);
  std::map<std::string, int64_t> leases;
  auto it = backend_->NewIterator();
  int64_t last = 1;
  mvccpb::KeyValue kv;
  for (it->Seek("r"); it->Valid() && it->key().starts_with("r"); it->Next()) {
    Revision rev;
    bool tomb;
    std::string_view k(it->key().data(), it->key().size());
    if (!ParseRevisionKey(k, &rev, &tomb) ||
        !kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(
          absl::StrCat("backend ", backend_->path(), ": undecodable revision record"));
    }
    if (tomb) {
      index_.Tombstone(kv.key(), rev);
      leases.erase(kv.key());
    } else {
      index_.Restore(kv.key(), rev, kv.create_revision(), kv.version());
      if (kv.lease() != 0) {
        leases[kv.key()] = kv.lease();
      } else {
        leases.erase(kv.key());
      }
    }
    last = rev.main;
  }
  if (!it->status().ok()) return absl::DataLossError(it->status().ToString());
  current_rev_.store(last);
  for (const auto& [key, lease] : leases) on_lease(key, lease);

  auto compact = backend_->Get(MetaKey(kMetaCompactRev));
  if (compact.ok() && compact->size() == 8) {
    int64_t c = static_cast<int64_t>(DecodeFixed64BE(compact->data()));
    compact_rev_.store(c);
    // Records the last run may not have deleted yet.
    std::vector<DroppedRevision> dropped;
    index_.Compact(c, &dropped);
    if (!dropped.empty()) {
      std::lock_guard<std::mutex> clock(compactor_mu_);
      compactor_jobs_.push_back({std::move(dropped), nullptr});
      compactor_cv_.notify_one();
    }
    if (current_rev_.load() < c) current_rev_.store(c);
  }
  return absl::OkStatus();
}

absl::Status Mvcc::ReadKv(Revision rev, mvccpb::KeyValue* kv) const {
  auto value = backend_->Get(EncodeRevisionKey(rev, false).view());
  if (absl::IsNotFound(value.status())) return ErrCompacted();  // compacted under us
  if (!value.ok()) return value.status();
  if (!kv->ParseFromString(*value)) {
    return absl::DataLossError(absl::StrCat("undecodable record at revision ", rev.main));
  }
  return absl::OkStatus();
}

absl::StatusOr<RangeResult> Mvcc::RangeAt(std::string_view key, std::string_view end,
                                          const RangeOptions& opts, int64_t cur,
                                          const WriteTxn* txn) const {
  int64_t rev = opts.rev <= 0 ? cur : opts.rev;
  if (rev > cur) return ErrFutureRev();
  if (rev < compact_rev()) return ErrCompacted();

  RangeResult result;
  result.rev = cur;
  std::vector<Revision> revs;
  auto collect = [&] {
    index_.Range(key, end, rev, [&](const std::string&, const IndexHit& hit) {
      ++result.count;
      if (!opts.count_only && (opts.limit <= 0 || static_cast<int64_t>(revs.size()) < opts.limit)) {
        revs.push_back(hit.modified);
      }
      return true;
    });
  };
  if (txn != nullptr) {  // the txn holds the write lock
    collect();
  } else {
    ReaderMutexLock lock(&mu_);
    collect();
  }
  result.kvs.resize(revs.size());
  for (size_t i = 0; i < revs.size(); ++i) {
    if (txn != nullptr && revs[i].main == txn->write_rev() &&
        static_cast<size_t>(revs[i].sub) < txn->events_.size()) {
      // Written by this txn, not yet in the backend.
      result.kvs[i] = txn->events_[static_cast<size_t>(revs[i].sub)].kv();
      continue;
    }
    RETURN_IF_ERROR(ReadKv(revs[i], &result.kvs[i]));
  }
  return result;
}

absl::StatusOr<RangeResult> Mvcc::Range(std::string_view key, std::string_view end,
                                        const RangeOptions& opts) const {
  return RangeAt(key, end, opts, current_rev(), nullptr);
}

Mvcc::WriteTxn::WriteTxn(Mvcc* mvcc) : mvcc_(mvcc), begin_rev_(mvcc->current_rev()) {}

Mvcc::WriteTxn::~WriteTxn() {
  if (committed_) return;
  Rollback();
  mvcc_->mu_.Unlock();
}

void Mvcc::WriteTxn::Rollback() {
  for (size_t i = events_.size(); i-- > 0;) {
    mvcc_->index_.Undo(events_[i].kv().key(), {write_rev(), static_cast<int64_t>(i)},
                       events_[i].type() == mvccpb::Event::DELETE);
  }
  events_.clear();
}

std::unique_ptr<Mvcc::WriteTxn> Mvcc::BeginWrite() {
  mu_.Lock();
  return std::unique_ptr<WriteTxn>(new WriteTxn(this));
}

absl::StatusOr<RangeResult> Mvcc::WriteTxn::Range(std::string_view key, std::string_view end,
                                                  const RangeOptions& opts) {
  return mvcc_->RangeAt(key, end, opts, rev(), this);
}

void Mvcc::WriteTxn::Put(std::string_view key, std::string_view value, int64_t lease) {
  Revision rev{write_rev(), static_cast<int64_t>(events_.size())};
  IndexHit hit;
  bool existed = mvcc_->index_.Get(key, rev.main, &hit);
  mvccpb::Event& ev = events_.emplace_back();
  ev.set_type(mvccpb::Event::PUT);
  mvccpb::KeyValue* kv = ev.mutable_kv();
  kv->set_key(key.data(), key.size());
  kv->set_value(value.data(), value.size());
  kv->set_mod_revision(rev.main);
  kv->set_lease(lease);
  kv->set_create_revision(existed ? hit.create_main : rev.main);
  kv->set_version(existed ? hit.version + 1 : 1);
  kv->SerializeToString(&record_);
  RevisionKeyBytes rk = EncodeRevisionKey(rev, false);
  batch_.Put(rocksdb::Slice(rk.data, rk.size), record_);
  mvcc_->index_.Put(key, rev);
}

std::vector<std::string> Mvcc::WriteTxn::DeleteRange(std::string_view key, std::string_view end,
                                                     std::vector<mvccpb::KeyValue>* prev) {
  std::vector<std::string> keys = mvcc_->index_.LiveKeys(key, end);
  for (const std::string& k : keys) {
    if (prev != nullptr) {
      auto r = Range(k, "", {});
      if (r.ok() && !r->kvs.empty()) prev->push_back(std::move(r->kvs[0]));
    }
    Revision rev{write_rev(), static_cast<int64_t>(events_.size())};
    mvcc_->index_.Tombstone(k, rev);
    mvccpb::Event& ev = events_.emplace_back();
    ev.set_type(mvccpb::Event::DELETE);
    ev.mutable_kv()->set_key(k);
    ev.mutable_kv()->set_mod_revision(rev.main);
    // The tombstone record holds the key only; its revision is in its key.
    mvccpb::KeyValue tomb;
    tomb.set_key(k);
    tomb.SerializeToString(&record_);
    RevisionKeyBytes rk = EncodeRevisionKey(rev, true);
    batch_.Put(rocksdb::Slice(rk.data, rk.size), record_);
  }
  return keys;
}

absl::Status Mvcc::WriteTxn::Commit() {
  absl::Status st = mvcc_->backend_->Write(&batch_);
  if (!st.ok()) {
    Rollback();
  } else if (!events_.empty()) {
    mvcc_->current_rev_.store(write_rev(), std::memory_order_release);
  }
  committed_ = true;
  mvcc_->mu_.Unlock();
  return st;
}

absl::StatusOr<std::vector<DroppedRevision>> Mvcc::Compact(int64_t rev,
                                                           rocksdb::WriteBatch* batch) {
  std::vector<DroppedRevision> dropped;
  {
    MutexLock lock(&mu_);
    if (rev <= compact_rev()) return ErrCompacted();
    if (rev > current_rev()) return ErrFutureRev();
    index_.Compact(rev, &dropped);
    compact_rev_.store(rev, std::memory_order_release);
  }
  std::string v;
  PutFixed64BE(&v, static_cast<uint64_t>(rev));
  batch->Put(MetaKey(kMetaCompactRev), v);
  return dropped;
}

void Mvcc::ScheduleDeletion(std::vector<DroppedRevision> dropped, std::function<void()> done) {
  std::lock_guard<std::mutex> lock(compactor_mu_);
  compactor_jobs_.push_back({std::move(dropped), std::move(done)});
  compactor_cv_.notify_one();
}

void Mvcc::CompactorLoop() {
  while (true) {
    CompactionJob job;
    {
      std::unique_lock<std::mutex> lock(compactor_mu_);
      compactor_cv_.wait(lock, [&] { return compactor_stop_ || !compactor_jobs_.empty(); });
      if (compactor_jobs_.empty()) return;
      job = std::move(compactor_jobs_.front());
      compactor_jobs_.pop_front();
    }
    // Delete in modest batches so writes are never stalled behind one huge batch.
    constexpr size_t kBatch = 10000;
    for (size_t i = 0; i < job.dropped.size(); i += kBatch) {
      rocksdb::WriteBatch wb;
      for (size_t j = i; j < std::min(job.dropped.size(), i + kBatch); ++j) {
        wb.Delete(RevisionKey(job.dropped[j].rev, job.dropped[j].tombstone));
      }
      absl::Status st = backend_->Write(&wb);
      if (!st.ok()) CAPSTAN_LOG(warn, "compaction delete failed", "error", st.ToString());
    }
    if (job.done) job.done();
  }
}

absl::Status Mvcc::History(int64_t from, int64_t to, size_t max_bytes,
                           std::vector<mvccpb::Event>* out, int64_t* next) const {
  *next = from;
  if (from > to) return absl::OkStatus();
  if (from < compact_rev()) return ErrCompacted();
  auto it = backend_->NewIterator();
  std::string start = RevisionKey({from, 0}, false);
  size_t bytes = 0;
  int64_t last_main = from - 1;
  for (it->Seek(start); it->Valid(); it->Next()) {
    Revision rev;
    bool tomb;
    std::string_view k(it->key().data(), it->key().size());
    if (!ParseRevisionKey(k, &rev, &tomb) || rev.main > to) break;
    // Stop only between revisions: a revision's events are never split.
    if (rev.main != last_main && bytes >= max_bytes) break;
    mvccpb::Event& ev = out->emplace_back();
    if (!ev.mutable_kv()->ParseFromArray(it->value().data(),
                                         static_cast<int>(it->value().size()))) {
      return absl::DataLossError(absl::StrCat("undecodable record at revision ", rev.main));
    }
    if (tomb) {
      ev.set_type(mvccpb::Event::DELETE);
      ev.mutable_kv()->set_mod_revision(rev.main);
    }
    bytes += it->value().size() + 32;
    last_main = rev.main;
  }
  if (!it->status().ok()) return absl::InternalError(it->status().ToString());
  // Everything up to last_main was returned; if we stopped early, resume there.
  bool reached_end = !it->Valid();
  if (!reached_end) {
    Revision rev;
    bool tomb;
    std::string_view k(it->key().data(), it->key().size());
    reached_end = !ParseRevisionKey(k, &rev, &tomb) || rev.main > to;
  }
  *next = reached_end ? to + 1 : last_main + 1;
  if (from < compact_rev()) return ErrCompacted();  // compacted while we read
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> Mvcc::HashKV(int64_t rev, int64_t* compact_rev_out) const {
  int64_t cur = current_rev();
  if (rev <= 0) rev = cur;
  if (rev > cur) return ErrFutureRev();
  int64_t compacted = compact_rev();
  if (rev < compacted) return ErrCompacted();
  *compact_rev_out = compacted;
  uint32_t h = 0;
  auto it = backend_->NewIterator();
  for (it->Seek("r"); it->Valid() && it->key().starts_with("r"); it->Next()) {
    Revision r;
    bool tomb;
    std::string_view k(it->key().data(), it->key().size());
    if (!ParseRevisionKey(k, &r, &tomb) || r.main > rev) break;
    // Records at or below the compaction point may still be in the middle of
    // being deleted; hashing only later ones keeps members comparable.
    if (r.main <= compacted) continue;
    h = crc32c::Extend(h, it->key().data(), it->key().size());
    h = crc32c::Extend(h, it->value().data(), it->value().size());
  }
  return h;
}

}  // namespace capstan::store
