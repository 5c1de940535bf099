// echo_example: a service on Capstan RPC, registered in the store, and a
// client that finds it there.
//
//   echo_example serve --listen 127.0.0.1:7001 --store 127.0.0.1:2379 --instance a
//   echo_example call --target store://127.0.0.1:2379/services/echo --count 10
//
// `serve` prints "listening HOST:PORT" once it accepts calls and is
// registered; SIGTERM or SIGINT deregisters it, then drains calls in flight.
// gRPC clients reach the same port (HTTP/2 without TLS, "h2c"), e.g.
//   grpcurl -plaintext 127.0.0.1:7001 list
//   grpcurl -plaintext -d '{"message":"hi"}' 127.0.0.1:7001 capstan.examples.Echo/Echo
// With --tls-cert-file/--tls-key-file the port is TLS for both protocols
// (--tls-client-ca-file and --tls-require-client-cert for mTLS); `call`
// takes the client side's --tls-ca-file, --tls-cert-file, --tls-key-file.
#include <signal.h>

#include <cstdio>
#include <map>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/signals.h"
#include "client/client.h"
#include "echo_example.capstan.h"
#include "mesh/discovery.h"
#include "mesh/endpoint_target.h"
#include "mesh/registry.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "rpc/balanced_channel.h"
#include "rpc/server.h"

namespace capstan::examples {
namespace {

using namespace std::chrono_literals;

// The service: the generated base class with its one method written.
class EchoService : public EchoServer {
 public:
  explicit EchoService(std::string instance) : instance_(std::move(instance)) {}

  net::Task<absl::Status> Echo(rpc::ServerContext& context, const EchoRequest& request,
                               EchoReply* reply) override {
    reply->set_deadline_left_ms(context.has_deadline()
                                    ? std::chrono::duration_cast<std::chrono::milliseconds>(
                                          context.deadline() - std::chrono::steady_clock::now())
                                          .count()
                                    : -1);
    if (request.sleep_ms() > 0) {
      co_await context.loop()->Sleep(std::chrono::milliseconds(request.sleep_ms()));
    }
    if (context.cancelled()) co_return absl::CancelledError("the caller went away");
    if (request.fail_code() != 0) {
      co_return absl::Status(static_cast<absl::StatusCode>(request.fail_code()),
                             absl::StrCat("asked to fail with code ", request.fail_code()));
    }
    reply->set_message(request.message());
    reply->set_instance(instance_);
    reply->set_peer(context.peer_identity().common_name);
    co_return absl::OkStatus();
  }

  net::Task<absl::Status> Count(rpc::ServerContext& context, const CountRequest& request,
                                rpc::ServerWriter<EchoReply>& out) override {
    EchoReply reply;
    reply.set_instance(instance_);
    for (uint32_t i = 0; i < request.count(); ++i) {
      if (i > 0 && request.interval_ms() > 0) {
        co_await context.loop()->Sleep(std::chrono::milliseconds(request.interval_ms()));
      }
      reply.set_message(absl::StrCat(request.message(), " ", i));
      // False once the caller cancelled or its deadline passed: stop producing.
      if (!co_await out.Write(reply)) co_return absl::CancelledError("the caller went away");
    }
    co_return absl::OkStatus();
  }

  net::Task<absl::Status> Collect(rpc::ServerContext& context, rpc::ServerReader<EchoRequest>& in,
                                  EchoReply* reply) override {
    EchoRequest request;
    std::string joined;
    while (co_await in.Read(&request)) {
      absl::StrAppend(&joined, joined.empty() ? "" : " ", request.message());
    }
    if (context.cancelled()) co_return absl::CancelledError("the caller went away");
    reply->set_message(joined);
    reply->set_instance(instance_);
    co_return absl::OkStatus();
  }

  net::Task<absl::Status> Chat(rpc::ServerContext& context,
                               rpc::ServerReaderWriter<EchoRequest, EchoReply>& stream) override {
    EchoRequest request;
    EchoReply reply;
    reply.set_instance(instance_);
    while (co_await stream.Read(&request)) {
      reply.set_message(request.message());
      if (!co_await stream.Write(reply)) break;
    }
    if (context.cancelled()) co_return absl::CancelledError("the caller went away");
    co_return absl::OkStatus();
  }

 private:
  std::string instance_;
};

struct ServeFlags {
  std::string listen = "127.0.0.1:0";
  std::string store;
  std::string prefix = "services/echo";
  std::string instance;
  int ttl_seconds = 10;
  int threads = 1;
  std::string admin;
  rpc::ServerTlsOptions tls;
};

int Serve(const ServeFlags& flags) {
  absl::StatusOr<mesh::Endpoint> listen =
      mesh::ParseEndpoint(flags.listen, /*allow_any_port=*/true);
  if (!listen.ok()) {
    std::fprintf(stderr, "--listen: %s\n", std::string(listen.status().message()).c_str());
    return 2;
  }
  EchoService service(flags.instance.empty() ? flags.listen : flags.instance);
  rpc::ServerOptions options;
  options.host = listen->host;
  options.port = listen->port;
  options.threads = flags.threads;
  options.admin_address = flags.admin;
  options.tls = flags.tls;
  rpc::Server server(options);
  server.AddService(&service);
  if (absl::Status st = server.Start(); !st.ok()) {
    std::fprintf(stderr, "cannot start the server: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  mesh::Endpoint advertised{.host = listen->host, .port = server.port()};
  std::unique_ptr<mesh::Registration> registration;
  if (!flags.store.empty()) {
    auto store = client::Client::Connect({.endpoints = {flags.store}, .timeout = 3000ms});
    if (!store.ok()) {
      std::fprintf(stderr, "--store: %s\n", std::string(store.status().message()).c_str());
      return 1;
    }
    auto reg = mesh::Registration::Start(std::shared_ptr<client::Client>(*std::move(store)),
                                         {.prefix = flags.prefix,
                                          .id = flags.instance,
                                          .endpoint = advertised,
                                          .ttl = std::chrono::seconds(flags.ttl_seconds)});
    if (!reg.ok()) {
      std::fprintf(stderr, "%s\n", std::string(reg.status().message()).c_str());
      server.Shutdown(0s);
      return 1;
    }
    registration = *std::move(reg);
  }
  std::printf("listening %s\n", mesh::FormatHostPort(advertised.host, advertised.port).c_str());
  if (server.admin_port() != 0)
    std::printf("admin %s:%d\n", listen->host.c_str(), server.admin_port());
  std::fflush(stdout);
  WaitForTerminationSignal();
  // Out of the set first, so no new calls come; then finish those running.
  registration.reset();
  server.Shutdown(5s);
  return 0;
}

struct CallFlags {
  std::string target;
  std::string balancer = "p2c";
  std::string message = "hello";
  int count = 10;
  int timeout_ms = 1000;
  int sleep_ms = 0;
  rpc::ChannelTlsOptions tls;
};

int Call(const CallFlags& flags) {
  auto source = mesh::NewEndpointSource(flags.target);
  if (!source.ok()) {
    std::fprintf(stderr, "--target: %s\n", std::string(source.status().message()).c_str());
    return 2;
  }
  auto loops = net::LoopGroup::Start({.name = "echo-client"});
  if (!loops.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loops.status().message()).c_str());
    return 1;
  }
  net::EventLoop* loop = (*loops)->loop(0);
  rpc::BalancedChannelOptions options;
  options.balancer = flags.balancer;
  options.channel.tls = flags.tls;
  options.channel.tls.enabled = !flags.tls.ca_file.empty() || !flags.tls.cert_file.empty();
  auto channel = net::RunOn(
      loop, [&] { return rpc::BalancedChannel::Create(loop, *std::move(source), options); });
  if (!channel.ok()) {
    std::fprintf(stderr, "%s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  int failed = net::BlockOn(
      loop, [](std::shared_ptr<rpc::BalancedChannel> channel, CallFlags flags) -> net::Task<int> {
        EchoClientT<rpc::BalancedChannel> echo(channel);
        std::map<std::string, int> by_instance;
        int failed = 0;
        for (int i = 0; i < flags.count; ++i) {
          EchoRequest request;
          request.set_message(flags.message);
          request.set_sleep_ms(flags.sleep_ms);
          auto start = std::chrono::steady_clock::now();
          auto reply = co_await echo.Echo(
              request,
              {.timeout = std::chrono::milliseconds(flags.timeout_ms), .idempotent = true});
          auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
          if (reply.ok()) {
            by_instance[reply->instance()]++;
            std::printf("ok instance=%s peer=%s latency_us=%lld\n", reply->instance().c_str(),
                        reply->peer().c_str(), static_cast<long long>(us));
          } else {
            ++failed;
            std::printf("error %s latency_us=%lld\n", reply.status().ToString().c_str(),
                        static_cast<long long>(us));
          }
        }
        std::string summary;
        for (const auto& [instance, n] : by_instance)
          absl::StrAppend(&summary, " ", instance, "=", n);
        std::printf("calls=%d failed=%d served:%s\n", flags.count, failed, summary.c_str());
        co_return failed;
      }(*channel, flags));
  net::RunOn(loop, [&] { channel->reset(); });
  (*loops)->Stop();
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace capstan::examples

int main(int argc, char** argv) {
  using namespace capstan::examples;
  capstan::BlockTerminationSignals();

  CLI::App app("Capstan RPC example: an echo service registered in the store, and its client.");
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn or err.")
      ->capture_default_str();
  ServeFlags serve;
  CLI::App* serve_cmd = app.add_subcommand("serve", "Run one instance of the service.");
  serve_cmd->add_option("--listen", serve.listen, "host:port to listen on (port 0: any free one).")
      ->capture_default_str();
  serve_cmd->add_option("--store", serve.store,
                        "The store (host:port) to register in; none: do not register.");
  serve_cmd->add_option("--prefix", serve.prefix, "Registry prefix of the service.")
      ->capture_default_str();
  serve_cmd->add_option("--instance", serve.instance,
                        "This instance's name (its key below the prefix); default host:port.");
  serve_cmd
      ->add_option("--ttl", serve.ttl_seconds,
                   "Lease TTL in seconds: how long the entry outlives a crashed instance.")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  serve_cmd->add_option("--threads", serve.threads, "Event loops (one per core).")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  serve_cmd->add_option("--admin", serve.admin,
                        "host:port for GET /metrics (Prometheus) and /status; none when empty.");
  serve_cmd->add_option("--tls-cert-file", serve.tls.cert_file,
                        "PEM certificate: the port serves TLS (both protocols).");
  serve_cmd->add_option("--tls-key-file", serve.tls.key_file, "PEM key of --tls-cert-file.");
  serve_cmd->add_option("--tls-client-ca-file", serve.tls.client_ca_file,
                        "PEM CAs whose client certificates are accepted and verified.");
  serve_cmd->add_flag("--tls-require-client-cert", serve.tls.require_client_cert,
                      "Refuse clients without a certificate from --tls-client-ca-file (mTLS).");
  CallFlags call;
  CLI::App* call_cmd = app.add_subcommand("call", "Call the service and print each answer.");
  call_cmd
      ->add_option("--target", call.target,
                   "Where the endpoints come from: static:///h:p,h:p, dns:///h:p or "
                   "store://h:p/prefix.")
      ->required();
  call_cmd
      ->add_option("--balancer", call.balancer,
                   "round_robin, weighted_round_robin, random, p2c, maglev.")
      ->capture_default_str();
  call_cmd->add_option("--count", call.count, "Calls to make, one after another.")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000'000));
  call_cmd->add_option("--timeout-ms", call.timeout_ms, "Deadline of each call.")
      ->capture_default_str()
      ->check(CLI::Range(1, 3'600'000));
  call_cmd->add_option("--sleep-ms", call.sleep_ms, "Ask the server to take this long.")
      ->capture_default_str()
      ->check(CLI::Range(0, 3'600'000));
  call_cmd->add_option("--message", call.message, "What to echo.")->capture_default_str();
  call_cmd->add_option("--tls-ca-file", call.tls.ca_file,
                       "TLS to the servers, verified against these PEM CAs.");
  call_cmd->add_option("--tls-cert-file", call.tls.cert_file,
                       "Client certificate (PEM) for servers that require one; implies TLS.");
  call_cmd->add_option("--tls-key-file", call.tls.key_file, "PEM key of --tls-cert-file.");
  call_cmd->add_option("--tls-server-name", call.tls.server_name,
                       "Name to verify in the servers' certificates (default: each host).");
  CLI11_PARSE(app, argc, argv);
  // Logs in the same logfmt as capstan's own subcommands.
  if (!capstan::InitLogging(log_level)) {
    std::fprintf(stderr, "echo_example: --log-level \"%s\" is not a level\n", log_level.c_str());
    return 2;
  }
  if (serve_cmd->parsed()) return Serve(serve);
  return Call(call);
}
