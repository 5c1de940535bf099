#include "store/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <random>

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "base/logging.h"
#include "base/thread_name.h"
#include "capstan/peer.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "net/address.h"
#include "net/grpc_server.h"
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
  std::vector<raft::Entry> bootstrap;
  RETURN_IF_ERROR(InitIdentity(&bootstrap));
  request_nonce_ = RandomU64() & 0xffff000000000000ull;

  lessor_ = std::make_unique<Lessor>(clock_, options_.min_lease_ttl_seconds);
  mvcc_ = std::make_unique<Mvcc>(backend_.get());
  RETURN_IF_ERROR(LoadLeasesAndIndex());

  WatchHub::Options hub_opts;
  hub_opts.max_request_bytes = options_.max_request_bytes;
  hub_opts.progress_interval = options_.progress_notify_interval;
  hub_opts.max_stream_bytes = options_.max_watch_stream_bytes;
  hub_opts.metrics = options_.metrics;
  hub_ = std::make_unique<WatchHub>(
      mvcc_.get(), hub_opts,
      [this](etcdserverpb::ResponseHeader* h, int64_t rev) { FillHeader(h, rev); });
  applier_ = std::make_unique<Applier>(
      backend_.get(), mvcc_.get(), lessor_.get(), hub_.get(),
      AuthStore::Options{options_.auth_token_ttl, options_.bcrypt_cost, options_.auth_jwt});
  RETURN_IF_ERROR(applier_->Restore());
  UpdateIsLearner();
  applier_->set_on_members_changed([this] {
    UpdateIsLearner();
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(stubs_mu_);
      fn = on_members_changed_;
    }
    if (fn) fn();
  });

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

  auto [applied_index, applied_term] = applier_->Applied();
  applied_ = applied_index;
  last_applied_term_ = applied_term;
  raft::NodeOptions node_opts;
  node_opts.id = member_id_;
  node_opts.wal_dir = member_dir + "/wal";
  node_opts.snapshot_dir = member_dir + "/snap";
  node_opts.tick = options_.heartbeat;
  node_opts.election_ticks = options_.election_ticks;
  node_opts.seed = RandomU64();
  node_opts.bootstrap = std::move(bootstrap);
  node_opts.catch_up_entries = options_.snapshot_catchup_entries;
  node_opts.metrics = options_.metrics;
  node_opts.on_dropped = [this](const absl::Status& st, std::vector<std::string> dropped) {
    FailDropped(st, std::move(dropped));
  };
  node_opts.on_leader_change = [this](uint64_t leader, uint64_t term) {
    OnLeaderChange(leader, term);
  };
  raft::AppliedState applied{applied_index, applied_term, applier_->Conf()};
  for (int i = 0; i < 2; ++i) {
    read_threads_.emplace_back([this] {
      SetThreadName("store-read");
      ReadLoop();
    });
  }
  ASSIGN_OR_RETURN(node_, raft::Node::Start(std::move(node_opts), this, applied));
  CAPSTAN_LOG(info, "store opened", "name", options_.name, "data_dir", options_.data_dir,
              "revision", mvcc_->current_rev(), "applied_index", applied_index, "member_id",
              absl::StrCat(absl::Hex(member_id_)), "cluster_id",
              absl::StrCat(absl::Hex(cluster_id_)));
  background_ = std::thread([this] {
    SetThreadName("store-bg");
    BackgroundLoop();
  });
  return absl::OkStatus();
}

absl::Status Store::LoadLeasesAndIndex() {
  lessor_->Clear();
  auto it = backend_->NewIterator();
  for (it->Seek("l"); it->Valid() && it->key().starts_with("l"); it->Next()) {
    LeaseRecord rec;
    if (!rec.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError("undecodable lease record in " + backend_->path());
    }
    lessor_->Restore(rec.id(), rec.ttl_seconds());
  }
  return mvcc_->Restore(
      [this](const std::string& key, int64_t lease) { lessor_->Attach(lease, key); });
}

Store::~Store() { Stop(); }

void Store::Stop() {
  if (stopping_.exchange(true)) return;
  RevisionMoved();
  {
    std::lock_guard<std::mutex> lock(bg_mu_);
    bg_cv_.notify_all();
  }
  if (background_.joinable()) background_.join();
  if (node_) node_->Stop();
  {
    std::lock_guard<std::mutex> lock(reads_mu_);
    for (auto& [index, fn] : reads_waiting_) {
      reads_ready_.push_back([fn = std::move(fn)] { fn(ErrStopped()); });
    }
    reads_waiting_.clear();
  }
  reads_cv_.notify_all();
  for (auto& t : read_threads_) t.join();
  read_threads_.clear();
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
  ProposeImpl(std::move(entry), std::move(done), /*defer_wake=*/false);
}

void Store::ProposeFromLoop(LogEntry entry, ApplyDone done, net::EventLoop* loop) {
  // One drive per loop turn and store (a process may hold several stores in
  // tests); the turn's other proposals ride along.
  thread_local std::vector<Store*> drive_pending;
  ProposeImpl(std::move(entry), std::move(done), /*defer_wake=*/true);
  if (std::find(drive_pending.begin(), drive_pending.end(), this) != drive_pending.end()) return;
  drive_pending.push_back(this);
  loop->AtTurnEnd([this] {
    std::erase(drive_pending, this);
    // A round applies on the thread that runs it, fan-out included: with many
    // watchers that costs more than the hand-off it spares, and the loop
    // would encode every watcher's events before sending any of them.
    // (0: never on this thread, only wake the raft loop.)
    bool many_watchers = hub_->watcher_count() > kMaxWatchersForDriving;
    bool drive_here = options_.loops_run_rounds && !many_watchers;
    node_->DriveOrWake(drive_here ? kMaxEntriesDrivenByLoop : 0);
  });
}

void Store::ProposeImpl(LogEntry entry, ApplyDone done, bool defer_wake) {
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
  // A client's request proposed from its gated handler carries who asked,
  // for the checks that only the applier can make (auth_gate.h).
  if (const AuthInfo* who = CallAuthScope::Current(); who != nullptr && !entry.has_auth_header()) {
    entry.mutable_auth_header()->set_username(who->user);
    entry.mutable_auth_header()->set_revision(who->revision);
  }
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
  absl::Status st = node_->Propose(std::move(data), defer_wake);
  if (!st.ok()) {
    ApplyDone d = TakeWaiter(id);
    if (!d) return;
    if (proposals_failed_) proposals_failed_->Inc();
    d(st, nullptr);
  }
}

ApplyDone Store::TakeWaiter(uint64_t request_id) {
  if (request_id == 0) return nullptr;
  std::lock_guard<std::mutex> lock(waiters_mu_);
  auto it = waiters_.find(request_id);
  if (it == waiters_.end()) return nullptr;
  ApplyDone done = std::move(it->second.done);
  waiters_.erase(it);
  return done;
}

void Store::FailDropped(const absl::Status& st, std::vector<std::string> dropped) {
  for (const std::string& data : dropped) {
    LogEntry entry;
    if (!entry.ParseFromString(data)) continue;
    ApplyDone done = TakeWaiter(entry.request_id());
    if (!done) continue;
    if (proposals_failed_) proposals_failed_->Inc();
    done(absl::IsUnavailable(st) && absl::StrContains(st.message(), "no leader") ? ErrNoLeader()
                                                                                 : st,
         nullptr);
  }
}

void Store::LinearizableRead(std::function<void(absl::Status)> then) {
  auto deadline = std::chrono::steady_clock::now() + options_.request_timeout;
  node_->ReadIndex(
      [this, then = std::move(then)](absl::Status st, uint64_t index) mutable {
        std::lock_guard<std::mutex> lock(reads_mu_);
        if (!st.ok()) {
          if (absl::IsDeadlineExceeded(st)) st = ErrTimeout();
          reads_ready_.push_back([then = std::move(then), st] { then(st); });
        } else if (applied_.load() >= index) {
          reads_ready_.push_back([then = std::move(then)] { then(absl::OkStatus()); });
        } else {
          reads_waiting_.emplace(index, std::move(then));
          return;
        }
        reads_cv_.notify_one();
      },
      deadline);
}

void Store::RunReads(uint64_t applied) {
  std::lock_guard<std::mutex> lock(reads_mu_);
  auto end = reads_waiting_.upper_bound(applied);
  if (end == reads_waiting_.begin()) return;
  for (auto it = reads_waiting_.begin(); it != end; ++it) {
    reads_ready_.push_back([fn = std::move(it->second)] { fn(absl::OkStatus()); });
  }
  reads_waiting_.erase(reads_waiting_.begin(), end);
  reads_cv_.notify_all();
}

void Store::ReadLoop() {
  while (true) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(reads_mu_);
      reads_cv_.wait(lock, [&] { return stopping_.load() || !reads_ready_.empty(); });
      if (reads_ready_.empty()) return;
      fn = std::move(reads_ready_.front());
      reads_ready_.pop_front();
    }
    fn();
  }
}

std::shared_ptr<capstan::peer::Peer::Stub> Store::LeaderStub() {
  uint64_t leader = node_->Leader();
  if (leader == 0 || leader == member_id_) return nullptr;
  std::lock_guard<std::mutex> lock(stubs_mu_);
  return peer_stubs_ ? peer_stubs_(leader) : nullptr;
}

void Store::OnLeaderChange(uint64_t leader, uint64_t term) {
  if (leader != 0 && !published_) {
    std::lock_guard<std::mutex> lock(bg_mu_);
    bg_cv_.notify_all();  // publish this member's attributes now
  }
  if (leader == member_id_) {
    // Renewals went to the old leader; give every lease its full TTL again
    // (etcd does the same), with an election timeout of slack.
    lessor_->Promote(options_.heartbeat * options_.election_ticks);
  }
}

void Store::ApplyBatch(const raft::CommittedBatch& batch) {
  // The batch's answers to calls of other threads' loops leave together
  // when its entries are applied (before the watchers' fan-out): one
  // wake-up and one write per connection for the batch, not one per call.
  std::optional<net::GrpcFinishBatch> answers(std::in_place);
  for (const raft::Entry& e : batch.entries) {
    last_applied_term_ = e.term;
    if (e.type == raft::EntryType::kConfChange) {
      raft::ConfChange cc;
      auto conf = batch.conf_after.find(e.index);
      if (!raft::ConfChange::Decode(e.data, &cc) || conf == batch.conf_after.end()) {
        CAPSTAN_LOG(err, "undecodable membership change skipped", "index", e.index);
        (void)applier_->RecordApplied(e.index, e.term);
        continue;
      }
      ConfChangeContext ctx;
      ctx.ParseFromString(cc.context);
      applier_->ApplyConfChange(e.index, e.term, cc, conf->second, TakeWaiter(ctx.request_id()));
      if (cc.type == raft::ConfChange::Type::kRemove && cc.node == member_id_) {
        CAPSTAN_LOG(warn, "this member was removed from the cluster; shutting down", "member_id",
                    absl::StrCat(absl::Hex(member_id_)));
        if (options_.on_removed) options_.on_removed();
      }
      continue;
    }
    if (e.data.empty()) {
      // A new leader's first entry: nothing to apply, but the index counts.
      (void)applier_->RecordApplied(e.index, e.term);
      continue;
    }
    LogEntry entry;
    if (!entry.ParseFromString(e.data)) {
      CAPSTAN_LOG(err, "undecodable log entry skipped", "index", e.index);
      (void)applier_->RecordApplied(e.index, e.term);
      continue;
    }
    applier_->Apply(e.index, e.term, entry, TakeWaiter(entry.request_id()));
  }
  answers.reset();
  if (batch.entries.empty()) return;
  uint64_t last = batch.entries.back().index;
  applied_ = last;
  if (applied_index_) applied_index_->Set(static_cast<int64_t>(last));
  RevisionMoved();
  RunReads(last);
}

absl::StatusOr<raft::AppliedState> Store::CreateSnapshot(const std::string& dir) {
  // Runs on the apply thread: nothing is applied while the checkpoint is cut,
  // so it holds exactly the entries up to applied_.
  uint64_t index = applied_.load();
  RETURN_IF_ERROR(applier_->RecordApplied(index, last_applied_term_));
  RETURN_IF_ERROR(backend_->Checkpoint(dir));
  return raft::AppliedState{index, last_applied_term_, applier_->Conf()};
}

absl::Status Store::RestoreSnapshot(const std::string& dir, const raft::AppliedState& meta) {
  // Runs on the apply thread, so nothing else writes meanwhile. Readers see
  // the old content until the one batch lands; the in-memory index is rebuilt
  // right after.
  CAPSTAN_LOG(info, "restoring a snapshot from the leader", "index", meta.index, "term", meta.term,
              "dir", dir);
  RETURN_IF_ERROR(backend_->ReplaceWith(dir, {MetaKey(kMetaIdentity), MetaKey(kMetaJoinMembers)}));
  RETURN_IF_ERROR(LoadLeasesAndIndex());
  RETURN_IF_ERROR(applier_->Restore());
  auto [index, term] = applier_->Applied();
  if (index != meta.index) {
    return absl::DataLossError(absl::StrCat("the snapshot announced index ", meta.index,
                                            " but its database holds index ", index));
  }
  applied_ = index;
  last_applied_term_ = term;
  if (applied_index_) applied_index_->Set(static_cast<int64_t>(index));
  hub_->Resync();
  UpdateIsLearner();
  std::function<void()> members_changed;
  {
    std::lock_guard<std::mutex> lock(stubs_mu_);
    members_changed = on_members_changed_;
  }
  if (members_changed) members_changed();
  RevisionMoved();
  RunReads(index);
  CAPSTAN_LOG(info, "restored from snapshot", "index", index, "revision", mvcc_->current_rev());
  return absl::OkStatus();
}

absl::Status Store::CheckQuota(size_t cost) {
  if (applier_->NoSpaceAlarm()) return ErrNoSpace();
  if (backend_->RecentSizeBytes() + static_cast<int64_t>(cost) <= options_.quota_backend_bytes) {
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
  h->set_raft_term(node_ ? node_->Term() : 0);
  h->set_revision(rev != 0 ? rev : mvcc_->current_rev());
}

void Store::OnRevisionAbove(int64_t rev, std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(rev_mu_);
    if (!stopping_.load() && mvcc_->current_rev() <= rev) {
      rev_waiters_.emplace_back(rev, std::move(fn));
      return;
    }
  }
  fn();
}

void Store::RevisionMoved() {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(rev_mu_);
    rev_cv_.notify_all();
    bool all = stopping_.load();
    // (No mvcc_ when Open failed before making it: Stop runs from the
    // destructor then, with every waiter to wake and none registered.)
    int64_t current = mvcc_ != nullptr ? mvcc_->current_rev() : 0;
    std::erase_if(rev_waiters_, [&](auto& w) {
      if (!all && w.first >= current) return false;
      ready.push_back(std::move(w.second));
      return true;
    });
  }
  for (auto& fn : ready) fn();
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
  if (absl::Status failed = node_->Health(); !failed.ok()) return std::string(failed.message());
  if (node_->Leader() == 0) return "no leader";
  if (applier_->NoSpaceAlarm()) return "ALARM NOSPACE";
  return "";
}

etcdserverpb::StatusResponse Store::Status() const {
  etcdserverpb::StatusResponse resp;
  FillHeader(resp.mutable_header(), 0);
  resp.set_version(kEtcdApiVersion);
  resp.set_dbsize(backend_->SizeBytes());
  resp.set_dbsizeinuse(backend_->SizeInUseBytes());
  resp.set_leader(node_->Leader());
  resp.set_raftindex(node_->CommittedIndex());
  resp.set_raftterm(node_->Term());
  resp.set_raftappliedindex(applied_.load());
  raft::ConfState conf = applier_->Conf();
  resp.set_islearner(std::find(conf.learners.begin(), conf.learners.end(), member_id_) !=
                     conf.learners.end());
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
  auto leaderless_since = clock_->Now();
  auto last_removal_check = clock_->Now();
  bool removed = false;
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(bg_mu_);
      bg_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] {
        return stopping_.load() || (!published_ && node_ && node_->Leader() != 0);
      });
    }
    if (stopping_) break;
    // Expired leases are revoked by the leader, through the log like any write.
    if (node_->IsLeader()) {
      for (int64_t id : lessor_->TakeExpired(std::chrono::seconds(3))) {
        LogEntry e;
        e.mutable_lease_revoke()->set_id(id);
        Propose(std::move(e), [](absl::Status, google::protobuf::Message*) {});
      }
    }
    // No leader for a long time: maybe this member was removed while away.
    auto checked_at = clock_->Now();
    std::chrono::nanoseconds election = options_.heartbeat * options_.election_ticks;
    if (node_->Leader() != 0) {
      leaderless_since = checked_at;
    } else if (!removed && checked_at - leaderless_since >= 3 * election &&
               checked_at - last_removal_check >=
                   std::max<std::chrono::nanoseconds>(2 * election, std::chrono::seconds(1))) {
      last_removal_check = checked_at;
      if (RemovedWhileAway()) {
        removed = true;
        CAPSTAN_LOG(err,
                    "this member was removed from the cluster while it was away (the other "
                    "members no longer list it); shutting down. To bring it back, delete its "
                    "data directory and add it again with etcdctl member add",
                    "member_id", absl::StrCat(absl::Hex(member_id_)));
        if (options_.on_removed) options_.on_removed();
      }
    }
    // Once there is a leader, publish this member's name and client URLs.
    if (!published_ && node_->Leader() != 0) {
      published_ = true;
      LogEntry e;
      auto* m = e.mutable_member_attributes();
      m->set_id(member_id_);
      m->set_name(options_.name);
      for (const auto& u : options_.advertise_client_urls) m->add_clienturls(u);
      Propose(std::move(e), [this](absl::Status st, google::protobuf::Message*) {
        if (!st.ok()) published_ = false;  // try again
      });
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
    // After --snapshot-count entries (or 10 s with some), the backend is made
    // durable and the log compacted behind it.
    uint64_t pending = applied_.load() > released ? applied_.load() - released : 0;
    if (pending >= options_.snapshot_count ||
        (now - last_flush >= std::chrono::seconds(10) && pending > 1000)) {
      last_flush = now;
      uint64_t durable = applier_->Applied().first;
      if (backend_->Flush().ok()) {
        released = durable;
        node_->Compact(released);
      }
    }
  }
}

}  // namespace capstan::store
