// Fuzz target: the DNS wire format and the answer logic. The input is a
// message: ParseMessage and ParseQuery must not crash, and when it is a
// query the answer (over UDP and TCP, from a fixed zone) must parse back,
// echo the id, stay within the UDP limit and set QR.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "gateway/dns/answer.h"
#include "gateway/dns/message.h"
#include "gateway/dns/zone.h"

namespace {

using namespace capstan::gateway::dns;

constexpr std::string_view kZone = R"(
$ORIGIN example.com.
$TTL 300
@ SOA ns1 host 1 2 3 4 60
@ NS ns1
@ MX 10 mail
ns1 A 192.0.2.1
mail A 192.0.2.2
mail AAAA 2001:db8::2
www CNAME web
web A 192.0.2.3
*.wild TXT "wild"
sub NS ns.sub
ns.sub A 192.0.2.53
_x._tcp SRV 0 1 80 web
)";

const ZoneSet& Zones() {
  static const ZoneSet* zones = [] {
    auto* set = new ZoneSet;
    auto zone = ParseZone(kZone, "", "fuzz.zone");
    if (!zone.ok()) std::abort();
    set->Add(std::shared_ptr<const Zone>(std::move(zone).value()));
    return set;
  }();
  return *zones;
}

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto message = ParseMessage(in);
  if (message.ok()) {
    for (const auto& rr : message->answers) (void)RdataToText(rr.type, rr.rdata);
    for (const auto& q : message->questions) (void)NameToText(q.name);
  }
  Query q;
  QueryParse parsed = ParseQuery(in, &q);
  static uint8_t out[kMaxMessage];
  for (Transport t : {Transport::kUdp, Transport::kTcp}) {
    AnswerResult r = Answer(Zones(), in, t, {}, out);
    if (parsed == QueryParse::kDrop) {
      Check(r.size == 0);
      continue;
    }
    Check(r.size >= kHeaderSize);
    if (t == Transport::kUdp) Check(r.size <= 1232);
    auto answer = ParseMessage(std::string_view(reinterpret_cast<char*>(out), r.size));
    Check(answer.ok());
    Check(answer->id == q.id);
    Check((answer->flags & kFlagQR) != 0);
  }
  (void)TruncatedResponse(in, out, sizeof(out));
  return 0;
}
