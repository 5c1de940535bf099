// Byte tests eight bytes at a time (SWAR: SIMD within a register) for the
// ingestion decoders' scanners: the JSON-lines fast path (src/experiments,
// events.cc) and IngestEvents' wire decoder (src/experiments_rpc). GCC at -O2
// leaves their byte loops scalar; a profile of the service showed those
// loops as half of each decoder's time.
#pragma once

#include <cstdint>
#include <cstring>

namespace capstan::swar {

inline constexpr uint64_t kOnes = 0x0101010101010101ULL;
inline constexpr uint64_t kHighBits = 0x8080808080808080ULL;

// Eight bytes from `p` (any alignment), first byte lowest.
inline uint64_t Load8(const void* p) {
  uint64_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

// Whether eight bytes hold one outside printable ASCII (0x20-0x7e). Exact
// about whether there is one (not about which): a byte below 0x20 leaves
// its high bit set in x - 0x20 where x's own is clear; one above 0x7e has
// it set in x + 1 or in x (carries only start from bytes already caught).
inline bool HasNonPrintable(uint64_t x) {
  const uint64_t below_space = (x - kOnes * 0x20) & ~x & kHighBits;
  const uint64_t above_tilde = ((x + kOnes) | x) & kHighBits;
  return (below_space | above_tilde) != 0;
}

// Whether eight bytes hold `byte`. Exact about whether, as above: x ^ byte
// has a zero byte exactly there, and the first zero byte's borrow is the
// first high bit set.
inline bool HasByte(uint64_t x, uint8_t byte) {
  const uint64_t v = x ^ (kOnes * byte);
  return ((v - kOnes) & ~v & kHighBits) != 0;
}

}  // namespace capstan::swar
