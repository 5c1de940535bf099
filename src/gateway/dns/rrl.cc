#include "gateway/dns/rrl.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace capstan::gateway::dns {

namespace {

// The client's network as one number: the /24 of an IPv4 address, the /56
// of an IPv6 one (tagged so the two never meet).
uint64_t NetworkOf(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    return (uint64_t{1} << 63) | (ntohl(v4->sin_addr.s_addr) >> 8);
  }
  if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    uint64_t hi = 0;
    std::memcpy(&hi, v6->sin6_addr.s6_addr, 7);
    return (uint64_t{1} << 62) | hi;
  }
  return 0;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

}  // namespace

ResponseRateLimiter::ResponseRateLimiter(RrlOptions options)
    : options_(options), buckets_(options.responses_per_second != 0 ? kBuckets : 0) {}

ResponseRateLimiter::Verdict ResponseRateLimiter::Check(const sockaddr_storage& client,
                                                        uint64_t now_ns) {
  if (!enabled()) return Verdict::kSend;
  uint64_t network = NetworkOf(client);
  Bucket& b = buckets_[Mix(network) & (kBuckets - 1)];
  double rate = options_.responses_per_second;
  if (b.updated_ns == 0) {
    b = Bucket{now_ns, rate, 0};
  } else if (now_ns > b.updated_ns) {
    b.tokens = std::min(rate, b.tokens + rate * static_cast<double>(now_ns - b.updated_ns) / 1e9);
    b.updated_ns = now_ns;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return Verdict::kSend;
  }
  ++b.limited;
  if (options_.slip != 0 && b.limited % options_.slip == 0) return Verdict::kSlip;
  return Verdict::kDrop;
}

}  // namespace capstan::gateway::dns
