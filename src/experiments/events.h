// Exposure and metric events, and the strict decoder of a batch of them sent
// as JSON lines (POST /v1/events; docs/experiments-events.md has the format).
//
// One JSON object per line:
//   {"type":"exposure","key":"k1","experiment":"checkout","unit":"u1","variant":"control","ts":1700000000000}
//   {"type":"conversion","key":"k2","experiment":"checkout","unit":"u1","metric":"purchase","ts":...}
//   {"type":"value","key":"k3","experiment":"checkout","unit":"u1","metric":"revenue","value":12.5,"ts":...}
//   {"type":"ratio","key":"k4","experiment":"checkout","unit":"u1","metric":"ctr","numerator":3,"denominator":10,"ts":...}
// `key` is the idempotency key: an event whose key was accepted before is
// not counted again. `variant` is required on exposures and optional (and
// ignored: units join their variant at exposure) on metric events.
//
// The decoder is strict: a batch with any bad line is refused whole, with an
// error naming the line (1-based) and the field; unknown fields, wrong types,
// fields that do not belong to the type, empty or oversized identifiers,
// control characters, non-finite or out-of-range numbers are all errors.
// Blank lines are skipped (they still count in line numbers).
//
// Thread-safety: every function is pure and reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace capstan::experiments {

// Limits, documented in docs/experiments-events.md. A batch is at most
// kMaxEventBatchBytes of body and kMaxEventsPerBatch events; a line at most
// kMaxEventLineBytes; identifiers (key, experiment, unit, variant, metric)
// 1..kMaxEventIdBytes bytes. Numbers are finite with |x| <= kMaxEventAbsValue
// so that sums of squares stay finite; ts is integer milliseconds since the
// epoch in [0, 2^53].
inline constexpr size_t kMaxEventBatchBytes = 1 << 20;
inline constexpr size_t kMaxEventsPerBatch = 10000;
inline constexpr size_t kMaxEventLineBytes = 4096;
inline constexpr size_t kMaxEventIdBytes = 128;
inline constexpr double kMaxEventAbsValue = 1e15;
inline constexpr int64_t kMaxEventTimestampMs = int64_t{1} << 53;

enum class EventType : uint8_t { kExposure = 0, kConversion = 1, kValue = 2, kRatio = 3 };

// "exposure", "conversion", "value", "ratio".
std::string_view EventTypeName(EventType type);

struct Event {
  EventType type = EventType::kExposure;
  std::string key;  // idempotency key
  std::string experiment;
  std::string unit;
  std::string variant;     // exposures: the unit's variant; else optional, ignored
  std::string metric;      // metric events only
  double value = 0;        // value: the number; ratio: the numerator; else 0
  double denominator = 0;  // ratio only
  int64_t timestamp_ms = 0;

  bool operator==(const Event&) const = default;
};

// The same event with its strings elsewhere — in a request's bytes, in an
// Event, in a log record: the ingestion path's form (decoding a batch into
// these copies no string and allocates nothing per event). Valid while what
// it refers to lives.
struct EventRef {
  EventType type = EventType::kExposure;
  std::string_view key;
  std::string_view experiment;
  std::string_view unit;
  std::string_view variant;
  std::string_view metric;
  double value = 0;
  double denominator = 0;
  int64_t timestamp_ms = 0;

  bool operator==(const EventRef&) const = default;
};

EventRef RefOf(const Event& event);
Event EventOf(const EventRef& ref);
// The same for a whole batch (tests, tools, the reference paths).
std::vector<EventRef> RefsOf(const std::vector<Event>& events);
std::vector<Event> EventsOf(std::span<const EventRef> refs);

// A batch decoded for the ingestion path: `events` refer to the body they
// were decoded from (the caller keeps it alive) and, for the rare line the
// fast path declines (escapes, non-ASCII text, fields in an unusual shape),
// to the event the reference decoder made of it, kept in `slow_lines`.
struct EventBatchRefs {
  std::vector<EventRef> events;
  std::deque<Event> slow_lines;

  void clear() {
    events.clear();
    slow_lines.clear();
  }
};

// Where a batch went wrong: line is 1-based (0 for the body as a whole),
// field is the JSON field ("(line)" for the line itself, "(body)" for the
// body).
struct EventDecodeError {
  size_t line = 0;
  std::string field;
  std::string message;
};

// Decodes a batch. On error returns InvalidArgument with the message
// "line N: FIELD: what is wrong" (or "(body): ..."), and fills *error when
// given.
absl::StatusOr<std::vector<Event>> DecodeEventBatch(std::string_view body,
                                                    EventDecodeError* error = nullptr);
// The same decoding into *batch (replaced), referring to `body`.
absl::Status DecodeEventBatchRefs(std::string_view body, EventBatchRefs* batch,
                                  EventDecodeError* error = nullptr);

// One line (no newline) by each of the batch decoder's two paths, for the
// differential test and the fuzzer. The fast path decodes only valid events
// in the common shape (printable ASCII strings without escapes, no field
// twice) and returns false for anything else; the reference decoder
// (nlohmann::json) takes every valid line and words every error. Whenever
// the fast path returns true, the reference gives the same event.
bool DecodeEventLineFast(std::string_view line, Event* event);
absl::StatusOr<Event> DecodeEventLineReference(std::string_view line);

// Checks a typed event (one that arrived without JSON, e.g. over RPC) by
// the decoder's rules — the same limits and the same error words, with the
// JSON field names ("ts", "numerator", ...) — and normalizes it as the
// decoder would produce it (fields that do not belong to its type cleared).
// Returns false and fills *error (line = `line`) on the first problem.
// An event the decoder would accept as a line passes, and one it refuses
// fails; events_test holds the two to that.
bool CheckEvent(Event* event, size_t line, EventDecodeError* error);

// The canonical JSON line of an event (no newline); DecodeEventBatch of it
// gives the event back.
std::string EncodeEvent(const Event& event);

}  // namespace capstan::experiments
