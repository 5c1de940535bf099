// Google Benchmark of IngestEvents' request decoding (a tool, not a test):
// the wire decoder (DecodeIngestEventsFast, what the service runs) against
// protobuf's parser + EventsFromProto (the reference), on a batch in the
// shape experiments_rpc_load sends (bench/experiments.sh row 6: 1000
// events, half exposures, half value events of the same units, keys and
// units past std::string's inline capacity). Items are events, so
// 1e9 / (ns per item) is events per second per core for this step alone.
//   build/release/src/experiments_rpc/ingest_request_bench
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "experiments_rpc/ingest_request.h"

namespace capstan::experiments_rpc {
namespace {

namespace v1 = ::capstan::experiments::v1;

std::string Batch(int events) {
  v1::IngestEventsRequest request;
  for (int i = 0; i < events / 2; ++i) {
    std::string unit = "rpc_events1-3-" + std::to_string(1000 + i / 7) + "-" + std::to_string(i);
    v1::Event* exposure = request.add_events();
    exposure->set_key("x" + unit);
    exposure->set_experiment("bench-exp");
    exposure->set_unit(unit);
    exposure->set_timestamp_ms(1700000000000);
    exposure->mutable_exposure()->set_variant(i % 2 == 0 ? "control" : "treatment");
    v1::Event* value = request.add_events();
    value->set_key("v" + unit);
    value->set_experiment("bench-exp");
    value->set_unit(unit);
    value->set_timestamp_ms(1700000001000);
    value->mutable_value()->set_metric("revenue");
    value->mutable_value()->set_value(i % 7);
  }
  return request.SerializeAsString();
}

void BM_DecodeIngestEventsFast(benchmark::State& state) {
  const std::string bytes = Batch(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    std::vector<experiments::EventRef> events;  // as the service decodes: into the bytes
    if (!DecodeIngestEventsFast(bytes, &events)) state.SkipWithError("not the common shape");
    benchmark::DoNotOptimize(events.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_DecodeIngestEventsFast)->Arg(1000);

void BM_DecodeIngestEventsProto(benchmark::State& state) {
  const std::string bytes = Batch(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    v1::IngestEventsRequest request;
    if (!request.ParseFromString(bytes)) state.SkipWithError("does not parse");
    absl::StatusOr<std::vector<experiments::Event>> events = EventsFromProto(request);
    if (!events.ok()) state.SkipWithError("refused");
    benchmark::DoNotOptimize(events);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DecodeIngestEventsProto)->Arg(1000);

}  // namespace
}  // namespace capstan::experiments_rpc

BENCHMARK_MAIN();
