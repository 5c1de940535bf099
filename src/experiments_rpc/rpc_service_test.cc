// The RPC API's conversions: typed events reach the event store through the
// decoder's own rules with errors naming the proto field, and a typed
// evaluation result says exactly what the HTTP API's JSON says.
#include "experiments_rpc/rpc_service.h"

#include <future>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "experiments/event_store_test_util.h"
#include "experiments/events_service.h"
#include "experiments/model.h"
#include "experiments/snapshot.h"
#include "experiments_rpc/client.h"
#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "nlohmann/json.hpp"
#include "rpc/channel.h"

namespace capstan::experiments_rpc {
namespace {

using experiments::EventType;
using experiments::Json;
using experiments::event_store_testing::TempDirectory;

v1::Event Exposure(const std::string& key, const std::string& unit, const std::string& variant) {
  v1::Event e;
  e.set_key(key);
  e.set_experiment("checkout");
  e.set_unit(unit);
  e.set_timestamp_ms(1700000000000);
  e.mutable_exposure()->set_variant(variant);
  return e;
}

v1::Event Ratio(const std::string& key, double numerator, double denominator) {
  v1::Event e;
  e.set_key(key);
  e.set_experiment("checkout");
  e.set_unit("u1");
  e.set_timestamp_ms(1700000000001);
  e.mutable_ratio()->set_metric("ctr");
  e.mutable_ratio()->set_numerator(numerator);
  e.mutable_ratio()->set_denominator(denominator);
  return e;
}

std::string ErrorOf(const v1::IngestEventsRequest& request) {
  absl::StatusOr<std::vector<experiments::Event>> events = EventsFromProto(request);
  EXPECT_FALSE(events.ok());
  if (events.ok()) return "";
  EXPECT_EQ(events.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(events.status().message());
}

TEST(EventsFromProtoTest, EveryKindConvertsFieldForField) {
  v1::IngestEventsRequest request;
  *request.add_events() = Exposure("k1", "u1", "control");
  v1::Event conversion;
  conversion.set_key("k2");
  conversion.set_experiment("checkout");
  conversion.set_unit("u1");
  conversion.set_variant("control");
  conversion.set_timestamp_ms(5);
  conversion.mutable_conversion()->set_metric("purchase");
  *request.add_events() = conversion;
  v1::Event value = conversion;
  value.set_key("k3");
  value.mutable_value()->set_metric("revenue");
  value.mutable_value()->set_value(12.5);
  *request.add_events() = value;
  *request.add_events() = Ratio("k4", 3, 10);

  absl::StatusOr<std::vector<experiments::Event>> events = EventsFromProto(request);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[0].type, EventType::kExposure);
  EXPECT_EQ((*events)[0].variant, "control");
  EXPECT_EQ((*events)[0].timestamp_ms, 1700000000000);
  EXPECT_EQ((*events)[1].type, EventType::kConversion);
  EXPECT_EQ((*events)[1].metric, "purchase");
  EXPECT_EQ((*events)[1].variant, "control");
  EXPECT_EQ((*events)[2].type, EventType::kValue);
  EXPECT_EQ((*events)[2].value, 12.5);
  EXPECT_EQ((*events)[3].type, EventType::kRatio);
  EXPECT_EQ((*events)[3].value, 3);
  EXPECT_EQ((*events)[3].denominator, 10);
  EXPECT_EQ((*events)[3].key, "k4");
}

TEST(EventsFromProtoTest, ErrorsNameTheEventAndTheProtoField) {
  v1::IngestEventsRequest request;
  *request.add_events() = Exposure("k1", "u1", "control");
  *request.add_events() = Exposure("k2", "", "control");
  EXPECT_EQ(ErrorOf(request), "events[1].unit: must be 1 to 128 bytes");

  request.mutable_events(1)->set_unit("u2");
  request.mutable_events(1)->mutable_exposure()->set_variant("");
  EXPECT_EQ(ErrorOf(request), "events[1].exposure.variant: is required");

  request.mutable_events(1)->mutable_exposure()->set_variant("a\nb");
  EXPECT_EQ(ErrorOf(request), "events[1].exposure.variant: must not contain control characters");

  v1::IngestEventsRequest ratio;
  *ratio.add_events() = Ratio("k1", 1, std::numeric_limits<double>::infinity());
  EXPECT_NE(ErrorOf(ratio).find("events[0].ratio.denominator: "), std::string::npos)
      << ErrorOf(ratio);
  *ratio.mutable_events(0) = Ratio("k1", 1e16, 1);
  EXPECT_EQ(ErrorOf(ratio),
            "events[0].ratio.numerator: must be a finite number with absolute value at most 1e15");

  v1::IngestEventsRequest no_kind;
  *no_kind.add_events() = Exposure("k1", "u1", "control");
  no_kind.mutable_events(0)->clear_kind();
  EXPECT_EQ(ErrorOf(no_kind), "events[0].kind: must be one of exposure, conversion, value, ratio");

  v1::IngestEventsRequest late;
  *late.add_events() = Exposure("k1", "u1", "control");
  late.mutable_events(0)->set_timestamp_ms((int64_t{1} << 53) + 1);
  EXPECT_EQ(ErrorOf(late),
            "events[0].timestamp_ms: must be at most 2^53 (milliseconds since the epoch)");
  late.mutable_events(0)->set_timestamp_ms(-1);
  EXPECT_EQ(ErrorOf(late), "events[0].timestamp_ms: must not be negative");

  v1::IngestEventsRequest empty;
  EXPECT_EQ(ErrorOf(empty), "events: has no events");
  v1::IngestEventsRequest too_many;
  for (size_t i = 0; i <= experiments::kMaxEventsPerBatch; ++i) {
    *too_many.add_events() = Exposure("k" + std::to_string(i), "u", "a");
  }
  EXPECT_EQ(ErrorOf(too_many), "events: has 10001 events; at most 10000");
  // A full batch (over HTTP's JSON body limit, which typed events do not
  // pass through): an error far into it still names its own event.
  too_many.mutable_events()->RemoveLast();
  EXPECT_TRUE(EventsFromProto(too_many).ok());
  too_many.mutable_events(9000)->set_unit(std::string(129, 'u'));
  EXPECT_EQ(ErrorOf(too_many), "events[9000].unit: must be 1 to 128 bytes");
}

// Documents keyed "<kind>/<id>".
std::shared_ptr<const experiments::ConfigSnapshot> Build(
    const std::vector<std::pair<std::string, std::string>>& documents) {
  std::vector<experiments::ConfigSnapshot::StoredDocument> stored;
  for (const auto& [key, value] : documents) {
    stored.push_back({std::string(experiments::kModelPrefix) + key, value, 1});
  }
  auto snapshot = experiments::ConfigSnapshot::BuildFromStore(stored);
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  return snapshot.ok() ? *snapshot : nullptr;
}

TEST(UnitResultTest, TypedResultSaysWhatTheJsonSays) {
  auto snapshot = Build(
      {{"domains/main", R"({"id":"main"})"},
       {"layers/l", R"({"id":"l","domain":"main","parameters":{"color":"blue","size":{"w":1}}})"},
       {"layers/l2", R"({"id":"l2","domain":"main"})"},
       {"experiments/e", R"({"id":"e","layer":"l","state":"running","coverage":0.8,
          "forced_variants":{"vip":"a"},
          "variants":[{"id":"a","parameters":{"color":"red"}},{"id":"b"}]})"},
       {"experiments/e2", R"({"id":"e2","layer":"l2","state":"running",
          "variants":[{"id":"x"},{"id":"y"}]})"},
       {"holdouts/h", R"({"id":"h","fraction":0.1,"layers":["l2"]})"},
       {"flags/f", R"({"id":"f","default_value":{"version":1},"rules":[
          {"type":"force","condition":{"country":"NZ"},"value":{"version":3}},
          {"type":"experiment","experiment":"e","values":{"b":[1,2]}}]})"},
       {"flags/off", R"({"id":"off","enabled":false,"default_value":"x"})"}});
  ASSERT_NE(snapshot, nullptr);
  experiments::EvaluationResult result;
  std::set<std::string> sources;
  int held_out = 0, forced = 0;
  for (int i = 0; i < 300; ++i) {
    Json user = {{"id", i == 7 ? std::string("vip") : "u" + std::to_string(i)},
                 {"country", i % 5 == 0 ? "NZ" : "US"}};
    snapshot->Evaluate(user, &result);
    v1::UnitResult typed;
    ToProto(result, &typed);
    for (const auto& a : typed.assignments()) {
      held_out += a.holdout().empty() ? 0 : 1;
      forced += a.forced() ? 1 : 0;
    }
    for (const auto& [id, flag] : typed.flags()) sources.insert(v1::FlagSource_Name(flag.source()));
    // Compared as unordered JSON: the proto's maps have no order.
    EXPECT_EQ(nlohmann::json::parse(UnitResultToJson(typed).dump()),
              nlohmann::json::parse(result.ToJson().dump()))
        << i << " " << result.ToJson().dump();
  }
  // The cases the comparison must have met to mean something.
  EXPECT_GT(held_out, 0);
  EXPECT_EQ(forced, 1);
  EXPECT_TRUE(sources.count("FLAG_SOURCE_FORCE") && sources.count("FLAG_SOURCE_EXPERIMENT") &&
              sources.count("FLAG_SOURCE_DISABLED"))
      << sources.size();
}

// RetryAfterOf reads the hint only from a RESOURCE_EXHAUSTED message that
// ends with it, in whole seconds.
TEST(RetryAfterOfTest, ReadsTheHintOfResourceExhaustedOnly) {
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("queue is full; retry after 3 s")),
            std::chrono::milliseconds(3000));
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("behind; retry after 0 s")),
            std::chrono::milliseconds(0));
  EXPECT_EQ(RetryAfterOf(absl::UnavailableError("behind; retry after 3 s")), std::nullopt);
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("too many calls")), std::nullopt);
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("retry after s")), std::nullopt);
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("retry after 3 ms")), std::nullopt);
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("retry after -3 s")), std::nullopt);
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("retry after 99999999999999 s")),
            std::nullopt);
  EXPECT_EQ(RetryAfterOf(absl::OkStatus()), std::nullopt);
}

// The event calls over a real RPC server, with the event store's writer held
// so the pipeline is behind: RESOURCE_EXHAUSTED saying when to retry, then
// the held batch answers once written. No configuration store is needed: the
// event calls use only the EventsApi.
TEST(IngestEventsTest, BackPressureIsResourceExhaustedWithARetryHint) {
  // Removed on every way out, after what uses it (declared first).
  TempDirectory temp;
  const std::string& dir = temp.path();
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  bool first = true;
  std::shared_ptr<experiments::EventsApi> api;
  net::HttpRouter router;
  metrics::Registry registry;
  experiments::ServiceContext context{
      .store = nullptr, .watcher = nullptr, .router = &router, .registry = &registry};
  absl::Status installed = experiments::MakeEventsExtension(
      {.directory = dir + "/events",
       .max_queued_events = experiments::kMaxEventsPerBatch,
       .retry_after_seconds = 2,
       .before_group_write =
           [&] {
             if (!first) return;
             first = false;
             entered.set_value();
             released.wait();
           },
       .on_open = [&](std::shared_ptr<experiments::EventsApi> opened) { api = opened; }})(context);
  ASSERT_TRUE(installed.ok()) << installed;
  ASSERT_NE(api, nullptr);

  net::WorkerPool pool({.threads = 2});
  ExperimentsRpcService service(/*service=*/nullptr, api, &pool);
  ExperimentsRpcService disabled(/*service=*/nullptr, nullptr, &pool);
  rpc::Server server({});
  server.AddService(&service);
  ASSERT_TRUE(server.Start().ok());
  auto client = ExperimentsRpcClient::Connect("127.0.0.1", server.port());
  ASSERT_TRUE(client.ok()) << client.status();

  v1::IngestEventsRequest full;
  for (size_t i = 0; i < experiments::kMaxEventsPerBatch; ++i) {
    *full.add_events() = Exposure("h" + std::to_string(i), "h" + std::to_string(i), "a");
  }
  auto held = std::async(std::launch::async, [&] { return (*client)->IngestEvents(full); });
  // Bounded: a held call that failed instead says why.
  std::future<void> entered_future = entered.get_future();
  while (entered_future.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    if (held.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      release.set_value();
      FAIL() << "the held batch was answered first: " << held.get().status();
    }
  }
  v1::IngestEventsRequest one;
  *one.add_events() = Exposure("x", "x", "a");
  auto behind = (*client)->IngestEvents(one);
  EXPECT_EQ(behind.status().code(), absl::StatusCode::kResourceExhausted) << behind.status();
  EXPECT_NE(behind.status().message().find("retry after 2 s"), std::string::npos)
      << behind.status();
  // What the load tool and other C++ callers back off by.
  EXPECT_EQ(RetryAfterOf(behind.status()), std::chrono::milliseconds(2000)) << behind.status();
  release.set_value();
  auto written = held.get();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->accepted(), experiments::kMaxEventsPerBatch);
  auto after = (*client)->IngestEvents(one);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->accepted(), 1u);
  EXPECT_NE(registry.RenderText().find("capstan_experiments_events_throttled_batches_total 1"),
            std::string::npos);
  client->reset();
  server.Shutdown(std::chrono::seconds(1));

  // Without an event store, the event calls say so.
  rpc::Server off({});
  off.AddService(&disabled);
  ASSERT_TRUE(off.Start().ok());
  auto off_client = ExperimentsRpcClient::Connect("127.0.0.1", off.port());
  ASSERT_TRUE(off_client.ok());
  EXPECT_EQ((*off_client)->IngestEvents(one).status().code(),
            absl::StatusCode::kFailedPrecondition);
  off_client->reset();
  off.Shutdown(std::chrono::seconds(1));
  api.reset();
}

// IngestEvents serves from its request's bytes (ingest_request.h) and answers
// as the typed path did: accepted, then duplicates on a resend; a bad event
// named by index and proto field and counted as a rejected batch; a payload
// that is not an IngestEventsRequest refused in the server's words, not
// counted.
TEST(IngestEventsTest, TheBytesHandlerAnswersAsTheTypedPath) {
  // Removed on every way out, after what uses it (declared first).
  TempDirectory temp;
  const std::string& dir = temp.path();
  std::shared_ptr<experiments::EventsApi> api;
  net::HttpRouter router;
  metrics::Registry registry;
  experiments::ServiceContext context{
      .store = nullptr, .watcher = nullptr, .router = &router, .registry = &registry};
  absl::Status installed = experiments::MakeEventsExtension(
      {.directory = dir + "/events",
       .on_open = [&](std::shared_ptr<experiments::EventsApi> opened) { api = opened; }})(context);
  ASSERT_TRUE(installed.ok()) << installed;
  ASSERT_NE(api, nullptr);
  net::WorkerPool pool({.threads = 2});
  ExperimentsRpcService service(/*service=*/nullptr, api, &pool);
  rpc::Server server({});
  server.AddService(&service);
  ASSERT_TRUE(server.Start().ok());
  auto client = ExperimentsRpcClient::Connect("127.0.0.1", server.port());
  ASSERT_TRUE(client.ok()) << client.status();

  v1::IngestEventsRequest batch;
  for (int i = 0; i < 300; ++i) {  // ~15 KB: more than one read on the server
    *batch.add_events() = Exposure("key-" + std::to_string(i), "unit-" + std::to_string(i),
                                   i % 2 == 0 ? "control" : "treatment");
  }
  *batch.add_events() = Ratio("ratio-1", 3, 10);
  auto first = (*client)->IngestEvents(batch);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->accepted(), 301u);
  EXPECT_EQ(first->duplicates(), 0u);
  auto again = (*client)->IngestEvents(batch);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->accepted(), 0u);
  EXPECT_EQ(again->duplicates(), 301u);

  batch.mutable_events(7)->mutable_exposure()->set_variant(std::string(129, 'v'));
  auto bad = (*client)->IngestEvents(batch);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "events[7].exposure.variant: must be 1 to 128 bytes");

  // A Document's bytes: field 1 is its kind, "x", which is no Event.
  v1::Document not_a_batch;
  not_a_batch.set_kind("x");
  auto loops = net::LoopGroup::Start({.threads = 1, .name = "client"});
  ASSERT_TRUE(loops.ok());
  absl::StatusOr<v1::IngestEventsResponse> unparsable =
      net::BlockOn((*loops)->loop(0),
                   [](net::EventLoop* loop, int port,
                      v1::Document request) -> net::Task<absl::StatusOr<v1::IngestEventsResponse>> {
                     auto channel = rpc::Channel::Create(loop, "127.0.0.1", port);
                     co_return co_await channel->Call<v1::Document, v1::IngestEventsResponse>(
                         "capstan.experiments.v1.Experiments/IngestEvents", request, {});
                   }((*loops)->loop(0), server.port(), not_a_batch));
  EXPECT_EQ(unparsable.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(unparsable.status().message(),
            "request payload does not parse as capstan.experiments.v1.IngestEventsRequest");
  (*loops)->Stop();
  EXPECT_NE(registry.RenderText().find("capstan_experiments_events_rejected_batches_total 1\n"),
            std::string::npos);
  client->reset();
  server.Shutdown(std::chrono::seconds(1));
  api.reset();
}

// While the aggregation is behind, IngestEvents is refused on the RPC loop
// before its bytes reach the worker pool (the pool's only thread is busy
// here, so an answer that needed it would time out) and before they are
// decoded (bytes that are no batch get the refusal too): shedding load at
// saturation costs no thread switch.
TEST(IngestEventsTest, RefusedOnTheLoopWhileTheAggregationIsBehind) {
  // Removed on every way out, after what uses it (declared first).
  TempDirectory temp;
  const std::string& dir = temp.path();
  std::promise<void> aggregating;
  std::promise<void> release_aggregation;
  std::shared_future<void> aggregation_released = release_aggregation.get_future().share();
  bool first = true;
  auto store = experiments::EventStore::Open(
      {.directory = dir + "/events", .max_unaggregated_events = 10, .before_group_aggregate = [&] {
         if (!first) return;
         first = false;
         aggregating.set_value();
         aggregation_released.wait();
       }});
  ASSERT_TRUE(store.ok()) << store.status();
  std::shared_ptr<experiments::EventStore> shared_store = *std::move(store);
  metrics::Registry registry;
  auto api = std::make_shared<experiments::EventsApi>(shared_store, /*watcher=*/nullptr, &registry,
                                                      /*retry_after_seconds=*/3);
  std::vector<experiments::Event> ten;
  for (int i = 0; i < 10; ++i) {
    experiments::Event e;
    e.key = "k" + std::to_string(i);
    e.experiment = "checkout";
    e.unit = "u" + std::to_string(i);
    e.variant = "a";
    e.timestamp_ms = 1700000000000;
    ten.push_back(std::move(e));
  }
  ASSERT_TRUE(api->Ingest(experiments::RefsOf(ten)).ok());  // durable; the aggregator holds it
  aggregating.get_future().wait();

  // The pool's one thread, held until the refusals are in.
  net::WorkerPool pool({.threads = 1});
  auto loops = net::LoopGroup::Start({.threads = 1, .name = "holder"});
  ASSERT_TRUE(loops.ok());
  std::promise<void> holding;
  std::promise<void> release_pool;
  std::shared_future<void> pool_released = release_pool.get_future().share();
  net::EventLoop* holder_loop = (*loops)->loop(0);
  holder_loop->Post([&] {
    holder_loop->Spawn([](net::WorkerPool* pool, net::EventLoop* loop, std::promise<void>* holding,
                          std::shared_future<void> released) -> net::Task<void> {
      co_await pool->Run(loop, [&] {
        holding->set_value();
        released.wait();
      });
    }(&pool, holder_loop, &holding, pool_released));
  });
  holding.get_future().wait();

  ExperimentsRpcService service(/*service=*/nullptr, api, &pool);
  rpc::Server server({});
  server.AddService(&service);
  ASSERT_TRUE(server.Start().ok());
  auto client = ExperimentsRpcClient::Connect("127.0.0.1", server.port(),
                                              {.timeout = std::chrono::milliseconds(3000)});
  ASSERT_TRUE(client.ok()) << client.status();
  v1::IngestEventsRequest one;
  *one.add_events() = Exposure("x", "x", "a");
  auto behind = (*client)->IngestEvents(one);
  EXPECT_EQ(behind.status().code(), absl::StatusCode::kResourceExhausted) << behind.status();
  EXPECT_EQ(RetryAfterOf(behind.status()), std::chrono::milliseconds(3000)) << behind.status();
  // Not decoded: a Document's bytes are refused alike, not as unparsable.
  v1::Document not_a_batch;
  not_a_batch.set_kind("x");
  absl::StatusOr<v1::IngestEventsResponse> garbage =
      net::BlockOn(holder_loop,
                   [](net::EventLoop* loop, int port,
                      v1::Document request) -> net::Task<absl::StatusOr<v1::IngestEventsResponse>> {
                     auto channel = rpc::Channel::Create(loop, "127.0.0.1", port);
                     auto answer = co_await channel->Call<v1::Document, v1::IngestEventsResponse>(
                         "capstan.experiments.v1.Experiments/IngestEvents", request,
                         {.timeout = std::chrono::seconds(3)});
                     channel->Close();
                     co_return answer;
                   }(holder_loop, server.port(), not_a_batch));
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kResourceExhausted) << garbage.status();
  EXPECT_NE(registry.RenderText().find("capstan_experiments_events_throttled_batches_total 2"),
            std::string::npos);

  // Caught up: the same call goes through the (released) pool and is taken.
  release_pool.set_value();
  release_aggregation.set_value();
  absl::StatusOr<v1::IngestEventsResponse> taken;
  for (int attempt = 0; attempt < 100; ++attempt) {  // bounded: the aggregation catches up
    taken = (*client)->IngestEvents(one);
    if (!absl::IsResourceExhausted(taken.status())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a client's back-off
  }
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->accepted(), 1u);
  client->reset();
  server.Shutdown(std::chrono::seconds(1));
  (*loops)->Stop();
  api.reset();
  shared_store.reset();
}

}  // namespace
}  // namespace capstan::experiments_rpc
