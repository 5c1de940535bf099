#include "raft/wal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "base/logging.h"

namespace capstan::raft {
namespace {

constexpr char kMagic[8] = {'C', 'A', 'P', 'S', 'W', 'A', 'L', '1'};
constexpr size_t kSegmentHeaderSize = 20;  // magic, first index, crc
constexpr size_t kRecordHeaderSize = 9;    // length, masked crc, type
constexpr size_t kEntryFixedSize = 16;     // index, term
constexpr uint32_t kMaxRecordPayload = 256u << 20;
constexpr uint8_t kTypeEntry = 1;

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

std::string SegmentName(uint64_t seq, uint64_t first_index) {
  return absl::StrFormat("%016x-%016x.wal", seq, first_index);
}

bool ParseSegmentName(const std::string& name, uint64_t* seq, uint64_t* first_index) {
  unsigned long long s, f;
  char tail[8];
  if (name.size() != 37) return false;
  if (std::sscanf(name.c_str(), "%16llx-%16llx.%3s", &s, &f, tail) != 3) return false;
  if (std::strcmp(tail, "wal") != 0) return false;
  *seq = s;
  *first_index = f;
  return true;
}

bool AllZero(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == 0; });
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return ErrnoError("read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string EncodeSegmentHeader(uint64_t first_index) {
  std::string h(kMagic, sizeof(kMagic));
  PutFixed64LE(&h, first_index);
  PutFixed32LE(&h, crc32c::Mask(crc32c::Value(h)));
  return h;
}

}  // namespace

void EncodeRecord(const WalEntry& entry, std::string* out) {
  size_t start = out->size();
  uint32_t payload = static_cast<uint32_t>(kEntryFixedSize + entry.data.size());
  PutFixed32LE(out, payload);
  PutFixed32LE(out, 0);  // crc placeholder
  out->push_back(static_cast<char>(kTypeEntry));
  PutFixed64LE(out, entry.index);
  PutFixed64LE(out, entry.term);
  out->append(entry.data);
  uint32_t crc = crc32c::Value(std::string_view(out->data() + start + 8, 1 + payload));
  std::string masked;
  PutFixed32LE(&masked, crc32c::Mask(crc));
  out->replace(start + 4, 4, masked);
}

DecodeResult DecodeRecord(std::string_view buf, WalEntry* entry, size_t* consumed) {
  if (buf.size() < kRecordHeaderSize) {
    return AllZero(buf) ? DecodeResult::kEnd : DecodeResult::kIncomplete;
  }
  if (AllZero(buf.substr(0, kRecordHeaderSize))) return DecodeResult::kEnd;
  uint32_t payload = DecodeFixed32LE(buf.data());
  uint32_t masked = DecodeFixed32LE(buf.data() + 4);
  uint8_t type = static_cast<uint8_t>(buf[8]);
  if (type != kTypeEntry || payload < kEntryFixedSize || payload > kMaxRecordPayload) {
    return DecodeResult::kCorrupt;
  }
  if (buf.size() - kRecordHeaderSize < payload) return DecodeResult::kIncomplete;
  std::string_view covered = buf.substr(8, 1 + payload);
  if (crc32c::Unmask(masked) != crc32c::Value(covered)) return DecodeResult::kCorrupt;
  const char* p = buf.data() + kRecordHeaderSize;
  entry->index = DecodeFixed64LE(p);
  entry->term = DecodeFixed64LE(p + 8);
  entry->data.assign(p + kEntryFixedSize, payload - kEntryFixedSize);
  *consumed = kRecordHeaderSize + payload;
  return DecodeResult::kOk;
}

Wal::Wal(std::string dir, Options options) : dir_(std::move(dir)), options_(options) {}

Wal::~Wal() {
  if (tail_fd_ >= 0) {
    if (dirty_) ::fdatasync(tail_fd_);
    ::close(tail_fd_);
  }
}

absl::StatusOr<std::unique_ptr<Wal>> Wal::Open(const std::string& dir, Options options,
                                               uint64_t first_index_if_new) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("mkdir", dir);
  std::unique_ptr<Wal> wal(new Wal(dir, options));
  RETURN_IF_ERROR(wal->Load(first_index_if_new));
  return wal;
}

uint64_t Wal::first_index() const {
  return segments_.empty() ? next_index_ : segments_.front().first_index;
}

absl::Status Wal::SyncDir() {
  int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open dir", dir_);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync dir", dir_);
  return absl::OkStatus();
}

absl::Status Wal::Load(uint64_t first_index_if_new) {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return ErrnoError("opendir", dir_);
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    uint64_t seq, first;
    if (ParseSegmentName(name, &seq, &first)) {
      segments_.push_back({seq, first, dir_ + "/" + name});
    } else if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") {
      ::unlink((dir_ + "/" + name).c_str());  // a segment whose creation did not finish
    }
  }
  ::closedir(d);
  std::sort(segments_.begin(), segments_.end(),
            [](const Segment& a, const Segment& b) { return a.seq < b.seq; });

  if (segments_.empty()) {
    next_index_ = first_index_if_new;
    return Roll();
  }
  next_index_ = segments_.front().first_index;
  for (size_t i = 0; i < segments_.size(); ++i) {
    const Segment& seg = segments_[i];
    if (seg.first_index != next_index_) {
      return absl::DataLossError(absl::StrCat("wal segment ", seg.path, " starts at index ",
                                              seg.first_index, " but the log expects ", next_index_,
                                              ": a segment is missing"));
    }
    RETURN_IF_ERROR(ScanSegment(seg, i + 1 == segments_.size(), &next_index_, nullptr, 0));
  }
  return OpenTail();
}

absl::Status Wal::ScanSegment(const Segment& seg, bool is_last, uint64_t* next_index,
                              const std::function<absl::Status(const WalEntry&)>* fn,
                              uint64_t from) {
  ASSIGN_OR_RETURN(std::string data, ReadFile(seg.path));
  if (data.size() < kSegmentHeaderSize || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0 ||
      crc32c::Unmask(DecodeFixed32LE(data.data() + 16)) !=
          crc32c::Value(std::string_view(data.data(), 16)) ||
      DecodeFixed64LE(data.data() + 8) != seg.first_index) {
    return absl::DataLossError(
        absl::StrCat("wal segment ", seg.path, ": bad segment header at offset 0"));
  }
  size_t off = kSegmentHeaderSize;
  uint64_t expect = seg.first_index;
  WalEntry entry;
  while (true) {
    std::string_view rest(data.data() + off, data.size() - off);
    size_t consumed = 0;
    DecodeResult r = DecodeRecord(rest, &entry, &consumed);
    if (r == DecodeResult::kOk) {
      if (entry.index != expect) {
        return absl::DataLossError(absl::StrCat("wal segment ", seg.path, ": record at offset ",
                                                off, " has index ", entry.index, ", expected ",
                                                expect));
      }
      if (fn != nullptr && entry.index >= from) RETURN_IF_ERROR((*fn)(entry));
      ++expect;
      off += consumed;
      continue;
    }
    if (r == DecodeResult::kEnd && AllZero(rest)) break;
    // Damage at `off`. It is a torn tail only in the last segment and only when
    // no intact record follows it; anything else means lost acknowledged data.
    bool later_record = false;
    for (size_t probe = off + 1; probe + kRecordHeaderSize <= data.size() && !later_record;
         ++probe) {
      WalEntry e;
      size_t c;
      if (DecodeRecord(std::string_view(data.data() + probe, data.size() - probe), &e, &c) ==
              DecodeResult::kOk &&
          e.index >= expect) {
        later_record = true;
      }
    }
    if (!is_last || later_record || fn != nullptr) {
      return absl::DataLossError(absl::StrCat(
          "wal segment ", seg.path, ": corrupt record at offset ", off,
          later_record ? " followed by intact records" : " in a segment that is not the last",
          "; refusing to start (restore this member from a snapshot or a peer)"));
    }
    CAPSTAN_LOG(warn, "wal: repairing torn tail", "segment", seg.path, "offset", off,
                "dropped_bytes", data.size() - off);
    if (::truncate(seg.path.c_str(), static_cast<off_t>(off)) != 0) {
      return ErrnoError("truncate", seg.path);
    }
    int fd = ::open(seg.path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open", seg.path);
    int rc = ::fdatasync(fd);
    ::close(fd);
    if (rc != 0) return ErrnoError("fdatasync", seg.path);
    break;
  }
  *next_index = expect;
  return absl::OkStatus();
}

absl::Status Wal::OpenTail() {
  const Segment& seg = segments_.back();
  tail_fd_ = ::open(seg.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (tail_fd_ < 0) return ErrnoError("open", seg.path);
  struct stat st;
  if (::fstat(tail_fd_, &st) != 0) return ErrnoError("stat", seg.path);
  tail_size_ = static_cast<uint64_t>(st.st_size);
  return absl::OkStatus();
}

absl::Status Wal::Roll() {
  if (tail_fd_ >= 0) {
    if (::fdatasync(tail_fd_) != 0) return ErrnoError("fdatasync", segments_.back().path);
    ::close(tail_fd_);
    tail_fd_ = -1;
    dirty_ = false;
  }
  uint64_t seq = segments_.empty() ? 1 : segments_.back().seq + 1;
  std::string final_path = dir_ + "/" + SegmentName(seq, next_index_);
  std::string tmp_path = final_path + ".tmp";
  int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("create", tmp_path);
  absl::Status st = WriteAll(fd, EncodeSegmentHeader(next_index_), tmp_path);
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("fsync", tmp_path);
  ::close(fd);
  RETURN_IF_ERROR(st);
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) return ErrnoError("rename", tmp_path);
  RETURN_IF_ERROR(SyncDir());
  segments_.push_back({seq, next_index_, final_path});
  return OpenTail();
}

absl::Status Wal::Replay(uint64_t from, const std::function<absl::Status(const WalEntry&)>& fn) {
  if (from < first_index() && first_index() <= last_index()) {
    return absl::DataLossError(absl::StrCat("wal in ", dir_, " starts at index ", first_index(),
                                            " but replay needs index ", from));
  }
  for (size_t i = 0; i < segments_.size(); ++i) {
    uint64_t seg_end = i + 1 < segments_.size() ? segments_[i + 1].first_index : next_index_;
    if (seg_end <= from) continue;
    uint64_t next = 0;
    RETURN_IF_ERROR(ScanSegment(segments_[i], false, &next, &fn, from));
  }
  return absl::OkStatus();
}

absl::Status Wal::Append(const std::vector<WalEntry>& entries) {
  if (entries.empty()) return absl::OkStatus();
  if (tail_size_ >= options_.segment_bytes) RETURN_IF_ERROR(Roll());
  buf_.clear();
  for (const WalEntry& e : entries) {
    if (e.index != next_index_) {
      return absl::InternalError(
          absl::StrCat("wal append out of order: got index ", e.index, ", expected ", next_index_));
    }
    EncodeRecord(e, &buf_);
    ++next_index_;
  }
  RETURN_IF_ERROR(WriteAll(tail_fd_, buf_, segments_.back().path));
  tail_size_ += buf_.size();
  bytes_written_ += buf_.size();
  dirty_ = true;
  return absl::OkStatus();
}

absl::Status Wal::Sync() {
  if (!dirty_) return absl::OkStatus();
  if (::fdatasync(tail_fd_) != 0) return ErrnoError("fdatasync", segments_.back().path);
  dirty_ = false;
  return absl::OkStatus();
}

absl::Status Wal::ReleaseTo(uint64_t index) {
  size_t drop = 0;
  while (drop + 1 < segments_.size() && segments_[drop + 1].first_index <= index + 1) ++drop;
  if (drop == 0) return absl::OkStatus();
  for (size_t i = 0; i < drop; ++i) {
    if (::unlink(segments_[i].path.c_str()) != 0) return ErrnoError("unlink", segments_[i].path);
  }
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<ptrdiff_t>(drop));
  return SyncDir();
}

}  // namespace capstan::raft
