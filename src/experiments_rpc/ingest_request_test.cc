// IngestEvents' wire decoder against protobuf's parser + EventsFromProto:
// random requests in the common shape (which the fast path must take),
// re-encoded with fields shuffled, repeated, unknown or in other wire types,
// with invalid values, and with bytes flipped, cut and inserted. Whatever
// the bytes, DecodeIngestEventsRequest answers what the reference answers,
// and the fast path, when it takes a request, gives the reference's events.
#include "experiments_rpc/ingest_request.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "gtest/gtest.h"

namespace capstan::experiments_rpc {
namespace {

namespace v1 = ::capstan::experiments::v1;
using experiments::Event;
using experiments::EventType;

// The reference: the protobuf-generated parser, then EventsFromProto.
absl::StatusOr<std::vector<Event>> Reference(const std::string& bytes, bool* unparsable) {
  v1::IngestEventsRequest request;
  *unparsable = !request.ParseFromString(bytes);
  if (*unparsable) {
    return absl::InvalidArgumentError("request payload does not parse as " + request.GetTypeName());
  }
  return EventsFromProto(request);
}

// Holds both decoders to the reference on `bytes`; returns whether the fast
// path took them.
bool ExpectSameAsReference(const std::string& bytes) {
  google::protobuf::LogSilencer quiet;  // "invalid UTF-8" is expected here
  bool reference_unparsable = false;
  absl::StatusOr<std::vector<Event>> reference = Reference(bytes, &reference_unparsable);
  bool unparsable = true;
  absl::StatusOr<std::vector<Event>> decoded = DecodeIngestEventsRequest(bytes, &unparsable);
  EXPECT_EQ(decoded.status(), reference.status());
  EXPECT_EQ(unparsable, reference_unparsable);
  if (decoded.ok() && reference.ok()) {
    EXPECT_TRUE(*decoded == *reference);
  }
  std::vector<Event> fast;
  bool took = DecodeIngestEventsFast(bytes, &fast);
  if (took) {
    EXPECT_TRUE(reference.ok()) << reference.status();
    if (reference.ok()) {
      EXPECT_TRUE(fast == *reference);
    }
  }
  return took;
}

class RandomRequests {
 public:
  explicit RandomRequests(uint64_t seed) : rng_(seed) {}

  int Below(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }
  bool OneIn(int n) { return Below(n) == 0; }

  // 1-40 bytes of printable ASCII.
  std::string Id() {
    std::string s(1 + Below(40), ' ');
    for (char& c : s) c = static_cast<char>(0x20 + Below(0x7f - 0x20));
    return s;
  }
  // An identifier that is mostly fine, sometimes not, sometimes not the
  // fast path's shape (valid or invalid UTF-8, control characters, empty,
  // at and past the 128-byte limit).
  std::string MaybeBadId() {
    switch (Below(12)) {
      case 0:
        return "";
      case 1:
        return std::string(128, 'a');
      case 2:
        return std::string(129, 'b');
      case 3:
        return Id() + "\x01";
      case 4:
        return Id() + "\x7f";
      case 5:
        return Id() + "\xc3\xa9";  // é: valid UTF-8, not ASCII
      case 6:
        return "\xff" + Id();  // not UTF-8 (protobuf refuses it in a proto3 string)
      default:
        return Id();
    }
  }
  double Number(bool bad) {
    if (bad) {
      switch (Below(5)) {
        case 0:
          return std::numeric_limits<double>::quiet_NaN();
        case 1:
          return -std::numeric_limits<double>::infinity();
        case 2:
          return 1e15 * 1.0000001;
        case 3:
          return -0.0;  // fine: becomes 0
        default:
          return 1e15;  // fine: at the limit
      }
    }
    return (static_cast<double>(rng_() % 2000001) - 1000000) / 8;
  }

  // A valid event in the common shape, or (bad) one with a random flaw.
  v1::Event MakeEvent(bool bad) {
    v1::Event e;
    auto id = [&] { return bad && OneIn(6) ? MaybeBadId() : Id(); };
    e.set_key(id());
    e.set_experiment(id());
    e.set_unit(id());
    e.set_timestamp_ms(
        bad && OneIn(8) ? (OneIn(2) ? -1 - Below(5) : experiments::kMaxEventTimestampMs + Below(2))
                        : 1700000000000 + Below(1000000));
    int kind = Below(bad ? 5 : 4);
    bool bad_number = bad && OneIn(4);
    switch (kind) {
      case 0:
        e.mutable_exposure()->set_variant(id());
        if (bad && OneIn(6)) e.set_variant(id());
        break;
      case 1:
        e.mutable_conversion()->set_metric(id());
        break;
      case 2:
        e.mutable_value()->set_metric(id());
        if (!OneIn(5)) e.mutable_value()->set_value(Number(bad_number));
        break;
      case 3:
        e.mutable_ratio()->set_metric(id());
        if (!OneIn(5)) e.mutable_ratio()->set_numerator(Number(bad_number && OneIn(2)));
        if (!OneIn(5)) e.mutable_ratio()->set_denominator(Number(bad_number));
        break;
      default:
        break;  // no kind
    }
    if (kind != 0 && OneIn(2)) e.set_variant(id());
    return e;
  }

  v1::IngestEventsRequest MakeRequest(bool bad) {
    v1::IngestEventsRequest request;
    int n = bad && OneIn(20) ? 0 : 1 + Below(20);
    for (int i = 0; i < n; ++i) *request.add_events() = MakeEvent(bad && OneIn(3));
    return request;
  }

  // The event's fields as separate one-field messages, concatenated in a
  // random order: the same message for protobuf (fields merge), another
  // encoding for the fast path. Sometimes a field twice (protobuf keeps
  // the last string, merges messages, switches the oneof), an unknown
  // field, or a known number in another wire type.
  std::string Reencode(const v1::Event& e) {
    std::vector<std::string> pieces;
    auto piece = [&](auto set) {
      v1::Event one;
      set(&one);
      pieces.push_back(one.SerializeAsString());
    };
    piece([&](v1::Event* o) { o->set_key(e.key()); });
    piece([&](v1::Event* o) { o->set_experiment(e.experiment()); });
    piece([&](v1::Event* o) { o->set_unit(e.unit()); });
    piece([&](v1::Event* o) { o->set_timestamp_ms(e.timestamp_ms()); });
    piece([&](v1::Event* o) { o->set_variant(e.variant()); });
    if (e.kind_case() != v1::Event::KIND_NOT_SET) {
      v1::Event kind = e;
      kind.clear_key(), kind.clear_experiment(), kind.clear_unit(), kind.clear_timestamp_ms(),
          kind.clear_variant();
      pieces.push_back(kind.SerializeAsString());
    }
    switch (Below(8)) {
      case 0:
        piece([&](v1::Event* o) { o->set_unit(Id()); });
        break;
      case 1:
        piece([&](v1::Event* o) { o->mutable_value()->set_value(Number(false)); });
        break;
      case 2:
        piece([&](v1::Event* o) { o->mutable_conversion()->set_metric(Id()); });
        break;
      case 3:
        pieces.push_back(std::string("\x50\x07", 2));  // field 10, varint: unknown
        break;
      case 4:
        pieces.push_back(std::string("\x08\x01", 2));  // field 1 as a varint
        break;
      case 5:
        pieces.push_back(std::string("\x20\x80\x00", 3));  // ts 0 in two bytes
        break;
      default:
        break;
    }
    std::shuffle(pieces.begin(), pieces.end(), rng_);
    std::string out;
    for (const std::string& p : pieces) out += p;
    return out;
  }

  std::string ReencodeRequest(const v1::IngestEventsRequest& request) {
    std::string out;
    for (const v1::Event& e : request.events()) {
      std::string body = OneIn(2) ? Reencode(e) : e.SerializeAsString();
      out += '\x0a';
      for (uint64_t n = body.size();; n >>= 7) {  // the length, as a varint
        out += static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
        if (n < 0x80) break;
      }
      out += body;
    }
    if (OneIn(10)) out += std::string("\x12\x01x", 3);  // field 2 of the request: unknown
    return out;
  }

  // Flipped, cut, inserted or removed bytes.
  std::string Mutate(std::string bytes) {
    int edits = 1 + Below(3);
    for (int i = 0; i < edits && !bytes.empty(); ++i) {
      size_t at = rng_() % bytes.size();
      switch (Below(4)) {
        case 0:
          bytes[at] = static_cast<char>(bytes[at] ^ (1 << Below(8)));
          break;
        case 1:
          bytes.resize(at);
          break;
        case 2:
          bytes.insert(at, 1, static_cast<char>(rng_()));
          break;
        default:
          bytes.erase(at, 1 + Below(4));
          break;
      }
    }
    return bytes;
  }

 private:
  std::mt19937_64 rng_;
};

TEST(IngestRequestTest, TheFastPathTakesTheCommonShapeAndAgreesWithProtobuf) {
  RandomRequests random(17);
  for (int i = 0; i < 2000; ++i) {
    SCOPED_TRACE(i);
    std::string bytes = random.MakeRequest(false).SerializeAsString();
    EXPECT_TRUE(ExpectSameAsReference(bytes)) << "the fast path refused a common request";
  }
}

TEST(IngestRequestTest, BadEventsOtherEncodingsAndMalformedBytesAnswerAsProtobuf) {
  RandomRequests random(1717);
  int fast = 0, refused = 0, unparsable = 0;
  for (int i = 0; i < 20000; ++i) {
    SCOPED_TRACE(i);
    v1::IngestEventsRequest request = random.MakeRequest(random.OneIn(2));
    google::protobuf::LogSilencer quiet;  // serializing invalid UTF-8 on purpose
    std::string bytes =
        random.OneIn(2) ? random.ReencodeRequest(request) : request.SerializeAsString();
    if (random.OneIn(3)) bytes = random.Mutate(std::move(bytes));
    fast += ExpectSameAsReference(bytes) ? 1 : 0;
    bool was_unparsable = false;
    auto reference = Reference(bytes, &was_unparsable);
    refused += reference.ok() ? 0 : 1;
    unparsable += was_unparsable ? 1 : 0;
  }
  // The mix reaches every outcome often.
  EXPECT_GT(fast, 2000);
  EXPECT_GT(refused - unparsable, 2000);
  EXPECT_GT(unparsable, 500);
}

TEST(IngestRequestTest, EveryKindDecodesFieldForField) {
  v1::IngestEventsRequest request;
  v1::Event* e = request.add_events();
  e->set_key("k1"), e->set_experiment("checkout"), e->set_unit("u1");
  e->set_timestamp_ms(1700000000000);
  e->mutable_exposure()->set_variant("green");
  e = request.add_events();
  e->set_key("k2"), e->set_experiment("checkout"), e->set_unit("u1"), e->set_variant("green");
  e->mutable_conversion()->set_metric("purchase");
  e = request.add_events();
  e->set_key("k3"), e->set_experiment("checkout"), e->set_unit("u1");
  e->mutable_value()->set_metric("revenue");
  e->mutable_value()->set_value(-0.0);
  e = request.add_events();
  e->set_key("k4"), e->set_experiment("checkout"), e->set_unit("u1");
  e->set_timestamp_ms(experiments::kMaxEventTimestampMs);
  e->mutable_ratio()->set_metric("ctr");
  e->mutable_ratio()->set_numerator(3);
  e->mutable_ratio()->set_denominator(-1e15);
  std::vector<Event> events;
  ASSERT_TRUE(DecodeIngestEventsFast(request.SerializeAsString(), &events));
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0], (Event{.type = EventType::kExposure,
                              .key = "k1",
                              .experiment = "checkout",
                              .unit = "u1",
                              .variant = "green",
                              .timestamp_ms = 1700000000000}));
  EXPECT_EQ(events[1], (Event{.type = EventType::kConversion,
                              .key = "k2",
                              .experiment = "checkout",
                              .unit = "u1",
                              .variant = "green",
                              .metric = "purchase"}));
  EXPECT_EQ(events[2].type, EventType::kValue);
  EXPECT_EQ(events[2].metric, "revenue");
  EXPECT_FALSE(std::signbit(events[2].value));  // -0 is 0, as CheckEvent makes it
  EXPECT_EQ(events[3], (Event{.type = EventType::kRatio,
                              .key = "k4",
                              .experiment = "checkout",
                              .unit = "u1",
                              .metric = "ctr",
                              .value = 3,
                              .denominator = -1e15,
                              .timestamp_ms = experiments::kMaxEventTimestampMs}));
  ExpectSameAsReference(request.SerializeAsString());
}

TEST(IngestRequestTest, ErrorsAreTheReferencesNamingEventAndField) {
  auto error_of = [](const std::string& bytes) {
    auto decoded = DecodeIngestEventsRequest(bytes);
    EXPECT_FALSE(decoded.ok());
    ExpectSameAsReference(bytes);
    return std::string(decoded.status().message());
  };
  v1::IngestEventsRequest request;
  v1::Event* e = request.add_events();
  e->set_key("k1"), e->set_experiment("checkout"), e->set_unit("u1");
  e->mutable_value()->set_metric("revenue");
  e->mutable_value()->set_value(std::numeric_limits<double>::infinity());
  EXPECT_EQ(error_of(request.SerializeAsString()),
            "events[0].value.value: must be a finite number with absolute value at most 1e15");
  e->mutable_exposure()->set_variant("green");
  e->set_variant("blue");
  EXPECT_EQ(error_of(request.SerializeAsString()),
            "events[0].variant: exposures carry theirs in exposure.variant");
  EXPECT_EQ(error_of(""), "events: has no events");
  std::string bytes = request.SerializeAsString();
  EXPECT_EQ(error_of(bytes.substr(0, bytes.size() - 1)),
            "request payload does not parse as capstan.experiments.v1.IngestEventsRequest");
}

TEST(IngestRequestTest, TheBatchLimitIsTheReferences) {
  v1::IngestEventsRequest request;
  for (size_t i = 0; i < experiments::kMaxEventsPerBatch; ++i) {
    v1::Event* e = request.add_events();
    e->set_key("k" + std::to_string(i)), e->set_experiment("x"), e->set_unit("u");
    e->mutable_conversion()->set_metric("m");
  }
  std::vector<Event> events;
  EXPECT_TRUE(DecodeIngestEventsFast(request.SerializeAsString(), &events));
  EXPECT_EQ(events.size(), experiments::kMaxEventsPerBatch);
  *request.add_events() = request.events(0);
  auto decoded = DecodeIngestEventsRequest(request.SerializeAsString());
  EXPECT_EQ(decoded.status().message(), "events: has 10001 events; at most 10000");
}

// The fast path's printable-ASCII check (eight bytes at a time) against the
// reference for every byte value at every position of identifiers of 1 to
// 20 bytes (so in a full word, in the tail, and at their edges), in each
// identifier field.
TEST(IngestRequestTest, EveryByteAtEveryPositionOfAnIdentifierAnswersAsTheReference) {
  for (size_t length = 1; length <= 20; ++length) {
    for (size_t at = 0; at < length; ++at) {
      for (int byte = 0; byte < 256; ++byte) {
        std::string id(length, 'a');
        id[at] = static_cast<char>(byte);
        for (int field = 0; field < 4; ++field) {
          v1::IngestEventsRequest request;
          v1::Event* e = request.add_events();
          e->set_key(field == 0 ? id : "k");
          e->set_experiment(field == 1 ? id : "x");
          e->set_unit(field == 2 ? id : "u");
          e->mutable_exposure()->set_variant(field == 3 ? id : "v");
          const bool printable = byte >= 0x20 && byte < 0x7f;
          std::vector<Event> fast;
          EXPECT_EQ(DecodeIngestEventsFast(request.SerializeAsString(), &fast), printable)
              << "length " << length << " at " << at << " byte " << byte << " field " << field;
          if (!printable && byte < 0x80) ExpectSameAsReference(request.SerializeAsString());
        }
      }
    }
  }
}

// Identifiers outside printable ASCII are not the fast path's; they are
// still decoded (valid UTF-8) or refused (control characters) as the
// reference does.
TEST(IngestRequestTest, IdentifiersBeyondAsciiGoThroughTheReference) {
  v1::IngestEventsRequest request;
  v1::Event* e = request.add_events();
  e->set_key("k1"), e->set_experiment("caf\xc3\xa9"), e->set_unit("u1");
  e->mutable_conversion()->set_metric("m");
  std::vector<Event> events;
  EXPECT_FALSE(DecodeIngestEventsFast(request.SerializeAsString(), &events));
  auto decoded = DecodeIngestEventsRequest(request.SerializeAsString());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ((*decoded)[0].experiment, "caf\xc3\xa9");
  e->set_unit("u\t1");
  decoded = DecodeIngestEventsRequest(request.SerializeAsString());
  EXPECT_EQ(decoded.status().message(), "events[0].unit: must not contain control characters");
}

}  // namespace
}  // namespace capstan::experiments_rpc
