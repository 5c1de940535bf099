#include "gateway/cache/disk_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "base/logging.h"
#include "gateway/cache/disk_record.h"
#include "net/splice_sender.h"

namespace capstan::gateway::cache {
namespace {

constexpr std::string_view kSuffix = ".obj";
constexpr std::string_view kTmpPrefix = "tmp-";

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }
// The first read of a record at the scan: the head and, for nearly every
// response, all of its metadata.
constexpr size_t kScanReadBytes = 4096;

// Reads exactly n bytes at offset; false on a short read or an error.
bool ReadAt(int fd, char* out, size_t n, uint64_t offset) {
  while (n > 0) {
    ssize_t got = ::pread(fd, out, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    out += got;
    n -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return true;
}

bool WriteAll(int fd, std::vector<iovec> iov) {
  size_t i = 0;
  while (i < iov.size()) {
    ssize_t n =
        ::writev(fd, iov.data() + i, static_cast<int>(std::min<size_t>(iov.size() - i, 512)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    size_t left = static_cast<size_t>(n);
    while (i < iov.size() && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  return true;
}

// "<16 hex digits>.obj" -> the sequence number.
bool ParseRecordName(std::string_view name, uint64_t* seq) {
  if (name.size() != 16 + kSuffix.size() || !name.ends_with(kSuffix)) return false;
  uint64_t v = 0;
  for (char c : name.substr(0, 16)) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  *seq = v;
  return v != 0;
}

// Reads and checks the head and metadata of the open record `fd` of
// `size` bytes.
absl::Status ReadMeta(int fd, uint64_t size, RecordHead* head, RecordMeta* meta) {
  std::string bytes(std::min<uint64_t>(size, kScanReadBytes), '\0');
  if (!ReadAt(fd, bytes.data(), bytes.size(), 0)) return absl::DataLossError("short read");
  RETURN_IF_ERROR(DecodeRecordHead(bytes, head));
  if (head->total() != size) {
    return absl::DataLossError(absl::StrCat("file of ", size, " bytes, record of ", head->total()));
  }
  size_t meta_end = kRecordHeadBytes + head->meta_len;
  if (bytes.size() < meta_end) {
    size_t had = bytes.size();
    bytes.resize(meta_end);
    if (!ReadAt(fd, bytes.data() + had, meta_end - had, had)) {
      return absl::DataLossError("short read");
    }
  }
  return DecodeRecordMeta(std::string_view(bytes).substr(kRecordHeadBytes, head->meta_len), *head,
                          meta);
}

bool SameVary(const std::vector<std::pair<std::string, std::string>>& a,
              const std::vector<std::pair<std::string, std::string>>& b) {
  return a == b;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DiskStore>> DiskStore::Open(DiskStoreOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("cache disk: no directory given");
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache disk: cannot create ", options.dir, ": ", ec.message()));
  }
  std::string lock_path = options.dir + "/lock";
  int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache disk: cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "cache disk: ", options.dir, " is in use by another process (", lock_path, " is locked)"));
  }
  return std::unique_ptr<DiskStore>(new DiskStore(std::move(options), fd));
}

DiskStore::DiskStore(DiskStoreOptions options, int lock_fd)
    : options_(std::move(options)), lock_fd_(lock_fd) {
  queue_.push_back(Job{.kind = Job::Kind::kScan});
  thread_ = std::thread([this] { Run(); });
}

DiskStore::~DiskStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
  ::close(lock_fd_);
}

std::string DiskStore::PathOf(uint64_t seq) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%016llx", static_cast<unsigned long long>(seq));
  return absl::StrCat(options_.dir, "/", name, A(kSuffix));
}

void DiskStore::Enqueue(Job job) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(job));
  }
  work_cv_.notify_one();
}

void DiskStore::Write(ObjectRef object) {
  size_t charge = object->body.size() + object->fields.SerializedSize() + object->key.size();
  if (charge + kRecordHeadBytes > options_.max_bytes) return;  // could never be kept
  {
    std::lock_guard lock(mu_);
    if (stopping_ || pending_bytes_ + charge > options_.max_pending_bytes) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    pending_bytes_ += charge;
    queue_.push_back(
        Job{.kind = Job::Kind::kWrite, .object = std::move(object), .pending_bytes = charge});
  }
  work_cv_.notify_one();
}

void DiskStore::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping, and everything queued is done
    Job job = std::move(queue_.front());
    queue_.pop_front();
    if (job.kind == Job::Kind::kWrite && stopping_) {
      // Shutting down: what is not written yet is dropped (a slow disk must
      // not hold the exit); purges' unlinks still run, or a purged object
      // would come back at the next start.
      pending_bytes_ -= job.pending_bytes;
      dropped_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    busy_ = true;
    if (job.kind == Job::Kind::kWrite) {
      pending_bytes_ -= job.pending_bytes;
      in_flight_ = job.object;
      in_flight_purged_ = false;
    }
    lock.unlock();
    switch (job.kind) {
      case Job::Kind::kScan:
        Scan();
        break;
      case Job::Kind::kWrite:
        DoWrite(job.object);
        break;
      case Job::Kind::kUnlink:
        UnlinkAll(job.seqs);
        break;
    }
    job.object.reset();
    lock.lock();
    in_flight_.reset();
    busy_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

void DiskStore::UnlinkAll(const std::vector<uint64_t>& seqs) {
  for (uint64_t seq : seqs) ::unlink(PathOf(seq).c_str());
}

bool DiskStore::WriteFile(const StoredResponse& object, uint64_t seq, uint64_t* bytes) {
  if (options_.inject_write_error) {
    if (int err = options_.inject_write_error()) {
      errno = err;
      return false;
    }
  }
  uint32_t body_crc = 0;
  for (size_t i = 0; i < object.body.slice_count(); ++i) {
    std::string_view s = object.body.slice(i);
    body_crc = crc32c::Extend(body_crc, s.data(), s.size());
  }
  std::string prefix = EncodeRecordPrefix(object, seq, body_crc);
  std::vector<iovec> iov;
  iov.push_back({prefix.data(), prefix.size()});
  for (size_t i = 0; i < object.body.slice_count(); ++i) {
    std::string_view s = object.body.slice(i);
    iov.push_back({const_cast<char*>(s.data()), s.size()});
  }
  // Written under a temporary name and renamed: a reader or the scan sees a
  // whole record or none (the checksums catch what a crash tears anyway).
  char tmp_name[40];
  std::snprintf(tmp_name, sizeof(tmp_name), "tmp-%016llx", static_cast<unsigned long long>(seq));
  std::string tmp = absl::StrCat(options_.dir, "/", tmp_name);
  int fd = ::open(tmp.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = WriteAll(fd, std::move(iov));
  int saved = errno;
  ok = (::close(fd) == 0) && ok;
  if (ok && ::rename(tmp.c_str(), PathOf(seq).c_str()) != 0) ok = false;
  if (!ok) {
    saved = errno != 0 ? errno : saved;
    ::unlink(tmp.c_str());
    errno = saved;
    return false;
  }
  *bytes = prefix.size() + object.body.size();
  return true;
}

void DiskStore::DoWrite(const ObjectRef& object) {
  uint64_t seq = next_seq_++;
  uint64_t bytes = 0;
  if (!WriteFile(*object, seq, &bytes)) {
    uint64_t n = write_errors_.fetch_add(1, std::memory_order_relaxed);
    // One line per 1000 failures: a full disk fails every write.
    if (n % 1000 == 0) {
      CAPSTAN_LOG(warn, "cache disk: write failed; the object stays in memory only", "dir",
                  options_.dir, "error", std::string(std::strerror(errno)), "failures", n + 1);
    }
    return;
  }
  writes_.fetch_add(1, std::memory_order_relaxed);
  std::vector<uint64_t> unlink;
  {
    std::lock_guard lock(mu_);
    if (in_flight_purged_) {
      unlink.push_back(seq);  // purged while being written
    } else {
      IndexLocked(seq, Entry{object->key, object->vary, object->tags, bytes}, &unlink);
    }
  }
  UnlinkAll(unlink);
}

void DiskStore::IndexLocked(uint64_t seq, Entry entry, std::vector<uint64_t>* unlink) {
  std::vector<uint64_t>& variants = by_key_[entry.key];
  for (auto it = variants.begin(); it != variants.end(); ++it) {
    auto e = entries_.find(*it);
    if (e != entries_.end() && SameVary(e->second.vary, entry.vary)) {
      uint64_t old = *it;
      bytes_ -= e->second.bytes;
      entries_.erase(e);
      variants.erase(it);
      unlink->push_back(old);
      break;
    }
  }
  while (variants.size() >= options_.max_variants) {
    uint64_t old = variants.back();
    auto e = entries_.find(old);
    if (e != entries_.end()) {
      bytes_ -= e->second.bytes;
      entries_.erase(e);
    }
    variants.pop_back();
    unlink->push_back(old);
  }
  variants.insert(variants.begin(), seq);
  bytes_ += entry.bytes;
  entries_.emplace(seq, std::move(entry));
  // FIFO: the oldest records go first.
  while (bytes_ > options_.max_bytes && !entries_.empty()) {
    uint64_t oldest = entries_.begin()->first;
    EraseLocked(oldest);
    unlink->push_back(oldest);
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

void DiskStore::EraseLocked(uint64_t seq) {
  auto e = entries_.find(seq);
  if (e == entries_.end()) return;
  auto k = by_key_.find(e->second.key);
  if (k != by_key_.end()) {
    std::erase(k->second, seq);
    if (k->second.empty()) by_key_.erase(k);
  }
  bytes_ -= e->second.bytes;
  entries_.erase(e);
}

void DiskStore::Scan() {
  auto started = std::chrono::steady_clock::now();
  struct Found {
    uint64_t seq;
    Entry entry;
  };
  std::vector<Found> found;
  std::vector<uint64_t> bad;
  DIR* d = ::opendir(options_.dir.c_str());
  if (d == nullptr) {
    CAPSTAN_LOG(err, "cache disk: cannot read the directory", "dir", options_.dir, "error",
                std::string(std::strerror(errno)));
  } else {
    while (dirent* ent = ::readdir(d)) {
      std::string_view name = ent->d_name;
      if (name.starts_with(kTmpPrefix)) {
        ::unlink(absl::StrCat(options_.dir, "/", A(name)).c_str());  // a write cut short
        continue;
      }
      uint64_t seq = 0;
      if (!ParseRecordName(name, &seq)) continue;  // not ours
      std::string path = PathOf(seq);
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      struct stat st;
      RecordHead head;
      RecordMeta meta;
      absl::Status status = ::fstat(fd, &st) == 0
                                ? ReadMeta(fd, static_cast<uint64_t>(st.st_size), &head, &meta)
                                : absl::DataLossError("fstat failed");
      ::close(fd);
      if (status.ok() && meta.seq != seq) status = absl::DataLossError("sequence mismatch");
      if (!status.ok()) {
        corrupt_.fetch_add(1, std::memory_order_relaxed);
        CAPSTAN_LOG(warn, "cache disk: removing a torn or corrupt file", "file", path, "error",
                    std::string(status.message()));
        bad.push_back(seq);
        continue;
      }
      found.push_back(Found{seq, Entry{std::move(meta.key), std::move(meta.vary),
                                       std::move(meta.tags), head.total()}});
    }
    ::closedir(d);
  }
  UnlinkAll(bad);
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.seq < b.seq; });
  std::vector<uint64_t> unlink;
  size_t indexed = 0;
  {
    std::lock_guard lock(mu_);
    for (Found& f : found) {
      next_seq_ = std::max(next_seq_, f.seq + 1);
      bool purged = false;
      for (const Doomed& doomed : scan_purges_) purged |= doomed(f.entry.key, f.entry.tags);
      if (purged) {
        unlink.push_back(f.seq);
        continue;
      }
      IndexLocked(f.seq, std::move(f.entry), &unlink);  // same variant: the newer wins
      ++indexed;
    }
    scan_purges_.clear();
    ready_ = true;
  }
  UnlinkAll(unlink);
  DiskStats s = stats();
  CAPSTAN_LOG(info, "cache disk: index rebuilt", "dir", options_.dir, "objects", s.objects, "bytes",
              s.bytes, "removed", bad.size() + unlink.size(), "ms",
              std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - started)
                  .count());
}

uint64_t DiskStore::Find(const std::string& key, const Fields& request) {
  std::vector<std::pair<uint64_t, std::vector<std::pair<std::string, std::string>>>> candidates;
  {
    std::lock_guard lock(mu_);
    if (!ready_) return 0;
    auto k = by_key_.find(key);
    if (k == by_key_.end()) return 0;
    for (uint64_t seq : k->second) {
      auto e = entries_.find(seq);
      if (e == entries_.end()) continue;
      if (e->second.vary.empty()) return seq;
      candidates.emplace_back(seq, e->second.vary);
    }
  }
  // Vary matching outside the lock (it normalises request fields).
  for (const auto& [seq, vary] : candidates) {
    bool match = true;
    for (const auto& [name, value] : vary) {
      if (NormalizedVaryValue(request, name) != value) {
        match = false;
        break;
      }
    }
    if (match) return seq;
  }
  return 0;
}

std::shared_ptr<StoredResponse> DiskStore::Read(uint64_t seq, const std::string& key) {
  std::string path = PathOf(seq);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;  // evicted or purged since Find
  struct stat st;
  RecordHead head;
  RecordMeta meta;
  absl::Status status = ::fstat(fd, &st) == 0
                            ? ReadMeta(fd, static_cast<uint64_t>(st.st_size), &head, &meta)
                            : absl::DataLossError("fstat failed");
  auto obj = std::make_shared<StoredResponse>();
  if (status.ok() && (meta.seq != seq || meta.key != key)) {
    status = absl::DataLossError("sequence or key mismatch");
  }
  if (status.ok() && head.body_len > 0) {
    // Straight into the one block the stored body lives in: a mapped one
    // for a body that hits send without copying (net/splice_sender.h).
    std::span<char> span = head.body_len >= net::SpliceSender::kMinSliceBytes
                               ? obj->body.ReserveMapped(head.body_len)
                               : obj->body.Reserve(head.body_len, head.body_len);
    if (!ReadAt(fd, span.data(), head.body_len, kRecordHeadBytes + head.meta_len)) {
      status = absl::DataLossError("short read");
    } else if (crc32c::Value(std::string_view(span.data(), head.body_len)) != head.body_crc) {
      status = absl::DataLossError("body checksum mismatch");
    } else {
      obj->body.Commit(head.body_len);
    }
  }
  ::close(fd);
  if (!status.ok()) {
    corrupt_.fetch_add(1, std::memory_order_relaxed);
    CAPSTAN_LOG(warn, "cache disk: removing a torn or corrupt file", "file", path, "error",
                std::string(status.message()));
    {
      std::lock_guard lock(mu_);
      EraseLocked(seq);
    }
    ::unlink(path.c_str());
    return nullptr;
  }
  obj->key = std::move(meta.key);
  obj->vary = std::move(meta.vary);
  obj->tags = std::move(meta.tags);
  obj->status = meta.status;
  for (const auto& [name, value] : meta.fields) obj->fields.Add(name, value);
  obj->times = meta.times;
  obj->stored_at = meta.stored_at;
  return obj;
}

size_t DiskStore::Purge(const Doomed& doomed) {
  std::vector<uint64_t> seqs;
  {
    std::lock_guard lock(mu_);
    for (const auto& [seq, e] : entries_) {
      if (doomed(e.key, e.tags)) seqs.push_back(seq);
    }
    for (uint64_t seq : seqs) EraseLocked(seq);
    // Writes not yet done: dropped, or (the one under way) unlinked when done.
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->kind == Job::Kind::kWrite && doomed(it->object->key, it->object->tags)) {
        pending_bytes_ -= it->pending_bytes;
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    if (in_flight_ != nullptr && doomed(in_flight_->key, in_flight_->tags)) {
      in_flight_purged_ = true;
    }
    // Files the scan has not reached yet are checked against it.
    if (!ready_) scan_purges_.push_back(doomed);
    if (!seqs.empty()) queue_.push_back(Job{.kind = Job::Kind::kUnlink, .seqs = seqs});
  }
  work_cv_.notify_one();
  return seqs.size();
}

size_t DiskStore::Remove(const std::string& key) {
  return Purge([key](const std::string& k, const std::vector<std::string>&) { return k == key; });
}

size_t DiskStore::RemoveTag(const std::string& tag) {
  return Purge([tag](const std::string&, const std::vector<std::string>& tags) {
    return std::find(tags.begin(), tags.end(), tag) != tags.end();
  });
}

size_t DiskStore::RemoveKeyPrefix(const std::string& prefix) {
  return Purge([prefix](const std::string& k, const std::vector<std::string>&) {
    return k.starts_with(prefix);
  });
}

size_t DiskStore::Clear() {
  return Purge([](const std::string&, const std::vector<std::string>&) { return true; });
}

bool DiskStore::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return ready_ && queue_.empty() && !busy_; });
}

DiskStats DiskStore::stats() const {
  DiskStats s;
  {
    std::lock_guard lock(mu_);
    s.bytes = bytes_;
    s.objects = entries_.size();
    s.ready = ready_;
  }
  s.writes = writes_.load(std::memory_order_relaxed);
  s.write_errors = write_errors_.load(std::memory_order_relaxed);
  s.dropped = dropped_.load(std::memory_order_relaxed);
  s.corrupt = corrupt_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace capstan::gateway::cache
