#include "experiments/events.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/ascii_swar.h"
#include "base/status.h"
#include "nlohmann/json.hpp"

namespace capstan::experiments {
namespace {

using JsonValue = nlohmann::ordered_json;

// Which fields each type takes: required (R), optional (O) or refused (-).
//              key exp unit variant metric value numerator denominator ts
// exposure      R   R   R     R      -      -       -          -       R
// conversion    R   R   R     O      R      -       -          -       R
// value         R   R   R     O      R      R       -          -       R
// ratio         R   R   R     O      R      -       R          R       R
constexpr std::string_view kKnownFields[] = {"type",        "key",    "experiment", "unit",
                                             "variant",     "metric", "value",      "numerator",
                                             "denominator", "ts"};

// An identifier's rules, shared by the decoders and CheckEvent: 1 to
// kMaxEventIdBytes bytes, no control characters. The store keys these with
// NUL separators; control characters also make logs and results unreadable.
// nullptr when fine, else what is wrong.
const char* IdProblem(std::string_view s) {
  if (s.empty() || s.size() > kMaxEventIdBytes) return "must be 1 to 128 bytes";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return "must not contain control characters";
  }
  return nullptr;
}
static_assert(kMaxEventIdBytes == 128, "IdProblem's message names the limit");

bool ValidEventNumber(double d) { return std::isfinite(d) && std::fabs(d) <= kMaxEventAbsValue; }
constexpr std::string_view kNumberProblem =
    "must be a finite number with absolute value at most 1e15";
constexpr std::string_view kTimestampTooLarge =
    "must be at most 2^53 (milliseconds since the epoch)";

// Whether `s` is well-formed UTF-8 (what a JSON text must be; CheckEvent
// holds typed events to it too).
bool ValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p != end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    size_t extra = 0;
    uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      extra = 1, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) <= extra) return false;
    for (size_t i = 1; i <= extra; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((extra == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (extra == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
      return false;
    }
    p += extra + 1;
  }
  return true;
}

class LineDecoder {
 public:
  LineDecoder(size_t line, EventDecodeError* error) : line_(line), error_(error) {}

  bool Fail(std::string_view field, std::string_view message) {
    error_->line = line_;
    error_->field = std::string(field);
    error_->message = std::string(message);
    return false;
  }

  bool Decode(std::string_view text, Event* event) {
    JsonValue doc = JsonValue::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return Fail("(line)", "is not valid JSON");
    if (!doc.is_object()) return Fail("(line)", "must be a JSON object");
    for (const auto& [name, value] : doc.items()) {
      bool known = false;
      for (std::string_view k : kKnownFields) known = known || name == k;
      if (!known) return Fail(name.empty() ? "(empty name)" : name, "unknown field");
    }
    const JsonValue* type = Find(doc, "type");
    if (type == nullptr) return Fail("type", "is required");
    if (!type->is_string()) return Fail("type", "must be a string");
    const std::string& name = type->get_ref<const std::string&>();
    if (name == "exposure") {
      event->type = EventType::kExposure;
    } else if (name == "conversion") {
      event->type = EventType::kConversion;
    } else if (name == "value") {
      event->type = EventType::kValue;
    } else if (name == "ratio") {
      event->type = EventType::kRatio;
    } else {
      return Fail("type", "must be one of exposure, conversion, value, ratio");
    }
    bool exposure = event->type == EventType::kExposure;
    if (!Id(doc, "key", true, &event->key) || !Id(doc, "experiment", true, &event->experiment) ||
        !Id(doc, "unit", true, &event->unit) || !Id(doc, "variant", exposure, &event->variant)) {
      return false;
    }
    if (exposure) {
      if (!Absent(doc, "metric")) return false;
    } else if (!Id(doc, "metric", true, &event->metric)) {
      return false;
    }
    switch (event->type) {
      case EventType::kExposure:
      case EventType::kConversion:
        if (!Absent(doc, "value") || !Absent(doc, "numerator") || !Absent(doc, "denominator")) {
          return false;
        }
        event->value = 0;
        break;
      case EventType::kValue:
        if (!Number(doc, "value", &event->value) || !Absent(doc, "numerator") ||
            !Absent(doc, "denominator")) {
          return false;
        }
        break;
      case EventType::kRatio:
        if (!Absent(doc, "value") || !Number(doc, "numerator", &event->value) ||
            !Number(doc, "denominator", &event->denominator)) {
          return false;
        }
        break;
    }
    const JsonValue* ts = Find(doc, "ts");
    if (ts == nullptr) return Fail("ts", "is required");
    if (ts->is_number_unsigned()) {
      uint64_t v = ts->get<uint64_t>();
      if (v > static_cast<uint64_t>(kMaxEventTimestampMs)) {
        return Fail("ts", kTimestampTooLarge);
      }
      event->timestamp_ms = static_cast<int64_t>(v);
    } else if (ts->is_number_integer()) {
      return Fail("ts", "must not be negative");
    } else {
      return Fail("ts", "must be an integer (milliseconds since the epoch)");
    }
    return true;
  }

 private:
  static const JsonValue* Find(const JsonValue& doc, std::string_view name) {
    auto it = doc.find(std::string(name));
    return it == doc.end() ? nullptr : &*it;
  }

  bool Absent(const JsonValue& doc, std::string_view name) {
    if (Find(doc, name) == nullptr) return true;
    return Fail(name, absl::StrCat("is not allowed on this event type"));
  }

  bool Id(const JsonValue& doc, std::string_view name, bool required, std::string* out) {
    const JsonValue* v = Find(doc, name);
    if (v == nullptr) {
      out->clear();
      return required ? Fail(name, "is required") : true;
    }
    if (!v->is_string()) return Fail(name, "must be a string");
    const std::string& s = v->get_ref<const std::string&>();
    if (const char* problem = IdProblem(s)) return Fail(name, problem);
    *out = s;
    return true;
  }

  bool Number(const JsonValue& doc, std::string_view name, double* out) {
    const JsonValue* v = Find(doc, name);
    if (v == nullptr) return Fail(name, "is required");
    if (!v->is_number()) return Fail(name, "must be a number");
    double d = v->get<double>();
    if (!ValidEventNumber(d)) return Fail(name, kNumberProblem);
    *out = d;
    return true;
  }

  size_t line_;
  EventDecodeError* error_;
};

// The fast path for the common shape of a line: one flat object whose
// strings are printable ASCII without escapes, numbers in JSON's grammar, no
// field twice. It decodes only lines that are valid events and says nothing
// about the others: DecodeEventBatch then hands the line to LineDecoder,
// which accepts what it accepts (escapes, UTF-8, ...) and words the errors.
// So both paths accept exactly the same lines and give the same events.
class FastLineDecoder {
 public:
  // Whether the line was a valid event (then *event holds it).
  static bool Decode(std::string_view text, EventRef* event) {
    FastLineDecoder d(text);
    return d.Parse(event);
  }

 private:
  enum Field : uint8_t {
    kType,
    kKey,
    kExperiment,
    kUnit,
    kVariant,
    kMetric,
    kValue,
    kNumerator,
    kDenominator,
    kTs,
    kUnknown,
  };

  explicit FastLineDecoder(std::string_view text)
      : p_(text.data()), end_(text.data() + text.size()) {}

  void SkipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) ++p_;
  }

  // A string without escapes, control characters or non-ASCII bytes.
  bool String(std::string_view* out) {
    if (p_ == end_ || *p_ != '"') return false;
    const char* start = ++p_;
    // Eight bytes at a time while none ends the string or is one the byte
    // loop below would stop at.
    while (end_ - p_ >= 8) {
      const uint64_t x = swar::Load8(p_);
      if (swar::HasNonPrintable(x) || swar::HasByte(x, '"') || swar::HasByte(x, '\\')) break;
      p_ += 8;
    }
    while (p_ != end_) {
      unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        *out = std::string_view(start, static_cast<size_t>(p_ - start));
        ++p_;
        return true;
      }
      if (c < 0x20 || c >= 0x7f || c == '\\') return false;
      ++p_;
    }
    return false;
  }

  // A number in JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  bool Number(double* out) {
    const char* start = p_;
    if (p_ != end_ && *p_ == '-') ++p_;
    if (p_ == end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    } else {
      return false;
    }
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    auto [ptr, ec] = std::from_chars(start, p_, *out);
    if (ec != std::errc() || ptr != p_) return false;
    if (*out == 0) *out = 0;  // "-0" is the integer 0 to nlohmann, not -0.0
    return true;
  }

  // ts: a non-negative integer up to 2^53 (16 digits at most).
  bool Timestamp(int64_t* out) {
    const char* start = p_;
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    size_t digits = static_cast<size_t>(p_ - start);
    if (digits == 0 || digits > 16 || (digits > 1 && *start == '0')) return false;
    if (p_ != end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) return false;
    int64_t v = 0;
    for (const char* c = start; c != p_; ++c) v = v * 10 + (*c - '0');
    if (v > kMaxEventTimestampMs) return false;
    *out = v;
    return true;
  }

  static Field FieldOf(std::string_view name) {
    switch (name.size()) {
      case 2:
        return name == "ts" ? kTs : kUnknown;
      case 3:
        return name == "key" ? kKey : kUnknown;
      case 4:
        if (name == "type") return kType;
        if (name == "unit") return kUnit;
        return kUnknown;
      case 5:
        return name == "value" ? kValue : kUnknown;
      case 6:
        return name == "metric" ? kMetric : kUnknown;
      case 7:
        return name == "variant" ? kVariant : kUnknown;
      case 9:
        return name == "numerator" ? kNumerator : kUnknown;
      case 10:
        return name == "experiment" ? kExperiment : kUnknown;
      case 11:
        return name == "denominator" ? kDenominator : kUnknown;
      default:
        return kUnknown;
    }
  }

  static bool ValidId(std::string_view s) { return !s.empty() && s.size() <= kMaxEventIdBytes; }
  static bool ValidNumber(double d) {
    return std::isfinite(d) && std::fabs(d) <= kMaxEventAbsValue;
  }

  bool Parse(EventRef* event) {
    std::string_view strings[kValue] = {};  // type .. metric
    double numbers[3] = {};                 // value, numerator, denominator
    int64_t ts = 0;
    uint32_t seen = 0;
    SkipSpace();
    if (p_ == end_ || *p_ != '{') return false;
    ++p_;
    SkipSpace();
    if (p_ != end_ && *p_ == '}') return false;  // {}: let the full decoder word it
    while (true) {
      SkipSpace();
      std::string_view name;
      if (!String(&name)) return false;
      Field field = FieldOf(name);
      if (field == kUnknown || (seen & (1u << field)) != 0) return false;
      seen |= 1u << field;
      SkipSpace();
      if (p_ == end_ || *p_ != ':') return false;
      ++p_;
      SkipSpace();
      if (field < kValue) {
        if (!String(&strings[field])) return false;
      } else if (field < kTs) {
        if (!Number(&numbers[field - kValue])) return false;
      } else if (!Timestamp(&ts)) {
        return false;
      }
      SkipSpace();
      if (p_ == end_) return false;
      if (*p_ == '}') break;
      if (*p_ != ',') return false;
      ++p_;
    }
    ++p_;
    SkipSpace();
    if (p_ != end_) return false;

    auto has = [&](Field f) { return (seen & (1u << f)) != 0; };
    std::string_view type = strings[kType];
    uint32_t allowed = (1u << kType) | (1u << kKey) | (1u << kExperiment) | (1u << kUnit) |
                       (1u << kVariant) | (1u << kTs);
    uint32_t required =
        (1u << kType) | (1u << kKey) | (1u << kExperiment) | (1u << kUnit) | (1u << kTs);
    if (type == "exposure") {
      event->type = EventType::kExposure;
      required |= 1u << kVariant;
    } else if (type == "conversion") {
      event->type = EventType::kConversion;
      required |= 1u << kMetric;
    } else if (type == "value") {
      event->type = EventType::kValue;
      required |= (1u << kMetric) | (1u << kValue);
    } else if (type == "ratio") {
      event->type = EventType::kRatio;
      required |= (1u << kMetric) | (1u << kNumerator) | (1u << kDenominator);
    } else {
      return false;
    }
    allowed |= required;
    if ((seen & required) != required || (seen & ~allowed) != 0) return false;
    for (Field f : {kKey, kExperiment, kUnit, kVariant, kMetric}) {
      if (has(f) && !ValidId(strings[f])) return false;
    }
    for (int i = 0; i < 3; ++i) {
      if (!ValidNumber(numbers[i])) return false;
    }
    event->key = strings[kKey];
    event->experiment = strings[kExperiment];
    event->unit = strings[kUnit];
    event->variant = strings[kVariant];
    event->metric = strings[kMetric];
    event->value =
        event->type == EventType::kRatio ? numbers[kNumerator - kValue] : numbers[kValue - kValue];
    event->denominator = numbers[kDenominator - kValue];
    event->timestamp_ms = ts;
    return true;
  }

  const char* p_;
  const char* end_;
};

absl::Status ErrorStatus(const EventDecodeError& e) {
  if (e.line == 0) return absl::InvalidArgumentError(absl::StrCat(e.field, ": ", e.message));
  return absl::InvalidArgumentError(absl::StrCat("line ", e.line, ": ", e.field, ": ", e.message));
}

}  // namespace

std::string_view EventTypeName(EventType type) {
  switch (type) {
    case EventType::kExposure:
      return "exposure";
    case EventType::kConversion:
      return "conversion";
    case EventType::kValue:
      return "value";
    case EventType::kRatio:
      return "ratio";
  }
  return "exposure";
}

EventRef RefOf(const Event& event) {
  return EventRef{event.type,   event.key,   event.experiment,  event.unit,        event.variant,
                  event.metric, event.value, event.denominator, event.timestamp_ms};
}

Event EventOf(const EventRef& ref) {
  return Event{ref.type,
               std::string(ref.key),
               std::string(ref.experiment),
               std::string(ref.unit),
               std::string(ref.variant),
               std::string(ref.metric),
               ref.value,
               ref.denominator,
               ref.timestamp_ms};
}

std::vector<EventRef> RefsOf(const std::vector<Event>& events) {
  std::vector<EventRef> refs;
  refs.reserve(events.size());
  for (const Event& event : events) refs.push_back(RefOf(event));
  return refs;
}

std::vector<Event> EventsOf(std::span<const EventRef> refs) {
  std::vector<Event> events;
  events.reserve(refs.size());
  for (const EventRef& ref : refs) events.push_back(EventOf(ref));
  return events;
}

absl::Status DecodeEventBatchRefs(std::string_view body, EventBatchRefs* batch,
                                  EventDecodeError* error) {
  EventDecodeError local;
  EventDecodeError* e = error != nullptr ? error : &local;
  auto fail_body = [&](std::string_view message) {
    e->line = 0;
    e->field = "(body)";
    e->message = std::string(message);
    return ErrorStatus(*e);
  };
  batch->clear();
  if (body.size() > kMaxEventBatchBytes) {
    return fail_body(absl::StrCat("is over ", kMaxEventBatchBytes, " bytes"));
  }
  std::vector<EventRef>& events = batch->events;
  events.reserve(std::min(kMaxEventsPerBatch, body.size() / 64 + 1));
  size_t line = 0;
  while (!body.empty()) {
    ++line;
    size_t end = body.find('\n');
    std::string_view text = body.substr(0, end);
    body = end == std::string_view::npos ? std::string_view() : body.substr(end + 1);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.find_first_not_of(" \t") == std::string_view::npos) continue;
    LineDecoder decoder(line, e);
    if (text.size() > kMaxEventLineBytes) {
      decoder.Fail("(line)", absl::StrCat("is over ", kMaxEventLineBytes, " bytes"));
      return ErrorStatus(*e);
    }
    if (events.size() == kMaxEventsPerBatch) {
      decoder.Fail("(line)",
                   absl::StrCat("is past the batch limit of ", kMaxEventsPerBatch, " events"));
      return ErrorStatus(*e);
    }
    EventRef& event = events.emplace_back();
    if (!FastLineDecoder::Decode(text, &event)) {
      Event& slow = batch->slow_lines.emplace_back();
      if (!decoder.Decode(text, &slow)) return ErrorStatus(*e);
      event = RefOf(slow);  // deque: its address stays
    }
  }
  if (events.empty()) return fail_body("has no events");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Event>> DecodeEventBatch(std::string_view body,
                                                    EventDecodeError* error) {
  EventBatchRefs batch;
  RETURN_IF_ERROR(DecodeEventBatchRefs(body, &batch, error));
  return EventsOf(batch.events);
}

bool DecodeEventLineFast(std::string_view line, Event* event) {
  EventRef ref;
  if (!FastLineDecoder::Decode(line, &ref)) return false;
  *event = EventOf(ref);
  return true;
}

absl::StatusOr<Event> DecodeEventLineReference(std::string_view line) {
  EventDecodeError error;
  LineDecoder decoder(1, &error);
  Event event;
  if (!decoder.Decode(line, &event)) return ErrorStatus(error);
  return event;
}

bool CheckEvent(Event* event, size_t line, EventDecodeError* error) {
  auto fail = [&](std::string_view field, std::string_view message) {
    error->line = line;
    error->field = std::string(field);
    error->message = std::string(message);
    return false;
  };
  auto id = [&](std::string_view field, std::string_view value, bool required) {
    if (value.empty() && !required) return true;
    if (value.empty() && event->type == EventType::kExposure && field == "variant") {
      return fail(field, "is required");
    }
    if (const char* problem = IdProblem(value)) return fail(field, problem);
    if (!ValidUtf8(value)) return fail(field, "must be valid UTF-8");
    return true;
  };
  const bool exposure = event->type == EventType::kExposure;
  if (!id("key", event->key, true) || !id("experiment", event->experiment, true) ||
      !id("unit", event->unit, true) || !id("variant", event->variant, exposure)) {
    return false;
  }
  if (exposure) {
    event->metric.clear();
  } else if (!id("metric", event->metric, true)) {
    return false;
  }
  switch (event->type) {
    case EventType::kExposure:
    case EventType::kConversion:
      event->value = 0;
      event->denominator = 0;
      break;
    case EventType::kValue:
      if (!ValidEventNumber(event->value)) return fail("value", kNumberProblem);
      event->denominator = 0;
      break;
    case EventType::kRatio:
      if (!ValidEventNumber(event->value)) return fail("numerator", kNumberProblem);
      if (!ValidEventNumber(event->denominator)) return fail("denominator", kNumberProblem);
      break;
  }
  if (event->value == 0) event->value = 0;  // -0 is 0, as the decoder reads it
  if (event->denominator == 0) event->denominator = 0;
  if (event->timestamp_ms < 0) return fail("ts", "must not be negative");
  if (event->timestamp_ms > kMaxEventTimestampMs) return fail("ts", kTimestampTooLarge);
  return true;
}

std::string EncodeEvent(const Event& event) {
  JsonValue doc = JsonValue::object();
  doc["type"] = std::string(EventTypeName(event.type));
  doc["key"] = event.key;
  doc["experiment"] = event.experiment;
  doc["unit"] = event.unit;
  if (!event.variant.empty()) doc["variant"] = event.variant;
  if (event.type != EventType::kExposure) doc["metric"] = event.metric;
  if (event.type == EventType::kValue) doc["value"] = event.value;
  if (event.type == EventType::kRatio) {
    doc["numerator"] = event.value;
    doc["denominator"] = event.denominator;
  }
  doc["ts"] = static_cast<uint64_t>(event.timestamp_ms);
  return doc.dump();
}

}  // namespace capstan::experiments
