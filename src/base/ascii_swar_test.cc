#include "base/ascii_swar.h"

#include <cstdint>
#include <random>

#include <gtest/gtest.h>

namespace capstan::swar {
namespace {

bool AnyByte(uint64_t x, bool (*pred)(uint8_t)) {
  for (int i = 0; i < 8; ++i) {
    if (pred(static_cast<uint8_t>(x >> (8 * i)))) return true;
  }
  return false;
}

bool NonPrintable(uint8_t b) { return b < 0x20 || b > 0x7e; }

// Words of printable bytes with one or two bytes of any value at any place:
// the borrows and carries between neighbours are where such tricks go wrong.
TEST(AsciiSwarTest, AgreesWithTheByteLoopOnEveryByteAtEveryPlace) {
  std::mt19937_64 random(7);
  for (int round = 0; round < 200; ++round) {
    uint64_t base = 0;
    for (int i = 0; i < 8; ++i) base |= uint64_t{0x20 + random() % 0x5f} << (8 * i);
    for (int place = 0; place < 8; ++place) {
      for (int value = 0; value < 256; ++value) {
        uint64_t x = (base & ~(uint64_t{0xff} << (8 * place))) | (uint64_t(value) << (8 * place));
        if (round % 2 == 1) {  // a second odd byte beside it
          const int other = (place + 1) % 8;
          x = (x & ~(uint64_t{0xff} << (8 * other))) | (uint64_t(random() % 256) << (8 * other));
        }
        ASSERT_EQ(HasNonPrintable(x), AnyByte(x, NonPrintable)) << std::hex << x;
        ASSERT_EQ(HasByte(x, '"'), AnyByte(x, [](uint8_t b) { return b == '"'; })) << std::hex << x;
        ASSERT_EQ(HasByte(x, '\\'), AnyByte(x, [](uint8_t b) { return b == '\\'; }))
            << std::hex << x;
        ASSERT_EQ(HasByte(x, 0), AnyByte(x, [](uint8_t b) { return b == 0; })) << std::hex << x;
      }
    }
  }
}

TEST(AsciiSwarTest, LoadReadsTheFirstByteLowest) {
  const char bytes[] = "abcdefghij";
  EXPECT_EQ(Load8(bytes + 1) & 0xff, uint64_t{'b'});
  EXPECT_EQ(Load8(bytes + 1) >> 56, uint64_t{'i'});
}

}  // namespace
}  // namespace capstan::swar
