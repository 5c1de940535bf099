// `capstan bench store`: a load generator for any etcd v3 server (etcd or
// capstan), built on src/client. Closed loop: `clients` requests are in
// flight at any time, each followed by the next as soon as it completes,
// spread over `connections` HTTP/2 connections.
//
// Workloads: put, range, txn-create and txn-update (Kubernetes' optimistic
// create and update: compare mod_revision, then put). It reports throughput
// and latency percentiles and, for the server processes named by pid, CPU
// time per operation and peak RSS.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace capstan::bench {

struct StoreBenchOptions {
  std::vector<std::string> endpoints{"127.0.0.1:2379"};
  std::string workload = "put";  // put | range | txn-create | txn-update | watch | lease
  int clients = 16;
  int connections = 4;
  int64_t total = 10000;        // operations to run
  double duration_seconds = 0;  // stop earlier after this long (0: no limit)
  int key_size = 8;
  int value_size = 256;
  int64_t key_space = 10000;
  bool sequential_keys = false;
  bool serializable = false;     // range: serializable instead of linearizable
  int range_limit = 0;           // range: 0 = one key, else a prefix range with this limit
  std::vector<int> server_pids;  // for CPU time per op and peak RSS
  // watch: `watchers` watchers on one prefix, `watchers_per_stream` on each
  // Watch stream; `total` puts at `rate` per second; latency is put-to-event
  // at every watcher.
  int64_t watchers = 1000;
  int watchers_per_stream = 100;
  double rate = 200;
  // lease: `total` leases of this TTL, one key each, left to expire; latency
  // is the expiry lag (DELETE seen by a watcher minus grant time plus TTL).
  int64_t lease_ttl_seconds = 2;
  bool progress = true;
  // put, range, txn: send over raw HTTP/2 (bench/raw_unary.h) instead of the
  // gRPC client, so the generator takes less of the CPU it shares.
  bool raw_client = false;
};

struct StoreBenchResult {
  int64_t ops = 0;
  int64_t errors = 0;
  std::string first_error;
  double seconds = 0;
  double throughput = 0;  // ops per second
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0, mean_ms = 0;
  double server_cpu_us_per_op = 0;  // summed over server_pids; 0 without pids
  int64_t server_peak_rss_bytes = 0;
  int64_t events = 0;  // watch: events delivered to watchers; lease: leased keys expired
  double server_rss_bytes_per_watcher = 0;  // watch: RSS growth from creating them
  // The load generator's own CPU per operation (per event for watch): what
  // it takes from the cores it shares with the servers.
  double client_cpu_us_per_op = 0;
  std::string Table() const;
  std::string Json() const;
};

absl::StatusOr<StoreBenchResult> RunStoreBench(const StoreBenchOptions& options);

}  // namespace capstan::bench
