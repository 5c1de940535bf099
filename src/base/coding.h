// Integer encodings. Fixed-width big-endian so that encoded integers sort
// bytewise in numeric order (RocksDB keys, WAL headers); little-endian for
// checksummed records; varints for hand-built protobuf messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace capstan {

inline void EncodeFixed64BE(char* dst, uint64_t v) {
  for (int i = 7; i >= 0; --i) *dst++ = static_cast<char>(v >> (8 * i));
}
inline void PutFixed64BE(std::string* dst, uint64_t v) {
  char buf[8];
  for (int i = 7; i >= 0; --i) {
    buf[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  dst->append(buf, 8);
}

inline void PutFixed32LE(std::string* dst, uint32_t v) {
  char buf[4] = {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16),
                 static_cast<char>(v >> 24)};
  dst->append(buf, 4);
}

inline void PutFixed64LE(std::string* dst, uint64_t v) {
  PutFixed32LE(dst, static_cast<uint32_t>(v));
  PutFixed32LE(dst, static_cast<uint32_t>(v >> 32));
}

// Protocol buffers' base-128 varint.
inline int EncodeVarint64(char* dst, uint64_t v);
inline void PutVarint64(std::string* dst, uint64_t v) {
  char buf[10];
  dst->append(buf, static_cast<size_t>(EncodeVarint64(buf, v)));
}

// Writes v as a varint at dst (at most 10 bytes); returns the bytes written.
inline int EncodeVarint64(char* dst, uint64_t v) {
  int n = 0;
  while (v >= 0x80) {
    dst[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  dst[n++] = static_cast<char>(v);
  return n;
}

inline int VarintLength(uint64_t v) {
  int n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Reads a varint from the front of *in and advances it; false when *in ends
// first or the varint is longer than 10 bytes.
inline bool GetVarint64(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0, i = 0; i < 10 && i < static_cast<int>(in->size()); ++i, shift += 7) {
    uint8_t byte = static_cast<uint8_t>((*in)[static_cast<size_t>(i)]);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (byte < 0x80) {
      in->remove_prefix(static_cast<size_t>(i) + 1);
      *v = result;
      return true;
    }
  }
  return false;
}

// REQUIRES: p points at 8 readable bytes.
inline uint64_t DecodeFixed64BE(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// REQUIRES: p points at 4 readable bytes.
inline uint32_t DecodeFixed32LE(const char* p) {
  return static_cast<uint32_t>(static_cast<uint8_t>(p[0])) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 8) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[3])) << 24);
}

// REQUIRES: p points at 8 readable bytes.
inline uint64_t DecodeFixed64LE(const char* p) {
  return static_cast<uint64_t>(DecodeFixed32LE(p)) |
         (static_cast<uint64_t>(DecodeFixed32LE(p + 4)) << 32);
}

}  // namespace capstan
