#include "experiments/events.h"

#include <cmath>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
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
        return Fail("ts", "must be at most 2^53 (milliseconds since the epoch)");
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
    if (s.empty() || s.size() > kMaxEventIdBytes) {
      return Fail(name, absl::StrCat("must be 1 to ", kMaxEventIdBytes, " bytes"));
    }
    for (unsigned char c : s) {
      // The store keys these with NUL separators; control characters also
      // make logs and results unreadable.
      if (c < 0x20 || c == 0x7f) return Fail(name, "must not contain control characters");
    }
    *out = s;
    return true;
  }

  bool Number(const JsonValue& doc, std::string_view name, double* out) {
    const JsonValue* v = Find(doc, name);
    if (v == nullptr) return Fail(name, "is required");
    if (!v->is_number()) return Fail(name, "must be a number");
    double d = v->get<double>();
    if (!std::isfinite(d) || std::fabs(d) > kMaxEventAbsValue) {
      return Fail(name, "must be a finite number with absolute value at most 1e15");
    }
    *out = d;
    return true;
  }

  size_t line_;
  EventDecodeError* error_;
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

absl::StatusOr<std::vector<Event>> DecodeEventBatch(std::string_view body,
                                                    EventDecodeError* error) {
  EventDecodeError local;
  EventDecodeError* e = error != nullptr ? error : &local;
  auto fail_body = [&](std::string_view message) {
    e->line = 0;
    e->field = "(body)";
    e->message = std::string(message);
    return ErrorStatus(*e);
  };
  if (body.size() > kMaxEventBatchBytes) {
    return fail_body(absl::StrCat("is over ", kMaxEventBatchBytes, " bytes"));
  }
  std::vector<Event> events;
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
    Event event;
    if (!decoder.Decode(text, &event)) return ErrorStatus(*e);
    events.push_back(std::move(event));
  }
  if (events.empty()) return fail_body("has no events");
  return events;
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
