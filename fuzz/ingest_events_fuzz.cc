// Fuzz target: IngestEvents' request decoder (src/experiments_rpc/ingest_request.h).
// Any bytes must give what protobuf's parser + EventsFromProto give — the same
// events, or the same INVALID_ARGUMENT message — never a crash or a hang.
// The fast path, whenever it takes the bytes, gives the reference's events;
// every decoded event passes CheckEvent unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "experiments_rpc/ingest_request.h"
#include "google/protobuf/stubs/logging.h"

namespace ex = capstan::experiments;
namespace rpc = capstan::experiments_rpc;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  google::protobuf::LogSilencer quiet;  // "invalid UTF-8" logs are expected
  std::string bytes(reinterpret_cast<const char*>(data), size);
  capstan::experiments::v1::IngestEventsRequest request;
  bool parsed = request.ParseFromString(bytes);
  absl::StatusOr<std::vector<ex::Event>> reference =
      parsed ? rpc::EventsFromProto(request)
             : absl::InvalidArgumentError("request payload does not parse as " +
                                          request.GetTypeName());
  bool unparsable = false;
  absl::StatusOr<std::vector<ex::Event>> decoded =
      rpc::DecodeIngestEventsRequest(bytes, &unparsable);
  if (decoded.status() != reference.status() || unparsable == parsed) std::abort();
  if (decoded.ok() && !(*decoded == *reference)) std::abort();
  std::vector<ex::Event> fast;
  if (rpc::DecodeIngestEventsFast(bytes, &fast) && (!reference.ok() || !(fast == *reference))) {
    std::abort();
  }
  if (decoded.ok()) {
    if (decoded->empty() || decoded->size() > ex::kMaxEventsPerBatch) std::abort();
    ex::EventDecodeError error;
    for (const ex::Event& event : *decoded) {
      ex::Event checked = event;
      if (!ex::CheckEvent(&checked, 1, &error) || !(checked == event)) std::abort();
    }
  }
  return 0;
}
