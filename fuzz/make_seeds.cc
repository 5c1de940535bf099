// Writes the seed corpora under fuzz/corpus/ (run once; the files are committed).
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "base/crc32c.h"
#include "capstan/experiments.pb.h"
#include "capstan/store/internal.pb.h"
#include "experiments/event_log.h"
#include "experiments/event_store.h"
#include "experiments/event_store_format.h"
#include "gateway/cache/disk_record.h"
#include "gateway/cache/store.h"
#include "raft/wal.h"
#include "rpc/protocol.h"

// The size of the last frame of `records` (event_log.h's frames).
size_t junk_size(const std::string& records) {
  size_t offset = 0, last = 0;
  while (offset + 8 <= records.size()) {
    uint32_t length = 0;
    std::memcpy(&length, records.data() + offset, 4);
    if (length == 0) break;
    last = 8 + length;
    offset += last;
  }
  return last;
}

int main(int argc, char** argv) {
  std::string root = argc > 1 ? argv[1] : "fuzz/corpus";
  auto write = [&](const std::string& path, const std::string& data) {
    std::ofstream(root + "/" + path, std::ios::binary) << data;
  };
  using capstan::raft::EncodeRecord;
  using capstan::raft::WalRecord;
  std::string recs;
  EncodeRecord({.kind = WalRecord::Kind::kSnapshot}, &recs);
  EncodeRecord({.kind = WalRecord::Kind::kHardState, .hard_state = {1, 1, 0}}, &recs);
  for (uint64_t i = 1; i <= 3; ++i) {
    EncodeRecord({.kind = WalRecord::Kind::kEntry,
                  .entry = {i, 1, capstan::raft::EntryType::kNormal, "entry-" + std::to_string(i)}},
                 &recs);
  }
  // A follower's conflicting suffix replaced by a later term.
  EncodeRecord({.kind = WalRecord::Kind::kConfEntry,
                .entry = {2, 2, capstan::raft::EntryType::kConfChange, "conf"}},
               &recs);
  write("wal_record/three_records", std::string("\x01", 1) + recs);
  write("wal_record/torn_tail", std::string("\x01", 1) + recs.substr(0, recs.size() - 5));
  write("wal_record/zero_fill", std::string("\x01", 1) + recs + std::string(64, '\0'));
  std::string bad = recs;
  bad[70] ^= 0x40;
  write("wal_record/corrupt_middle", std::string("\x01", 1) + bad);
  write("wal_record/decode_only", std::string("\x00", 1) + recs);

  capstan::store::LogEntry e;
  e.mutable_put()->set_key("k");
  e.mutable_put()->set_value("v");
  write("log_entry/put", e.SerializeAsString());
  e.Clear();
  auto* t = e.mutable_txn();
  auto* c = t->add_compare();
  c->set_key("k");
  c->set_target(etcdserverpb::Compare::VERSION);
  c->set_version(1);
  auto* p = t->add_success()->mutable_request_put();
  p->set_key("k2");
  p->set_prev_kv(true);
  t->add_failure()->mutable_request_range()->set_key("k");
  auto* n = t->add_success()->mutable_request_txn();
  n->add_success()->mutable_request_delete_range()->set_key("k");
  write("log_entry/nested_txn", e.SerializeAsString());
  e.Clear();
  e.mutable_delete_range()->set_key("a");
  e.mutable_delete_range()->set_range_end(std::string(1, '\0'));
  write("log_entry/delete_from_key", e.SerializeAsString());
  e.Clear();
  e.mutable_compaction()->set_revision(2);
  write("log_entry/compaction", e.SerializeAsString());
  e.Clear();
  e.mutable_lease_grant()->set_id(5);
  e.mutable_lease_grant()->set_ttl(10);
  write("log_entry/lease_grant", e.SerializeAsString());
  e.Clear();
  e.mutable_lease_revoke()->set_id(5);
  write("log_entry/lease_revoke", e.SerializeAsString());
  e.Clear();
  e.mutable_alarm()->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  e.mutable_alarm()->set_alarm(etcdserverpb::NOSPACE);
  write("log_entry/alarm", e.SerializeAsString());
  // RPC frames: a unary request and its response, streaming frames, a ping
  // and a GOAWAY, each seed prefixed by the piece-size byte.
  {
    using namespace capstan::rpc;
    capstan::net::Buffer wire;
    Meta req;
    req.method = "capstan.bench.Echo/Echo";
    req.timeout_us = 250000;
    req.entries.emplace_back("traceparent",
                             "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    AppendFrame(&wire, FrameType::kRequest, frame_flags::kEndStream | frame_flags::kHasMessage, 1,
                req, capstan::net::Buffer("\x0a\x05hello"));
    Meta resp;
    resp.status_code = 8;
    resp.status_message = "over the concurrency limit";
    AppendFrame(&wire, FrameType::kResponse, 0, 1, resp, capstan::net::Buffer());
    write("rpc_frame/unary", "\x07" + wire.ToString());
    capstan::net::Buffer stream;
    AppendFrame(&stream, FrameType::kRequest, 0, 3, req, capstan::net::Buffer());
    AppendFrame(&stream, FrameType::kMessage, frame_flags::kHasMessage, 3, Meta{},
                capstan::net::Buffer("abc"));
    AppendFrame(&stream, FrameType::kWindow, 0, 3, Meta{}, capstan::net::Buffer("\x80\x80\x04"));
    AppendFrame(&stream, FrameType::kCancel, 0, 3, Meta{}, capstan::net::Buffer());
    AppendFrame(&stream, FrameType::kPing, 0, 0, Meta{}, capstan::net::Buffer("12345678"));
    Meta away;
    away.last_stream_id = 3;
    AppendFrame(&stream, FrameType::kGoAway, 0, 0, away, capstan::net::Buffer());
    write("rpc_frame/streaming", std::string("\x00", 1) + stream.ToString());
  }

  // The HTTP cache's disk records: a plain one, one with Vary values and
  // tags, an empty body, a torn one and a damaged one.
  {
    namespace cache = capstan::gateway::cache;
    auto record = [](const cache::StoredResponse& obj, uint64_t seq) {
      std::string body = obj.body.ToString();
      return cache::EncodeRecordPrefix(obj, seq, capstan::crc32c::Value(body)) + body;
    };
    cache::StoredResponse plain;
    plain.key = "example.com/index.html";
    plain.status = 200;
    plain.fields.Add("content-type", "text/html");
    plain.fields.Add("cache-control", "max-age=600");
    plain.body.Append("<html>hello</html>");
    plain.times = {1700000000, 2, 600};
    plain.stored_at = 1700000000;
    write("cache_disk_record/plain", record(plain, 1));
    cache::StoredResponse varied;
    varied.key = "example.com/api?q=1#blue";
    varied.vary = {{"accept-language", "en"}, {"accept-encoding", "gzip"}};
    varied.tags = {"news", "front"};
    varied.status = 203;
    varied.fields.Add("vary", "Accept-Language, Accept-Encoding");
    varied.fields.Add("etag", "\"v7\"");
    varied.body.Append(std::string(300, 'x'));
    write("cache_disk_record/vary_tags", record(varied, 42));
    cache::StoredResponse empty;
    empty.key = "h/204";
    empty.status = 204;
    write("cache_disk_record/empty_body", record(empty, 3));
    std::string torn = record(varied, 43);
    write("cache_disk_record/torn", torn.substr(0, torn.size() - 50));
    std::string damaged = record(plain, 5);
    damaged[damaged.size() - 3] ^= 0x20;
    write("cache_disk_record/damaged_body", damaged);
  }

  // event_log: a segment's records (after its header), written by EventLog.
  {
    namespace ex = capstan::experiments;
    std::string dir = (std::filesystem::temp_directory_path() / "event_log_seeds_XXXXXX").string();
    if (::mkdtemp(dir.data()) == nullptr) return 1;
    auto framed = [](const std::vector<ex::Event>& events, std::string_view junk = {}) {
      std::string f(ex::EventLog::kFrameBytes + ex::event_format::kLogRecordHeader, '\0');
      f[ex::EventLog::kFrameBytes] = static_cast<char>(ex::event_format::kLogRecordVersion);
      uint32_t count = events.empty() ? 1 : static_cast<uint32_t>(events.size());
      std::memcpy(f.data() + ex::EventLog::kFrameBytes + 1, &count, 4);
      for (const ex::Event& e : events) ex::AppendLogRecordEvent(e, &f);
      f.append(junk);
      return f;
    };
    std::vector<ex::Event> first = {{.type = ex::EventType::kExposure,
                                     .key = "k1",
                                     .experiment = "checkout",
                                     .unit = "u1",
                                     .variant = "control",
                                     .timestamp_ms = 1700000000000},
                                    {.type = ex::EventType::kValue,
                                     .key = "k2",
                                     .experiment = "checkout",
                                     .unit = "u1",
                                     .metric = "revenue",
                                     .value = 12.5,
                                     .timestamp_ms = 1700000001000}};
    std::vector<ex::Event> second = {{.type = ex::EventType::kRatio,
                                      .key = "k3",
                                      .experiment = "checkout",
                                      .unit = "u2",
                                      .metric = "ctr",
                                      .value = 3,
                                      .denominator = 10,
                                      .timestamp_ms = 1700000002000}};
    {
      auto log = ex::EventLog::Open(dir, {.preallocate_bytes = 0});
      if (!log.ok()) return 1;
      std::string a = framed(first), b = framed(second), junk = framed({}, "\x07junk");
      if (!(*log)->Append(&a, 2).ok() || !(*log)->Append(&b, 1).ok() ||
          !(*log)->Append(&junk, 1).ok()) {
        return 1;
      }
    }
    std::ifstream in(dir + "/00000000000000000000.log", std::ios::binary);
    std::string segment((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::filesystem::remove_all(dir);
    std::string records = segment.substr(ex::EventLog::kSegmentHeaderBytes);
    const size_t two = records.size() - (junk_size(records));
    write("event_log/two_records", records.substr(0, two) + std::string(16, '\0'));
    write("event_log/torn_tail", records.substr(0, two - 10));
    std::string bad = records.substr(0, two);
    bad[30] ^= 1;
    write("event_log/bad_checksum", bad);
    write("event_log/bad_record_valid_frame", records.substr(two));
    write("event_log/zeros", std::string(64, '\0'));
  }
  {
    // IngestEvents requests: every kind in the common shape, then the shapes
    // the fast path leaves to protobuf (fields out of order and twice, an
    // unknown field, non-ASCII and bad identifiers, bad numbers), cut short.
    namespace pb = capstan::experiments::v1;
    pb::IngestEventsRequest request;
    auto event = [&](const std::string& key) {
      pb::Event* e = request.add_events();
      e->set_key(key);
      e->set_experiment("checkout");
      e->set_unit("u1");
      e->set_timestamp_ms(1700000000000);
      return e;
    };
    event("k1")->mutable_exposure()->set_variant("control");
    pb::Event* conversion = event("k2");
    conversion->mutable_conversion()->set_metric("purchase");
    conversion->set_variant("control");
    pb::Event* value = event("k3");
    value->mutable_value()->set_metric("revenue");
    value->mutable_value()->set_value(12.5);
    pb::Event* ratio = event("k4");
    ratio->mutable_ratio()->set_metric("ctr");
    ratio->mutable_ratio()->set_numerator(3);
    ratio->mutable_ratio()->set_denominator(10);
    const std::string kinds = request.SerializeAsString();
    write("ingest_events/every_kind", kinds);
    write("ingest_events/cut_short", kinds.substr(0, kinds.size() - 3));
    pb::Event unit_again;
    unit_again.set_unit("u2");
    pb::Event first = request.events(0);
    std::string reordered = unit_again.SerializeAsString() + first.SerializeAsString() +
                            unit_again.SerializeAsString() + std::string("\x50\x07", 2);
    write("ingest_events/reordered_twice_unknown",
          std::string("\x0a", 1) + static_cast<char>(reordered.size()) + reordered);
    request.mutable_events(0)->set_unit("caf\xc3\xa9");
    request.mutable_events(1)->set_key(std::string(129, 'k'));
    request.mutable_events(2)->mutable_value()->set_value(1e300);
    request.mutable_events(3)->set_timestamp_ms(-1);
    write("ingest_events/bad_fields", request.SerializeAsString());
    write("ingest_events/empty", "");
  }

  // unit_record: unit state records (the value under an "s" key).
  {
    namespace format = capstan::experiments::event_format;
    std::vector<format::UnitRecordMetric> metrics = {
        {0, 3, 0, 0}, {1, 12.5, 0, -2}, {2, 4, 10, 0}, {7, -0.0, 1e300, 9007199254740992.0}};
    std::vector<format::UnitRecordHeld> held = {{0, 1700000000000, 2.5, 0}, {2, -5, 1, 3}};
    std::vector<format::UnitRecordMetric> no_metrics;
    std::vector<format::UnitRecordHeld> none;
    std::string record;
    format::EncodeUnitRecord(std::string("ucheckout\0u1", 12), 2, 1700000000000, metrics, none,
                             &record);
    write("unit_record/exposed", record);
    write("unit_record/torn", record.substr(0, record.size() - 3));
    format::EncodeUnitRecord(std::string("ucheckout\0u2", 12), 0, 0, no_metrics, held, &record);
    write("unit_record/held", record);
    format::EncodeUnitRecord(std::string("ucheckout\0u3", 12), 1, -7, metrics, held, &record);
    write("unit_record/both", record);
  }
  return 0;
}
