// DNS wire format (RFC 1035 section 4, EDNS0 from RFC 6891): names, the
// query parser the server's hot path uses, a full message parser (tests,
// the fuzz target) and the response writer with name compression.
//
// Names are kept in uncompressed wire form ("\3www\7example\3com\0") as
// std::string or byte spans; comparisons are ASCII case-insensitive
// (RFC 4343) and the case a name was written with is kept.
//
//   dns::Query q;
//   if (dns::ParseQuery(packet, &q) == dns::QueryParse::kOk) { ... }
//   uint8_t out[512];
//   dns::MessageWriter w(out, sizeof(out));
//   w.StartResponse(q, dns::kRcodeNoError, /*authoritative=*/true);
//   w.AddRecord(dns::Section::kAnswer, owner, dns::kTypeA, 3600, rdata);
//
// Thread-safety: plain functions and values; a writer belongs to its caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace capstan::gateway::dns {

// Record types (the ones the server knows by name).
inline constexpr uint16_t kTypeA = 1;
inline constexpr uint16_t kTypeNS = 2;
inline constexpr uint16_t kTypeCNAME = 5;
inline constexpr uint16_t kTypeSOA = 6;
inline constexpr uint16_t kTypePTR = 12;
inline constexpr uint16_t kTypeHINFO = 13;
inline constexpr uint16_t kTypeMX = 15;
inline constexpr uint16_t kTypeTXT = 16;
inline constexpr uint16_t kTypeAAAA = 28;
inline constexpr uint16_t kTypeSRV = 33;
inline constexpr uint16_t kTypeOPT = 41;
inline constexpr uint16_t kTypeDS = 43;
inline constexpr uint16_t kTypeIXFR = 251;
inline constexpr uint16_t kTypeAXFR = 252;
inline constexpr uint16_t kTypeANY = 255;
inline constexpr uint16_t kClassIN = 1;
inline constexpr uint16_t kClassANY = 255;

inline constexpr uint8_t kRcodeNoError = 0;
inline constexpr uint8_t kRcodeFormErr = 1;
inline constexpr uint8_t kRcodeServFail = 2;
inline constexpr uint8_t kRcodeNxDomain = 3;
inline constexpr uint8_t kRcodeNotImp = 4;
inline constexpr uint8_t kRcodeRefused = 5;
inline constexpr uint16_t kRcodeBadVers = 16;  // extended (EDNS)

// Header flag bits (the second 16-bit word).
inline constexpr uint16_t kFlagQR = 0x8000;
inline constexpr uint16_t kFlagAA = 0x0400;
inline constexpr uint16_t kFlagTC = 0x0200;
inline constexpr uint16_t kFlagRD = 0x0100;
inline constexpr uint16_t kFlagRA = 0x0080;
inline constexpr uint16_t kFlagCD = 0x0010;

inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMaxNameWire = 255;
inline constexpr size_t kMaxLabel = 63;
inline constexpr size_t kMaxMessage = 65535;

// "A", "TYPE65280" and back; 0 for an unknown mnemonic.
std::string TypeName(uint16_t type);
uint16_t TypeFromName(std::string_view mnemonic);

// Lower-cases the ASCII letters of a wire name in place (length bytes are
// below 64 and never letters).
void LowerName(char* wire, size_t len);
std::string LowerName(std::string_view wire);
bool NamesEqual(std::string_view a, std::string_view b);
// "www.example.com." (escaping dots, backslashes and bytes outside
// printable ASCII as RFC 1035 does); the root is ".".
std::string NameToText(std::string_view wire);
// Parses an absolute presentation name ("www.example.com.", escapes
// \X and \DDD allowed); a name without the final dot is relative to
// `origin` (a wire name). "@" is the origin.
absl::StatusOr<std::string> NameFromText(std::string_view text, std::string_view origin);
// Labels of a wire name (the root has 0).
int LabelCount(std::string_view wire);
// Whether `name` equals `zone` or lies below it (both wire, any case).
bool IsSubdomain(std::string_view name, std::string_view zone);

// Reads a possibly compressed name starting at `pos`: appends its
// uncompressed wire form to `out` (up to 255 bytes) and returns the offset
// just after it in `message`. Pointers must point backwards (so a loop is
// impossible) and the name must fit 255 bytes.
absl::StatusOr<size_t> ReadName(std::string_view message, size_t pos, std::string* out);

// ---- the query, as the server reads it
struct Query {
  uint16_t id = 0;
  uint16_t flags = 0;  // as received
  uint8_t opcode = 0;
  char qname[kMaxNameWire];  // wire form, case as sent
  uint8_t qname_len = 0;
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  // EDNS (RFC 6891): an OPT record in the additional section.
  bool has_edns = false;
  uint16_t udp_payload = 512;  // the client's, at least 512
  uint8_t edns_version = 0;
  bool dnssec_ok = false;
  std::string_view qname_view() const { return {qname, qname_len}; }
};

enum class QueryParse {
  kOk,
  kDrop,     // not worth an answer: shorter than a header, or a response (QR set)
  kFormErr,  // answer FORMERR (the header's id and opcode are valid)
  kNotImp,   // an opcode other than QUERY: answer NOTIMP
};
// Parses a query: one question, an optional OPT. Answers, authority and
// other additional records are skipped (their syntax is still checked).
QueryParse ParseQuery(std::string_view packet, Query* query);

// ---- full messages (tests, the fuzz target, the differential test)
struct ResourceRecord {
  std::string name;  // wire, uncompressed
  uint16_t type = 0;
  uint16_t klass = 0;
  uint32_t ttl = 0;
  // Names inside the rdata of NS, CNAME, PTR, MX, SOA and SRV are
  // decompressed, so equal records have equal bytes.
  std::string rdata;
  bool operator==(const ResourceRecord&) const = default;
};
struct Question {
  std::string name;
  uint16_t type = 0;
  uint16_t klass = 0;
};
struct Message {
  uint16_t id = 0;
  uint16_t flags = 0;  // opcode and rcode bits included
  std::vector<Question> questions;
  std::vector<ResourceRecord> answers, authority, additional;  // OPT kept in additional
  uint8_t rcode() const { return flags & 0xf; }
};
absl::StatusOr<Message> ParseMessage(std::string_view wire);
// Rdata of a record as text, in master-file syntax ("10 mail.example.com.").
std::string RdataToText(uint16_t type, std::string_view rdata);

// A query for (name, type, IN) with RD clear; with an OPT advertising
// `edns_payload` when it is non-zero. For tests, seeds and tools.
std::string BuildQuery(std::string_view name_wire, uint16_t type, uint16_t id,
                       uint16_t edns_payload = 0);

// ---- writing responses
enum class Section : uint8_t { kAnswer, kAuthority, kAdditional };

class MessageWriter {
 public:
  // Writes into buf; the message never grows beyond `limit` bytes.
  MessageWriter(uint8_t* buf, size_t limit) : buf_(buf), limit_(limit) {}

  // A response to `q`: its id, opcode, RD and CD, the question as asked
  // (case preserved) unless the query had none to echo.
  void StartResponse(const Query& q, uint8_t rcode, bool authoritative, bool echo_question = true);
  void SetRcode(uint8_t rcode);
  void SetFlag(uint16_t flag) { flags_ |= flag; }
  void ClearFlag(uint16_t flag) { flags_ &= static_cast<uint16_t>(~flag); }
  // Appends a record; false (and nothing written) when it would pass the
  // limit. Names in NS/CNAME/PTR/MX/SOA rdata are compressed (RFC 3597
  // section 4 allows it only for these); `owner` is a wire name.
  bool AddRecord(Section section, std::string_view owner, uint16_t type, uint32_t ttl,
                 std::string_view rdata, uint16_t klass = kClassIN);
  // The OPT record: our payload size, extended rcode bits and version.
  bool AddOpt(uint16_t payload, uint16_t extended_rcode, uint8_t version);
  // Undo records added after a mark (a whole RRset that did not fit).
  struct Mark {
    size_t size;
    uint16_t counts[3];
    size_t compression_entries;
  };
  Mark mark() const;
  void Rollback(const Mark& m);
  // Writes the header; returns the message size.
  size_t Finish();
  size_t size() const { return size_; }
  // Raises or lowers the limit (room kept back for the OPT record).
  void set_limit(size_t limit) { limit_ = limit; }
  size_t limit() const { return limit_; }
  uint16_t count(Section s) const { return counts_[static_cast<int>(s)]; }

 private:
  bool WriteName(std::string_view wire);
  bool Put(const void* p, size_t n);
  bool Put16(uint16_t v);
  bool Put32(uint32_t v);
  // Whether the name at `offset` in the message (compressed or not) equals
  // the uncompressed `suffix`, ignoring case.
  bool NameAtEquals(size_t offset, std::string_view suffix) const;

  uint8_t* buf_;
  size_t limit_;
  size_t size_ = kHeaderSize;
  uint16_t id_ = 0;
  uint16_t flags_ = 0;
  uint16_t qdcount_ = 0;
  uint16_t counts_[3] = {0, 0, 0};
  // Offsets of names (and their suffixes) already in the message, for
  // compression; bounded so the search stays cheap.
  static constexpr size_t kMaxCompression = 64;
  uint16_t compression_[kMaxCompression];
  size_t compression_entries_ = 0;
};

}  // namespace capstan::gateway::dns
