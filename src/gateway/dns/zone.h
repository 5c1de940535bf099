// A zone's data and the RFC 1035 master-file parser that fills it.
//
// A Zone maps each owner name (lower-cased wire form) to its node: the
// RRsets it owns and the name as written. Every ancestor of an owner up to
// the apex is a node too (an "empty non-terminal" when it owns nothing), so
// the answer logic tells NODATA from NXDOMAIN by one lookup.
//
//   auto zone = dns::LoadZoneFile("example.com.zone", "example.com.");
//   if (!zone.ok()) ... // "example.com.zone:12: MX: expected a preference"
//
// Master files: $ORIGIN, $TTL, @, relative names, an empty owner (the
// previous one), TTL and class in either order, parentheses across lines,
// ";" comments, quoted strings, \X and \DDD escapes, TTL units (1h30m);
// types A AAAA NS CNAME SOA MX TXT SRV PTR CAA HINFO and any type in
// RFC 3597's generic form (TYPE99 \# 2 abcd). $INCLUDE is refused.
// Limits: a file of at most kMaxZoneFileBytes, kMaxRecordsPerZone records.
//
// Thread-safety: a built Zone is immutable and shared read-only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "base/status.h"

namespace capstan::gateway::dns {

// Debian's abseil has its own string_view; hash-map lookups by view need it.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

inline constexpr size_t kMaxZoneFileBytes = 256 << 20;
inline constexpr size_t kMaxRecordsPerZone = 10'000'000;

struct RRset {
  uint16_t type = 0;
  uint32_t ttl = 0;
  std::vector<std::string> rdatas;  // wire form, names uncompressed
};

struct ZoneNode {
  std::string owner;  // wire, as first written
  std::vector<RRset> rrsets;
  const RRset* Find(uint16_t type) const {
    for (const RRset& s : rrsets) {
      if (s.type == type) return &s;
    }
    return nullptr;
  }
};

class Zone {
 public:
  // `origin`: the apex, wire form.
  explicit Zone(std::string origin);

  const std::string& origin() const { return origin_; }  // as given
  const std::string& origin_lower() const { return origin_lower_; }
  // The node of a lower-cased wire name, or null.
  const ZoneNode* Find(std::string_view lower_name) const {
    auto it = nodes_.find(AbslView(lower_name));
    return it == nodes_.end() ? nullptr : &it->second;
  }
  const RRset* soa() const { return soa_; }
  // TTL of the SOA in negative answers: min(SOA TTL, SOA MINIMUM), RFC 2308.
  uint32_t negative_ttl() const { return negative_ttl_; }
  size_t record_count() const { return records_; }
  size_t node_count() const { return nodes_.size(); }

  // Adds one record (owner must lie in the zone; the caller checks). Records
  // of an RRset share the first TTL seen (RFC 2181 section 5.2); a repeated
  // rdata is dropped.
  void Add(std::string_view owner, uint16_t type, uint32_t ttl, std::string rdata);
  // Checks the zone (one SOA at the apex, CNAME alone at its node) and
  // indexes the SOA. Call once after the last Add.
  absl::Status Finish();

 private:
  std::string origin_;
  std::string origin_lower_;
  absl::flat_hash_map<std::string, ZoneNode> nodes_;
  const RRset* soa_ = nullptr;
  uint32_t negative_ttl_ = 0;
  size_t records_ = 0;
};

// Parses master-file text. `origin` (a presentation name, "example.com.")
// is the initial $ORIGIN and the zone's apex; `file_name` prefixes errors.
absl::StatusOr<std::unique_ptr<Zone>> ParseZone(std::string_view text, std::string_view origin,
                                                std::string_view file_name);
// Reads and parses a file. An empty origin means: the owner of the file's
// first SOA record ($ORIGIN before it applies).
absl::StatusOr<std::unique_ptr<Zone>> LoadZoneFile(const std::string& path,
                                                   std::string_view origin = {});

// Rdata in wire form from its presentation tokens (already split, quotes
// removed from TXT strings by the caller's tokenizer). Exposed for the
// discovery zone and tests.
absl::StatusOr<std::string> RdataFromText(uint16_t type, const std::vector<std::string>& tokens,
                                          std::string_view origin);

}  // namespace capstan::gateway::dns
