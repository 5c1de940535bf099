#include "raft/wal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>

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
constexpr size_t kHardStateSize = 24;      // term, vote, commit
constexpr size_t kSnapshotSize = 16;       // index, term
constexpr uint32_t kMaxRecordPayload = 256u << 20;

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

absl::Status WriteAllAt(int fd, std::string_view data, uint64_t offset, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteZeros(int fd, uint64_t from, uint64_t to, const std::string& path) {
  static const std::string kZeros(64 << 10, '\0');
  while (from < to) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(to - from, kZeros.size()));
    RETURN_IF_ERROR(WriteAllAt(fd, std::string_view(kZeros.data(), n), from, path));
    from += n;
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

void EncodeRecord(const WalRecord& rec, std::string* out) {
  size_t start = out->size();
  PutFixed32LE(out, 0);  // length placeholder
  PutFixed32LE(out, 0);  // crc placeholder
  out->push_back(static_cast<char>(rec.kind));
  switch (rec.kind) {
    case WalRecord::Kind::kEntry:
    case WalRecord::Kind::kConfEntry:
      PutFixed64LE(out, rec.entry.index);
      PutFixed64LE(out, rec.entry.term);
      out->append(rec.entry.data);
      break;
    case WalRecord::Kind::kHardState:
      PutFixed64LE(out, rec.hard_state.term);
      PutFixed64LE(out, rec.hard_state.vote);
      PutFixed64LE(out, rec.hard_state.commit);
      break;
    case WalRecord::Kind::kSnapshot:
      PutFixed64LE(out, rec.snapshot_index);
      PutFixed64LE(out, rec.snapshot_term);
      break;
  }
  uint32_t payload = static_cast<uint32_t>(out->size() - start - kRecordHeaderSize);
  uint32_t crc = crc32c::Value(std::string_view(out->data() + start + 8, 1 + payload));
  std::string fixed;
  PutFixed32LE(&fixed, payload);
  PutFixed32LE(&fixed, crc32c::Mask(crc));
  out->replace(start, 8, fixed);
}

DecodeResult DecodeRecord(std::string_view buf, WalRecord* rec, size_t* consumed) {
  if (buf.size() < kRecordHeaderSize) {
    return AllZero(buf) ? DecodeResult::kEnd : DecodeResult::kIncomplete;
  }
  if (AllZero(buf.substr(0, kRecordHeaderSize))) return DecodeResult::kEnd;
  uint32_t payload = DecodeFixed32LE(buf.data());
  uint32_t masked = DecodeFixed32LE(buf.data() + 4);
  uint8_t type = static_cast<uint8_t>(buf[8]);
  bool is_entry = type == static_cast<uint8_t>(WalRecord::Kind::kEntry) ||
                  type == static_cast<uint8_t>(WalRecord::Kind::kConfEntry);
  bool shape_ok =
      (is_entry && payload >= kEntryFixedSize && payload <= kMaxRecordPayload) ||
      (type == static_cast<uint8_t>(WalRecord::Kind::kHardState) && payload == kHardStateSize) ||
      (type == static_cast<uint8_t>(WalRecord::Kind::kSnapshot) && payload == kSnapshotSize);
  if (!shape_ok) return DecodeResult::kCorrupt;
  if (buf.size() - kRecordHeaderSize < payload) return DecodeResult::kIncomplete;
  std::string_view covered = buf.substr(8, 1 + payload);
  if (crc32c::Unmask(masked) != crc32c::Value(covered)) return DecodeResult::kCorrupt;
  const char* p = buf.data() + kRecordHeaderSize;
  rec->kind = static_cast<WalRecord::Kind>(type);
  if (is_entry) {
    rec->entry.index = DecodeFixed64LE(p);
    rec->entry.term = DecodeFixed64LE(p + 8);
    rec->entry.type =
        rec->kind == WalRecord::Kind::kConfEntry ? EntryType::kConfChange : EntryType::kNormal;
    rec->entry.data.assign(p + kEntryFixedSize, payload - kEntryFixedSize);
  } else if (rec->kind == WalRecord::Kind::kHardState) {
    rec->hard_state =
        HardState{DecodeFixed64LE(p), DecodeFixed64LE(p + 8), DecodeFixed64LE(p + 16)};
  } else {
    rec->snapshot_index = DecodeFixed64LE(p);
    rec->snapshot_term = DecodeFixed64LE(p + 8);
  }
  *consumed = kRecordHeaderSize + payload;
  return DecodeResult::kOk;
}

// Applies records in disk order, as Open() reads them, and checks that they
// describe one consistent log.
struct Wal::Loader {
  WalState state;
  std::deque<Entry> entries;
  uint64_t next = 1;  // the index the next appended entry would get

  // Returns a description of the inconsistency, or "".
  std::string Add(WalRecord& rec) {
    switch (rec.kind) {
      case WalRecord::Kind::kHardState:
        state.hard_state = rec.hard_state;
        return "";
      case WalRecord::Kind::kSnapshot:
        if (rec.snapshot_index < state.snapshot_index) return "";
        state.snapshot_index = rec.snapshot_index;
        state.snapshot_term = rec.snapshot_term;
        while (!entries.empty() && entries.front().index <= rec.snapshot_index) {
          entries.pop_front();
        }
        if (next <= rec.snapshot_index) next = rec.snapshot_index + 1;
        return "";
      case WalRecord::Kind::kEntry:
      case WalRecord::Kind::kConfEntry: {
        uint64_t index = rec.entry.index;
        if (index > next) {
          return absl::StrCat("entry ", index, " follows entry ", next - 1, " (a gap)");
        }
        if (index <= state.snapshot_index) return "";  // covered by the snapshot
        while (!entries.empty() && entries.back().index >= index) entries.pop_back();
        entries.push_back(std::move(rec.entry));
        next = index + 1;
        return "";
      }
    }
    return "unknown record";
  }
};

Wal::Wal(std::string dir, Options options) : dir_(std::move(dir)), options_(options) {}

Wal::~Wal() {
  if (tail_fd_ >= 0) {
    if (dirty_) ::fdatasync(tail_fd_);
    ::close(tail_fd_);
  }
}

absl::StatusOr<std::unique_ptr<Wal>> Wal::Open(const std::string& dir, Options options,
                                               WalState* state) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("mkdir", dir);
  std::unique_ptr<Wal> wal(new Wal(dir, options));
  RETURN_IF_ERROR(wal->Load(state));
  return wal;
}

absl::Status Wal::SyncDir() {
  int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open dir", dir_);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync dir", dir_);
  return absl::OkStatus();
}

absl::Status Wal::Load(WalState* state) {
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

  *state = WalState{};
  if (segments_.empty()) {
    next_index_ = 1;
    return Roll();
  }
  Loader loader;
  loader.next = segments_.front().first_index;
  uint64_t tail_end = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    const Segment& seg = segments_[i];
    if (seg.first_index != loader.next) {
      return absl::DataLossError(absl::StrCat("wal segment ", seg.path, " starts at index ",
                                              seg.first_index, " but the log expects ", loader.next,
                                              ": a segment is missing"));
    }
    RETURN_IF_ERROR(ScanSegment(seg, i + 1 == segments_.size(), &loader, &tail_end));
  }
  if (!loader.entries.empty() && loader.entries.front().index != loader.state.snapshot_index + 1) {
    return absl::DataLossError(
        absl::StrCat("wal in ", dir_, " holds entries from index ", loader.entries.front().index,
                     " but its snapshot marker covers only up to ", loader.state.snapshot_index,
                     ": entries in between are missing"));
  }
  next_index_ = loader.next;
  hard_state_ = loader.state.hard_state;
  snapshot_index_ = loader.state.snapshot_index;
  snapshot_term_ = loader.state.snapshot_term;
  loader.state.entries.assign(std::make_move_iterator(loader.entries.begin()),
                              std::make_move_iterator(loader.entries.end()));
  *state = std::move(loader.state);
  return OpenTail(tail_end);
}

absl::Status Wal::ScanSegment(const Segment& seg, bool is_last, Loader* loader, uint64_t* end) {
  ASSIGN_OR_RETURN(std::string data, ReadFile(seg.path));
  if (data.size() < kSegmentHeaderSize || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0 ||
      crc32c::Unmask(DecodeFixed32LE(data.data() + 16)) !=
          crc32c::Value(std::string_view(data.data(), 16)) ||
      DecodeFixed64LE(data.data() + 8) != seg.first_index) {
    return absl::DataLossError(
        absl::StrCat("wal segment ", seg.path, ": bad segment header at offset 0"));
  }
  size_t off = kSegmentHeaderSize;
  WalRecord rec;
  while (true) {
    std::string_view rest(data.data() + off, data.size() - off);
    size_t consumed = 0;
    DecodeResult r = DecodeRecord(rest, &rec, &consumed);
    if (r == DecodeResult::kOk) {
      std::string bad = loader->Add(rec);
      if (!bad.empty()) {
        return absl::DataLossError(
            absl::StrCat("wal segment ", seg.path, ": record at offset ", off, ": ", bad));
      }
      off += consumed;
      continue;
    }
    if (r == DecodeResult::kEnd && AllZero(rest)) {
      *end = off;
      break;
    }
    // Damage at `off`. It is a torn tail only in the last segment and only when
    // no intact record follows it; anything else means lost acknowledged data.
    bool later_record = false;
    for (size_t probe = off + 1; probe + kRecordHeaderSize <= data.size() && !later_record;
         ++probe) {
      WalRecord other;
      size_t c;
      if (DecodeRecord(std::string_view(data.data() + probe, data.size() - probe), &other, &c) ==
          DecodeResult::kOk) {
        later_record = true;
      }
    }
    if (!is_last || later_record) {
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
    *end = off;
    break;
  }
  return absl::OkStatus();
}

absl::Status Wal::OpenTail(uint64_t end) {
  const Segment& seg = segments_.back();
  tail_fd_ = ::open(seg.path.c_str(), O_WRONLY | O_CLOEXEC);
  if (tail_fd_ < 0) return ErrnoError("open", seg.path);
  struct stat st;
  if (::fstat(tail_fd_, &st) != 0) return ErrnoError("stat", seg.path);
  tail_file_size_ = std::max(static_cast<uint64_t>(st.st_size), end);
  tail_size_ = end;
  tail_synced_ = tail_size_;  // read back from disk, or written and fsynced by Roll
  return absl::OkStatus();
}

std::vector<std::pair<std::string, uint64_t>> Wal::DurableSizes() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  for (size_t i = 0; i < segments_.size(); ++i) {
    bool tail = i + 1 == segments_.size();
    out.emplace_back(segments_[i].path, tail ? tail_synced_ : UINT64_MAX);
  }
  return out;
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
  // The state current now, so that deleting older segments never loses it.
  std::string head = EncodeSegmentHeader(next_index_);
  WalRecord snap{.kind = WalRecord::Kind::kSnapshot,
                 .snapshot_index = snapshot_index_,
                 .snapshot_term = snapshot_term_};
  EncodeRecord(snap, &head);
  EncodeRecord(WalRecord{.kind = WalRecord::Kind::kHardState, .hard_state = hard_state_}, &head);
  absl::Status st = WriteAllAt(fd, head, 0, tmp_path);
  if (st.ok()) st = WriteZeros(fd, head.size(), PreallocateEnd(head.size()), tmp_path);
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("fsync", tmp_path);
  ::close(fd);
  RETURN_IF_ERROR(st);
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) return ErrnoError("rename", tmp_path);
  RETURN_IF_ERROR(SyncDir());
  segments_.push_back({seq, next_index_, final_path});
  return OpenTail(head.size());
}

absl::Status Wal::MaybeRoll() {
  if (tail_size_ >= options_.segment_bytes) return Roll();
  return absl::OkStatus();
}

uint64_t Wal::PreallocateEnd(uint64_t end) const {
  uint64_t step = options_.preallocate_bytes;
  if (step == 0) return end;
  uint64_t target = (end + step - 1) / step * step;
  // Past the segment size the log rolls: zeros there would never be used.
  return std::max(end, std::min<uint64_t>(target, options_.segment_bytes));
}

absl::Status Wal::Write(const std::string& buf) {
  const std::string& path = segments_.back().path;
  RETURN_IF_ERROR(WriteAllAt(tail_fd_, buf, tail_size_, path));
  uint64_t end = tail_size_ + buf.size();
  if (end > tail_file_size_) {
    // Zero the next step now; the Sync after this write carries both.
    uint64_t target = PreallocateEnd(end);
    RETURN_IF_ERROR(WriteZeros(tail_fd_, end, target, path));
    tail_file_size_ = target;
  }
  tail_size_ += buf.size();
  bytes_written_ += buf.size();
  dirty_ = true;
  return absl::OkStatus();
}

absl::Status Wal::Append(const std::vector<Entry>& entries) {
  if (entries.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(MaybeRoll());
  if (entries.front().index > next_index_ || entries.front().index <= snapshot_index_) {
    return absl::InternalError(absl::StrCat("wal append out of order: got index ",
                                            entries.front().index, ", log holds (", snapshot_index_,
                                            ", ", next_index_ - 1, "]"));
  }
  buf_.clear();
  uint64_t next = entries.front().index;
  WalRecord rec;
  for (const Entry& e : entries) {
    if (e.index != next) {
      return absl::InternalError(
          absl::StrCat("wal append not consecutive: got index ", e.index, ", expected ", next));
    }
    rec.kind =
        e.type == EntryType::kConfChange ? WalRecord::Kind::kConfEntry : WalRecord::Kind::kEntry;
    rec.entry.index = e.index;
    rec.entry.term = e.term;
    rec.entry.data = e.data;  // one copy per record; entries are small next to the fsync
    EncodeRecord(rec, &buf_);
    ++next;
  }
  RETURN_IF_ERROR(Write(buf_));
  next_index_ = next;
  return absl::OkStatus();
}

absl::Status Wal::SaveHardState(const HardState& hs) {
  buf_.clear();
  EncodeRecord(WalRecord{.kind = WalRecord::Kind::kHardState, .hard_state = hs}, &buf_);
  RETURN_IF_ERROR(Write(buf_));
  hard_state_ = hs;
  return absl::OkStatus();
}

absl::Status Wal::SaveSnapshot(uint64_t index, uint64_t term) {
  if (index < snapshot_index_) return absl::OkStatus();
  buf_.clear();
  EncodeRecord(
      WalRecord{.kind = WalRecord::Kind::kSnapshot, .snapshot_index = index, .snapshot_term = term},
      &buf_);
  RETURN_IF_ERROR(Write(buf_));
  snapshot_index_ = index;
  snapshot_term_ = term;
  if (next_index_ <= index) next_index_ = index + 1;
  return absl::OkStatus();
}

absl::Status Wal::Sync() {
  if (!dirty_) return absl::OkStatus();
  if (::fdatasync(tail_fd_) != 0) return ErrnoError("fdatasync", segments_.back().path);
  dirty_ = false;
  tail_synced_ = tail_size_;
  return absl::OkStatus();
}

absl::Status Wal::ReleaseTo(uint64_t index, uint64_t term) {
  size_t drop = 0;
  while (drop + 1 < segments_.size() && segments_[drop + 1].first_index <= index + 1) ++drop;
  if (drop == 0) return absl::OkStatus();
  // The marker must be durable before the entries it stands for are deleted.
  RETURN_IF_ERROR(SaveSnapshot(index, term));
  RETURN_IF_ERROR(Sync());
  for (size_t i = 0; i < drop; ++i) {
    if (::unlink(segments_[i].path.c_str()) != 0) return ErrnoError("unlink", segments_[i].path);
  }
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<ptrdiff_t>(drop));
  return SyncDir();
}

}  // namespace capstan::raft
