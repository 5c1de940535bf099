#include "bench/store_bench.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/measure.h"
#include "bench/raw_unary.h"
#include "bench/raw_watch.h"
#include "client/client.h"
#include "net/address.h"

namespace capstan::bench {

using namespace etcdserverpb;
using Clock = std::chrono::steady_clock;

namespace {

absl::StatusOr<StoreBenchResult> RunWatchBench(const StoreBenchOptions& o) {
  if (o.watchers < 1 || o.watchers_per_stream < 1 || o.rate <= 0) {
    return absl::InvalidArgumentError("--watchers, --watchers-per-stream and --rate must be > 0");
  }
  int pid = o.server_pids.empty() ? 0 : o.server_pids.front();
  int64_t rss_before = pid ? CurrentRss(pid) : 0;
  // Streams of watchers_per_stream watchers each, spread over the connections.
  int connections = std::max(1, o.connections);
  std::vector<std::vector<int>> per_connection(static_cast<size_t>(connections));
  int64_t left = o.watchers;
  for (size_t s = 0; left > 0; ++s) {
    int n = static_cast<int>(std::min<int64_t>(left, o.watchers_per_stream));
    left -= n;
    per_connection[s % per_connection.size()].push_back(n);
  }
  LatencyHistogram hist;
  RawWatchCounters counters;
  counters.latency = &hist;
  std::vector<std::unique_ptr<RawWatchConnection>> loads;
  for (size_t i = 0; i < per_connection.size(); ++i) {
    if (per_connection[i].empty()) continue;
    ASSIGN_OR_RETURN(
        auto conn, RawWatchConnection::Start(o.endpoints[i % o.endpoints.size()], per_connection[i],
                                             "watch-bench/", &counters));
    loads.push_back(std::move(conn));
  }
  auto first_error = [&]() -> std::string {
    for (auto& l : loads) {
      if (std::string e = l->error(); !e.empty()) return e;
    }
    return "";
  };
  std::atomic<int64_t>& created = counters.created;
  std::atomic<int64_t>& events = counters.events;
  auto setup_deadline = Clock::now() + std::chrono::seconds(120);
  while (created.load() < o.watchers && Clock::now() < setup_deadline && first_error().empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a counter
  }
  if (created.load() < o.watchers) {
    std::string why = first_error();
    return absl::DeadlineExceededError(absl::StrCat("only ", created.load(), " of ", o.watchers,
                                                    " watchers were created",
                                                    why.empty() ? " in 120 s" : ": " + why));
  }
  int64_t rss_watchers = pid ? CurrentRss(pid) : 0;
  int64_t cpu_before = pid ? CpuMicros(pid) : 0;
  int64_t self_cpu_before = CpuMicros(getpid());

  client::ClientOptions copts;
  copts.endpoints = o.endpoints;
  ASSIGN_OR_RETURN(auto cli, client::Client::Connect(copts));
  auto start = Clock::now();
  auto interval = std::chrono::duration<double>(1.0 / o.rate);
  int64_t errors = 0;
  std::string put_error;
  for (int64_t i = 0; i < o.total; ++i) {
    std::this_thread::sleep_until(start +
                                  std::chrono::duration_cast<Clock::duration>(interval * i));
    auto r = cli->Put("watch-bench/k" + std::to_string(i % 16), std::to_string(NowMicros()));
    if (!r.ok() && errors++ == 0) put_error = r.status().ToString();
  }
  int64_t want = (o.total - errors) * o.watchers;
  auto drain_deadline = Clock::now() + std::chrono::seconds(60);
  while (events.load() < want && Clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a counter
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  StoreBenchResult r;
  r.ops = o.total;
  r.errors = errors + (events.load() < want ? 1 : 0);
  r.first_error = events.load() < want ? absl::StrCat("watchers got ", events.load(), " of ", want,
                                                      " events ", first_error())
                                       : put_error;
  r.events = events.load();
  r.client_cpu_us_per_op = static_cast<double>(CpuMicros(getpid()) - self_cpu_before) /
                           static_cast<double>(std::max<int64_t>(1, r.events));
  r.seconds = elapsed;
  r.throughput = static_cast<double>(r.events) / elapsed;
  r.p50_ms = hist.PercentileMs(0.5);
  r.p90_ms = hist.PercentileMs(0.9);
  r.p99_ms = hist.PercentileMs(0.99);
  r.p999_ms = hist.PercentileMs(0.999);
  r.max_ms = hist.PercentileMs(1.0);
  if (pid) {
    r.server_cpu_us_per_op = static_cast<double>(CpuMicros(pid) - cpu_before) /
                             static_cast<double>(std::max<int64_t>(1, r.events));
    r.server_peak_rss_bytes = PeakRss(pid);
    r.server_rss_bytes_per_watcher =
        static_cast<double>(rss_watchers - rss_before) / static_cast<double>(o.watchers);
  }
  return r;
}

// Leases granted, each with one key, left to expire: how long after its TTL
// each key's DELETE reaches a watcher (expiry lag).
absl::StatusOr<StoreBenchResult> RunLeaseBench(const StoreBenchOptions& o) {
  client::ClientOptions copts;
  copts.endpoints = o.endpoints;
  copts.channels = o.connections;
  ASSIGN_OR_RETURN(auto cli, client::Client::Connect(copts));
  std::mutex mu;
  std::map<std::string, int64_t> due_us;  // key -> when its lease should expire
  LatencyHistogram lag;
  std::atomic<int64_t> deleted{0};
  WatchCreateRequest create;
  create.set_key("lease-bench/");
  create.set_range_end("lease-bench0");
  auto watch = cli->WatchAsync(
      create,
      [&](const WatchResponse& resp) {
        int64_t now = NowMicros();
        for (const auto& ev : resp.events()) {
          if (ev.type() != mvccpb::Event::DELETE) continue;
          std::lock_guard<std::mutex> lock(mu);
          auto it = due_us.find(ev.kv().key());
          if (it == due_us.end()) continue;
          lag.Add(std::max<int64_t>(1, now - it->second));
          deleted.fetch_add(1);
        }
      },
      [](absl::Status) {});
  int64_t ttl = std::max<int64_t>(2, o.lease_ttl_seconds);
  int64_t errors = 0;
  std::string first_error;
  int64_t cpu_before = o.server_pids.empty() ? 0 : CpuMicros(o.server_pids.front());
  auto start = Clock::now();
  for (int64_t i = 0; i < o.total; ++i) {
    std::string key = "lease-bench/" + std::to_string(i);
    auto grant = cli->LeaseGrant(ttl);
    absl::Status st = grant.status();
    if (st.ok()) {
      // The server starts the lease's clock before it answers, so timing
      // from the answer understates the lag by at most one round trip.
      {
        std::lock_guard<std::mutex> lock(mu);
        due_us[key] = NowMicros() + grant->ttl() * 1'000'000;
      }
      st = cli->Put(key, "v", grant->id()).status();
    }
    if (!st.ok() && errors++ == 0) first_error = st.ToString();
  }
  int64_t want = o.total - errors;
  auto deadline = Clock::now() + std::chrono::seconds(ttl * 3 + 30);
  while (deleted.load() < want && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a counter
  }
  watch.reset();
  StoreBenchResult r;
  r.ops = o.total;
  r.errors = errors + (deleted.load() < want ? 1 : 0);
  r.first_error = deleted.load() < want
                      ? absl::StrCat(deleted.load(), " of ", want, " leased keys expired in time")
                      : first_error;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.throughput = static_cast<double>(o.total) / r.seconds;
  r.events = deleted.load();
  r.p50_ms = lag.PercentileMs(0.5);
  r.p90_ms = lag.PercentileMs(0.9);
  r.p99_ms = lag.PercentileMs(0.99);
  r.p999_ms = lag.PercentileMs(0.999);
  r.max_ms = lag.PercentileMs(1.0);
  if (!o.server_pids.empty()) {
    r.server_cpu_us_per_op = static_cast<double>(CpuMicros(o.server_pids.front()) - cpu_before) /
                             static_cast<double>(std::max<int64_t>(1, o.total));
    r.server_peak_rss_bytes = PeakRss(o.server_pids.front());
  }
  return r;
}

std::string MakeKey(int64_t n, int size, const std::string& prefix = "") {
  std::string digits = std::to_string(n);
  std::string key = prefix;
  int pad = size - static_cast<int>(prefix.size() + digits.size());
  if (pad > 0) key.append(static_cast<size_t>(pad), '0');
  key += digits;
  return key;
}

// Kubernetes-shaped keys: about 70 bytes, e.g. /registry/pods/<ns>/<name>.
std::string KubeKey(int64_t n) { return MakeKey(n, 70, "/registry/pods/benchmark-namespace/pod-"); }

}  // namespace

std::string StoreBenchResult::Table() const {
  std::string out;
  absl::StrAppendFormat(&out, "%-22s %12lld\n", "operations", static_cast<long long>(ops));
  absl::StrAppendFormat(&out, "%-22s %12lld\n", "errors", static_cast<long long>(errors));
  absl::StrAppendFormat(&out, "%-22s %12.2f\n", "seconds", seconds);
  absl::StrAppendFormat(&out, "%-22s %12.0f\n", "throughput (ops/s)", throughput);
  absl::StrAppendFormat(&out, "%-22s %12.3f\n", "latency mean (ms)", mean_ms);
  absl::StrAppendFormat(&out, "%-22s %12.3f\n", "latency p50 (ms)", p50_ms);
  absl::StrAppendFormat(&out, "%-22s %12.3f\n", "latency p90 (ms)", p90_ms);
  absl::StrAppendFormat(&out, "%-22s %12.3f\n", "latency p99 (ms)", p99_ms);
  absl::StrAppendFormat(&out, "%-22s %12.3f\n", "latency p99.9 (ms)", p999_ms);
  absl::StrAppendFormat(&out, "%-22s %12.3f\n", "latency max (ms)", max_ms);
  if (server_cpu_us_per_op > 0) {
    absl::StrAppendFormat(&out, "%-22s %12.1f\n", "server CPU (us/op)", server_cpu_us_per_op);
    absl::StrAppendFormat(&out, "%-22s %12.1f\n", "server peak RSS (MiB)",
                          static_cast<double>(server_peak_rss_bytes) / (1 << 20));
  }
  if (client_cpu_us_per_op > 0) {
    absl::StrAppendFormat(&out, "%-22s %12.1f\n", "client CPU (us/op)", client_cpu_us_per_op);
  }
  if (events > 0) {
    absl::StrAppendFormat(&out, "%-22s %12lld\n", "watch events", static_cast<long long>(events));
    absl::StrAppendFormat(&out, "%-22s %12.0f\n", "RSS per watcher (B)",
                          server_rss_bytes_per_watcher);
  }
  if (!first_error.empty()) absl::StrAppend(&out, "first error: ", first_error, "\n");
  return out;
}

std::string StoreBenchResult::Json() const {
  return absl::StrFormat(
      "{\"ops\":%d,\"errors\":%d,\"seconds\":%.3f,\"throughput\":%.1f,\"mean_ms\":%.4f,"
      "\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,"
      "\"server_cpu_us_per_op\":%.2f,\"server_peak_rss_bytes\":%d,\"events\":%d,"
      "\"server_rss_bytes_per_watcher\":%.1f,\"client_cpu_us_per_op\":%.2f}",
      ops, errors, seconds, throughput, mean_ms, p50_ms, p90_ms, p99_ms, p999_ms, max_ms,
      server_cpu_us_per_op, server_peak_rss_bytes, events, server_rss_bytes_per_watcher,
      client_cpu_us_per_op);
}

namespace {

// One call of a request workload, through the raw HTTP/2 pool when there is
// one (on its thread) or the gRPC client; `reply` gets the response, parsed
// only when `parse` is set (the pool hands back bytes).
template <typename Resp, typename Req, typename GrpcAsync>
void SendCall(RawUnaryPool* raw, int client, const std::string& path, const Req& req,
              GrpcAsync grpc_async, bool parse, std::function<void(absl::Status, Resp)> reply) {
  if (raw == nullptr) {
    grpc_async(req, std::move(reply));
    return;
  }
  raw->Send(client, path, req,
            [parse, reply = std::move(reply)](absl::Status st, std::string_view bytes) {
              Resp resp;
              if (st.ok() && parse &&
                  !resp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
                st = absl::InternalError("undecodable response");
              }
              reply(st, std::move(resp));
            });
}

}  // namespace

absl::StatusOr<StoreBenchResult> RunStoreBench(const StoreBenchOptions& o) {
  if (o.clients < 1 || o.connections < 1 || o.total < 1) {
    return absl::InvalidArgumentError("--clients, --connections and --total must be >= 1");
  }
  if (o.workload == "watch") return RunWatchBench(o);
  if (o.workload == "lease") return RunLeaseBench(o);
  if (o.workload != "put" && o.workload != "range" && o.workload != "txn-create" &&
      o.workload != "txn-update") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown workload \"", o.workload,
                     "\" (put, range, txn-create, txn-update, watch, lease)"));
  }
  client::ClientOptions copts;
  copts.endpoints = o.endpoints;
  copts.channels = o.connections;
  ASSIGN_OR_RETURN(auto cli, client::Client::Connect(copts));
  std::unique_ptr<RawUnaryPool> raw;
  if (o.raw_client) {
    ASSIGN_OR_RETURN(raw, RawUnaryPool::Connect(o.endpoints, o.connections));
  }
  std::string value(static_cast<size_t>(o.value_size), 'v');
  bool kube = o.workload.starts_with("txn");
  if (kube) value.assign(512, 'v');

  // Setup outside the measured run: keys that ranges and updates will find.
  std::vector<int64_t> revision_of;  // txn-update: each key's current mod_revision
  if (o.workload == "range" || o.workload == "txn-update") {
    int64_t n = o.workload == "range" ? std::min<int64_t>(o.key_space, 100000) : o.key_space;
    if (o.workload == "txn-update") revision_of.assign(static_cast<size_t>(n), 0);
    std::atomic<int64_t> next{0};
    std::vector<std::thread> loaders;
    std::mutex err_mu;
    absl::Status load_error;
    for (int t = 0; t < 4; ++t) {
      loaders.emplace_back([&] {
        for (int64_t i; (i = next.fetch_add(1)) < n;) {
          std::string key = kube ? KubeKey(i) : MakeKey(i, o.key_size);
          auto r = cli->Put(key, value);
          if (!r.ok()) {
            std::lock_guard<std::mutex> lock(err_mu);
            load_error = r.status();
            return;
          }
          if (!revision_of.empty()) revision_of[static_cast<size_t>(i)] = r->header().revision();
        }
      });
    }
    for (auto& t : loaders) t.join();
    RETURN_IF_ERROR(load_error);
  }

  std::vector<int64_t> cpu_before;
  for (int pid : o.server_pids) cpu_before.push_back(CpuMicros(pid));
  int64_t self_cpu_before = CpuMicros(getpid());

  std::vector<uint32_t> latency_us(static_cast<size_t>(o.total));
  std::atomic<int64_t> issued{0}, completed{0}, errors{0};
  std::mutex mu;
  std::condition_variable cv;
  std::string first_error;
  auto start = Clock::now();
  auto deadline = o.duration_seconds > 0
                      ? start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(o.duration_seconds))
                      : Clock::time_point::max();
  std::atomic<int> running{o.clients};
  std::atomic<int64_t> create_seq{o.key_space};

  // One closed-loop client: issue, and on completion record and issue again.
  std::function<void(int, std::shared_ptr<std::mt19937_64>)> issue;
  issue = [&](int client_id, std::shared_ptr<std::mt19937_64> rng) {
    int64_t n = issued.fetch_add(1);
    if (n >= o.total || Clock::now() >= deadline) {
      if (running.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_all();
      }
      return;
    }
    auto sent = Clock::now();
    auto finish = [&, client_id, rng, sent, n](absl::Status st) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent).count();
      latency_us[static_cast<size_t>(n)] = static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX));
      if (!st.ok()) {
        if (errors.fetch_add(1) == 0) {
          std::lock_guard<std::mutex> lock(mu);
          first_error = st.ToString();
        }
      }
      completed.fetch_add(1);
      issue(client_id, rng);
    };
    int64_t k = o.sequential_keys
                    ? n % o.key_space
                    : static_cast<int64_t>((*rng)() % static_cast<uint64_t>(o.key_space));
    if (o.workload == "put") {
      PutRequest req;
      req.set_key(MakeKey(k, o.key_size));
      req.set_value(value);
      SendCall<PutResponse>(
          raw.get(), client_id, "/etcdserverpb.KV/Put", req,
          [&](const PutRequest& q, auto cb) { cli->PutAsync(q, std::move(cb)); }, false,
          [finish](absl::Status st, PutResponse) { finish(st); });
    } else if (o.workload == "range") {
      RangeRequest req;
      k %= std::min<int64_t>(o.key_space, 100000);
      req.set_key(MakeKey(k, o.key_size));
      if (o.range_limit > 0) {
        std::string prefix = req.key().substr(0, req.key().size() / 2);
        req.set_key(prefix);
        std::string end = prefix;
        end.back()++;
        req.set_range_end(end);
        req.set_limit(o.range_limit);
      }
      req.set_serializable(o.serializable);
      SendCall<RangeResponse>(
          raw.get(), client_id, "/etcdserverpb.KV/Range", req,
          [&](const RangeRequest& q, auto cb) { cli->RangeAsync(q, std::move(cb)); }, false,
          [finish](absl::Status st, RangeResponse) { finish(st); });
    } else if (o.workload == "txn-create") {
      // Kubernetes' create: put only if the key does not exist yet.
      TxnRequest txn;
      std::string key = KubeKey(create_seq.fetch_add(1));
      auto* cmp = txn.add_compare();
      cmp->set_key(key);
      cmp->set_target(Compare::MOD);
      cmp->set_result(Compare::EQUAL);
      cmp->set_mod_revision(0);
      auto* put = txn.add_success()->mutable_request_put();
      put->set_key(key);
      put->set_value(value);
      txn.add_failure()->mutable_request_range()->set_key(key);
      SendCall<TxnResponse>(
          raw.get(), client_id, "/etcdserverpb.KV/Txn", txn,
          [&](const TxnRequest& q, auto cb) { cli->TxnAsync(q, std::move(cb)); }, true,
          [finish](absl::Status st, TxnResponse r) {
            finish(st.ok() && !r.succeeded() ? absl::AbortedError("create found the key") : st);
          });
    } else {
      // Kubernetes' update: put only if nobody changed the key since we read
      // it. Each client owns the keys congruent to its id, so the compare
      // normally succeeds, as for a controller updating its own objects.
      int64_t per = std::max<int64_t>(1, o.key_space / o.clients);
      int64_t key_index = (k % per) * o.clients + client_id;
      if (key_index >= o.key_space) key_index = client_id % o.key_space;
      std::string key = KubeKey(key_index);
      TxnRequest txn;
      auto* cmp = txn.add_compare();
      cmp->set_key(key);
      cmp->set_target(Compare::MOD);
      cmp->set_result(Compare::EQUAL);
      cmp->set_mod_revision(revision_of[static_cast<size_t>(key_index)]);
      auto* put = txn.add_success()->mutable_request_put();
      put->set_key(key);
      put->set_value(value);
      txn.add_failure()->mutable_request_range()->set_key(key);
      SendCall<TxnResponse>(
          raw.get(), client_id, "/etcdserverpb.KV/Txn", txn,
          [&](const TxnRequest& q, auto cb) { cli->TxnAsync(q, std::move(cb)); }, true,
          [finish, key_index, &revision_of](absl::Status st, TxnResponse r) {
            if (st.ok() && r.succeeded()) {
              revision_of[static_cast<size_t>(key_index)] = r.header().revision();
            } else if (st.ok() && r.responses_size() > 0 &&
                       r.responses(0).response_range().kvs_size() > 0) {
              revision_of[static_cast<size_t>(key_index)] =
                  r.responses(0).response_range().kvs(0).mod_revision();
            }
            finish(st);
          });
    }
  };

  auto start_clients = [&] {
    for (int c = 0; c < o.clients; ++c) {
      issue(c, std::make_shared<std::mt19937_64>(static_cast<uint64_t>(c) * 7919 + 1));
    }
  };
  if (raw) {
    raw->Start(start_clients);
  } else {
    start_clients();
  }
  std::string raw_error;
  {
    std::unique_lock<std::mutex> lock(mu);
    int64_t last = 0;
    auto last_at = Clock::now();
    while (!cv.wait_for(lock, std::chrono::seconds(1), [&] { return running.load() == 0; })) {
      if (raw && !(raw_error = raw->error()).empty()) break;
      if (!o.progress) continue;
      int64_t done = completed.load();
      auto now = Clock::now();
      double rate =
          static_cast<double>(done - last) / std::chrono::duration<double>(now - last_at).count();
      std::fprintf(stderr, "%s: %lld/%lld done, %.0f ops/s, %lld errors\n", o.workload.c_str(),
                   static_cast<long long>(done), static_cast<long long>(o.total), rate,
                   static_cast<long long>(errors.load()));
      last = done;
      last_at = now;
    }
  }
  auto elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (raw) raw->Stop();  // before the state its completions use goes away
  if (!raw_error.empty()) return absl::UnavailableError(absl::StrCat("raw client: ", raw_error));

  StoreBenchResult r;
  r.ops = completed.load();
  r.errors = errors.load();
  r.first_error = first_error;
  r.seconds = elapsed;
  r.throughput = static_cast<double>(r.ops) / elapsed;
  latency_us.resize(static_cast<size_t>(r.ops));
  std::sort(latency_us.begin(), latency_us.end());
  auto pct = [&](double p) {
    if (latency_us.empty()) return 0.0;
    size_t i = std::min(latency_us.size() - 1, static_cast<size_t>(p * latency_us.size()));
    return latency_us[i] / 1000.0;
  };
  r.p50_ms = pct(0.50);
  r.p90_ms = pct(0.90);
  r.p99_ms = pct(0.99);
  r.p999_ms = pct(0.999);
  r.max_ms = latency_us.empty() ? 0 : latency_us.back() / 1000.0;
  double sum = 0;
  for (uint32_t v : latency_us) sum += v;
  r.mean_ms = latency_us.empty() ? 0 : sum / latency_us.size() / 1000.0;
  if (r.ops > 0) {
    r.client_cpu_us_per_op =
        static_cast<double>(CpuMicros(getpid()) - self_cpu_before) / static_cast<double>(r.ops);
  }
  int64_t cpu = 0;
  for (size_t i = 0; i < o.server_pids.size(); ++i) {
    cpu += CpuMicros(o.server_pids[i]) - cpu_before[i];
    r.server_peak_rss_bytes = std::max(r.server_peak_rss_bytes, PeakRss(o.server_pids[i]));
  }
  if (!o.server_pids.empty() && r.ops > 0) {
    r.server_cpu_us_per_op = static_cast<double>(cpu) / static_cast<double>(r.ops);
  }
  return r;
}

}  // namespace capstan::bench
