// `capstan bench rpc-server` and `capstan bench rpc`: the echo service served
// and loaded by Capstan RPC or by gRPC C++ (libgrpc++, callback API), so
// bench/rpc-vs-grpc.sh can run both side by side with the same payloads,
// concurrency and connections.
//
// The load is closed-loop: `concurrency` calls are in flight at any time,
// spread over `connections` connections; each completion starts the next
// call. Latency is per call at the client; the server's CPU time over the
// measured window comes from /proc/PID/stat.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace capstan::bench {

struct RpcBenchServerOptions {
  std::string system = "capstan";  // capstan | grpc
  std::string listen = "127.0.0.1:0";
  int threads = 1;          // capstan: event loops
  std::string io = "auto";  // capstan: auto | io_uring | epoll
  std::string port_file;    // where to write the bound port (optional)
};

// Serves until SIGINT/SIGTERM. Prints "listening on <port>".
absl::Status RunRpcBenchServer(const RpcBenchServerOptions& options);

struct RpcBenchOptions {
  std::string system = "capstan";  // capstan | grpc
  std::string target = "127.0.0.1:7000";
  int concurrency = 100;
  int connections = 1;
  int payload_bytes = 1024;
  double warmup_seconds = 1;
  double duration_seconds = 5;
  int threads = 1;          // capstan: client event loops
  std::string io = "auto";  // capstan: client I/O engine
  std::vector<int> server_pids;
  // The core the server is pinned to (-1: unknown): its whole busy time,
  // kernel and softirq work included, is measured from /proc/stat.
  int server_core = -1;
};

struct RpcBenchResult {
  int64_t calls = 0;
  int64_t errors = 0;
  std::string first_error;
  double seconds = 0;
  double qps = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0;
  double server_cpu_us_per_call = 0;
  // Calls per second of server CPU: QPS per fully used server core.
  double qps_per_server_core = 0;
  double client_cpu_us_per_call = 0;
  // Busy fraction of server_core over the window, and calls per busy
  // core-second (counts the kernel's work on that core too).
  double server_core_busy = 0;
  double qps_per_busy_core = 0;
  // Payload bytes per second in one direction.
  double payload_bytes_per_second = 0;
  std::string Json() const;
  std::string Table() const;
};

absl::StatusOr<RpcBenchResult> RunRpcBench(const RpcBenchOptions& options);

}  // namespace capstan::bench
