#include "gateway/dns/answer.h"

#include <algorithm>
#include <cstring>

namespace capstan::gateway::dns {

void ZoneSet::Add(std::shared_ptr<const Zone> zone) {
  std::string key = zone->origin_lower();
  zones_[key] = std::move(zone);
}

const Zone* ZoneSet::FindZone(std::string_view lower_name) const {
  size_t pos = 0;
  while (pos < lower_name.size()) {
    auto it = zones_.find(AbslView(lower_name.substr(pos)));
    if (it != zones_.end()) return it->second.get();
    if (lower_name[pos] == 0) break;
    pos += 1 + static_cast<uint8_t>(lower_name[pos]);
  }
  return nullptr;
}

std::vector<std::shared_ptr<const Zone>> ZoneSet::zones() const {
  std::vector<std::shared_ptr<const Zone>> out;
  for (const auto& [k, z] : zones_) out.push_back(z);
  return out;
}

namespace {

constexpr size_t kOptSize = 11;

// One response under construction.
class Responder {
 public:
  Responder(const Zone& zone, MessageWriter* w) : zone_(zone), w_(w) {}

  // Adds a whole RRset or nothing.
  bool AddSet(Section section, std::string_view owner, const RRset& set, uint32_t ttl) {
    MessageWriter::Mark m = w_->mark();
    for (const std::string& rdata : set.rdatas) {
      if (!w_->AddRecord(section, owner, set.type, ttl, rdata)) {
        w_->Rollback(m);
        return false;
      }
    }
    if (section == Section::kAnswer && answered_count_ < kMaxAnswered) {
      answered_[answered_count_++] = &set;
    }
    return true;
  }
  // An RRset already in the answer section is not repeated in additional.
  bool Answered(const RRset* set) const {
    for (size_t i = 0; i < answered_count_; ++i) {
      if (answered_[i] == set) return true;
    }
    return false;
  }
  bool AddSet(Section section, std::string_view owner, const RRset& set) {
    return AddSet(section, owner, set, set.ttl);
  }

  // The SOA for a negative answer. False when it does not fit.
  bool AddNegativeSoa() {
    return AddSet(Section::kAuthority, zone_.origin(), *zone_.soa(), zone_.negative_ttl());
  }

  // Queues the A and AAAA of an in-zone target name, once per name.
  void AddAddresses(std::string_view target) {
    if (!IsSubdomain(target, zone_.origin())) return;
    char lower[kMaxNameWire];
    std::memcpy(lower, target.data(), target.size());
    LowerName(lower, target.size());
    std::string_view key(lower, target.size());
    const ZoneNode* node = zone_.Find(key);
    if (node == nullptr) return;
    for (size_t i = 0; i < additional_count_; ++i) {
      if (additional_done_[i] == node) return;
    }
    if (additional_count_ < kMaxAdditionalNames) additional_done_[additional_count_++] = node;
  }

  // Writes the queued addresses: sections go out in order, so the
  // additional section is written after the authority section is done.
  void WriteAdditional() {
    for (size_t i = 0; i < additional_count_; ++i) {
      const ZoneNode* node = additional_done_[i];
      for (uint16_t type : {kTypeA, kTypeAAAA}) {
        const RRset* set = node->Find(type);
        if (set != nullptr && !Answered(set)) AddSet(Section::kAdditional, node->owner, *set);
      }
    }
  }

  // Additional-section processing for an RRset put in the answer or
  // authority section (RFC 1035 section 3.3: NS, MX; RFC 2782: SRV).
  void AddAdditionalFor(const RRset& set) {
    for (const std::string& r : set.rdatas) {
      switch (set.type) {
        case kTypeNS:
          AddAddresses(r);
          break;
        case kTypeMX:
          if (r.size() > 2) AddAddresses(std::string_view(r).substr(2));
          break;
        case kTypeSRV:
          if (r.size() > 6) AddAddresses(std::string_view(r).substr(6));
          break;
        default:
          break;
      }
    }
  }

 private:
  static constexpr size_t kMaxAdditionalNames = 16;
  static constexpr size_t kMaxAnswered = kMaxCnameChain + 2;
  const RRset* answered_[kMaxAnswered];
  size_t answered_count_ = 0;
  const Zone& zone_;
  MessageWriter* w_;
  const ZoneNode* additional_done_[kMaxAdditionalNames];
  size_t additional_count_ = 0;
};

// Label start offsets of a wire name, the whole name first, down to (and
// including) the suffix equal to the apex, whose offset is returned last.
size_t SuffixOffsets(std::string_view lname, size_t apex_size, size_t* offsets) {
  size_t n = 0;
  size_t pos = 0;
  while (true) {
    offsets[n++] = pos;
    if (lname.size() - pos <= apex_size || lname[pos] == 0) break;
    pos += 1 + static_cast<uint8_t>(lname[pos]);
  }
  return n;
}

// Copies a wire name lower-cased into buf (kMaxNameWire bytes).
std::string_view LowerInto(std::string_view name, char* buf) {
  std::memcpy(buf, name.data(), name.size());
  LowerName(buf, name.size());
  return std::string_view(buf, name.size());
}

}  // namespace

size_t TruncatedResponse(std::string_view query, uint8_t* out, size_t capacity) {
  Query q;
  if (ParseQuery(query, &q) != QueryParse::kOk) return 0;
  MessageWriter w(out, capacity);
  w.StartResponse(q, kRcodeNoError, false);
  w.SetFlag(kFlagTC);
  if (q.has_edns) w.AddOpt(512, 0, 0);
  return w.Finish();
}

AnswerResult Answer(const ZoneSet& zones, std::string_view packet, Transport transport,
                    const AnswerOptions& options, uint8_t* out) {
  AnswerResult result;
  Query q;
  QueryParse parsed = ParseQuery(packet, &q);
  if (parsed == QueryParse::kDrop) return result;
  size_t limit = kMaxMessage;
  if (transport == Transport::kUdp) {
    limit = q.has_edns ? std::min<size_t>(q.udp_payload, options.max_udp_payload) : 512;
    limit = std::max<size_t>(limit, 512);
  }
  MessageWriter w(out, limit);
  auto finish_error = [&](uint8_t rcode, bool echo) {
    w.StartResponse(q, rcode, false, echo);
    if (q.has_edns) w.AddOpt(options.max_udp_payload, 0, 0);
    result.rcode = rcode;
    result.size = w.Finish();
    return result;
  };
  if (parsed == QueryParse::kNotImp) {
    q.qname_len = 0;
    return finish_error(kRcodeNotImp, false);
  }
  if (parsed == QueryParse::kFormErr) {
    q.qname_len = 0;
    q.has_edns = false;
    return finish_error(kRcodeFormErr, false);
  }
  if (q.has_edns && q.edns_version != 0) {
    // RFC 6891 section 6.1.3: BADVERS, with the version we speak.
    w.StartResponse(q, 0, false);
    w.AddOpt(options.max_udp_payload, kRcodeBadVers, 0);
    result.rcode = kRcodeBadVers;
    result.size = w.Finish();
    return result;
  }
  if (q.qclass != kClassIN || q.qtype == kTypeAXFR || q.qtype == kTypeIXFR) {
    return finish_error(kRcodeRefused, true);
  }
  char lower_q[kMaxNameWire];
  std::memcpy(lower_q, q.qname, q.qname_len);
  LowerName(lower_q, q.qname_len);
  const Zone* zone = zones.FindZone(std::string_view(lower_q, q.qname_len));
  if (zone == nullptr) return finish_error(kRcodeRefused, true);

  w.StartResponse(q, kRcodeNoError, true);
  if (q.has_edns) w.set_limit(limit - kOptSize);
  MessageWriter::Mark after_question = w.mark();
  Responder r(*zone, &w);
  uint8_t rcode = kRcodeNoError;
  bool truncated = false;
  bool authoritative = true;

  // The name being resolved: the question's, then each CNAME's target.
  std::string_view name(q.qname, q.qname_len);
  char lname_buf[kMaxNameWire];
  std::memcpy(lname_buf, lower_q, q.qname_len);
  std::string_view lname(lname_buf, q.qname_len);
  const size_t apex_size = zone->origin_lower().size();
  const ZoneNode* visited[kMaxCnameChain + 1];
  size_t visited_count = 0;
  const ZoneNode* positive_node = nullptr;  // where the answer's data came from
  for (int link = 0; link <= kMaxCnameChain; ++link) {
    size_t offsets[128];
    size_t n = SuffixOffsets(lname, apex_size, offsets);
    // Walk down from just below the apex: the first node owning NS is a
    // zone cut; the last node that exists is the closest encloser.
    const ZoneNode* node = nullptr;
    const ZoneNode* cut = nullptr;
    size_t encloser = n - 1;  // the apex
    for (size_t i = n - 1; i-- > 0;) {
      const ZoneNode* at = zone->Find(lname.substr(offsets[i]));
      if (at == nullptr) break;
      encloser = i;
      if (at->Find(kTypeNS) != nullptr && !(i == 0 && q.qtype == kTypeDS && link == 0)) {
        cut = at;
        break;
      }
      if (i == 0) node = at;
    }
    if (n == 1) node = zone->Find(lname);  // the apex itself
    if (cut != nullptr) {
      if (link == 0) {
        // A referral: the child's NS and their glue, not authoritative.
        authoritative = false;
        const RRset& ns = *cut->Find(kTypeNS);
        if (!r.AddSet(Section::kAuthority, cut->owner, ns))
          truncated = true;
        else
          r.AddAdditionalFor(ns);
      }
      break;  // a CNAME into a delegated name ends the chain here
    }
    std::string_view owner = name;
    if (node == nullptr) {
      // RFC 4592: the wildcard child of the closest encloser.
      std::string_view ce = lname.substr(offsets[encloser]);
      char wild[kMaxNameWire + 2];
      wild[0] = 1;
      wild[1] = '*';
      if (ce.size() + 2 <= kMaxNameWire) {
        std::memcpy(wild + 2, ce.data(), ce.size());
        node = zone->Find(std::string_view(wild, ce.size() + 2));
      }
      if (node == nullptr) {
        rcode = kRcodeNxDomain;
        if (!r.AddNegativeSoa()) truncated = true;
        break;
      }
    }
    if (q.qtype == kTypeANY) {
      if (node->rrsets.empty()) {
        if (!r.AddNegativeSoa()) truncated = true;
      } else if (!r.AddSet(Section::kAnswer, owner, node->rrsets.front())) {
        truncated = true;
      }
      break;
    }
    if (const RRset* set = node->Find(q.qtype)) {
      if (!r.AddSet(Section::kAnswer, owner, *set)) {
        truncated = true;
      } else {
        r.AddAdditionalFor(*set);
        positive_node = node;
      }
      break;
    }
    const RRset* cname = node->Find(kTypeCNAME);
    if (cname != nullptr && !cname->rdatas.empty()) {
      if (!r.AddSet(Section::kAnswer, owner, *cname)) {
        truncated = true;
        break;
      }
      const std::string& target = cname->rdatas.front();
      if (!IsSubdomain(target, zone->origin()) || link == kMaxCnameChain) break;
      // A loop ends the chain where it closes (each name answered once).
      visited[visited_count++] = node;
      const ZoneNode* next = zone->Find(LowerInto(target, lname_buf));
      bool seen = false;
      for (size_t i = 0; i < visited_count; ++i) seen = seen || visited[i] == next;
      if (seen) break;
      lname = std::string_view(lname_buf, target.size());
      name = target;
      continue;
    }
    // NODATA.
    if (!r.AddNegativeSoa()) truncated = true;
    break;
  }
  if (positive_node != nullptr && !truncated && !options.minimal_responses) {
    // The zone's NS RRset in the authority section with its addresses, as
    // NSD and BIND do without minimal-responses (when it fits; never a
    // reason to truncate), unless the answer is that RRset.
    const ZoneNode* apex = zone->Find(zone->origin_lower());
    const RRset* ns = apex != nullptr ? apex->Find(kTypeNS) : nullptr;
    if (ns != nullptr && !(positive_node == apex && q.qtype == kTypeNS) &&
        r.AddSet(Section::kAuthority, apex->owner, *ns)) {
      r.AddAdditionalFor(*ns);
    }
  }
  if (!truncated) r.WriteAdditional();
  if (truncated) {
    w.Rollback(after_question);
    w.SetFlag(kFlagTC);
  }
  if (!authoritative) w.ClearFlag(kFlagAA);
  w.SetRcode(rcode);
  if (q.has_edns) {
    w.set_limit(limit);
    w.AddOpt(options.max_udp_payload, 0, 0);
  }
  result.rcode = rcode;
  result.truncated = truncated;
  result.size = w.Finish();
  return result;
}

}  // namespace capstan::gateway::dns
