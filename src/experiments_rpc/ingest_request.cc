#include "experiments_rpc/ingest_request.h"

#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/ascii_swar.h"

namespace capstan::experiments_rpc {
namespace {

namespace v1 = ::capstan::experiments::v1;
using experiments::Event;
using experiments::EventDecodeError;
using experiments::EventRef;
using experiments::EventType;

// The proto path of a field the event decoder named (events.h's JSON names).
std::string ProtoField(const Event& event, const std::string& field) {
  if (field == "ts") return "timestamp_ms";
  if (field == "variant") return event.type == EventType::kExposure ? "exposure.variant" : field;
  const std::string kind(experiments::EventTypeName(event.type));
  if (field == "metric") return kind + ".metric";
  if (field == "value") return "value.value";
  if (field == "numerator" || field == "denominator") return "ratio." + field;
  return field;
}

// ---- The fast path's wire reading. Every reader advances `p` on success;
// false means "not the common shape", never more.

static_assert(std::endian::native == std::endian::little,
              "fixed64 doubles are read as the host's own (the wire is little-endian)");

// A varint of at most `max_bytes` bytes. Longer (or non-terminated)
// encodings go to protobuf's parser, which knows their every rule.
inline bool ReadVarint(const uint8_t*& p, const uint8_t* end, int max_bytes, uint64_t* out) {
  uint64_t value = 0;
  for (int i = 0; i < max_bytes && p != end; ++i) {
    uint8_t b = *p++;
    value |= uint64_t{b & 0x7fu} << (7 * i);
    if (b < 0x80) {
      *out = value;
      return true;
    }
  }
  return false;
}

// A length-delimited field's bytes (lengths below 2^21: requests are at
// most a few MiB, and protobuf handles the rest).
inline bool ReadLengthDelimited(const uint8_t*& p, const uint8_t* end, std::string_view* out) {
  uint64_t n = 0;
  if (!ReadVarint(p, end, 3, &n) || n > static_cast<uint64_t>(end - p)) return false;
  *out = std::string_view(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  p += n;
  return true;
}

// Whether every byte of `s` is printable ASCII, eight at a time.
inline bool AllPrintableAscii(std::string_view s) {
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    if (swar::HasNonPrintable(swar::Load8(s.data() + i))) return false;
  }
  if (i == s.size()) return true;
  uint64_t tail = 0x6161616161616161ULL;  // 'a's where the string has no bytes
  std::memcpy(&tail, s.data() + i, s.size() - i);
  return !swar::HasNonPrintable(tail);
}

// An identifier CheckEvent accepts, of the shape the fast path takes: 1 to
// kMaxEventIdBytes bytes of printable ASCII (so valid UTF-8, as proto3 wants,
// and free of control characters, as CheckEvent wants), referred to where
// it is in the request's bytes.
inline bool ReadId(const uint8_t*& p, const uint8_t* end, std::string_view* out) {
  std::string_view s;
  if (!ReadLengthDelimited(p, end, &s) || s.empty() || s.size() > experiments::kMaxEventIdBytes ||
      !AllPrintableAscii(s)) {
    return false;
  }
  *out = s;
  return true;
}

// A fixed64 double CheckEvent accepts (finite, |x| <= 1e15), -0 as 0.
inline bool ReadNumber(const uint8_t*& p, const uint8_t* end, double* out) {
  if (end - p < 8) return false;
  double d;
  std::memcpy(&d, p, sizeof d);
  p += 8;
  if (!(std::fabs(d) <= experiments::kMaxEventAbsValue)) return false;  // NaN fails too
  *out = d == 0 ? 0 : d;
  return true;
}

// The oneof's message: field 1 (Exposure.variant or the metric) into *id,
// required; then up to `numbers` doubles, fields 2 and 3 (Value.value;
// Ratio.numerator, Ratio.denominator), optional (absent is 0, as proto3's).
bool ReadKind(std::string_view body, int numbers, std::string_view* id, double* first = nullptr,
              double* second = nullptr) {
  const auto* p = reinterpret_cast<const uint8_t*>(body.data());
  const auto* end = p + body.size();
  bool have_id = false, have_first = false, have_second = false;
  while (p != end) {
    uint8_t tag = *p++;
    if (tag == 0x0a && !have_id) {  // 1, LEN
      if (!ReadId(p, end, id)) return false;
      have_id = true;
    } else if (tag == 0x11 && numbers >= 1 && !have_first) {  // 2, I64
      if (!ReadNumber(p, end, first)) return false;
      have_first = true;
    } else if (tag == 0x19 && numbers >= 2 && !have_second) {  // 3, I64
      if (!ReadNumber(p, end, second)) return false;
      have_second = true;
    } else {
      return false;
    }
  }
  return have_id;
}

// One Event message, parsed and checked as EventsFromProto would, into *e
// (a default EventRef, then referring to `body`).
bool ReadEvent(std::string_view body, EventRef* e) {
  const auto* p = reinterpret_cast<const uint8_t*>(body.data());
  const auto* end = p + body.size();
  uint32_t seen = 0;  // bit N: field N was read (each at most once)
  uint8_t kind_tag = 0;
  std::string_view kind_body;
  while (p != end) {
    uint8_t tag = *p++;
    if (tag >= 0x80) return false;  // a field beyond 15, or a tag in more bytes
    uint32_t field_bit = 1u << (tag >> 3);
    if ((seen & field_bit) != 0) return false;
    seen |= field_bit;
    switch (tag) {
      case 0x0a:  // key = 1
        if (!ReadId(p, end, &e->key)) return false;
        break;
      case 0x12:  // experiment = 2
        if (!ReadId(p, end, &e->experiment)) return false;
        break;
      case 0x1a:  // unit = 3
        if (!ReadId(p, end, &e->unit)) return false;
        break;
      case 0x20: {  // timestamp_ms = 4, VARINT; at most 8 bytes (< 2^56, so not negative)
        uint64_t ts = 0;
        if (!ReadVarint(p, end, 8, &ts) ||
            ts > static_cast<uint64_t>(experiments::kMaxEventTimestampMs)) {
          return false;
        }
        e->timestamp_ms = static_cast<int64_t>(ts);
        break;
      }
      case 0x2a:                          // exposure = 5
      case 0x32:                          // conversion = 6
      case 0x3a:                          // value = 7
      case 0x42:                          // ratio = 8
        if (kind_tag != 0) return false;  // another member of the oneof: protobuf keeps the last
        kind_tag = tag;
        if (!ReadLengthDelimited(p, end, &kind_body)) return false;
        break;
      case 0x4a:  // variant = 9 (metric events)
        if (!ReadId(p, end, &e->variant)) return false;
        break;
      default:
        return false;
    }
  }
  constexpr uint32_t kRequired = (1u << 1) | (1u << 2) | (1u << 3);  // key, experiment, unit
  if ((seen & kRequired) != kRequired) return false;
  switch (kind_tag) {
    case 0x2a:
      // An exposure's variant is exposure.variant; `variant` is an error.
      if ((seen & (1u << 9)) != 0) return false;
      e->type = EventType::kExposure;
      return ReadKind(kind_body, 0, &e->variant);
    case 0x32:
      e->type = EventType::kConversion;
      return ReadKind(kind_body, 0, &e->metric);
    case 0x3a:
      e->type = EventType::kValue;
      return ReadKind(kind_body, 1, &e->metric, &e->value);
    case 0x42:
      e->type = EventType::kRatio;
      return ReadKind(kind_body, 2, &e->metric, &e->value, &e->denominator);
    default:
      return false;  // no kind: an error
  }
}

}  // namespace

absl::StatusOr<std::vector<Event>> EventsFromProto(const v1::IngestEventsRequest& request) {
  // Counted first, so an oversized batch costs nothing.
  if (request.events_size() == 0) return absl::InvalidArgumentError("events: has no events");
  if (static_cast<size_t>(request.events_size()) > experiments::kMaxEventsPerBatch) {
    return absl::InvalidArgumentError(absl::StrCat("events: has ", request.events_size(),
                                                   " events; at most ",
                                                   experiments::kMaxEventsPerBatch));
  }
  std::vector<Event> events;
  events.reserve(static_cast<size_t>(request.events_size()));
  for (int i = 0; i < request.events_size(); ++i) {
    const v1::Event& in = request.events(i);
    Event e;
    e.key = in.key();
    e.experiment = in.experiment();
    e.unit = in.unit();
    e.timestamp_ms = in.timestamp_ms();
    if (in.timestamp_ms() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("events[", i, "].timestamp_ms: must not be negative"));
    }
    switch (in.kind_case()) {
      case v1::Event::kExposure:
        if (!in.variant().empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("events[", i, "].variant: exposures carry theirs in exposure.variant"));
        }
        e.type = EventType::kExposure;
        e.variant = in.exposure().variant();
        break;
      case v1::Event::kConversion:
        e.type = EventType::kConversion;
        e.metric = in.conversion().metric();
        break;
      case v1::Event::kValue:
        e.type = EventType::kValue;
        e.metric = in.value().metric();
        e.value = in.value().value();
        break;
      case v1::Event::kRatio:
        e.type = EventType::kRatio;
        e.metric = in.ratio().metric();
        e.value = in.ratio().numerator();
        e.denominator = in.ratio().denominator();
        break;
      case v1::Event::KIND_NOT_SET:
        return absl::InvalidArgumentError(absl::StrCat(
            "events[", i, "].kind: must be one of exposure, conversion, value, ratio"));
    }
    if (e.type != EventType::kExposure) e.variant = in.variant();
    // The decoder's rules on the typed event (no JSON in between).
    EventDecodeError error;
    if (!experiments::CheckEvent(&e, static_cast<size_t>(i) + 1, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("events[", i, "].", ProtoField(e, error.field), ": ", error.message));
    }
    events.push_back(std::move(e));
  }
  return events;
}

bool DecodeIngestEventsFast(std::string_view bytes, std::vector<EventRef>* events) {
  const auto* begin = reinterpret_cast<const uint8_t*>(bytes.data());
  const auto* end = begin + bytes.size();
  // First the events' count (what the limit and the vector need): the
  // request is field 1 (events, LEN) repeated and nothing else.
  size_t count = 0;
  for (const uint8_t* p = begin; p != end; ++count) {
    std::string_view skipped;
    if (*p++ != 0x0a || !ReadLengthDelimited(p, end, &skipped)) return false;
  }
  // No events, or too many: EventsFromProto words those errors.
  if (count == 0 || count > experiments::kMaxEventsPerBatch) return false;
  events->clear();
  // Each event built where it is filled, while its cache lines are hot (a
  // resize first would write the batch's ~100 KB twice).
  events->reserve(count);
  const uint8_t* p = begin;
  for (size_t i = 0; i < count; ++i) {
    std::string_view body;
    ++p;  // the 0x0a the count pass saw
    if (!ReadLengthDelimited(p, end, &body) || !ReadEvent(body, &events->emplace_back())) {
      return false;
    }
  }
  return true;
}

bool DecodeIngestEventsFast(std::string_view bytes, std::vector<Event>* events) {
  std::vector<EventRef> refs;
  if (!DecodeIngestEventsFast(bytes, &refs)) return false;
  *events = experiments::EventsOf(refs);
  return true;
}

absl::Status DecodeIngestEventsRequest(std::string_view bytes, IngestEventsBatch* batch,
                                       bool* unparsable) {
  if (unparsable != nullptr) *unparsable = false;
  batch->owned.clear();
  if (DecodeIngestEventsFast(bytes, &batch->events)) return absl::OkStatus();
  batch->events.clear();
  v1::IngestEventsRequest request;
  if (bytes.size() > static_cast<size_t>(INT_MAX) ||
      !request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    if (unparsable != nullptr) *unparsable = true;
    return absl::InvalidArgumentError("request payload does not parse as " + request.GetTypeName());
  }
  absl::StatusOr<std::vector<Event>> events = EventsFromProto(request);
  if (!events.ok()) return events.status();
  batch->owned = *std::move(events);
  batch->events = experiments::RefsOf(batch->owned);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Event>> DecodeIngestEventsRequest(std::string_view bytes,
                                                             bool* unparsable) {
  IngestEventsBatch batch;
  absl::Status status = DecodeIngestEventsRequest(bytes, &batch, unparsable);
  if (!status.ok()) return status;
  return experiments::EventsOf(batch.events);
}

}  // namespace capstan::experiments_rpc
