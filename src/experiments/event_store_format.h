// The event store's on-disk encodings and the small helpers its parts share
// (event_store.cc: the writer and recovery; event_store_aggregator.cc: the
// aggregation and its checkpoints). docs/experiments-events.md, "Disk
// format", specifies the records. Internal to src/experiments.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/status.h"

namespace capstan::experiments::event_format {

// Key prefixes (one column family; identifiers cannot hold NUL, the decoder
// refuses control characters). event_store.h lists the keys.
inline constexpr char kLogPrefix = 'g';
// The in-memory unit key ("u" + experiment + NUL + unit, what the unit hash
// is computed over) and, before layout 2, the key of its state on disk.
inline constexpr char kUnitPrefix = 'u';
// Layout 2: unit states under "s" + unit id (8 bytes big-endian), ids given
// in order of the units' first event, so a checkpoint's new units come after
// every key on disk (docs/experiments-events.md, "Disk format").
inline constexpr char kUnitStatePrefix = 's';
// Layout 2: the names unit states refer to by number, "d" + kind + id (4
// bytes big-endian): kind 'm' a metric (value: kind byte + name), 'v' a
// variant name.
inline constexpr char kDictionaryPrefix = 'd';
inline constexpr char kMetricDictionary = 'm';
inline constexpr char kVariantDictionary = 'v';
inline constexpr char kSumsPrefix = 'a';
inline constexpr char kOldLogPrefix = 'l';  // one record per event, before the checkpointed design
inline constexpr std::string_view kCheckpointKey = "c";
inline constexpr std::string_view kRebuildingKey = "mrebuilding";
// The table file a checkpoint is written to before RocksDB ingests it
// (moves it into the database); one left by a crash is garbage.
inline constexpr char kCheckpointFileName[] = "checkpoint.sst.tmp";
inline constexpr char kNewUnitsFileName[] = "checkpoint-new-units.sst.tmp";
inline constexpr char kChangedUnitsFileName[] = "checkpoint-changed-units.sst.tmp";

inline constexpr uint8_t kLogRecordVersion = 1;
inline constexpr size_t kLogRecordHeader = 5;  // version, u32 event count
// An event in a log record, besides its five identifiers' bytes: the type,
// a length byte per identifier, value, denominator and ts (8 bytes each).
inline constexpr size_t kLogRecordEventFixedBytes = 1 + 5 + 3 * 8;
inline constexpr uint8_t kUnitStateVersion = 2;   // under "u" keys (layout 1)
inline constexpr uint8_t kUnitRecordVersion = 3;  // under "s" keys (layout 2)
// "c": the next log sequence to aggregate (layout 1, 8 bytes), then the
// next unit id (layout 2, 16 bytes).
inline constexpr size_t kCheckpointLayout1Size = 8;
inline constexpr size_t kCheckpointLayout2Size = 16;

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

// REQUIRES: bytes.size() >= 4.
inline uint32_t ReadBigEndian32(std::string_view bytes) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
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

inline void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

inline uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t UnZigZag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

// A number's tag (2 bits) says how it is stored: most unit totals are 0 or
// small integers (conversions, counts, cents), which take 0 or 1-3 bytes
// instead of 8.
inline constexpr uint8_t kNumberZero = 0;     // +0.0, nothing stored
inline constexpr uint8_t kNumberInteger = 1;  // an integer of magnitude < 2^53, zigzag varint
inline constexpr uint8_t kNumberRaw = 2;      // the 8 bytes of the double
inline uint8_t NumberTag(double v) {
  if (v == 0 && !std::signbit(v)) return kNumberZero;
  if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == std::trunc(v) && v != 0) {
    return kNumberInteger;
  }
  return kNumberRaw;
}
inline void AppendNumber(std::string* out, uint8_t tag, double v) {
  if (tag == kNumberInteger) AppendVarint(out, ZigZag(static_cast<int64_t>(v)));
  if (tag == kNumberRaw) AppendRaw(out, v);
}

// Reads what AppendRaw / AppendShortString / AppendVarint / AppendNumber
// wrote; every read says whether the bytes were there.
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
  bool Varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && !data_.empty(); shift += 7) {
      uint8_t byte = static_cast<uint8_t>(data_[0]);
      data_.remove_prefix(1);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *out = v;
        return true;
      }
    }
    return false;  // truncated, or longer than 10 bytes
  }
  bool Varint32(uint32_t* out) {
    uint64_t v = 0;
    if (!Varint(&v) || v > UINT32_MAX) return false;
    *out = static_cast<uint32_t>(v);
    return true;
  }
  bool Number(uint8_t tag, double* out) {
    if (tag == kNumberZero) {
      *out = 0;
      return true;
    }
    if (tag == kNumberInteger) {
      uint64_t v = 0;
      if (!Varint(&v)) return false;
      *out = static_cast<double>(UnZigZag(v));
      return true;
    }
    return tag == kNumberRaw && Raw(out);
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (data_.size() < n) return false;
    *out = data_.substr(0, n);
    data_.remove_prefix(n);
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

inline std::string UnitStateKey(uint64_t unit_id) {
  std::string key(1, kUnitStatePrefix);
  AppendBigEndian(&key, unit_id);
  return key;
}

inline std::string DictionaryKey(char kind, uint32_t id) {
  std::string key{kDictionaryPrefix, kind};
  for (int i = 0; i < 4; ++i) key.push_back(static_cast<char>((id >> (24 - 8 * i)) & 0xff));
  return key;
}

// ---- unit state records (layout 2: the value under "s" + unit id) ----
//   varint key length, the unit key without its "u" (experiment + NUL + unit),
//   u8 version (3), varint variant (0 before the exposure, else its name's
//   dictionary id + 1), zigzag varint exposure_ms,
//   varint n, n × (varint metric id, u8 tags: x | den << 2 | covariate << 4,
//                  the three numbers as tagged),
//   varint m, m × (varint metric id, zigzag varint ts,
//                  u8 tags: value | denominator << 2, the two numbers)
// Metric ids are the metric dictionary's ("d" "m").
struct UnitRecordMetric {
  uint32_t metric = 0;
  double x = 0;
  double den = 0;
  double covariate = 0;
};
struct UnitRecordHeld {
  uint32_t metric = 0;
  int64_t timestamp_ms = 0;
  double value = 0;
  double denominator = 0;
};
struct UnitRecord {
  std::string_view key;  // without the "u": experiment + NUL + unit (into the decoded bytes)
  uint32_t variant = 0;  // 0 before the exposure, else the variant name's id + 1
  int64_t exposure_ms = 0;
  absl::InlinedVector<UnitRecordMetric, 2> metrics;
  std::vector<UnitRecordHeld> held;
};

// `unit_key` with its "u"; Metrics / Held: ranges of structs with the
// fields of UnitRecordMetric / UnitRecordHeld (the aggregator's own).
template <typename Metrics, typename Held>
void EncodeUnitRecord(std::string_view unit_key, uint32_t variant, int64_t exposure_ms,
                      const Metrics& metrics, const Held& held, std::string* out) {
  out->clear();
  unit_key.remove_prefix(1);
  AppendVarint(out, unit_key.size());
  out->append(unit_key);
  out->push_back(static_cast<char>(kUnitRecordVersion));
  AppendVarint(out, variant);
  AppendVarint(out, ZigZag(exposure_ms));
  AppendVarint(out, metrics.size());
  for (const auto& m : metrics) {
    AppendVarint(out, m.metric);
    uint8_t x = NumberTag(m.x), den = NumberTag(m.den), covariate = NumberTag(m.covariate);
    out->push_back(static_cast<char>(x | den << 2 | covariate << 4));
    AppendNumber(out, x, m.x);
    AppendNumber(out, den, m.den);
    AppendNumber(out, covariate, m.covariate);
  }
  AppendVarint(out, held.size());
  for (const auto& h : held) {
    AppendVarint(out, h.metric);
    AppendVarint(out, ZigZag(h.timestamp_ms));
    uint8_t value = NumberTag(h.value), denominator = NumberTag(h.denominator);
    out->push_back(static_cast<char>(value | denominator << 2));
    AppendNumber(out, value, h.value);
    AppendNumber(out, denominator, h.denominator);
  }
}

// False when `data` is not a whole record (truncated, trailing bytes, a
// wrong version or tag, more held events than kMaxHeldEventsPerUnit).
// Metric and variant ids are not checked against a dictionary here.
bool DecodeUnitRecord(std::string_view data, UnitRecord* out);

}  // namespace capstan::experiments::event_format
