#include "base/crc32c.h"

#include <string>

#include "gtest/gtest.h"

namespace capstan::crc32c {
namespace {

TEST(Crc32c, KnownVectors) {
  // Check values from RFC 3720 (iSCSI), appendix B.4.
  std::string zeros(32, '\0');
  EXPECT_EQ(Value(zeros), 0x8a9136aau);
  std::string ones(32, '\xff');
  EXPECT_EQ(Value(ones), 0x62a8ab43u);
  std::string inc;
  for (int i = 0; i < 32; ++i) inc.push_back(static_cast<char>(i));
  EXPECT_EQ(Value(inc), 0x46dd794eu);
  EXPECT_EQ(Value("123456789"), 0xe3069283u);
}

TEST(Crc32c, ExtendEqualsWhole) {
  std::string data = "the quick brown fox jumps over the lazy dog";
  uint32_t whole = Value(data);
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t part = Extend(0, data.data(), split);
    EXPECT_EQ(Extend(part, data.data() + split, data.size() - split), whole) << split;
  }
}

TEST(Crc32c, MaskRoundTrips) {
  for (uint32_t v : {0u, 1u, 0xdeadbeefu, 0xffffffffu}) {
    EXPECT_NE(Mask(v), v);
    EXPECT_EQ(Unmask(Mask(v)), v);
  }
}

}  // namespace
}  // namespace capstan::crc32c
