#include "gateway/cache/disk_record.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "gateway/cache/store.h"

namespace capstan::gateway::cache {
namespace {

constexpr char kMagic[4] = {'C', 'C', 'D', '1'};

void PutString(std::string* out, std::string_view s) {
  PutFixed32LE(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

// Reads the metadata section front to back; every read checks the bytes left.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U32(uint32_t* v) {
    if (in_.size() < 4) return false;
    *v = DecodeFixed32LE(in_.data());
    in_.remove_prefix(4);
    return true;
  }
  bool U64(uint64_t* v) {
    if (in_.size() < 8) return false;
    *v = DecodeFixed64LE(in_.data());
    in_.remove_prefix(8);
    return true;
  }
  bool I64(int64_t* v) {
    uint64_t u = 0;
    if (!U64(&u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  bool String(std::string* s) {
    uint32_t n = 0;
    if (!U32(&n) || n > in_.size()) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  // A count of items each at least `min_item` bytes: bounded by what is left,
  // so a forged count cannot make the caller reserve gigabytes.
  bool Count(uint32_t* n, size_t min_item) {
    return U32(n) && static_cast<uint64_t>(*n) * min_item <= in_.size();
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

}  // namespace

std::string EncodeRecordPrefix(const StoredResponse& object, uint64_t seq, uint32_t body_crc) {
  std::string meta;
  PutFixed64LE(&meta, seq);
  PutFixed64LE(&meta, static_cast<uint64_t>(object.stored_at));
  PutFixed64LE(&meta, static_cast<uint64_t>(object.times.response_time));
  PutFixed64LE(&meta, static_cast<uint64_t>(object.times.corrected_initial_age));
  PutFixed64LE(&meta, static_cast<uint64_t>(object.times.lifetime));
  PutFixed32LE(&meta, static_cast<uint32_t>(object.status));
  PutString(&meta, object.key);
  PutFixed32LE(&meta, static_cast<uint32_t>(object.vary.size()));
  for (const auto& [name, value] : object.vary) {
    PutString(&meta, name);
    PutString(&meta, value);
  }
  PutFixed32LE(&meta, static_cast<uint32_t>(object.tags.size()));
  for (const std::string& t : object.tags) PutString(&meta, t);
  PutFixed32LE(&meta, static_cast<uint32_t>(object.fields.size()));
  for (const auto& f : object.fields) {
    PutString(&meta, f.name);
    PutString(&meta, f.value);
  }
  std::string out(kMagic, sizeof(kMagic));
  PutFixed32LE(&out, static_cast<uint32_t>(meta.size()));
  PutFixed64LE(&out, object.body.size());
  PutFixed32LE(&out, crc32c::Mask(crc32c::Value(meta)));
  PutFixed32LE(&out, crc32c::Mask(body_crc));
  PutFixed32LE(&out, crc32c::Mask(crc32c::Value(out)));
  PutFixed32LE(&out, 0);
  out.append(meta);
  return out;
}

absl::Status DecodeRecordHead(std::string_view bytes, RecordHead* head) {
  if (bytes.size() < kRecordHeadBytes) return absl::DataLossError("record shorter than its head");
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) return absl::DataLossError("bad magic");
  uint32_t head_crc = crc32c::Unmask(DecodeFixed32LE(p + 24));
  if (head_crc != crc32c::Value(std::string_view(p, 24))) {
    return absl::DataLossError("head checksum mismatch");
  }
  if (DecodeFixed32LE(p + 28) != 0) return absl::DataLossError("reserved word is not zero");
  head->meta_len = DecodeFixed32LE(p + 4);
  head->body_len = DecodeFixed64LE(p + 8);
  head->meta_crc = crc32c::Unmask(DecodeFixed32LE(p + 16));
  head->body_crc = crc32c::Unmask(DecodeFixed32LE(p + 20));
  if (head->meta_len > kMaxRecordMetaBytes) {
    return absl::DataLossError(absl::StrCat("metadata of ", head->meta_len, " bytes"));
  }
  if (head->body_len > kMaxRecordBodyBytes) {
    return absl::DataLossError(absl::StrCat("body of ", head->body_len, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status DecodeRecordMeta(std::string_view meta, const RecordHead& head, RecordMeta* out) {
  if (meta.size() != head.meta_len) return absl::DataLossError("metadata truncated");
  if (crc32c::Value(meta) != head.meta_crc)
    return absl::DataLossError("metadata checksum mismatch");
  Reader r(meta);
  uint64_t seq = 0;
  uint32_t status = 0, n = 0;
  if (!r.U64(&seq) || !r.I64(&out->stored_at) || !r.I64(&out->times.response_time) ||
      !r.I64(&out->times.corrected_initial_age) || !r.I64(&out->times.lifetime) ||
      !r.U32(&status) || !r.String(&out->key)) {
    return absl::DataLossError("metadata truncated");
  }
  if (status < 100 || status > 999) return absl::DataLossError("bad status");
  out->seq = seq;
  out->status = static_cast<int>(status);
  if (!r.Count(&n, 8)) return absl::DataLossError("bad vary count");
  out->vary.resize(n);
  for (auto& [name, value] : out->vary) {
    if (!r.String(&name) || !r.String(&value)) return absl::DataLossError("vary truncated");
  }
  if (!r.Count(&n, 4)) return absl::DataLossError("bad tag count");
  out->tags.resize(n);
  for (std::string& t : out->tags) {
    if (!r.String(&t)) return absl::DataLossError("tags truncated");
  }
  if (!r.Count(&n, 8)) return absl::DataLossError("bad field count");
  out->fields.resize(n);
  for (auto& [name, value] : out->fields) {
    if (!r.String(&name) || !r.String(&value)) return absl::DataLossError("fields truncated");
  }
  if (!r.done()) return absl::DataLossError("trailing metadata bytes");
  return absl::OkStatus();
}

absl::Status DecodeRecord(std::string_view bytes, RecordMeta* meta, std::string_view* body) {
  RecordHead head;
  RETURN_IF_ERROR(DecodeRecordHead(bytes, &head));
  if (bytes.size() != head.total()) return absl::DataLossError("record size mismatch");
  RETURN_IF_ERROR(DecodeRecordMeta(bytes.substr(kRecordHeadBytes, head.meta_len), head, meta));
  *body = bytes.substr(kRecordHeadBytes + head.meta_len);
  if (crc32c::Value(*body) != head.body_crc) return absl::DataLossError("body checksum mismatch");
  return absl::OkStatus();
}

}  // namespace capstan::gateway::cache
