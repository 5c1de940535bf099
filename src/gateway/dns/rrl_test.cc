#include "gateway/dns/rrl.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace capstan::gateway::dns {
namespace {

sockaddr_storage V4(const char* ip) {
  sockaddr_storage a{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a);
  v4->sin_family = AF_INET;
  inet_pton(AF_INET, ip, &v4->sin_addr);
  return a;
}

TEST(DnsRrl, OffByDefault) {
  ResponseRateLimiter rrl({});
  for (int i = 0; i < 10000; ++i) {
    ASSERT_EQ(rrl.Check(V4("10.0.0.1"), 1), ResponseRateLimiter::Verdict::kSend);
  }
}

TEST(DnsRrl, LimitsPerNetworkWithSlipAndRefills) {
  ResponseRateLimiter rrl({.responses_per_second = 10, .slip = 2});
  uint64_t t = 1'000'000'000;
  int sent = 0, slipped = 0, dropped = 0;
  for (int i = 0; i < 30; ++i) {
    switch (rrl.Check(V4("192.0.2.1"), t)) {
      case ResponseRateLimiter::Verdict::kSend:
        ++sent;
        break;
      case ResponseRateLimiter::Verdict::kSlip:
        ++slipped;
        break;
      case ResponseRateLimiter::Verdict::kDrop:
        ++dropped;
        break;
    }
  }
  EXPECT_EQ(sent, 10);
  EXPECT_EQ(slipped, 10);
  EXPECT_EQ(dropped, 10);
  // The same /24 shares the budget; another network has its own.
  EXPECT_NE(rrl.Check(V4("192.0.2.200"), t), ResponseRateLimiter::Verdict::kSend);
  EXPECT_EQ(rrl.Check(V4("198.51.100.1"), t), ResponseRateLimiter::Verdict::kSend);
  // Half a second later five more responses may go.
  t += 500'000'000;
  sent = 0;
  for (int i = 0; i < 20; ++i)
    sent += rrl.Check(V4("192.0.2.1"), t) == ResponseRateLimiter::Verdict::kSend;
  EXPECT_EQ(sent, 5);
}

}  // namespace
}  // namespace capstan::gateway::dns
