#include "bench/rpc_bench.h"

#include <unistd.h>

#include <climits>
#include <condition_variable>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "base/signals.h"
#include "bench/measure.h"
#include "capstan/echo.capstan.h"
#include "capstan/echo.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "net/address.h"
#include "net/block_on.h"
#include "net/http_server.h"
#include "net/loop_group.h"
#include "net/wait_group.h"

namespace capstan::bench {
namespace {

using echo::EchoRequest;
using echo::EchoResponse;
using Clock = std::chrono::steady_clock;

// ---- servers

class CapstanEcho final : public echo::EchoServer {
 public:
  net::Task<absl::Status> Echo(rpc::ServerContext&, const EchoRequest& request,
                               EchoResponse* response) override {
    response->set_payload(request.payload());
    co_return absl::OkStatus();
  }
};

class GrpcEcho final : public echo::Echo::CallbackService {
 public:
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* ctx, const EchoRequest* request,
                                 EchoResponse* response) override {
    response->set_payload(request->payload());
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

absl::Status SplitTarget(const std::string& target, std::string* host, int* port) {
  ASSIGN_OR_RETURN(net::Url url,
                   net::ParseUrl(target, {.require_port = true, .allow_port_zero = true}));
  *host = std::move(url.host);
  *port = url.port;
  return absl::OkStatus();
}

void AnnouncePort(const RpcBenchServerOptions& options, int port) {
  std::cout << "listening on " << port << std::endl;
  if (!options.port_file.empty()) {
    std::string tmp = options.port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), options.port_file.c_str());
  }
}

// ---- load

struct Shared {
  LatencyHistogram latency;
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> errors{0};
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::mutex error_mu;
  std::string first_error;
  void Error(std::string message) {
    if (errors.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> lock(error_mu);
      first_error = std::move(message);
    }
  }
};

std::string Payload(int bytes) {
  std::string s(static_cast<size_t>(bytes), '\0');
  std::mt19937 rng(1);
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

net::Task<void> CapstanWorker(std::shared_ptr<rpc::Channel> channel, Shared* shared,
                              std::string payload, net::WaitGroup* done) {
  echo::EchoClient client(channel);
  EchoRequest request;
  request.set_payload(std::move(payload));
  while (!shared->stop.load(std::memory_order_relaxed)) {
    int64_t start = NowMicros();
    auto response = co_await client.Echo(request);
    if (!response.ok()) {
      shared->Error(std::string(response.status().message()));
      continue;
    }
    if (shared->measuring.load(std::memory_order_relaxed)) {
      shared->latency.Add(NowMicros() - start);
      shared->calls.fetch_add(1, std::memory_order_relaxed);
    }
  }
  done->Done();
}

// Runs `per_loop` workers on one loop over `channels` and returns when all stop.
net::Task<void> CapstanLoad(net::EventLoop* loop, const RpcBenchOptions* o, int workers,
                            int channels, Shared* shared) {
  std::string host;
  int port = 0;
  (void)SplitTarget(o->target, &host, &port);
  std::vector<std::shared_ptr<rpc::Channel>> chans;
  for (int i = 0; i < std::max(1, channels); ++i)
    chans.push_back(rpc::Channel::Create(loop, host, port));
  net::WaitGroup done(loop);
  std::string payload = Payload(o->payload_bytes);
  for (int i = 0; i < workers; ++i) {
    done.Add();
    loop->Spawn(
        CapstanWorker(chans[static_cast<size_t>(i) % chans.size()], shared, payload, &done));
  }
  co_await done.Wait();
  for (auto& c : chans) c->Close();
}

// gRPC: each worker is a chain of callback-API calls.
class GrpcWorker {
 public:
  GrpcWorker(echo::Echo::Stub* stub, Shared* shared, const std::string& payload,
             std::atomic<int>* running, std::mutex* mu, std::condition_variable* cv)
      : stub_(stub), shared_(shared), running_(running), mu_(mu), cv_(cv) {
    request_.set_payload(payload);
  }
  void Start() {
    if (shared_->stop.load(std::memory_order_relaxed)) {
      if (running_->fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(*mu_);
        cv_->notify_all();
      }
      return;
    }
    context_ = std::make_unique<grpc::ClientContext>();
    response_.Clear();
    start_ = NowMicros();
    stub_->async()->Echo(context_.get(), &request_, &response_, [this](grpc::Status status) {
      if (!status.ok()) {
        shared_->Error(status.error_message());
      } else if (shared_->measuring.load(std::memory_order_relaxed)) {
        shared_->latency.Add(NowMicros() - start_);
        shared_->calls.fetch_add(1, std::memory_order_relaxed);
      }
      Start();
    });
  }

 private:
  echo::Echo::Stub* stub_;
  Shared* shared_;
  std::atomic<int>* running_;
  std::mutex* mu_;
  std::condition_variable* cv_;
  EchoRequest request_;
  EchoResponse response_;
  std::unique_ptr<grpc::ClientContext> context_;
  int64_t start_ = 0;
};

// Busy and total jiffies of one core from /proc/stat.
std::pair<int64_t, int64_t> CoreJiffies(int core) {
  std::ifstream in("/proc/stat");
  std::string line;
  std::string want = "cpu" + std::to_string(core) + " ";
  while (std::getline(in, line)) {
    if (!line.starts_with(want)) continue;
    std::istringstream fields(line.substr(want.size()));
    int64_t v[8] = {};
    for (auto& x : v) fields >> x;
    // user nice system idle iowait irq softirq steal
    int64_t idle = v[3] + v[4];
    int64_t total = 0;
    for (auto x : v) total += x;
    return {total - idle, total};
  }
  return {0, 0};
}

}  // namespace

absl::Status RunRpcBenchServer(const RpcBenchServerOptions& options) {
  std::string host;
  int port = 0;
  RETURN_IF_ERROR(SplitTarget(options.listen, &host, &port));
  if (options.system == "capstan") {
    ASSIGN_OR_RETURN(net::IoBackendKind io, net::ParseIoBackend(options.io));
    CapstanEcho service;
    rpc::Server server(
        {.host = host, .port = port, .threads = options.threads, .backend = io, .name = "echo"});
    server.AddService(&service);
    RETURN_IF_ERROR(server.Start());
    AnnouncePort(options, server.port());
    WaitForTerminationSignal();
    server.Shutdown(std::chrono::seconds(1));
    return absl::OkStatus();
  }
  if (options.system == "grpc") {
    GrpcEcho service;
    grpc::ServerBuilder builder;
    builder.SetMaxReceiveMessageSize(INT_MAX);
    builder.SetMaxSendMessageSize(INT_MAX);
    int bound = 0;
    builder.AddListeningPort(absl::StrCat(host, ":", port), grpc::InsecureServerCredentials(),
                             &bound);
    builder.RegisterService(&service);
    auto server = builder.BuildAndStart();
    if (server == nullptr || bound == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
    }
    AnnouncePort(options, bound);
    WaitForTerminationSignal();
    server->Shutdown();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown system '", options.system, "': use capstan or grpc"));
}

absl::StatusOr<RpcBenchResult> RunRpcBench(const RpcBenchOptions& o) {
  if (o.concurrency < 1 || o.connections < 1 || o.payload_bytes < 0 || o.threads < 1) {
    return absl::InvalidArgumentError(
        "concurrency, connections and threads must be at least 1, payload at least 0");
  }
  if (o.system != "capstan" && o.system != "grpc") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown system '", o.system, "': use capstan or grpc"));
  }
  Shared shared;
  std::unique_ptr<net::LoopGroup> loops;
  std::vector<std::shared_ptr<grpc::Channel>> grpc_channels;
  std::vector<std::unique_ptr<echo::Echo::Stub>> stubs;
  std::vector<std::unique_ptr<GrpcWorker>> grpc_workers;
  std::atomic<int> grpc_running{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> drivers;

  if (o.system == "capstan") {
    ASSIGN_OR_RETURN(net::IoBackendKind io, net::ParseIoBackend(o.io));
    net::LoopGroupOptions group;
    group.threads = o.threads;
    group.loop.backend = io;
    group.name = "bench";
    ASSIGN_OR_RETURN(loops, net::LoopGroup::Start(group));
    for (int t = 0; t < o.threads; ++t) {
      int workers = o.concurrency / o.threads + (t < o.concurrency % o.threads ? 1 : 0);
      int channels = std::max(1, o.connections / o.threads);
      net::EventLoop* loop = loops->loop(t);
      drivers.emplace_back([loop, &o, workers, channels, &shared] {
        if (workers > 0) net::BlockOn(loop, CapstanLoad(loop, &o, workers, channels, &shared));
      });
    }
  } else {
    for (int i = 0; i < o.connections; ++i) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per channel
      args.SetInt("capstan.bench.channel", i);
      args.SetMaxReceiveMessageSize(INT_MAX);
      auto channel = grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(), args);
      stubs.push_back(echo::Echo::NewStub(channel));
      grpc_channels.push_back(std::move(channel));
    }
    std::string payload = Payload(o.payload_bytes);
    grpc_running = o.concurrency;
    for (int i = 0; i < o.concurrency; ++i) {
      grpc_workers.push_back(
          std::make_unique<GrpcWorker>(stubs[static_cast<size_t>(i) % stubs.size()].get(), &shared,
                                       payload, &grpc_running, &mu, &cv));
    }
    for (auto& w : grpc_workers) w->Start();
  }

  auto sleep_for = [&](double seconds) {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  };
  sleep_for(o.warmup_seconds);
  std::vector<int64_t> cpu_before;
  for (int pid : o.server_pids) cpu_before.push_back(CpuMicros(pid));
  int64_t own_before = CpuMicros(getpid());
  auto core_before =
      o.server_core >= 0 ? CoreJiffies(o.server_core) : std::pair<int64_t, int64_t>{};
  auto start = Clock::now();
  shared.measuring = true;
  sleep_for(o.duration_seconds);
  shared.measuring = false;
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  int64_t own_cpu = CpuMicros(getpid()) - own_before;
  auto core_after = o.server_core >= 0 ? CoreJiffies(o.server_core) : std::pair<int64_t, int64_t>{};
  int64_t server_cpu = 0;
  for (size_t i = 0; i < o.server_pids.size(); ++i) {
    server_cpu += CpuMicros(o.server_pids[i]) - cpu_before[i];
  }
  shared.stop = true;
  if (o.system == "capstan") {
    for (auto& t : drivers) t.join();
    loops->Stop();
  } else {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return grpc_running.load() == 0; });
  }

  RpcBenchResult r;
  r.calls = shared.calls.load();
  r.errors = shared.errors.load();
  r.first_error = shared.first_error;
  r.seconds = seconds;
  r.qps = static_cast<double>(r.calls) / seconds;
  r.p50_us = shared.latency.PercentileMs(0.50) * 1000;
  r.p99_us = shared.latency.PercentileMs(0.99) * 1000;
  r.p999_us = shared.latency.PercentileMs(0.999) * 1000;
  if (r.calls > 0) {
    r.client_cpu_us_per_call = static_cast<double>(own_cpu) / static_cast<double>(r.calls);
    if (server_cpu > 0) {
      r.server_cpu_us_per_call = static_cast<double>(server_cpu) / static_cast<double>(r.calls);
      r.qps_per_server_core = 1e6 / r.server_cpu_us_per_call;
    }
  }
  r.payload_bytes_per_second = r.qps * o.payload_bytes;
  int64_t busy = core_after.first - core_before.first;
  int64_t total = core_after.second - core_before.second;
  if (total > 0 && busy > 0) {
    r.server_core_busy = static_cast<double>(busy) / static_cast<double>(total);
    r.qps_per_busy_core = r.qps / r.server_core_busy;
  }
  return r;
}

std::string RpcBenchResult::Json() const {
  return absl::StrFormat(
      "{\"calls\":%d,\"errors\":%d,\"seconds\":%.3f,\"qps\":%.1f,\"p50_us\":%.1f,"
      "\"p99_us\":%.1f,\"p999_us\":%.1f,\"server_cpu_us_per_call\":%.3f,"
      "\"qps_per_server_core\":%.1f,\"client_cpu_us_per_call\":%.3f,"
      "\"payload_bytes_per_second\":%.1f,\"server_core_busy\":%.3f,"
      "\"qps_per_busy_core\":%.1f,\"first_error\":\"%s\"}",
      calls, errors, seconds, qps, p50_us, p99_us, p999_us, server_cpu_us_per_call,
      qps_per_server_core, client_cpu_us_per_call, payload_bytes_per_second, server_core_busy,
      qps_per_busy_core, absl::StrReplaceAll(first_error, {{"\"", "'"}, {"\\", "/"}}));
}

std::string RpcBenchResult::Table() const {
  return absl::StrFormat(
      "calls %d in %.2fs (errors %d)\nqps %.0f\nlatency p50 %.1f us  p99 %.1f us  p99.9 %.1f us\n"
      "server cpu %.2f us/call (%.0f qps per core)\nclient cpu %.2f us/call\n"
      "server core busy %.0f%% (%.0f qps per busy core)\npayload %.1f MB/s one way\n%s",
      calls, seconds, errors, qps, p50_us, p99_us, p999_us, server_cpu_us_per_call,
      qps_per_server_core, client_cpu_us_per_call, server_core_busy * 100, qps_per_busy_core,
      payload_bytes_per_second / 1e6,
      first_error.empty() ? "" : "first error: " + first_error + "\n");
}

}  // namespace capstan::bench
