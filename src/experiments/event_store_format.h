// The event store's on-disk encodings and the small helpers its parts share
// (event_store.cc: the writer and recovery; event_store_aggregator.cc: the
// aggregation and its checkpoints). docs/experiments-events.md, "Disk
// format", specifies the records. Internal to src/experiments.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/status.h"

namespace capstan::experiments::event_format {

// Key prefixes (one column family; identifiers cannot hold NUL, the decoder
// refuses control characters). event_store.h lists the keys.
inline constexpr char kLogPrefix = 'g';
inline constexpr char kUnitPrefix = 'u';
inline constexpr char kSumsPrefix = 'a';
inline constexpr char kOldLogPrefix = 'l';  // one record per event, before the checkpointed design
inline constexpr std::string_view kCheckpointKey = "c";
inline constexpr std::string_view kRebuildingKey = "mrebuilding";
// The table file a checkpoint is written to before RocksDB ingests it
// (moves it into the database); one left by a crash is garbage.
inline constexpr char kCheckpointFileName[] = "checkpoint.sst.tmp";

inline constexpr uint8_t kLogRecordVersion = 1;
inline constexpr size_t kLogRecordHeader = 5;  // version, u32 event count
inline constexpr uint8_t kUnitStateVersion = 2;

inline absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("event store: ", std::string(what), ": ", s.ToString()));
}

inline void AppendBigEndian(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (56 - 8 * i)) & 0xff));
}

// REQUIRES: bytes.size() >= 8.
inline uint64_t ReadBigEndian(std::string_view bytes) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}

inline std::string LogKey(uint64_t seq) {
  std::string key(1, kLogPrefix);
  AppendBigEndian(&key, seq);
  return key;
}

inline bool IsLogKey(std::string_view key) { return key.size() == 9 && key[0] == kLogPrefix; }

template <typename T>
void AppendRaw(std::string* out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out->append(bytes, sizeof(T));
}

inline void AppendShortString(std::string* out, std::string_view s) {
  out->push_back(static_cast<char>(s.size()));  // identifiers are at most 128 bytes
  out->append(s);
}

// Reads what AppendRaw / AppendShortString wrote; every read says whether
// the bytes were there.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  bool Raw(T* out) {
    if (data_.size() < sizeof(T)) return false;
    std::memcpy(out, data_.data(), sizeof(T));
    data_.remove_prefix(sizeof(T));
    return true;
  }
  bool ShortString(std::string_view* out) {
    uint8_t len = 0;
    if (!Raw(&len) || data_.size() < len) return false;
    *out = data_.substr(0, len);
    data_.remove_prefix(len);
    return true;
  }
  bool ShortString(std::string* out) {
    std::string_view view;
    if (!ShortString(&view)) return false;
    out->assign(view);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  std::string_view data_;
};

inline uint32_t LogRecordCount(std::string_view record) {
  uint32_t count = 0;
  if (record.size() >= kLogRecordHeader) std::memcpy(&count, record.data() + 1, 4);
  return count;
}

}  // namespace capstan::experiments::event_format
