#include "store/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "base/logging.h"
#include "raft/single_node_log.h"
#include "store/errors.h"

namespace capstan::store {
namespace {

absl::Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create directory ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

uint64_t RandomU64() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

Store::Store(StoreOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(StoreOptions options) {
  std::unique_ptr<Store> store(new Store(std::move(options)));
  RETURN_IF_ERROR(store->Init());
  return store;
}

absl::Status Store::Init() {
  RETURN_IF_ERROR(MakeDir(options_.data_dir));
  std::string member_dir = options_.data_dir + "/member";
  RETURN_IF_ERROR(MakeDir(member_dir));
  ASSIGN_OR_RETURN(backend_, Backend::Open(member_dir + "/kv", {}));

  // Identity: fixed at first start, like etcd's member and cluster IDs.
  auto ident = backend_->Get(MetaKey(kMetaIdentity));
  MemberIdentity id;
  if (ident.ok() && id.ParseFromString(*ident)) {
    member_id_ = id.member_id();
    cluster_id_ = id.cluster_id();
  } else {
    member_id_ = RandomU64() | 1;
    cluster_id_ = RandomU64() | 1;
    id.set_member_id(member_id_);
    id.set_cluster_id(cluster_id_);
    id.set_name(options_.name);
    rocksdb::WriteBatch batch;
    batch.Put(MetaKey(kMetaIdentity), id.SerializeAsString());
    RETURN_IF_ERROR(backend_->Write(&batch));
    RETURN_IF_ERROR(backend_->Flush());
  }
  request_nonce_ = RandomU64() & 0xffff000000000000ull;

  lessor_ = std::make_unique<Lessor>(clock_, options_.min_lease_ttl_seconds);
  {
    auto it = backend_->NewIterator();
    for (it->Seek("l"); it->Valid() && it->key().starts_with("l"); it->Next()) {
      LeaseRecord rec;
      if (!rec.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError("undecodable lease record in " + backend_->path());
      }
      lessor_->Restore(rec.id(), rec.ttl_seconds());
    }
  }
  mvcc_ = std::make_unique<Mvcc>(backend_.get());
  RETURN_IF_ERROR(mvcc_->Restore(
      [this](const std::string& key, int64_t lease) { lessor_->Attach(lease, key); }));

  WatchHub::Options hub_opts;
  hub_opts.max_request_bytes = options_.max_request_bytes;
  hub_opts.progress_interval = options_.progress_notify_interval;
  hub_opts.max_stream_bytes = options_.max_watch_stream_bytes;
  hub_opts.metrics = options_.metrics;
  hub_ = std::make_unique<WatchHub>(
      mvcc_.get(), hub_opts,
      [this](etcdserverpb::ResponseHeader* h, int64_t rev) { FillHeader(h, rev); });
  applier_ = std::make_unique<Applier>(backend_.get(), mvcc_.get(), lessor_.get(), hub_.get());
  RETURN_IF_ERROR(applier_->Restore());

  if (options_.metrics != nullptr) {
    proposals_ = options_.metrics->AddCounter("capstan_store_proposals_total",
                                              "Write requests proposed to the log.");
    proposals_failed_ = options_.metrics->AddCounter("capstan_store_proposals_failed_total",
                                                     "Proposals rejected, timed out or failed.");
    applied_index_ =
        options_.metrics->AddGauge("capstan_store_applied_index", "Last applied log index.");
    options_.metrics->AddGaugeFunc("capstan_store_db_size_bytes", "Backend size on disk.",
                                   [this] { return static_cast<double>(backend_->SizeBytes()); });
    options_.metrics->AddGaugeFunc("capstan_store_revision", "Current store revision.",
                                   [this] { return static_cast<double>(mvcc_->current_rev()); });
    options_.metrics->AddGaugeFunc("capstan_store_keys", "Keys in the index.",
                                   [this] { return static_cast<double>(mvcc_->key_count()); });
    options_.metrics->AddGaugeFunc("capstan_store_leases", "Active leases.",
                                   [this] { return static_cast<double>(lessor_->size()); });
  }

  uint64_t applied = 0;
  auto applied_raw = backend_->Get(MetaKey(kMetaAppliedIndex));
  if (applied_raw.ok() && applied_raw->size() == 8) applied = DecodeFixed64BE(applied_raw->data());
  raft::SingleNodeLog::Options log_opts;
  log_opts.dir = member_dir + "/wal";
  log_opts.metrics = options_.metrics;
  log_opts.on_dropped = [this](const absl::Status& st, std::vector<std::string> dropped) {
    for (const std::string& data : dropped) {
      LogEntry entry;
      if (!entry.ParseFromString(data) || entry.request_id() == 0) continue;
      ApplyDone done;
      {
        std::lock_guard<std::mutex> lock(waiters_mu_);
        auto it = waiters_.find(entry.request_id());
        if (it == waiters_.end()) continue;
        done = std::move(it->second.done);
        waiters_.erase(it);
      }
      if (proposals_failed_) proposals_failed_->Inc();
      done(st, nullptr);
    }
  };
  ASSIGN_OR_RETURN(log_, raft::SingleNodeLog::Start(log_opts, this, applied));
  CAPSTAN_LOG(info, "store opened", "name", options_.name, "data_dir", options_.data_dir,
              "revision", mvcc_->current_rev(), "applied_index", log_->AppliedIndex(), "member_id",
              absl::StrCat(absl::Hex(member_id_)));
  background_ = std::thread([this] { BackgroundLoop(); });
  return absl::OkStatus();
}

Store::~Store() { Stop(); }

void Store::Stop() {
  if (stopping_.exchange(true)) return;
  rev_cv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(bg_mu_);
    bg_cv_.notify_all();
  }
  if (background_.joinable()) background_.join();
  if (log_) log_->Stop();
  std::unordered_map<uint64_t, Waiter> left;
  {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    left.swap(waiters_);
  }
  for (auto& [id, w] : left) w.done(ErrStopped(), nullptr);
  if (backend_) {
    absl::Status st = backend_->Flush();
    if (!st.ok()) CAPSTAN_LOG(warn, "backend flush at stop failed", "error", st.ToString());
  }
}

void Store::Propose(LogEntry entry, ApplyDone done) {
  if (stopping_) {
    done(ErrStopped(), nullptr);
    return;
  }
  if (absl::Status failed = applier_->failure(); !failed.ok()) {
    done(failed, nullptr);
    return;
  }
  uint64_t id = request_nonce_ | (next_request_.fetch_add(1) & 0x0000ffffffffffffull);
  entry.set_request_id(id);
  std::string data = entry.SerializeAsString();
  if (data.size() > options_.max_request_bytes) {
    done(ErrRequestTooLarge(), nullptr);
    return;
  }
  if (proposals_) proposals_->Inc();
  {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    waiters_[id] = {std::move(done), clock_->Now() + options_.request_timeout};
  }
  absl::Status st = log_->Propose(std::move(data));
  if (!st.ok()) {
    ApplyDone d;
    {
      std::lock_guard<std::mutex> lock(waiters_mu_);
      auto it = waiters_.find(id);
      if (it == waiters_.end()) return;
      d = std::move(it->second.done);
      waiters_.erase(it);
    }
    if (proposals_failed_) proposals_failed_->Inc();
    d(st, nullptr);
  }
}

void Store::ApplyBatch(const std::vector<raft::WalEntry>& entries) {
  for (const raft::WalEntry& e : entries) {
    LogEntry entry;
    if (!entry.ParseFromString(e.data)) {
      CAPSTAN_LOG(err, "undecodable log entry skipped", "index", e.index);
      continue;
    }
    ApplyDone done;
    if (entry.request_id() != 0) {
      std::lock_guard<std::mutex> lock(waiters_mu_);
      auto it = waiters_.find(entry.request_id());
      if (it != waiters_.end()) {
        done = std::move(it->second.done);
        waiters_.erase(it);
      }
    }
    applier_->Apply(e.index, entry, done);
  }
  if (applied_index_ && !entries.empty()) {
    applied_index_->Set(static_cast<int64_t>(entries.back().index));
  }
  std::lock_guard<std::mutex> lock(rev_mu_);
  rev_cv_.notify_all();
}

absl::Status Store::CheckQuota(size_t cost) {
  if (applier_->NoSpaceAlarm()) return ErrNoSpace();
  if (backend_->SizeBytes() + static_cast<int64_t>(cost) <= options_.quota_backend_bytes) {
    return absl::OkStatus();
  }
  if (!nospace_raised_.exchange(true)) {
    CAPSTAN_LOG(warn, "database space quota exceeded; raising NOSPACE alarm", "quota_bytes",
                options_.quota_backend_bytes, "size_bytes", backend_->SizeBytes());
    LogEntry alarm;
    alarm.mutable_alarm()->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
    alarm.mutable_alarm()->set_memberid(member_id_);
    alarm.mutable_alarm()->set_alarm(etcdserverpb::NOSPACE);
    Propose(std::move(alarm),
            [this](absl::Status, google::protobuf::Message*) { nospace_raised_ = false; });
  }
  return ErrNoSpace();
}

void Store::FillHeader(etcdserverpb::ResponseHeader* h) const { FillHeader(h, h->revision()); }

void Store::FillHeader(etcdserverpb::ResponseHeader* h, int64_t rev) const {
  h->set_cluster_id(cluster_id_);
  h->set_member_id(member_id_);
  h->set_raft_term(log_ ? log_->Term() : 0);
  h->set_revision(rev != 0 ? rev : mvcc_->current_rev());
}

int64_t Store::WaitRevisionAbove(int64_t rev, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(rev_mu_);
  rev_cv_.wait_until(lock, deadline,
                     [&] { return stopping_.load() || mvcc_->current_rev() > rev; });
  return mvcc_->current_rev();
}

std::string Store::Unhealthy() const {
  if (stopping_) return "stopping";
  if (absl::Status failed = applier_->failure(); !failed.ok()) return std::string(failed.message());
  if (absl::Status failed = log_->Health(); !failed.ok()) return std::string(failed.message());
  if (applier_->NoSpaceAlarm()) return "ALARM NOSPACE";
  return "";
}

etcdserverpb::StatusResponse Store::Status() const {
  etcdserverpb::StatusResponse resp;
  FillHeader(resp.mutable_header(), 0);
  resp.set_version(kEtcdApiVersion);
  resp.set_dbsize(backend_->SizeBytes());
  resp.set_dbsizeinuse(backend_->SizeInUseBytes());
  resp.set_leader(member_id_);
  resp.set_raftindex(log_->CommittedIndex());
  resp.set_raftterm(log_->Term());
  resp.set_raftappliedindex(log_->AppliedIndex());
  resp.set_dbsizequota(options_.quota_backend_bytes);
  for (const auto& a : applier_->Alarms()) {
    resp.add_errors(absl::StrCat("memberID:", a.memberid(),
                                 " alarm:", etcdserverpb::AlarmType_Name(a.alarm()), " "));
  }
  return resp;
}

uint32_t Store::BackendHash() const {
  uint32_t h = 0;
  auto it = backend_->NewIterator();
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    h = crc32c::Extend(h, it->key().data(), it->key().size());
    h = crc32c::Extend(h, it->value().data(), it->value().size());
  }
  return h;
}

void Store::BackgroundLoop() {
  auto last_flush = clock_->Now();
  uint64_t released = 0;
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(bg_mu_);
      bg_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_.load(); });
    }
    if (stopping_) break;
    // Expired leases are revoked through the log, like any write.
    for (int64_t id : lessor_->TakeExpired(std::chrono::seconds(3))) {
      LogEntry e;
      e.mutable_lease_revoke()->set_id(id);
      Propose(std::move(e), [](absl::Status, google::protobuf::Message*) {});
    }
    // Proposals whose outcome never came (the log failed under them).
    std::vector<ApplyDone> expired;
    auto now = clock_->Now();
    {
      std::lock_guard<std::mutex> lock(waiters_mu_);
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->second.deadline <= now) {
          expired.push_back(std::move(it->second.done));
          it = waiters_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& d : expired) {
      if (proposals_failed_) proposals_failed_->Inc();
      d(ErrTimeout(), nullptr);
    }
    // Persist the backend and let the log drop what it no longer needs.
    if (now - last_flush >= std::chrono::seconds(10) && log_->AppliedIndex() > released + 1000) {
      last_flush = now;
      if (backend_->Flush().ok()) {
        auto v = backend_->Get(MetaKey(kMetaAppliedIndex));
        if (v.ok() && v->size() == 8) {
          released = DecodeFixed64BE(v->data());
          log_->ReleaseTo(released);
        }
      }
    }
  }
}

}  // namespace capstan::store
