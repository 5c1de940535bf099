#include "experiments/event_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "base/logging.h"
#include "base/status.h"
#include "experiments/event_store_format.h"

namespace capstan::experiments {
namespace {

constexpr char kMagic[8] = {'C', 'E', 'V', 'L', 'O', 'G', '0', '1'};
constexpr std::string_view kSegmentSuffix = ".log";
constexpr std::string_view kTempSuffix = ".tmp";
// A payload longer than this is damage, not a record (a group is at most
// max_group_events events of at most ~700 bytes each).
constexpr uint32_t kMaxPayloadBytes = 1u << 30;
constexpr size_t kMinPayloadBytes = 8 + event_format::kLogRecordHeader;

uint32_t Load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t Load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

absl::Status ErrnoError(const char* what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat("event log: ", what, " ", path, ": ", std::strerror(errno)));
}

absl::Status Corrupt(const std::string& path, size_t offset, const std::string& what) {
  return absl::DataLossError(absl::StrCat("event log: ", path, " at byte ", offset, ": ", what));
}

absl::Status SyncDirectory(const std::string& directory) {
  int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open directory", directory);
  int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoError("fsync directory", directory);
}

absl::Status WriteAll(int fd, const char* data, size_t size, size_t offset,
                      const std::string& path) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string SegmentName(uint64_t first_sequence) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020" PRIu64, first_sequence);
  return std::string(name) + std::string(kSegmentSuffix);
}

// A read-only view of a whole file.
class MappedFile {
 public:
  absl::Status Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open", path);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      absl::Status s = ErrnoError("stat", path);
      ::close(fd);
      return s;
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        absl::Status s = ErrnoError("mmap", path);
        ::close(fd);
        return s;
      }
      (void)::madvise(p, size_, MADV_SEQUENTIAL);
      data_ = static_cast<const char*>(p);
    }
    ::close(fd);
    return absl::OkStatus();
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
  }
  std::string_view view() const { return std::string_view(data_, size_); }

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

LogFrameResult DecodeLogFrame(std::string_view buffer, uint64_t* first_sequence,
                              std::string_view* record, size_t* consumed) {
  if (buffer.size() < 8) {
    bool zeros = std::all_of(buffer.begin(), buffer.end(), [](char c) { return c == 0; });
    return zeros ? LogFrameResult::kEnd : LogFrameResult::kIncomplete;
  }
  const uint32_t length = Load32(buffer.data());
  const uint32_t masked = Load32(buffer.data() + 4);
  if (length == 0) return masked == 0 ? LogFrameResult::kEnd : LogFrameResult::kCorrupt;
  if (length < kMinPayloadBytes || length > kMaxPayloadBytes) return LogFrameResult::kCorrupt;
  if (buffer.size() - 8 < length) return LogFrameResult::kIncomplete;
  uint32_t crc = crc32c::Extend(crc32c::Extend(0, buffer.data(), 4), buffer.data() + 8, length);
  if (crc32c::Unmask(masked) != crc) return LogFrameResult::kCorrupt;
  *first_sequence = Load64(buffer.data() + 8);
  *record = buffer.substr(16, length - 8);
  *consumed = 8 + static_cast<size_t>(length);
  return LogFrameResult::kOk;
}

EventLog::EventLog(std::string directory, EventLogOptions options)
    : directory_(std::move(directory)), options_(options) {}

EventLog::~EventLog() {
  if (tail_fd_ >= 0) ::close(tail_fd_);
}

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(std::string directory,
                                                         EventLogOptions options) {
  if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError("create directory", directory);
  }
  std::unique_ptr<EventLog> log(new EventLog(std::move(directory), options));
  RETURN_IF_ERROR(log->Load());
  return log;
}

size_t SegmentsToRemove(const std::vector<LogSegmentInfo>& segments,
                        const LogRetentionLimits& limits) {
  uint64_t total = 0;
  for (const LogSegmentInfo& segment : segments) total += segment.bytes;
  size_t count = 0;
  for (const LogSegmentInfo& segment : segments) {
    if (segment.tail || segment.end_sequence > limits.removable_before) break;
    const bool expired =
        limits.max_age.has_value() && limits.now - segment.modified >= *limits.max_age;
    const bool over_cap = limits.max_bytes > 0 && total > limits.max_bytes;
    if (!expired && !over_cap) break;
    total -= segment.bytes;
    ++count;
  }
  return count;
}

absl::Status EventLog::Load() {
  DIR* dir = ::opendir(directory_.c_str());
  if (dir == nullptr) return ErrnoError("list", directory_);
  std::vector<std::string> temporary;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name.size() > kTempSuffix.size() && name.ends_with(kTempSuffix)) {
      temporary.push_back(name);  // a segment never finished: never held a record
      continue;
    }
    if (name.size() != 20 + kSegmentSuffix.size() || !name.ends_with(kSegmentSuffix)) continue;
    uint64_t first = 0;
    bool digits = true;
    for (char c : std::string_view(name).substr(0, 20)) {
      digits = digits && c >= '0' && c <= '9';
      first = first * 10 + static_cast<uint64_t>(c - '0');
    }
    if (digits) segments_.push_back(Segment{first, absl::StrCat(directory_, "/", name)});
  }
  ::closedir(dir);
  for (const std::string& name : temporary) {
    std::string path = absl::StrCat(directory_, "/", name);
    if (::unlink(path.c_str()) != 0) return ErrnoError("remove", path);
  }
  std::sort(segments_.begin(), segments_.end(),
            [](const Segment& a, const Segment& b) { return a.first_sequence < b.first_sequence; });
  if (segments_.empty()) return StartSegment(0);
  uint64_t sealed_bytes = 0;
  for (size_t i = 0; i + 1 < segments_.size(); ++i) {
    struct stat st {};
    if (::stat(segments_[i].path.c_str(), &st) != 0) return ErrnoError("stat", segments_[i].path);
    segments_[i].bytes = static_cast<uint64_t>(st.st_size);
    sealed_bytes += segments_[i].bytes;
  }
  tail_path_ = segments_.back().path;
  size_t end_offset = 0;
  RETURN_IF_ERROR(ScanSegment(segments_.back(), /*last=*/true, UINT64_MAX, nullptr, &next_sequence_,
                              &end_offset));
  appended_sequence_.store(next_sequence_);
  retained_bytes_.store(sealed_bytes + end_offset);
  return OpenTail(end_offset);
}

absl::Status EventLog::ScanSegment(
    const Segment& segment, bool last, uint64_t from,
    const std::function<absl::Status(uint64_t, std::string_view)>* fn, uint64_t* next,
    size_t* end_offset) const {
  MappedFile file;
  RETURN_IF_ERROR(file.Open(segment.path));
  std::string_view data = file.view();
  if (data.size() < kSegmentHeaderBytes || std::memcmp(data.data(), kMagic, 8) != 0 ||
      Load64(data.data() + 8) != segment.first_sequence ||
      crc32c::Unmask(Load32(data.data() + 16)) != crc32c::Value(data.substr(0, 16))) {
    return Corrupt(segment.path, 0, "bad segment header");
  }
  uint64_t expected = segment.first_sequence;
  size_t offset = kSegmentHeaderBytes;
  while (true) {
    uint64_t first = 0;
    std::string_view record;
    size_t consumed = 0;
    LogFrameResult result = DecodeLogFrame(data.substr(offset), &first, &record, &consumed);
    if (result == LogFrameResult::kEnd) break;
    if (result != LogFrameResult::kOk) {
      // Torn only if it is the last thing in the log: no valid record after it.
      bool followed = false;
      uint32_t length = Load32(data.data() + offset);
      if (result == LogFrameResult::kCorrupt && length >= kMinPayloadBytes &&
          length <= data.size() - offset - 8) {
        uint64_t f;
        std::string_view r;
        size_t c;
        followed =
            DecodeLogFrame(data.substr(offset + 8 + length), &f, &r, &c) == LogFrameResult::kOk;
      }
      if (!last || followed) {
        return Corrupt(segment.path, offset,
                       result == LogFrameResult::kIncomplete ? "record cut short"
                                                             : "record checksum mismatch");
      }
      CAPSTAN_LOG(warn, "events: the log's last record was torn by a crash; dropping it", "file",
                  segment.path, "offset", offset);
      break;
    }
    const uint32_t count = event_format::LogRecordCount(record);
    if (first != expected || count == 0) {
      return Corrupt(segment.path, offset,
                     absl::StrCat("record of events ", first, ".. where ", expected,
                                  " was expected (or empty)"));
    }
    if (fn != nullptr && first + count > from) RETURN_IF_ERROR((*fn)(first, record));
    expected = first + count;
    offset += consumed;
  }
  *next = expected;
  if (end_offset != nullptr) *end_offset = offset;
  return absl::OkStatus();
}

absl::Status EventLog::Read(
    uint64_t from, const std::function<absl::Status(uint64_t, std::string_view)>& fn) const {
  std::vector<Segment> segments;
  {
    std::lock_guard lock(segments_mutex_);
    segments = segments_;
  }
  if (from < segments.front().first_sequence) {
    return absl::FailedPreconditionError(absl::StrCat(
        "event log: events before ", segments.front().first_sequence,
        " were removed by retention; the log starts at event ", segments.front().first_sequence,
        " (", segments.front().path, "), reading from ", from, " is not possible"));
  }
  // The last segment that starts at or before `from`.
  size_t start = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].first_sequence <= from) start = i;
  }
  for (size_t i = start; i < segments.size(); ++i) {
    uint64_t next = 0;
    RETURN_IF_ERROR(ScanSegment(segments[i], /*last=*/false, from, &fn, &next, nullptr));
    if (i + 1 < segments.size() && segments[i + 1].first_sequence != next) {
      return Corrupt(segments[i + 1].path, 0,
                     absl::StrCat("segment starts at event ", segments[i + 1].first_sequence,
                                  " but the one before ends at ", next));
    }
  }
  return absl::OkStatus();
}

uint64_t EventLog::first_sequence() const {
  std::lock_guard lock(segments_mutex_);
  return segments_.front().first_sequence;
}

size_t EventLog::segment_count() const {
  std::lock_guard lock(segments_mutex_);
  return segments_.size();
}

absl::StatusOr<std::vector<LogSegmentInfo>> EventLog::SegmentInfos() const {
  std::vector<Segment> segments;
  {
    std::lock_guard lock(segments_mutex_);
    segments = segments_;
  }
  std::vector<LogSegmentInfo> infos;
  infos.reserve(segments.size());
  for (size_t i = 0; i < segments.size(); ++i) {
    struct stat st {};
    if (::stat(segments[i].path.c_str(), &st) != 0) return ErrnoError("stat", segments[i].path);
    LogSegmentInfo info;
    info.first_sequence = segments[i].first_sequence;
    info.tail = i + 1 == segments.size();
    info.end_sequence = info.tail ? appended_sequence_.load() : segments[i + 1].first_sequence;
    info.bytes = static_cast<uint64_t>(st.st_size);
    info.modified = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    infos.push_back(info);
  }
  return infos;
}

absl::Status EventLog::RemoveOldestSegments(size_t count) {
  std::lock_guard removal(removal_mutex_);
  for (size_t i = 0; i < count; ++i) {
    Segment oldest;
    {
      std::lock_guard lock(segments_mutex_);
      if (segments_.size() <= 1) break;  // the tail stays
      oldest = segments_.front();
    }
    // Oldest first, each unlink made durable before the next: a crash
    // leaves the log contiguous (Read checks that segments follow each other).
    if (::unlink(oldest.path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoError("remove", oldest.path);
    }
    if (options_.sync) RETURN_IF_ERROR(SyncDirectory(directory_));
    std::lock_guard lock(segments_mutex_);
    segments_.erase(segments_.begin());
    retained_bytes_.fetch_sub(oldest.bytes);
  }
  return absl::OkStatus();
}

absl::Status EventLog::StartSegment(uint64_t first_sequence) {
  Segment segment{first_sequence, absl::StrCat(directory_, "/", SegmentName(first_sequence))};
  std::string temp = segment.path + std::string(kTempSuffix);
  int fd = ::open(temp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create", temp);
  std::string header(kMagic, 8);
  event_format::AppendRaw(&header, first_sequence);
  event_format::AppendRaw(&header, crc32c::Mask(crc32c::Value(header)));
  event_format::AppendRaw(&header, uint32_t{0});
  absl::Status s = WriteAll(fd, header.data(), header.size(), 0, temp);
  if (s.ok() && options_.sync && ::fdatasync(fd) != 0) s = ErrnoError("fdatasync", temp);
  if (s.ok() && ::rename(temp.c_str(), segment.path.c_str()) != 0) s = ErrnoError("rename", temp);
  if (s.ok() && options_.sync) s = SyncDirectory(directory_);
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  if (tail_fd_ >= 0) ::close(tail_fd_);
  tail_fd_ = fd;
  tail_path_ = segment.path;
  {
    std::lock_guard lock(segments_mutex_);
    // The segment before is sealed at its last record (Append truncated it).
    if (!segments_.empty()) segments_.back().bytes = tail_offset_;
    segments_.push_back(std::move(segment));
  }
  tail_offset_ = tail_allocated_ = kSegmentHeaderBytes;
  next_sequence_ = first_sequence;
  appended_sequence_.store(first_sequence);
  retained_bytes_.fetch_add(kSegmentHeaderBytes);
  return absl::OkStatus();
}

absl::Status EventLog::OpenTail(size_t end_offset) {
  const std::string& path = tail_path_;
  tail_fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (tail_fd_ < 0) return ErrnoError("open", path);
  // Drops a torn record and the preallocated zeros: the file ends at its
  // last record, and appending starts from a known state.
  if (::ftruncate(tail_fd_, static_cast<off_t>(end_offset)) != 0) {
    return ErrnoError("truncate", path);
  }
  if (options_.sync && ::fdatasync(tail_fd_) != 0) return ErrnoError("fdatasync", path);
  tail_offset_ = tail_allocated_ = end_offset;
  return absl::OkStatus();
}

absl::Status EventLog::Preallocate(size_t needed) {
  if (needed <= tail_allocated_) return absl::OkStatus();
  const size_t step = std::max<size_t>(options_.preallocate_bytes, 1);
  const size_t target = (needed + step - 1) / step * step;
  static const std::string kZeros(256 << 10, '\0');
  for (size_t at = tail_allocated_; at < target;) {
    size_t n = std::min(kZeros.size(), target - at);
    RETURN_IF_ERROR(WriteAll(tail_fd_, kZeros.data(), n, at, tail_path_));
    at += n;
  }
  tail_allocated_ = target;
  return absl::OkStatus();
}

absl::Status EventLog::Append(std::string* framed, uint32_t count) {
  if (failed_) {
    return absl::InternalError(
        "event log: a write failed earlier; the log refuses until the service restarts");
  }
  if (framed->size() < kFrameBytes + event_format::kLogRecordHeader || count == 0 ||
      framed->size() - 8 > kMaxPayloadBytes) {
    return absl::InvalidArgumentError("event log: not a framed group record");
  }
  char* p = framed->data();
  const uint32_t length = static_cast<uint32_t>(framed->size() - 8);
  std::memcpy(p, &length, 4);
  std::memcpy(p + 8, &next_sequence_, 8);
  const uint32_t crc = crc32c::Mask(crc32c::Extend(crc32c::Extend(0, p, 4), p + 8, length));
  std::memcpy(p + 4, &crc, 4);

  absl::Status s;
  if (tail_offset_ > kSegmentHeaderBytes &&
      tail_offset_ + framed->size() > options_.segment_bytes) {
    // Roll: the finished segment ends at its last record (no zeros after).
    const std::string& path = tail_path_;
    if (::ftruncate(tail_fd_, static_cast<off_t>(tail_offset_)) != 0) {
      s = ErrnoError("truncate", path);
    } else if (options_.sync && ::fdatasync(tail_fd_) != 0) {
      s = ErrnoError("fdatasync", path);
    }
    if (s.ok()) s = StartSegment(next_sequence_);
  }
  if (s.ok()) s = Preallocate(tail_offset_ + framed->size());
  if (s.ok()) s = WriteAll(tail_fd_, p, framed->size(), tail_offset_, tail_path_);
  if (s.ok() && options_.sync && ::fdatasync(tail_fd_) != 0) {
    s = ErrnoError("fdatasync", tail_path_);
  }
  if (!s.ok()) {
    failed_ = true;
    return s;
  }
  tail_offset_ += framed->size();
  next_sequence_ += count;
  appended_sequence_.store(next_sequence_);
  retained_bytes_.fetch_add(framed->size());
  return absl::OkStatus();
}

}  // namespace capstan::experiments
