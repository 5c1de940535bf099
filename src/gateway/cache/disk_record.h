// The on-disk form of one stored response (the disk tier, disk_store.h):
// one file per object, a fixed head, a metadata section, then the body.
//
//   offset  bytes  what
//   0       4      magic "CCD1"
//   4       4      meta_len (little-endian)
//   8       8      body_len
//   16      4      meta_crc: masked CRC-32C of the metadata section
//   20      4      body_crc: masked CRC-32C of the body
//   24      4      head_crc: masked CRC-32C of bytes 0..24
//   28      4      zero (reserved)
//   32      meta_len   metadata: seq, stored_at, response_time,
//                      corrected_initial_age, lifetime (u64/i64 each),
//                      status (u32), key, Vary pairs, tags, fields
//                      (each string a u32 length then its bytes)
//   32+meta_len  body_len  the body
//
// Every part is checksummed, so a torn write (a crash before the data hit
// the disk) or a flipped bit is a miss, never a response: the index rebuild
// reads the head and the metadata of each file (not the body), a read
// checks the body's checksum too. Parsing never trusts a length: every one
// is checked against the bytes at hand and the limits below.
//
// Thread-safety: plain functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "gateway/cache/semantics.h"

namespace capstan::gateway::cache {

struct StoredResponse;

inline constexpr size_t kRecordHeadBytes = 32;
// Larger metadata is refused (a response's fields are far smaller: the
// HTTP/1.1 parser caps a head at 64 KiB).
inline constexpr uint32_t kMaxRecordMetaBytes = 1 << 20;
// Larger bodies are refused (the memory tier's max_object_size is smaller).
inline constexpr uint64_t kMaxRecordBodyBytes = uint64_t{1} << 32;

struct RecordHead {
  uint32_t meta_len = 0;
  uint64_t body_len = 0;
  uint32_t meta_crc = 0;  // unmasked
  uint32_t body_crc = 0;  // unmasked
  uint64_t total() const { return kRecordHeadBytes + meta_len + body_len; }
};

// What a record says besides its body.
struct RecordMeta {
  uint64_t seq = 0;  // the write's sequence number (its file name, FIFO order)
  std::string key;
  std::vector<std::pair<std::string, std::string>> vary;
  std::vector<std::string> tags;
  int status = 0;
  std::vector<std::pair<std::string, std::string>> fields;
  StoredTimes times;
  int64_t stored_at = 0;
};

// The head and metadata of `object`'s record (the body follows them);
// `body_crc` is the unmasked CRC-32C of its body.
std::string EncodeRecordPrefix(const StoredResponse& object, uint64_t seq, uint32_t body_crc);

// The fixed head at the front of `bytes` (at least kRecordHeadBytes):
// magic, head checksum and limits checked.
absl::Status DecodeRecordHead(std::string_view bytes, RecordHead* head);
// The metadata section, checked against `head.meta_crc`.
absl::Status DecodeRecordMeta(std::string_view meta, const RecordHead& head, RecordMeta* out);
// A whole record in memory (tests, the fuzz target): head, metadata and the
// body's checksum; *body views into `bytes`.
absl::Status DecodeRecord(std::string_view bytes, RecordMeta* meta, std::string_view* body);

}  // namespace capstan::gateway::cache
