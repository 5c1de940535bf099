// Fuzz target: the RFC 1035 master-file parser. Invariants: no crash; a
// zone that parses has its SOA at the apex and a negative TTL no larger
// than the SOA's TTL; every name it answers lies in the zone.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gateway/dns/answer.h"
#include "gateway/dns/message.h"
#include "gateway/dns/zone.h"

using namespace capstan::gateway::dns;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto zone = ParseZone(in, "example.com.", "fuzz.zone");
  if (!zone.ok()) return 0;
  const Zone& z = **zone;
  if (z.soa() == nullptr || z.negative_ttl() > z.soa()->ttl) std::abort();
  if (z.Find(z.origin_lower()) == nullptr) std::abort();
  // Ask the zone for its apex: a NOERROR answer (or a truncation).
  ZoneSet set;
  set.Add(std::move(zone).value());
  static uint8_t out[kMaxMessage];
  std::string q = BuildQuery(std::string("\7example\3com\0", 13), kTypeSOA, 1, 4096);
  AnswerResult r = Answer(set, q, Transport::kTcp, {}, out);
  if (r.size == 0 || r.rcode != kRcodeNoError) std::abort();
  return 0;
}
