#include "gateway/edge/hooks.h"

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "gateway/gateway.h"
#include "gateway/proxy.h"
#include "gateway/router.h"

namespace capstan::gateway::edge {
namespace {

// The VM of the calling loop's thread, with the snapshot's limits.
Vm* LoopVm(const Limits& limits) {
  thread_local std::unique_ptr<Vm> vm;
  if (vm == nullptr) {
    absl::StatusOr<std::unique_ptr<Vm>> created = Vm::Create(limits);
    if (!created.ok()) {
      CAPSTAN_LOG(err, "edge: cannot create the loop's VM", "error",
                  std::string(created.status().message()));
      return nullptr;
    }
    vm = *std::move(created);
  }
  vm->set_limits(limits);
  return vm.get();
}

void LogFailure(const Route& route, const absl::Status& st, std::string_view phase) {
  CAPSTAN_LOG(err, "edge function failed; request answered 500", "route", route.label(), "phase",
              phase, "error", std::string(st.message()));
}

}  // namespace

absl::Status BuildFunctions(const GatewayConfig& config, const Snapshot* previous,
                            Snapshot* snapshot) {
  snapshot->edge_limits = Limits{.memory_bytes = config.edge_limits.memory_bytes,
                                 .instructions = config.edge_limits.instructions};
  for (const EdgeFunctionConfig& f : config.edge_functions) {
    auto fn = std::make_shared<FunctionSource>(MakeSource(f.name, f.source));
    if (previous != nullptr) {
      auto it = previous->edge_functions.find(f.name);
      if (it != previous->edge_functions.end() && it->second->version == fn->version) {
        snapshot->edge_functions.emplace(f.name, it->second);
        continue;
      }
    }
    absl::Status st = Validate(*fn, snapshot->edge_limits);
    if (!st.ok()) {
      std::string where = f.store_revision != 0
                              ? absl::StrCat(" (store revision ", f.store_revision, ")")
                          : !f.file.empty() ? absl::StrCat(" (", f.file, ")")
                                            : absl::StrCat(" (line ", f.line, ")");
      return absl::InvalidArgumentError(absl::StrCat(std::string(st.message()), where));
    }
    snapshot->edge_functions.emplace(f.name, std::move(fn));
  }
  return absl::OkStatus();
}

net::Task<std::optional<bool>> RunOnRequest(DownstreamContext& ctx, DownstreamExchange& x,
                                            const Snapshot& snapshot, const Route& route,
                                            RequestState* state) {
  ProxyRequest& in = x.request();
  const std::string& name = *route.config().edge_function;
  auto failed = [&](const absl::Status& st) -> std::optional<bool> {
    LogFailure(route, st, "on_request");
    ctx.counters->edge_failures.fetch_add(1, std::memory_order_relaxed);
    x.status = 500;
    x.SendLocal(500, "edge function failed\n");
    x.response_started = true;
    // The body is not read: the connection closes after a request with one.
    return in.keep_alive && !in.has_body;
  };
  auto it = snapshot.edge_functions.find(name);
  if (it == snapshot.edge_functions.end()) {
    co_return failed(
        absl::NotFoundError(absl::StrCat("edge function '", name, "' is not defined")));
  }
  Vm* vm = LoopVm(snapshot.edge_limits);
  if (vm == nullptr) co_return failed(absl::InternalError("no edge VM on this loop"));
  state->fn = it->second;
  RequestAccess& access = state->access;
  access.method = std::string(in.method);
  access.path = std::string(in.path);
  access.query = std::string(in.query);
  access.authority = in.authority;
  access.client = ctx.client_address;
  access.headers = in.fields;
  absl::Status st = vm->OnRequest(*state->fn, access);
  if (!st.ok()) co_return failed(st);
  in.method = access.method;
  in.path_from_edge = in.path != access.path;
  in.path = access.path;
  in.query = access.query;
  if (access.answer) {
    const DirectAnswer& answer = *access.answer;
    net::http1::HeaderFields fields;
    for (const auto& [field, value] : answer.headers) fields.Add(field, value);
    x.status = answer.status;
    x.response_started = true;
    bool has_body = in.method != "HEAD" && answer.status != 204 && answer.status != 304;
    if (x.SendHead(answer.status, fields, has_body, answer.body.size())) {
      bool ok = true;
      if (has_body) ok = co_await x.SendBody(net::Buffer(answer.body));
      if (ok) x.End(nullptr);
    }
    co_return in.keep_alive && !in.has_body;
  }
  Phases phases = vm->Load(*state->fn).value_or(Phases{});
  if (phases.on_response) {
    x.edit_response = [&snapshot, &route, counters = ctx.counters, fn = state->fn](
                          int status, net::http1::HeaderFields& fields) {
      Vm* loop_vm = LoopVm(snapshot.edge_limits);
      if (loop_vm == nullptr) return false;
      ResponseAccess response{.status = status, .headers = &fields};
      absl::Status st = loop_vm->OnResponse(*fn, response);
      if (!st.ok()) {
        LogFailure(route, st, "on_response");
        counters->edge_failures.fetch_add(1, std::memory_order_relaxed);
      }
      return st.ok();
    };
  }
  co_return std::nullopt;
}

void RunOnLog(DownstreamContext& ctx, DownstreamExchange& x, const Snapshot& snapshot,
              const Route& route, RequestState& state, double seconds) {
  x.edit_response = nullptr;
  if (state.fn == nullptr) return;
  Vm* vm = LoopVm(snapshot.edge_limits);
  if (vm == nullptr) return;
  ProxyRequest& in = x.request();
  std::string label = route.label();
  LogInfo info{.status = x.status,
               .latency_ms = seconds * 1000,
               .bytes_sent = x.bytes_sent,
               .method = in.method,
               .path = in.path,
               .route = label,
               .upstream = x.upstream,
               .request_id = x.request_id};
  absl::Status st = vm->OnLog(*state.fn, info);
  if (!st.ok()) {
    ctx.counters->edge_failures.fetch_add(1, std::memory_order_relaxed);
    CAPSTAN_LOG(err, "edge function failed in on_log", "route", label, "error",
                std::string(st.message()));
  }
}

}  // namespace capstan::gateway::edge
