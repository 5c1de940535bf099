// CRC-32C (Castagnoli), the checksum on every WAL record. Uses the SSE4.2
// instruction when the CPU has it and a table otherwise; both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace capstan::crc32c {

// Extends `crc` (the CRC of some earlier bytes, or 0) with `data`.
uint32_t Extend(uint32_t crc, const void* data, size_t n);

inline uint32_t Value(std::string_view data) { return Extend(0, data.data(), data.size()); }

// Checksums stored next to the data they cover are masked, so that a CRC of
// data that itself contains CRCs does not degenerate (as in LevelDB's log).
inline uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace capstan::crc32c
