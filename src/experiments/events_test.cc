// The event batch decoder: every kind decodes, the canonical line round-trips,
// and each kind of bad input is refused with the line and field it names.
#include "experiments/events.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

TEST(EventDecoder, DecodesEveryTypeAndRoundTrips) {
  std::string body =
      R"({"type":"exposure","key":"k1","experiment":"e","unit":"u1","variant":"control","ts":1700000000000})"
      "\n\n"
      R"({"type":"conversion","key":"k2","experiment":"e","unit":"u1","metric":"buy","ts":1})"
      "\r\n"
      R"({"type":"value","key":"k3","experiment":"e","unit":"u1","variant":"b","metric":"rev","value":-2.5,"ts":2})"
      "\n"
      R"({"type":"ratio","key":"k4","experiment":"e","unit":"u1","metric":"ctr","numerator":3,"denominator":10,"ts":3})"
      "\n";
  absl::StatusOr<std::vector<Event>> events = DecodeEventBatch(body);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[0].type, EventType::kExposure);
  EXPECT_EQ((*events)[0].variant, "control");
  EXPECT_EQ((*events)[0].timestamp_ms, 1700000000000);
  EXPECT_EQ((*events)[1].type, EventType::kConversion);
  EXPECT_EQ((*events)[1].metric, "buy");
  EXPECT_EQ((*events)[2].value, -2.5);
  EXPECT_EQ((*events)[3].value, 3);
  EXPECT_EQ((*events)[3].denominator, 10);
  for (const Event& e : *events) {
    absl::StatusOr<std::vector<Event>> again = DecodeEventBatch(EncodeEvent(e));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->at(0), e) << EncodeEvent(e);
  }
}

struct BadCase {
  std::string body;
  size_t line;
  std::string field;
};

TEST(EventDecoder, ErrorsNameLineAndField) {
  const std::string good =
      R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":1})";
  const BadCase cases[] = {
      {"", 0, "(body)"},
      {"\n\n", 0, "(body)"},
      {good + "\n{", 2, "(line)"},
      {good + "\n[1]", 2, "(line)"},
      {good + "\n" + good + "\n" + R"({"type":"exposure"})", 3, "key"},
      {R"({"type":"click","key":"k","experiment":"e","unit":"u","ts":1})", 1, "type"},
      {R"({"type":1})", 1, "type"},
      {R"({"key":"k"})", 1, "type"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"u","ts":1})", 1, "variant"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"","variant":"v","ts":1})", 1,
       "unit"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"a\u0000b","variant":"v","ts":1})",
       1, "unit"},
      {R"({"type":"exposure","key":")" + std::string(kMaxEventIdBytes + 1, 'x') +
           R"(","experiment":"e","unit":"u","variant":"v","ts":1})",
       1, "key"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":1,"x":2})", 1,
       "x"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","":1,"ts":1})", 1,
       "(empty name)"},  // found by event_batch_fuzz
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","metric":"m","ts":1})",
       1, "metric"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":-1})", 1,
       "ts"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":1.5})", 1,
       "ts"},
      {R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v"})", 1, "ts"},
      {R"({"type":"conversion","key":"k","experiment":"e","unit":"u","ts":1})", 1, "metric"},
      {R"({"type":"conversion","key":"k","experiment":"e","unit":"u","metric":"m","value":1,"ts":1})",
       1, "value"},
      {R"({"type":"value","key":"k","experiment":"e","unit":"u","metric":"m","ts":1})", 1, "value"},
      {R"({"type":"value","key":"k","experiment":"e","unit":"u","metric":"m","value":"1","ts":1})",
       1, "value"},
      {R"({"type":"value","key":"k","experiment":"e","unit":"u","metric":"m","value":1e16,"ts":1})",
       1, "value"},
      {R"({"type":"ratio","key":"k","experiment":"e","unit":"u","metric":"m","numerator":1,"ts":1})",
       1, "denominator"},
      {R"({"type":"ratio","key":"k","experiment":"e","unit":"u","metric":"m","value":1,"numerator":1,"denominator":1,"ts":1})",
       1, "value"},
      {std::string("{\"type\":\"exposure\",\"key\":\"") + std::string(kMaxEventLineBytes, 'k') +
           "\"}",
       1, "(line)"},
  };
  for (const BadCase& c : cases) {
    EventDecodeError error;
    absl::StatusOr<std::vector<Event>> events = DecodeEventBatch(c.body, &error);
    ASSERT_FALSE(events.ok()) << c.body;
    EXPECT_EQ(events.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(error.line, c.line) << c.body << " -> " << events.status();
    EXPECT_EQ(error.field, c.field) << c.body << " -> " << events.status();
    if (c.line > 0) {
      EXPECT_EQ(std::string(events.status().message())
                    .rfind("line " + std::to_string(c.line) + ": " + c.field + ": ", 0),
                0u)
          << events.status();
    }
  }
}

TEST(EventDecoder, EnforcesBatchLimits) {
  const std::string line =
      R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":1})"
      "\n";
  std::string at_limit;
  for (size_t i = 0; i < kMaxEventsPerBatch; ++i) at_limit += line;
  absl::StatusOr<std::vector<Event>> ok = DecodeEventBatch(at_limit);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), kMaxEventsPerBatch);
  EventDecodeError error;
  EXPECT_FALSE(DecodeEventBatch(at_limit + line, &error).ok());
  EXPECT_EQ(error.line, kMaxEventsPerBatch + 1);
  EXPECT_EQ(error.field, "(line)");
  EXPECT_FALSE(DecodeEventBatch(std::string(kMaxEventBatchBytes + 1, '\n'), &error).ok());
  EXPECT_EQ(error.field, "(body)");
}

// The fast path decodes the common shape itself (it must not hand every line
// to the reference decoder, or it is not the fast path).
TEST(EventDecoder, FastPathTakesTheCommonShape) {
  const std::string lines[] = {
      R"({"type":"exposure","key":"k1","experiment":"e","unit":"u1","variant":"control","ts":1700000000000})",
      R"( { "type" : "conversion" , "key":"k2","experiment":"e","unit":"u1","metric":"buy","ts":0 } )",
      R"({"ts":2,"type":"value","key":"k3","experiment":"e","unit":"u1","variant":"b","metric":"rev","value":-2.5e-3})",
      R"({"type":"ratio","key":"k4","experiment":"e","unit":"u1","metric":"ctr","numerator":3,"denominator":10.25,"ts":9007199254740992})",
  };
  for (const std::string& line : lines) {
    Event fast;
    ASSERT_TRUE(DecodeEventLineFast(line, &fast)) << line;
    absl::StatusOr<Event> reference = DecodeEventLineReference(line);
    ASSERT_TRUE(reference.ok()) << reference.status();
    EXPECT_EQ(fast, *reference) << line;
  }
  // Outside its shape it declines, and the reference decides.
  Event ignored;
  for (
      std::string_view line : {
          R"({"type":"exposure","key":"k\u0031","experiment":"e","unit":"u","variant":"v","ts":1})",
          R"({"type":"exposure","key":"k","key":"k2","experiment":"e","unit":"u","variant":"v","ts":1})",
          R"({"type":"exposure","key":"ké","experiment":"e","unit":"u","variant":"v","ts":1})",
          R"({"type":"value","key":"k","experiment":"e","unit":"u","metric":"m","value":1e16,"ts":1})",
          R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":1.0})",
          R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":01})",
      }) {
    EXPECT_FALSE(DecodeEventLineFast(line, &ignored)) << line;
  }
}

// The ingestion path's decoding: events refer to the body (fast path) or to
// the events the reference decoder made of the lines it declined, and say
// what DecodeEventBatch says.
TEST(EventDecoder, BatchRefsReferToTheBodyOrToTheirSlowLines) {
  const std::string body =
      R"({"type":"exposure","key":"k1","experiment":"e","unit":"u1","variant":"control","ts":1})"
      "\n\n"
      R"({"type":"value","key":"k\u0032","experiment":"e","unit":"u1","metric":"m","value":2,"ts":3})"
      "\r\n"
      R"({"type":"conversion","key":"k3","experiment":"e","unit":"u2","metric":"buy","ts":4})";
  EventBatchRefs batch;
  ASSERT_TRUE(DecodeEventBatchRefs(body, &batch).ok());
  ASSERT_EQ(batch.events.size(), 3u);
  ASSERT_EQ(batch.slow_lines.size(), 1u);  // the escaped key
  auto in_body = [&](std::string_view s) {
    return s.data() >= body.data() && s.data() + s.size() <= body.data() + body.size();
  };
  EXPECT_TRUE(in_body(batch.events[0].key) && in_body(batch.events[0].variant));
  EXPECT_EQ(batch.events[1].key, "k2");
  EXPECT_EQ(batch.events[1].key.data(), batch.slow_lines[0].key.data());
  EXPECT_TRUE(in_body(batch.events[2].metric));
  absl::StatusOr<std::vector<Event>> events = DecodeEventBatch(body);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), batch.events.size());
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i], EventOf(batch.events[i]));
  // Reused for the next batch; an error leaves nothing to refer to.
  EventDecodeError error;
  absl::Status bad = DecodeEventBatchRefs(R"({"type":"exposure"})", &batch, &error);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(error.line, 1u);
  ASSERT_TRUE(DecodeEventBatchRefs(body.substr(0, body.find('\n')), &batch).ok());
  EXPECT_EQ(batch.events.size(), 1u);
  EXPECT_TRUE(batch.slow_lines.empty());
}

// Every byte the fast path must not take in a string (quote, backslash,
// control characters, DEL, non-ASCII), at every position of a 48-byte key:
// at each of them inside an 8-byte word the fast path scans whole (the byte
// loop takes over from the word holding it). Either it refuses the line or
// it agrees with the reference decoder (a quote ends the key early, making
// another line).
TEST(EventDecoder, FastPathJudgesEveryByteOfLongStrings) {
  const std::string key(48, 'k');
  for (unsigned char special : {'"', '\\', '\x01', '\x1f', '\x7f', '\x80', '\xc3', '\xff'}) {
    for (size_t at = 0; at < key.size(); ++at) {
      std::string mutated = key;
      mutated[at] = static_cast<char>(special);
      std::string line = R"({"type":"exposure","key":")" + mutated +
                         R"(","experiment":"e","unit":"u1","variant":"control","ts":1})";
      Event fast;
      bool took = DecodeEventLineFast(line, &fast);
      EXPECT_FALSE(took) << "byte " << int{special} << " at " << at;
    }
  }
  Event fast;
  ASSERT_TRUE(
      DecodeEventLineFast(R"({"type":"exposure","key":")" + key +
                              R"(","experiment":"e","unit":"u1","variant":"control","ts":1})",
                          &fast));
  EXPECT_EQ(fast.key, key);
}

// Differential: lines mutated at random (bytes replaced, inserted, deleted,
// fields duplicated) never make the fast path accept what the reference
// refuses, or decode to another event. The seed is printed on failure.
TEST(EventDecoder, FastPathAgreesWithTheReferenceOnMutatedLines) {
  const std::string seeds[] = {
      R"({"type":"exposure","key":"k1","experiment":"e","unit":"u1","variant":"control","ts":1700000000000})",
      R"({"type":"conversion","key":"k2","experiment":"e","unit":"u1","metric":"buy","ts":1})",
      R"({"type":"value","key":"k3","experiment":"e","unit":"u1","variant":"b","metric":"rev","value":-2.5,"ts":2})",
      R"({"type":"ratio","key":"k4","experiment":"e","unit":"u1","metric":"ctr","numerator":3,"denominator":10,"ts":3})",
      // Strings of 16 bytes and more (the fast path scans those 16 at a time).
      R"({"type":"exposure","key":"key-0123456789abcdefghijklmnopqrstuvwxyz","experiment":"checkout-experiment-2026","unit":"user-0123456789-abcdef-0123456789","variant":"treatment-variant-b","ts":1700000000000})",
  };
  const std::string alphabet = "{}[]:,\"\\ -+.eE0123456789tfnulx\t\r\x7f\xc3\xa9";
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  int fast_accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string line = seeds[rng() % std::size(seeds)];
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      size_t at = rng() % (line.size() + 1);
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 4) {
        case 0:
          if (at < line.size()) line[at] = c;
          break;
        case 1:
          line.insert(line.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        case 2:
          if (at < line.size()) line.erase(at, 1);
          break;
        default:
          line.insert(1, R"("key":"dup",)");
          break;
      }
    }
    Event fast;
    if (!DecodeEventLineFast(line, &fast)) continue;
    ++fast_accepted;
    absl::StatusOr<Event> reference = DecodeEventLineReference(line);
    ASSERT_TRUE(reference.ok()) << "seed " << seed << ": " << line << ": " << reference.status();
    ASSERT_EQ(fast, *reference) << "seed " << seed << ": " << line;
  }
  EXPECT_GT(fast_accepted, 0);
}

}  // namespace
}  // namespace capstan::experiments

namespace capstan::experiments {
namespace {

// CheckEvent (typed events, no JSON) against the decoder on the event's JSON
// line: the same verdict, the same field named, and on acceptance the same
// normalized event. Random typed events with every field sometimes broken.
TEST(EventDecoder, CheckEventAgreesWithTheDecoderOnTypedEvents) {
  std::mt19937_64 rng(17);
  auto pick_id = [&]() -> std::string {
    switch (rng() % 12) {
      case 0:
        return "";
      case 1:
        return std::string(129, 'x');
      case 2:
        return std::string(128, 'y');
      case 3:
        return "bad\x01id";
      case 4:
        return "del\x7f";
      case 5:
        return "caf\xc3\xa9 \xe2\x82\xac";  // UTF-8: é €
      default:
        return "id" + std::to_string(rng() % 1000);
    }
  };
  auto pick_number = [&]() -> double {
    switch (rng() % 10) {
      case 0:
        return std::numeric_limits<double>::infinity();
      case 1:
        return std::nan("");
      case 2:
        return 1e15;
      case 3:
        return -1.0000001e15;
      case 4:
        return -0.0;
      default:
        return static_cast<double>(static_cast<int64_t>(rng() % 20001) - 10000) / 8;
    }
  };
  int accepted = 0;
  int refused = 0;
  for (int i = 0; i < 20000; ++i) {
    Event e;
    e.type = static_cast<EventType>(rng() % 4);
    e.key = pick_id();
    e.experiment = pick_id();
    e.unit = pick_id();
    e.variant = rng() % 3 == 0 ? "" : pick_id();
    e.metric = rng() % 4 == 0 ? "" : pick_id();
    e.value = pick_number();
    e.denominator = pick_number();
    switch (rng() % 8) {
      case 0:
        e.timestamp_ms = -1;
        break;
      case 1:
        e.timestamp_ms = kMaxEventTimestampMs + 1;
        break;
      case 2:
        e.timestamp_ms = kMaxEventTimestampMs;
        break;
      default:
        e.timestamp_ms = static_cast<int64_t>(rng() % 2000000000000);
    }
    // The JSON line of the typed event as the RPC API used to build it:
    // fields that do not belong to the type left out (EncodeEvent does).
    const std::string line = EncodeEvent(e);
    EventDecodeError want_error;
    absl::StatusOr<std::vector<Event>> want = DecodeEventBatch(line, &want_error);
    Event got = e;
    EventDecodeError got_error;
    const bool ok = CheckEvent(&got, 1, &got_error);
    ASSERT_EQ(ok, want.ok()) << line << "\n" << got_error.field << ": " << got_error.message;
    if (ok) {
      ++accepted;
      ASSERT_EQ(got, want->at(0)) << line;
    } else {
      ++refused;
      EXPECT_EQ(got_error.line, 1u);
      ASSERT_EQ(got_error.field, want_error.field) << line;
      if (want_error.field != "value" && want_error.field != "numerator" &&
          want_error.field != "denominator" && e.timestamp_ms >= 0) {
        // Numbers: NaN and infinity reach the decoder as null ("must be a
        // number"), a negative ts as a huge unsigned one (EncodeEvent's
        // cast); CheckEvent words them as out of range and negative. Else
        // the same words.
        EXPECT_EQ(got_error.message, want_error.message) << line;
      }
    }
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}

TEST(EventDecoder, CheckEventRefusesMalformedUtf8) {
  Event e{.type = EventType::kExposure,
          .key = "k",
          .experiment = "e",
          .unit = "u\xc3",
          .variant = "v",
          .timestamp_ms = 1};
  EventDecodeError error;
  EXPECT_FALSE(CheckEvent(&e, 3, &error));
  EXPECT_EQ(error.line, 3u);
  EXPECT_EQ(error.field, "unit");
  EXPECT_EQ(error.message, "must be valid UTF-8");
  e.unit = "u\xed\xa0\x80";  // a UTF-16 surrogate encoded: not UTF-8
  EXPECT_FALSE(CheckEvent(&e, 1, &error));
  e.unit = "u\xf0\x9f\x98\x80";  // U+1F600
  EXPECT_TRUE(CheckEvent(&e, 1, &error));
}

}  // namespace
}  // namespace capstan::experiments
