// The proxy's side of edge functions: where the gateway's request path calls
// the engine (vm.h). HandleRequest (proxy.cc) calls RunOnRequest after the
// route matched and RunOnLog after the access log; on_response runs through
// DownstreamExchange::edit_response, which RunOnRequest sets and the
// forwarding code calls with the response head.
//
// A function that fails (a Lua error, the instruction budget, the memory
// limit, an invalid edit) fails its request alone: 500 "edge function
// failed", and an error log naming the function, the route and the Lua
// message (with its line). on_log's failures are logged only (the answer
// has gone).
//
// Each event loop thread has its own Vm (thread_local, created on first
// use): no locks, functions compiled once per version per loop.
//
// Thread-safety: BuildFunctions from any thread; the rest on a loop.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "gateway/edge/vm.h"
#include "net/task.h"

namespace capstan::gateway {
struct DownstreamContext;
class DownstreamExchange;
class Route;
struct Snapshot;
struct GatewayConfig;
}  // namespace capstan::gateway

namespace capstan::gateway::edge {

// Fills snapshot->edge_functions and edge_limits from `config`: a version
// unchanged since `previous` is taken as it is, a new one is compiled
// (Validate) first, so a broken version fails the whole reload and the
// previous snapshot stays. The error names the function and the line.
absl::Status BuildFunctions(const GatewayConfig& config, const Snapshot* previous,
                            Snapshot* snapshot);

// What one request keeps of its edge function between the phases (in
// HandleRequest's frame; the request's method, path and query views point
// into `access` after on_request).
struct RequestState {
  std::shared_ptr<const FunctionSource> fn;
  RequestAccess access;
};

// Runs the route's on_request. nullopt: go on (state->access.cluster may
// name the cluster to use); else the request has been answered (the
// function's direct answer, or 500) and the value says whether the
// connection may carry another request.
net::Task<std::optional<bool>> RunOnRequest(DownstreamContext& ctx, DownstreamExchange& x,
                                            const Snapshot& snapshot, const Route& route,
                                            RequestState* state);

// Runs on_log, if the request ran a function that has one.
void RunOnLog(DownstreamContext& ctx, DownstreamExchange& x, const Snapshot& snapshot,
              const Route& route, RequestState& state, double seconds);

}  // namespace capstan::gateway::edge
