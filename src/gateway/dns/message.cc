#include "gateway/dns/message.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace capstan::gateway::dns {

namespace {

struct TypeMnemonic {
  uint16_t type;
  const char* name;
};
constexpr TypeMnemonic kTypes[] = {
    {kTypeA, "A"},       {kTypeNS, "NS"},       {kTypeCNAME, "CNAME"}, {kTypeSOA, "SOA"},
    {kTypePTR, "PTR"},   {kTypeHINFO, "HINFO"}, {kTypeMX, "MX"},       {kTypeTXT, "TXT"},
    {kTypeAAAA, "AAAA"}, {kTypeSRV, "SRV"},     {kTypeOPT, "OPT"},     {kTypeDS, "DS"},
    {kTypeIXFR, "IXFR"}, {kTypeAXFR, "AXFR"},   {kTypeANY, "ANY"},     {257, "CAA"},
};

uint16_t Get16(std::string_view m, size_t pos) {
  return static_cast<uint16_t>((static_cast<uint8_t>(m[pos]) << 8) |
                               static_cast<uint8_t>(m[pos + 1]));
}
uint32_t Get32(std::string_view m, size_t pos) {
  return (uint32_t{Get16(m, pos)} << 16) | Get16(m, pos + 2);
}

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// Skips a possibly compressed name without decoding it; npos when malformed.
size_t SkipName(std::string_view m, size_t pos) {
  while (pos < m.size()) {
    uint8_t len = static_cast<uint8_t>(m[pos]);
    if (len == 0) return pos + 1;
    if ((len & 0xc0) == 0xc0) return pos + 2 <= m.size() ? pos + 2 : std::string_view::npos;
    if (len > kMaxLabel) return std::string_view::npos;
    pos += 1 + len;
  }
  return std::string_view::npos;
}

// Decompresses the names inside rdata of the types whose rdata may be
// compressed (and SRV, which some writers compress anyway).
absl::StatusOr<std::string> CanonicalRdata(std::string_view m, uint16_t type, size_t pos,
                                           size_t len) {
  size_t end = pos + len;
  std::string out;
  auto name = [&](size_t at) -> absl::StatusOr<size_t> {
    ASSIGN_OR_RETURN(size_t next, ReadName(m, at, &out));
    if (next > end) return absl::InvalidArgumentError("name runs past the rdata");
    return next;
  };
  switch (type) {
    case kTypeNS:
    case kTypeCNAME:
    case kTypePTR: {
      ASSIGN_OR_RETURN(size_t next, name(pos));
      if (next != end) return absl::InvalidArgumentError("bytes after the rdata's name");
      return out;
    }
    case kTypeMX: {
      if (len < 3) return absl::InvalidArgumentError("MX rdata too short");
      out.append(m.substr(pos, 2));
      ASSIGN_OR_RETURN(size_t next, name(pos + 2));
      if (next != end) return absl::InvalidArgumentError("bytes after the MX exchange");
      return out;
    }
    case kTypeSRV: {
      if (len < 7) return absl::InvalidArgumentError("SRV rdata too short");
      out.append(m.substr(pos, 6));
      ASSIGN_OR_RETURN(size_t next, name(pos + 6));
      if (next != end) return absl::InvalidArgumentError("bytes after the SRV target");
      return out;
    }
    case kTypeSOA: {
      ASSIGN_OR_RETURN(size_t next, name(pos));
      ASSIGN_OR_RETURN(next, name(next));
      if (next + 20 != end) return absl::InvalidArgumentError("SOA rdata has the wrong size");
      out.append(m.substr(next, 20));
      return out;
    }
    default:
      return std::string(m.substr(pos, len));
  }
}

}  // namespace

std::string TypeName(uint16_t type) {
  for (const TypeMnemonic& t : kTypes) {
    if (t.type == type) return t.name;
  }
  return absl::StrCat("TYPE", type);
}

uint16_t TypeFromName(std::string_view mnemonic) {
  for (const TypeMnemonic& t : kTypes) {
    if (absl::EqualsIgnoreCase(std::string(mnemonic), t.name)) return t.type;
  }
  if (mnemonic.size() > 4 && absl::EqualsIgnoreCase(std::string(mnemonic.substr(0, 4)), "TYPE")) {
    uint32_t v = 0;
    if (absl::SimpleAtoi(std::string(mnemonic.substr(4)), &v) && v > 0 && v <= 65535) {
      return static_cast<uint16_t>(v);
    }
  }
  return 0;
}

void LowerName(char* wire, size_t len) {
  for (size_t i = 0; i < len; ++i) wire[i] = Lower(wire[i]);
}

std::string LowerName(std::string_view wire) {
  std::string s(wire);
  LowerName(s.data(), s.size());
  return s;
}

bool NamesEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string NameToText(std::string_view wire) {
  if (wire.size() <= 1) return ".";
  std::string out;
  size_t pos = 0;
  while (pos < wire.size()) {
    uint8_t len = static_cast<uint8_t>(wire[pos]);
    if (len == 0) break;
    for (size_t i = 1; i <= len && pos + i < wire.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(wire[pos + i]);
      if (c == '.' || c == '\\' || c == '"' || c == '(' || c == ')' || c == ';' || c == '@' ||
          c == '$') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c <= 0x20 || c >= 0x7f) {
        char esc[5];
        std::snprintf(esc, sizeof(esc), "\\%03u", c);
        out += esc;
      } else {
        out.push_back(static_cast<char>(c));
      }
    }
    out.push_back('.');
    pos += 1 + len;
  }
  return out;
}

absl::StatusOr<std::string> NameFromText(std::string_view text, std::string_view origin) {
  if (text.empty()) return absl::InvalidArgumentError("empty name");
  if (text == "@") return std::string(origin);
  if (text == ".") return std::string(1, '\0');
  std::string out;
  std::string label;
  bool absolute = false;
  auto end_label = [&]() -> absl::Status {
    if (label.empty())
      return absl::InvalidArgumentError(absl::StrCat("empty label in '", std::string(text), "'"));
    if (label.size() > kMaxLabel) {
      return absl::InvalidArgumentError(
          absl::StrCat("label longer than 63 bytes in '", std::string(text), "'"));
    }
    out.push_back(static_cast<char>(label.size()));
    out += label;
    label.clear();
    return absl::OkStatus();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\') {
      if (i + 1 >= text.size()) return absl::InvalidArgumentError("name ends in a backslash");
      if (i + 3 < text.size() && absl::ascii_isdigit(text[i + 1]) &&
          absl::ascii_isdigit(text[i + 2]) && absl::ascii_isdigit(text[i + 3])) {
        int v = (text[i + 1] - '0') * 100 + (text[i + 2] - '0') * 10 + (text[i + 3] - '0');
        if (v > 255)
          return absl::InvalidArgumentError(
              absl::StrCat("bad escape in '", std::string(text), "'"));
        label.push_back(static_cast<char>(v));
        i += 3;
      } else {
        label.push_back(text[++i]);
      }
    } else if (c == '.') {
      RETURN_IF_ERROR(end_label());
      if (i + 1 == text.size()) absolute = true;
    } else {
      label.push_back(c);
    }
  }
  if (!absolute) {
    if (!label.empty()) RETURN_IF_ERROR(end_label());
    out += origin;
  } else {
    out.push_back('\0');
  }
  if (out.size() > kMaxNameWire) {
    return absl::InvalidArgumentError(
        absl::StrCat("name longer than 255 bytes: '", std::string(text), "'"));
  }
  return out;
}

int LabelCount(std::string_view wire) {
  int n = 0;
  size_t pos = 0;
  while (pos < wire.size() && wire[pos] != 0) {
    ++n;
    pos += 1 + static_cast<uint8_t>(wire[pos]);
  }
  return n;
}

bool IsSubdomain(std::string_view name, std::string_view zone) {
  if (zone.size() > name.size()) return false;
  // The zone must start at a label boundary of name.
  size_t pos = 0;
  while (name.size() - pos > zone.size()) pos += 1 + static_cast<uint8_t>(name[pos]);
  return name.size() - pos == zone.size() && NamesEqual(name.substr(pos), zone);
}

absl::StatusOr<size_t> ReadName(std::string_view m, size_t pos, std::string* out) {
  size_t after = 0;  // where the name ends in the message (before any pointer)
  size_t written = 0;
  size_t limit = pos;  // a pointer must go strictly below the previous start
  bool jumped = false;
  while (true) {
    if (pos >= m.size()) return absl::InvalidArgumentError("name runs past the message");
    uint8_t len = static_cast<uint8_t>(m[pos]);
    if ((len & 0xc0) == 0xc0) {
      if (pos + 1 >= m.size()) return absl::InvalidArgumentError("truncated compression pointer");
      size_t target = ((len & 0x3f) << 8) | static_cast<uint8_t>(m[pos + 1]);
      if (!jumped) after = pos + 2;
      if (target >= limit)
        return absl::InvalidArgumentError("compression pointer does not point back");
      jumped = true;
      limit = target;
      pos = target;
      continue;
    }
    if ((len & 0xc0) != 0) return absl::InvalidArgumentError("reserved label type");
    if (pos + 1 + len > m.size()) return absl::InvalidArgumentError("label runs past the message");
    written += 1 + len;
    if (written > kMaxNameWire) return absl::InvalidArgumentError("name longer than 255 bytes");
    out->append(m.substr(pos, 1 + len));
    pos += 1 + len;
    if (len == 0) break;
  }
  return jumped ? after : pos;
}

QueryParse ParseQuery(std::string_view p, Query* q) {
  if (p.size() < kHeaderSize) return QueryParse::kDrop;
  q->id = Get16(p, 0);
  q->flags = Get16(p, 2);
  if (q->flags & kFlagQR) return QueryParse::kDrop;
  q->opcode = (q->flags >> 11) & 0xf;
  q->qname_len = 0;
  q->has_edns = false;
  q->udp_payload = 512;
  q->edns_version = 0;
  q->dnssec_ok = false;
  uint16_t qd = Get16(p, 4), an = Get16(p, 6), ns = Get16(p, 8), ar = Get16(p, 10);
  if (q->opcode != 0) return QueryParse::kNotImp;
  if (qd != 1) return QueryParse::kFormErr;
  // The question's name: uncompressed (nothing precedes it to point at).
  size_t pos = kHeaderSize;
  size_t out = 0;
  while (true) {
    if (pos >= p.size()) return QueryParse::kFormErr;
    uint8_t len = static_cast<uint8_t>(p[pos]);
    if (len > kMaxLabel) return QueryParse::kFormErr;
    if (out + 1 + len > kMaxNameWire || pos + 1 + len > p.size()) return QueryParse::kFormErr;
    std::memcpy(q->qname + out, p.data() + pos, 1 + len);
    out += 1 + len;
    pos += 1 + len;
    if (len == 0) break;
  }
  q->qname_len = static_cast<uint8_t>(out);
  if (pos + 4 > p.size()) return QueryParse::kFormErr;
  q->qtype = Get16(p, pos);
  q->qclass = Get16(p, pos + 2);
  pos += 4;
  // Skip answer and authority records (a query should have none).
  for (uint32_t i = 0; i < uint32_t{an} + ns; ++i) {
    pos = SkipName(p, pos);
    if (pos == std::string_view::npos || pos + 10 > p.size()) return QueryParse::kFormErr;
    pos += 10 + Get16(p, pos + 8);
    if (pos > p.size()) return QueryParse::kFormErr;
  }
  for (uint16_t i = 0; i < ar; ++i) {
    size_t name_at = pos;
    pos = SkipName(p, pos);
    if (pos == std::string_view::npos || pos + 10 > p.size()) return QueryParse::kFormErr;
    uint16_t type = Get16(p, pos);
    uint16_t rdlen = Get16(p, pos + 8);
    if (type == kTypeOPT) {
      // One OPT, owned by the root (RFC 6891 section 6.1.1).
      if (q->has_edns || p[name_at] != 0) return QueryParse::kFormErr;
      q->has_edns = true;
      q->udp_payload = std::max<uint16_t>(512, Get16(p, pos + 2));
      q->edns_version = static_cast<uint8_t>(p[pos + 5]);
      q->dnssec_ok = (Get16(p, pos + 6) & 0x8000) != 0;
    }
    pos += 10 + rdlen;
    if (pos > p.size()) return QueryParse::kFormErr;
  }
  return QueryParse::kOk;
}

absl::StatusOr<Message> ParseMessage(std::string_view m) {
  if (m.size() < kHeaderSize) return absl::InvalidArgumentError("shorter than a DNS header");
  Message msg;
  msg.id = Get16(m, 0);
  msg.flags = Get16(m, 2);
  uint16_t counts[4] = {Get16(m, 4), Get16(m, 6), Get16(m, 8), Get16(m, 10)};
  size_t pos = kHeaderSize;
  for (uint16_t i = 0; i < counts[0]; ++i) {
    Question q;
    ASSIGN_OR_RETURN(pos, ReadName(m, pos, &q.name));
    if (pos + 4 > m.size()) return absl::InvalidArgumentError("truncated question");
    q.type = Get16(m, pos);
    q.klass = Get16(m, pos + 2);
    pos += 4;
    msg.questions.push_back(std::move(q));
  }
  std::vector<ResourceRecord>* sections[3] = {&msg.answers, &msg.authority, &msg.additional};
  for (int s = 0; s < 3; ++s) {
    for (uint16_t i = 0; i < counts[s + 1]; ++i) {
      ResourceRecord rr;
      ASSIGN_OR_RETURN(pos, ReadName(m, pos, &rr.name));
      if (pos + 10 > m.size()) return absl::InvalidArgumentError("truncated record");
      rr.type = Get16(m, pos);
      rr.klass = Get16(m, pos + 2);
      rr.ttl = Get32(m, pos + 4);
      size_t len = Get16(m, pos + 8);
      pos += 10;
      if (pos + len > m.size()) return absl::InvalidArgumentError("rdata runs past the message");
      ASSIGN_OR_RETURN(rr.rdata, CanonicalRdata(m, rr.type, pos, len));
      pos += len;
      sections[s]->push_back(std::move(rr));
    }
  }
  if (pos != m.size()) return absl::InvalidArgumentError("bytes after the last record");
  return msg;
}

std::string RdataToText(uint16_t type, std::string_view r) {
  auto names = [&](size_t pos) {
    // One name starting at pos (uncompressed); returns its text and moves pos.
    std::string_view rest = r.substr(std::min(pos, r.size()));
    size_t n = 0;
    while (n < rest.size() && rest[n] != 0) n += 1 + static_cast<uint8_t>(rest[n]);
    return std::make_pair(NameToText(rest.substr(0, std::min(n + 1, rest.size()))), pos + n + 1);
  };
  switch (type) {
    case kTypeA:
      if (r.size() == 4) {
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, r.data(), buf, sizeof(buf));
        return buf;
      }
      break;
    case kTypeAAAA:
      if (r.size() == 16) {
        char buf[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, r.data(), buf, sizeof(buf));
        return buf;
      }
      break;
    case kTypeNS:
    case kTypeCNAME:
    case kTypePTR:
      return names(0).first;
    case kTypeMX:
      if (r.size() >= 3) return absl::StrCat(Get16(r, 0), " ", names(2).first);
      break;
    case kTypeSRV:
      if (r.size() >= 7) {
        return absl::StrCat(Get16(r, 0), " ", Get16(r, 2), " ", Get16(r, 4), " ", names(6).first);
      }
      break;
    case kTypeSOA: {
      auto [mname, p1] = names(0);
      auto [rname, p2] = names(p1);
      if (p2 + 20 == r.size()) {
        return absl::StrCat(mname, " ", rname, " ", Get32(r, p2), " ", Get32(r, p2 + 4), " ",
                            Get32(r, p2 + 8), " ", Get32(r, p2 + 12), " ", Get32(r, p2 + 16));
      }
      break;
    }
    case kTypeTXT: {
      std::string out;
      size_t pos = 0;
      while (pos < r.size()) {
        size_t len = static_cast<uint8_t>(r[pos]);
        if (!out.empty()) out.push_back(' ');
        out.push_back('"');
        for (size_t i = 1; i <= len && pos + i < r.size(); ++i) {
          unsigned char c = static_cast<unsigned char>(r[pos + i]);
          if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
          } else if (c < 0x20 || c >= 0x7f) {
            char esc[5];
            std::snprintf(esc, sizeof(esc), "\\%03u", c);
            out += esc;
          } else {
            out.push_back(static_cast<char>(c));
          }
        }
        out.push_back('"');
        pos += 1 + len;
      }
      return out;
    }
    default:
      break;
  }
  // RFC 3597's generic form.
  std::string out = absl::StrCat("\\# ", r.size());
  if (!r.empty()) out += " ";
  static const char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : r) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

std::string BuildQuery(std::string_view name_wire, uint16_t type, uint16_t id,
                       uint16_t edns_payload) {
  std::string q;
  auto put16 = [&](uint16_t v) {
    q.push_back(static_cast<char>(v >> 8));
    q.push_back(static_cast<char>(v));
  };
  put16(id);
  put16(0);
  put16(1);
  put16(0);
  put16(0);
  put16(edns_payload != 0 ? 1 : 0);
  q += name_wire;
  put16(type);
  put16(kClassIN);
  if (edns_payload != 0) {
    q.push_back(0);
    put16(kTypeOPT);
    put16(edns_payload);
    put16(0);
    put16(0);
    put16(0);
  }
  return q;
}

// ---- MessageWriter

void MessageWriter::StartResponse(const Query& q, uint8_t rcode, bool authoritative,
                                  bool echo_question) {
  size_ = kHeaderSize;
  counts_[0] = counts_[1] = counts_[2] = 0;
  compression_entries_ = 0;
  id_ = q.id;
  flags_ =
      static_cast<uint16_t>(kFlagQR | (q.flags & (0x7800 | kFlagRD | kFlagCD)) | (rcode & 0xf));
  if (authoritative) flags_ |= kFlagAA;
  qdcount_ = 0;
  if (echo_question && q.qname_len > 0) {
    // The question's labels become compression targets (their case is the
    // client's, which answers that point at them keep).
    size_t at = size_;
    if (!Put(q.qname, q.qname_len) || !Put16(q.qtype) || !Put16(q.qclass)) {
      size_ = kHeaderSize;
      return;
    }
    size_t pos = 0;
    while (q.qname[pos] != 0 && compression_entries_ < kMaxCompression && at + pos < 0x4000) {
      compression_[compression_entries_++] = static_cast<uint16_t>(at + pos);
      pos += 1 + static_cast<uint8_t>(q.qname[pos]);
    }
    qdcount_ = 1;
  }
}

void MessageWriter::SetRcode(uint8_t rcode) {
  flags_ = static_cast<uint16_t>((flags_ & ~0xf) | (rcode & 0xf));
}

bool MessageWriter::Put(const void* p, size_t n) {
  if (size_ + n > limit_) return false;
  std::memcpy(buf_ + size_, p, n);
  size_ += n;
  return true;
}
bool MessageWriter::Put16(uint16_t v) {
  uint8_t b[2] = {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  return Put(b, 2);
}
bool MessageWriter::Put32(uint32_t v) {
  uint8_t b[4] = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                  static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  return Put(b, 4);
}

bool MessageWriter::NameAtEquals(size_t offset, std::string_view suffix) const {
  size_t s = 0;
  int hops = 0;
  while (true) {
    uint8_t len = buf_[offset];
    if ((len & 0xc0) == 0xc0) {
      if (++hops > 64) return false;
      offset = ((len & 0x3f) << 8) | buf_[offset + 1];
      continue;
    }
    if (s >= suffix.size() || static_cast<uint8_t>(suffix[s]) != len) return false;
    if (len == 0) return s + 1 == suffix.size();
    for (size_t i = 1; i <= len; ++i) {
      if (Lower(static_cast<char>(buf_[offset + i])) != Lower(suffix[s + i])) return false;
    }
    s += 1 + len;
    offset += 1 + len;
  }
}

bool MessageWriter::WriteName(std::string_view wire) {
  // Find the longest suffix already in the message.
  size_t pos = 0;
  size_t match_pos = wire.size();  // where the compressed tail starts
  uint16_t match_offset = 0;
  while (pos < wire.size() && wire[pos] != 0) {
    std::string_view suffix = wire.substr(pos);
    for (size_t i = 0; i < compression_entries_; ++i) {
      if (NameAtEquals(compression_[i], suffix)) {
        match_pos = pos;
        match_offset = compression_[i];
        break;
      }
    }
    if (match_pos != wire.size()) break;
    pos += 1 + static_cast<uint8_t>(wire[pos]);
  }
  size_t start = size_;
  size_t literal = match_pos == wire.size() ? wire.size() : match_pos;
  if (!Put(wire.data(), literal)) return false;
  if (match_pos != wire.size() && !Put16(static_cast<uint16_t>(0xc000 | match_offset))) {
    size_ = start;
    return false;
  }
  // The labels written literally become targets for later names.
  for (size_t p = 0; p < literal && wire[p] != 0; p += 1 + static_cast<uint8_t>(wire[p])) {
    if (compression_entries_ >= kMaxCompression || start + p >= 0x4000) break;
    compression_[compression_entries_++] = static_cast<uint16_t>(start + p);
  }
  return true;
}

MessageWriter::Mark MessageWriter::mark() const {
  return Mark{size_, {counts_[0], counts_[1], counts_[2]}, compression_entries_};
}

void MessageWriter::Rollback(const Mark& m) {
  size_ = m.size;
  for (int i = 0; i < 3; ++i) counts_[i] = m.counts[i];
  compression_entries_ = m.compression_entries;
}

bool MessageWriter::AddRecord(Section section, std::string_view owner, uint16_t type, uint32_t ttl,
                              std::string_view rdata, uint16_t klass) {
  // Sections follow each other on the wire: a record for an earlier
  // section after a later one has started would land in the wrong one.
  for (int later = static_cast<int>(section) + 1; later < 3; ++later) {
    if (counts_[later] != 0) return false;
  }
  Mark m = mark();
  auto fail = [&] {
    Rollback(m);
    return false;
  };
  if (!WriteName(owner) || !Put16(type) || !Put16(klass) || !Put32(ttl)) return fail();
  size_t len_at = size_;
  if (!Put16(0)) return fail();
  bool ok = true;
  switch (type) {
    case kTypeNS:
    case kTypeCNAME:
    case kTypePTR:
      ok = WriteName(rdata);
      break;
    case kTypeMX:
      ok = rdata.size() >= 3 && Put(rdata.data(), 2) && WriteName(rdata.substr(2));
      break;
    case kTypeSOA: {
      size_t n1 = 0;
      while (n1 < rdata.size() && rdata[n1] != 0) n1 += 1 + static_cast<uint8_t>(rdata[n1]);
      ++n1;
      size_t n2 = n1;
      while (n2 < rdata.size() && rdata[n2] != 0) n2 += 1 + static_cast<uint8_t>(rdata[n2]);
      ++n2;
      ok = n2 + 20 == rdata.size() && WriteName(rdata.substr(0, n1)) &&
           WriteName(rdata.substr(n1, n2 - n1)) && Put(rdata.data() + n2, 20);
      break;
    }
    default:
      ok = Put(rdata.data(), rdata.size());
  }
  if (!ok) return fail();
  size_t len = size_ - len_at - 2;
  buf_[len_at] = static_cast<uint8_t>(len >> 8);
  buf_[len_at + 1] = static_cast<uint8_t>(len);
  ++counts_[static_cast<int>(section)];
  return true;
}

bool MessageWriter::AddOpt(uint16_t payload, uint16_t extended_rcode, uint8_t version) {
  Mark m = mark();
  uint8_t root = 0;
  uint32_t ttl =
      (uint32_t{static_cast<uint8_t>(extended_rcode >> 4)} << 24) | (uint32_t{version} << 16);
  if (!Put(&root, 1) || !Put16(kTypeOPT) || !Put16(payload) || !Put32(ttl) || !Put16(0)) {
    Rollback(m);
    return false;
  }
  ++counts_[static_cast<int>(Section::kAdditional)];
  return true;
}

size_t MessageWriter::Finish() {
  uint16_t words[6] = {id_, flags_, qdcount_, counts_[0], counts_[1], counts_[2]};
  for (int i = 0; i < 6; ++i) {
    buf_[2 * i] = static_cast<uint8_t>(words[i] >> 8);
    buf_[2 * i + 1] = static_cast<uint8_t>(words[i]);
  }
  return size_;
}

}  // namespace capstan::gateway::dns
