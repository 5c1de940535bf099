// Response rate limiting for UDP (the idea of BIND's and Knot's RRL): each
// client network (/24 for IPv4, /56 for IPv6) may receive at most
// `responses_per_second` responses, with a burst of one second's worth.
// Past that, a response is dropped, except every `slip`-th one, which goes
// out as a bare truncated answer (TC set, no records) so a real client
// retries over TCP while a spoofed victim receives nothing larger than the
// query. TCP is never limited (its handshake proves the address).
//
// Buckets live in a fixed table hashed by network (kBuckets entries), so
// memory stays bounded whatever the number of clients; two networks that
// collide share a bucket, which only ever makes limiting stricter.
//
// Thread-safety: one limiter per UDP thread; no locks.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <vector>

namespace capstan::gateway::dns {

struct RrlOptions {
  // 0 turns limiting off (the default: discovery clients share addresses).
  uint32_t responses_per_second = 0;
  // Every slip-th limited response is sent truncated; 0 drops them all.
  uint32_t slip = 2;
};

class ResponseRateLimiter {
 public:
  static constexpr size_t kBuckets = 1 << 14;
  enum class Verdict { kSend, kSlip, kDrop };

  explicit ResponseRateLimiter(RrlOptions options);
  bool enabled() const { return options_.responses_per_second != 0; }
  // `now_ns`: a monotonic time (the caller's clock).
  Verdict Check(const sockaddr_storage& client, uint64_t now_ns);

 private:
  struct Bucket {
    uint64_t updated_ns = 0;
    double tokens = 0;
    uint32_t limited = 0;
  };
  RrlOptions options_;
  std::vector<Bucket> buckets_;
};

}  // namespace capstan::gateway::dns
