#include "gateway/dns/zone.h"

#include <arpa/inet.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gateway/dns/message.h"

namespace capstan::gateway::dns {

// ---- Zone

Zone::Zone(std::string origin) : origin_(std::move(origin)), origin_lower_(LowerName(origin_)) {}

void Zone::Add(std::string_view owner, uint16_t type, uint32_t ttl, std::string rdata) {
  std::string key = LowerName(owner);
  auto [it, inserted] = nodes_.try_emplace(key);
  if (inserted) it->second.owner = std::string(owner);
  RRset* set = nullptr;
  for (RRset& s : it->second.rrsets) {
    if (s.type == type) set = &s;
  }
  if (set == nullptr) {
    it->second.rrsets.push_back(RRset{type, ttl, {}});
    set = &it->second.rrsets.back();
  }
  if (std::find(set->rdatas.begin(), set->rdatas.end(), rdata) != set->rdatas.end()) return;
  set->rdatas.push_back(std::move(rdata));
  ++records_;
  // Ancestors up to the apex exist as (possibly empty) nodes.
  std::string_view rest = owner;
  while (rest.size() > origin_.size()) {
    rest.remove_prefix(1 + static_cast<uint8_t>(rest[0]));
    auto [anc, fresh] = nodes_.try_emplace(LowerName(rest));
    if (!fresh) break;
    anc->second.owner = std::string(rest);
  }
}

absl::Status Zone::Finish() {
  auto apex = nodes_.find(origin_lower_);
  if (apex == nodes_.end() || apex->second.Find(kTypeSOA) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("zone ", NameToText(origin_), " has no SOA record at its apex"));
  }
  for (const auto& [name, node] : nodes_) {
    if (node.rrsets.size() > 1 && node.Find(kTypeCNAME) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(NameToText(node.owner), ": a CNAME cannot share its name with other data"));
    }
    const RRset* soa = node.Find(kTypeSOA);
    if (soa != nullptr && name != origin_lower_) {
      return absl::InvalidArgumentError(
          absl::StrCat(NameToText(node.owner), ": an SOA record belongs at the zone's apex"));
    }
  }
  soa_ = apex->second.Find(kTypeSOA);
  if (soa_->rdatas.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("zone ", NameToText(origin_), " has more than one SOA record"));
  }
  const std::string& r = soa_->rdatas[0];
  uint32_t minimum = (uint32_t{static_cast<uint8_t>(r[r.size() - 4])} << 24) |
                     (uint32_t{static_cast<uint8_t>(r[r.size() - 3])} << 16) |
                     (uint32_t{static_cast<uint8_t>(r[r.size() - 2])} << 8) |
                     static_cast<uint8_t>(r[r.size() - 1]);
  negative_ttl_ = std::min(soa_->ttl, minimum);
  return absl::OkStatus();
}

// ---- master files

namespace {

struct Entry {
  std::vector<std::string> tokens;
  std::vector<bool> quoted;
  bool blank_owner = false;  // the line started with white space
  int line = 0;
};

// Splits the text into entries: one per line, or several lines joined by
// parentheses. Comments run from ';' to the end of the line.
class Tokenizer {
 public:
  explicit Tokenizer(std::string_view text) : text_(text) {}

  // False at the end of the text; an error for an unterminated string or
  // unbalanced parentheses.
  absl::StatusOr<bool> Next(Entry* e) {
    e->tokens.clear();
    e->quoted.clear();
    e->blank_owner = false;
    while (pos_ < text_.size()) {
      e->line = line_;
      e->blank_owner = text_[pos_] == ' ' || text_[pos_] == '\t';
      int depth = 0;
      int open_line = line_;
      while (pos_ < text_.size()) {
        char c = text_[pos_];
        if (c == '\n') {
          ++line_;
          ++pos_;
          if (depth == 0) break;
        } else if (c == ' ' || c == '\t' || c == '\r') {
          ++pos_;
        } else if (c == ';') {
          while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
        } else if (c == '(') {
          if (depth++ == 0) open_line = line_;
          ++pos_;
        } else if (c == ')') {
          if (depth == 0)
            return absl::InvalidArgumentError(absl::StrCat(line_, ": ')' without '('"));
          --depth;
          ++pos_;
        } else if (c == '"') {
          int start_line = line_;
          std::string s;
          ++pos_;
          while (true) {
            if (pos_ >= text_.size()) {
              return absl::InvalidArgumentError(
                  absl::StrCat(start_line, ": a quoted string is not closed"));
            }
            char d = text_[pos_++];
            if (d == '"') break;
            if (d == '\n') ++line_;
            if (d == '\\' && pos_ < text_.size()) {
              s.push_back(d);
              d = text_[pos_++];
            }
            s.push_back(d);
          }
          e->tokens.push_back(std::move(s));
          e->quoted.push_back(true);
        } else {
          std::string s;
          while (pos_ < text_.size()) {
            char d = text_[pos_];
            if (d == ' ' || d == '\t' || d == '\r' || d == '\n' || d == ';' || d == '(' ||
                d == ')' || d == '"') {
              break;
            }
            if (d == '\\' && pos_ + 1 < text_.size()) {
              s.push_back(d);
              ++pos_;
              d = text_[pos_];
            }
            s.push_back(d);
            ++pos_;
          }
          e->tokens.push_back(std::move(s));
          e->quoted.push_back(false);
        }
      }
      if (depth != 0) {
        return absl::InvalidArgumentError(absl::StrCat(open_line, ": '(' is not closed"));
      }
      if (!e->tokens.empty()) return true;
    }
    return false;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
};

// "3600", "1h30m", "2w": seconds, at most 2^31 - 1 (RFC 2181 section 8).
bool ParseTtl(std::string_view s, uint32_t* out) {
  if (s.empty() || !absl::ascii_isdigit(s[0])) return false;
  uint64_t total = 0, current = 0;
  bool digits = false;
  for (char c : s) {
    if (absl::ascii_isdigit(c)) {
      current = current * 10 + static_cast<uint64_t>(c - '0');
      digits = true;
      if (current > 0x7fffffff) return false;
      continue;
    }
    if (!digits) return false;
    uint64_t unit = 0;
    switch (absl::ascii_tolower(c)) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86400;
        break;
      case 'w':
        unit = 604800;
        break;
      default:
        return false;
    }
    total += current * unit;
    current = 0;
    digits = false;
    if (total > 0x7fffffff) return false;
  }
  total += current;
  if (total > 0x7fffffff) return false;
  *out = static_cast<uint32_t>(total);
  return true;
}

void Append16(std::string* s, uint32_t v) {
  s->push_back(static_cast<char>(v >> 8));
  s->push_back(static_cast<char>(v));
}
void Append32(std::string* s, uint32_t v) {
  Append16(s, v >> 16);
  Append16(s, v & 0xffff);
}

absl::Status AppendCharString(std::string_view text, std::string* out) {
  std::string s;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      if (i + 3 < text.size() && absl::ascii_isdigit(text[i + 1]) &&
          absl::ascii_isdigit(text[i + 2]) && absl::ascii_isdigit(text[i + 3])) {
        int v = (text[i + 1] - '0') * 100 + (text[i + 2] - '0') * 10 + (text[i + 3] - '0');
        if (v > 255) return absl::InvalidArgumentError("bad \\DDD escape");
        s.push_back(static_cast<char>(v));
        i += 3;
      } else {
        s.push_back(text[++i]);
      }
    } else {
      s.push_back(text[i]);
    }
  }
  if (s.size() > 255) return absl::InvalidArgumentError("a character string longer than 255 bytes");
  out->push_back(static_cast<char>(s.size()));
  *out += s;
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> Number(const std::string& s, uint32_t max, std::string_view what) {
  uint32_t v = 0;
  if (!absl::SimpleAtoi(s, &v) || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", std::string(what), " (0..", max, "), got '", s, "'"));
  }
  return v;
}

// The length of the uncompressed wire name at the start of `r`, or 0 when
// there is none.
size_t WireNameLength(std::string_view r) {
  size_t pos = 0;
  while (pos < r.size()) {
    uint8_t len = static_cast<uint8_t>(r[pos]);
    if (len > kMaxLabel) return 0;
    pos += 1 + len;
    if (len == 0) return pos <= kMaxNameWire ? pos : 0;
  }
  return 0;
}

// Rdata given in RFC 3597's generic form for a type we know must still
// have that type's shape (the answer logic and the writer rely on it).
absl::Status CheckRdataShape(uint16_t type, std::string_view r) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(TypeName(type), ": the \\# rdata does not have this type's format"));
  };
  switch (type) {
    case kTypeA:
      return r.size() == 4 ? absl::OkStatus() : bad();
    case kTypeAAAA:
      return r.size() == 16 ? absl::OkStatus() : bad();
    case kTypeNS:
    case kTypeCNAME:
    case kTypePTR:
      return WireNameLength(r) == r.size() ? absl::OkStatus() : bad();
    case kTypeMX:
      return r.size() > 2 && WireNameLength(r.substr(2)) == r.size() - 2 ? absl::OkStatus() : bad();
    case kTypeSRV:
      return r.size() > 6 && WireNameLength(r.substr(6)) == r.size() - 6 ? absl::OkStatus() : bad();
    case kTypeSOA: {
      size_t n1 = WireNameLength(r);
      size_t n2 = n1 == 0 ? 0 : WireNameLength(r.substr(n1));
      return n1 != 0 && n2 != 0 && n1 + n2 + 20 == r.size() ? absl::OkStatus() : bad();
    }
    case kTypeTXT: {
      if (r.empty()) return bad();
      size_t pos = 0;
      while (pos < r.size()) pos += 1 + static_cast<uint8_t>(r[pos]);
      return pos == r.size() ? absl::OkStatus() : bad();
    }
    default:
      return absl::OkStatus();
  }
}

}  // namespace

absl::StatusOr<std::string> RdataFromText(uint16_t type, const std::vector<std::string>& t,
                                          std::string_view origin) {
  std::string out;
  auto want = [&](size_t n) -> absl::Status {
    if (t.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat(TypeName(type), ": expected ", n, " rdata fields, got ", t.size()));
    }
    return absl::OkStatus();
  };
  auto name = [&](const std::string& s) -> absl::Status {
    ASSIGN_OR_RETURN(std::string n, NameFromText(s, origin));
    out += n;
    return absl::OkStatus();
  };
  if (!t.empty() && t[0] == "\\#") {
    // RFC 3597: \# LENGTH HEX...
    if (t.size() < 2) return absl::InvalidArgumentError("\\#: expected a length");
    ASSIGN_OR_RETURN(uint32_t len, Number(t[1], 65535, "an rdata length"));
    std::string hex;
    for (size_t i = 2; i < t.size(); ++i) hex += t[i];
    if (hex.size() != 2 * len) {
      return absl::InvalidArgumentError(
          absl::StrCat("\\#: ", len, " bytes announced, ", hex.size() / 2, " given"));
    }
    for (size_t i = 0; i < hex.size(); i += 2) {
      int v = 0;
      for (int k = 0; k < 2; ++k) {
        char c = absl::ascii_tolower(hex[i + k]);
        int d = absl::ascii_isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return absl::InvalidArgumentError("\\#: not hexadecimal");
        v = v * 16 + d;
      }
      out.push_back(static_cast<char>(v));
    }
    RETURN_IF_ERROR(CheckRdataShape(type, out));
    return out;
  }
  switch (type) {
    case kTypeA: {
      RETURN_IF_ERROR(want(1));
      char b[4];
      if (inet_pton(AF_INET, t[0].c_str(), b) != 1) {
        return absl::InvalidArgumentError(absl::StrCat("A: not an IPv4 address: '", t[0], "'"));
      }
      return std::string(b, 4);
    }
    case kTypeAAAA: {
      RETURN_IF_ERROR(want(1));
      char b[16];
      if (inet_pton(AF_INET6, t[0].c_str(), b) != 1) {
        return absl::InvalidArgumentError(absl::StrCat("AAAA: not an IPv6 address: '", t[0], "'"));
      }
      return std::string(b, 16);
    }
    case kTypeNS:
    case kTypeCNAME:
    case kTypePTR:
      RETURN_IF_ERROR(want(1));
      RETURN_IF_ERROR(name(t[0]));
      return out;
    case kTypeMX: {
      RETURN_IF_ERROR(want(2));
      ASSIGN_OR_RETURN(uint32_t pref, Number(t[0], 65535, "an MX preference"));
      Append16(&out, pref);
      RETURN_IF_ERROR(name(t[1]));
      return out;
    }
    case kTypeSRV: {
      RETURN_IF_ERROR(want(4));
      for (int i = 0; i < 3; ++i) {
        ASSIGN_OR_RETURN(uint32_t v, Number(t[i], 65535, "an SRV priority, weight or port"));
        Append16(&out, v);
      }
      RETURN_IF_ERROR(name(t[3]));
      return out;
    }
    case kTypeSOA: {
      RETURN_IF_ERROR(want(7));
      RETURN_IF_ERROR(name(t[0]));
      RETURN_IF_ERROR(name(t[1]));
      ASSIGN_OR_RETURN(uint32_t serial, Number(t[2], 0xffffffff, "a serial"));
      Append32(&out, serial);
      for (int i = 3; i < 7; ++i) {
        uint32_t v = 0;
        if (!ParseTtl(t[i], &v)) {
          return absl::InvalidArgumentError(absl::StrCat("SOA: expected a time, got '", t[i], "'"));
        }
        Append32(&out, v);
      }
      return out;
    }
    case kTypeTXT:
      if (t.empty()) return absl::InvalidArgumentError("TXT: expected at least one string");
      for (const std::string& s : t) RETURN_IF_ERROR(AppendCharString(s, &out));
      return out;
    case kTypeHINFO:
      RETURN_IF_ERROR(want(2));
      RETURN_IF_ERROR(AppendCharString(t[0], &out));
      RETURN_IF_ERROR(AppendCharString(t[1], &out));
      return out;
    case 257: {  // CAA (RFC 8659)
      RETURN_IF_ERROR(want(3));
      ASSIGN_OR_RETURN(uint32_t flags, Number(t[0], 255, "CAA flags"));
      out.push_back(static_cast<char>(flags));
      if (t[1].empty() || t[1].size() > 255) return absl::InvalidArgumentError("CAA: bad tag");
      out.push_back(static_cast<char>(t[1].size()));
      out += t[1];
      out += t[2];
      return out;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(TypeName(type), ": no presentation syntax known; use RFC 3597's \\# form"));
  }
}

absl::StatusOr<std::unique_ptr<Zone>> ParseZone(std::string_view text, std::string_view origin_text,
                                                std::string_view file_name) {
  const std::string file(file_name);
  auto error = [&](int line, auto message) {
    return absl::InvalidArgumentError(absl::StrCat(file, ":", line, ": ", message));
  };
  if (text.size() > kMaxZoneFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": larger than the limit of ", kMaxZoneFileBytes, " bytes"));
  }
  std::string origin;
  if (!origin_text.empty()) {
    auto o = NameFromText(origin_text, std::string(1, '\0'));
    if (!o.ok()) return error(0, absl::StrCat("zone origin: ", o.status().message()));
    origin = *o;
  }
  std::unique_ptr<Zone> zone;
  if (!origin.empty()) zone = std::make_unique<Zone>(origin);
  std::string current_origin = origin;
  std::optional<uint32_t> default_ttl, last_ttl;
  std::string last_owner;
  Tokenizer tokenizer(text);
  Entry e;
  while (true) {
    auto more = tokenizer.Next(&e);
    if (!more.ok())
      return absl::InvalidArgumentError(absl::StrCat(file, ":", more.status().message()));
    if (!*more) break;
    const auto& t = e.tokens;
    if (!e.blank_owner && t[0].starts_with('$')) {
      if (t[0] == "$ORIGIN") {
        if (t.size() != 2) return error(e.line, "$ORIGIN: expected one name");
        auto o = NameFromText(t[1], current_origin.empty() ? std::string(1, '\0') : current_origin);
        if (!o.ok()) return error(e.line, absl::StrCat("$ORIGIN: ", o.status().message()));
        current_origin = *o;
      } else if (t[0] == "$TTL") {
        uint32_t v = 0;
        if (t.size() != 2 || !ParseTtl(t[1], &v)) return error(e.line, "$TTL: expected one TTL");
        default_ttl = v;
      } else if (t[0] == "$INCLUDE") {
        return error(e.line, "$INCLUDE is not supported; put the records in the zone's file");
      } else {
        return error(e.line, absl::StrCat("unknown directive ", t[0]));
      }
      continue;
    }
    size_t i = 0;
    std::string owner;
    if (e.blank_owner) {
      if (last_owner.empty())
        return error(e.line, "a record without an owner name, and none before it");
      owner = last_owner;
    } else {
      if (current_origin.empty() && t[0] != "@" && !t[0].ends_with('.')) {
        return error(e.line, "a relative name before any $ORIGIN");
      }
      auto o = NameFromText(t[0], current_origin);
      if (!o.ok()) return error(e.line, o.status().message());
      owner = *o;
      i = 1;
    }
    std::optional<uint32_t> ttl;
    for (int k = 0; k < 2 && i < t.size(); ++k) {
      uint32_t v = 0;
      if (!ttl && ParseTtl(t[i], &v)) {
        ttl = v;
        ++i;
      } else if (absl::EqualsIgnoreCase(t[i], "IN")) {
        ++i;
      } else if (absl::EqualsIgnoreCase(t[i], "CH") || absl::EqualsIgnoreCase(t[i], "HS") ||
                 absl::EqualsIgnoreCase(t[i], "CS")) {
        return error(e.line, absl::StrCat("class ", t[i], ": only IN is served"));
      }
    }
    if (i >= t.size()) return error(e.line, "expected a record type");
    uint16_t type = TypeFromName(t[i]);
    if (type == 0 || type == kTypeOPT || type == kTypeANY || type == kTypeAXFR ||
        type == kTypeIXFR) {
      return error(e.line, absl::StrCat("unknown or unusable record type '", t[i], "'"));
    }
    std::vector<std::string> rdata_tokens(t.begin() + static_cast<ptrdiff_t>(i) + 1, t.end());
    auto rdata = RdataFromText(type, rdata_tokens,
                               current_origin.empty() ? std::string(1, '\0') : current_origin);
    if (!rdata.ok()) return error(e.line, rdata.status().message());
    if (zone == nullptr) {
      if (type != kTypeSOA)
        return error(e.line, "the first record must be the SOA (no origin was given)");
      zone = std::make_unique<Zone>(owner);
    }
    if (!IsSubdomain(owner, zone->origin())) {
      return error(e.line, absl::StrCat(NameToText(owner), " is outside the zone ",
                                        NameToText(zone->origin())));
    }
    if (!ttl) {
      if (default_ttl) {
        ttl = default_ttl;
      } else if (last_ttl) {
        ttl = last_ttl;
      } else if (type == kTypeSOA) {
        const std::string& r = *rdata;
        ttl = (uint32_t{static_cast<uint8_t>(r[r.size() - 4])} << 24) |
              (uint32_t{static_cast<uint8_t>(r[r.size() - 3])} << 16) |
              (uint32_t{static_cast<uint8_t>(r[r.size() - 2])} << 8) |
              static_cast<uint8_t>(r[r.size() - 1]);
      } else {
        return error(e.line, "no TTL given and no $TTL before it");
      }
    }
    last_ttl = ttl;
    last_owner = owner;
    if (zone->record_count() >= kMaxRecordsPerZone) {
      return error(e.line, absl::StrCat("more than ", kMaxRecordsPerZone, " records"));
    }
    zone->Add(owner, type, *ttl, std::move(rdata).value());
  }
  if (zone == nullptr) return error(0, "no records");
  absl::Status st = zone->Finish();
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(file, ": ", st.message()));
  return zone;
}

absl::StatusOr<std::unique_ptr<Zone>> LoadZoneFile(const std::string& path,
                                                   std::string_view origin) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the zone file"));
  std::ostringstream text;
  text << in.rdbuf();
  return ParseZone(text.str(), origin, path);
}

}  // namespace capstan::gateway::dns
