// The authoritative answer logic: a query's bytes in, the response's bytes
// out, from a set of zones. No I/O, no clock, no allocation on the common
// path (lookups by string_view into the zones' hash maps).
//
// What it answers (RFC 1034 section 4.3.2, RFC 2308, RFC 6891, RFC 8482):
// - a name in no served zone: REFUSED (not authoritative);
// - the RRset asked for, with AA; CNAMEs followed within the zone (at most
//   kMaxCnameChain links), the rcode being that of the last name;
// - NODATA (NOERROR, empty answer) and NXDOMAIN with the zone's SOA in the
//   authority section, its TTL min(SOA TTL, SOA MINIMUM);
// - wildcards (`*.example.com.`) for names that do not exist, with the
//   query's name as owner;
// - delegations: a referral (no AA) with the NS RRset in authority and glue
//   in additional;
// - ANY: one RRset of the name (RFC 8482 section 4.1, minimal responses);
// - the zone's NS RRset in the authority section of positive answers
//   unless minimal_responses is set;
// - A/AAAA of in-zone NS, MX and SRV targets in the additional section when
//   they fit (never the reason for TC);
// - EDNS0: an OPT in every response to a query with one (our payload size,
//   DO clear), BADVERS for a version other than 0;
// - over UDP the response fits the client's payload size (512 without
//   EDNS) or is cut to its question with TC set, so the client retries
//   over TCP;
// - FORMERR for malformed queries, NOTIMP for opcodes other than QUERY,
//   REFUSED for classes other than IN and for zone transfers.
//
// Thread-safety: Answer reads the ZoneSet only; a ZoneSet is immutable once
// built and shared by every thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gateway/dns/message.h"
#include "gateway/dns/zone.h"

namespace capstan::gateway::dns {

inline constexpr int kMaxCnameChain = 8;

class ZoneSet {
 public:
  // A zone whose apex is already in the set replaces it.
  void Add(std::shared_ptr<const Zone> zone);
  // The zone with the longest apex that `lower_name` lies in, or null.
  const Zone* FindZone(std::string_view lower_name) const;
  size_t size() const { return zones_.size(); }
  std::vector<std::shared_ptr<const Zone>> zones() const;

 private:
  absl::flat_hash_map<std::string, std::shared_ptr<const Zone>> zones_;
};

enum class Transport : uint8_t { kUdp, kTcp };

struct AnswerOptions {
  // The largest UDP response we send, and the payload size our OPT
  // advertises (1232: no IP fragmentation on any common path, the DNS
  // flag day 2020 value).
  uint16_t max_udp_payload = 1232;
  // Leave the zone's NS RRset (and its addresses) out of positive answers,
  // as Knot does; off: NSD's and BIND's default shape.
  bool minimal_responses = false;
};

struct AnswerResult {
  size_t size = 0;  // 0: send nothing
  uint16_t rcode = 0;
  bool truncated = false;
};

// `out` must hold kMaxMessage bytes.
AnswerResult Answer(const ZoneSet& zones, std::string_view query, Transport transport,
                    const AnswerOptions& options, uint8_t* out);

// A response to `query` with only its header and question and TC set (the
// "slip" answer of response rate limiting). 0 when the query is unusable.
size_t TruncatedResponse(std::string_view query, uint8_t* out, size_t capacity);

}  // namespace capstan::gateway::dns
