// IngestEvents' request (proto/capstan/experiments.proto's IngestEventsRequest)
// into the events the store appends, checked by the JSON-lines decoder's rules
// (experiments::CheckEvent) with errors naming the proto field
// ("events[2].ratio.denominator: must be a finite number ...").
//
// Two ways to the same answer:
//   * EventsFromProto: from a message the protobuf parser built (the
//     reference: every field, every error).
//   * DecodeIngestEventsFast: straight from the serialized bytes, in one pass
//     that parses, checks and fills each EventRef (its strings referred to
//     where they are in the request: nothing copied, no message objects). It takes the
//     common shape only: each field once, in the wire types the .proto gives,
//     no unknown fields, identifiers of printable ASCII, every event valid.
//     Anything else returns false and decides nothing.
// DecodeIngestEventsRequest tries the fast path and falls back to protobuf's
// parser + EventsFromProto, so its answer is the reference's by construction;
// ingest_request_test holds the fast path to that on random and malformed
// messages, and fuzz/ingest_events_fuzz.cc on whatever bytes a fuzzer finds.
//
// Thread-safety: pure functions, reentrant.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "capstan/experiments.pb.h"
#include "experiments/events.h"

namespace capstan::experiments_rpc {

// What a typed request becomes for the event store, and the proto field path
// of a check's error ("events[2].ratio.denominator: ...").
absl::StatusOr<std::vector<experiments::Event>> EventsFromProto(
    const ::capstan::experiments::v1::IngestEventsRequest& request);

// The request's wire bytes in the common shape (above) → true and *events
// (replaced) equal to what EventsFromProto gives for the parsed message,
// referring to `bytes`. False for anything else, valid or not: *events is
// then unspecified.
bool DecodeIngestEventsFast(std::string_view bytes, std::vector<experiments::EventRef>* events);
bool DecodeIngestEventsFast(std::string_view bytes, std::vector<experiments::Event>* events);

// A request's events for the store: `events` refer to the request's bytes
// (the fast path) or to `owned` (what the reference path made).
struct IngestEventsBatch {
  std::vector<experiments::EventRef> events;
  std::vector<experiments::Event> owned;
};

// Any bytes → the events, or INVALID_ARGUMENT: "request payload does not
// parse as capstan.experiments.v1.IngestEventsRequest" (the RPC server's
// words for a request that does not parse; *unparsable set to true) or
// EventsFromProto's error naming the event and field (*unparsable false).
absl::StatusOr<std::vector<experiments::Event>> DecodeIngestEventsRequest(
    std::string_view bytes, bool* unparsable = nullptr);
// The same into *batch (the service's path: no string copied on the fast path).
absl::Status DecodeIngestEventsRequest(std::string_view bytes, IngestEventsBatch* batch,
                                       bool* unparsable = nullptr);

}  // namespace capstan::experiments_rpc
