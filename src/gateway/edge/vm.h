// Edge functions: per-route Lua (LuaJIT) run by the gateway in three phases
// of a request — on_request, on_response (the response head) and on_log —
// inside a sandbox. This header is the engine: a Vm is one lua_State with
// its own allocator (a memory limit for the whole VM), an instruction
// budget per invocation, and an environment per function built from an
// allow-list (no io, os, ffi, debug, jit, load*, dofile, string.dump,
// getfenv/setfenv, collectgarbage; `require` only of string, table, math,
// bit, coroutine). The JIT is off in a Vm: compiled traces do not run the
// count hook, so a loop the JIT compiled could not be stopped (README.md).
//
//   auto vm = edge::Vm::Create({.memory_bytes = 32 << 20}).value();
//   edge::FunctionSource fn = edge::MakeSource("auth", lua_text);
//   RETURN_IF_ERROR(edge::Validate(fn, limits));   // at load: refuses a broken version
//   edge::RequestAccess req{...};
//   absl::Status st = vm->OnRequest(fn, req);      // !ok: answer 500, log st
//
// A function is compiled once per version (a hash of its name and source)
// on each Vm that runs it; its globals live as long as that version stays
// cached on that Vm and are never shared with another function or loop.
//
// Thread-safety: a Vm belongs to one thread (one per event loop: no locks).
// Validate and MakeSource are safe from any thread.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/status.h"
#include "net/http1.h"

struct lua_State;
struct lua_Debug;

namespace capstan::gateway::edge {

struct Limits {
  // Everything the VM holds (compiled functions, their globals, the
  // invocation's garbage): an allocation a function makes past this fails,
  // the invocation ends with "not enough memory". (What the gateway itself
  // allocates in the VM outside a call — a phase's argument table — is
  // never refused: a failure there would be a panic, not an error.)
  size_t memory_bytes = 32 << 20;
  // Lua VM instructions per invocation (one phase of one request).
  uint64_t instructions = 1'000'000;
};

// One version of one function.
struct FunctionSource {
  std::string name;
  std::string source;
  uint64_t version = 0;  // hash of name and source (MakeSource)
};
FunctionSource MakeSource(std::string name, std::string source);

// Compiles `fn` and runs its top level in a throwaway VM with `limits`:
// what a version must pass before it goes live. The error names the
// function and line ("edge function 'auth': auth:3: unexpected symbol").
absl::Status Validate(const FunctionSource& fn, const Limits& limits);

// A direct answer from on_request (`respond(status, headers, body)`).
struct DirectAnswer {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// on_request's view of the request; read and written by the function.
struct RequestAccess {
  std::string method, path, query;     // in and out (checked after the call)
  std::string_view authority, client;  // read only
  net::http1::HeaderFields* headers = nullptr;
  // The request's experiment assignment. Empty until experiment-split
  // routing fills it (then `req.experiment` is {key=..., variant=...}).
  std::string_view experiment_key, experiment_variant;
  // Out: the cluster the function chose (`req.cluster = "name"`).
  std::optional<std::string> cluster;
  // Out: `respond(...)` was called.
  std::optional<DirectAnswer> answer;
};

struct ResponseAccess {
  int status = 0;
  net::http1::HeaderFields* headers = nullptr;
};

struct LogInfo {
  int status = 0;
  double latency_ms = 0;
  uint64_t bytes_sent = 0;
  std::string_view method, path, route, upstream, request_id;
};

// Which phases a function defines.
struct Phases {
  bool on_request = false, on_response = false, on_log = false;
};

class Vm {
 public:
  static absl::StatusOr<std::unique_ptr<Vm>> Create(const Limits& limits);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Applies to the next invocations (the memory limit at once).
  void set_limits(const Limits& limits) { limits_ = limits; }
  const Limits& limits() const { return limits_; }

  // Compiles `fn` unless this version is cached; the phases it defines.
  absl::StatusOr<Phases> Load(const FunctionSource& fn);

  // The phases. A function without the phase is a no-op. An error (Lua
  // error, budget, memory, an invalid edit) comes back as a status whose
  // message names the function and, when Lua knows it, the line.
  absl::Status OnRequest(const FunctionSource& fn, RequestAccess& request);
  absl::Status OnResponse(const FunctionSource& fn, ResponseAccess& response);
  absl::Status OnLog(const FunctionSource& fn, const LogInfo& info);

  size_t memory_used() const { return used_; }
  size_t cached_functions() const { return cache_.size(); }
  uint64_t compilations() const { return compilations_; }

 private:
  struct Cached {
    int env_ref;  // the function's environment, in the registry
    Phases phases;
    std::list<uint64_t>::iterator lru;
  };
  enum class Phase { kRequest, kResponse, kLog };

  explicit Vm(const Limits& limits) : limits_(limits) {}
  absl::Status Init();
  absl::StatusOr<Cached*> Find(const FunctionSource& fn);
  // Pushes env[phase] (or returns false when it is not a function).
  bool PushPhase(const Cached& c, const char* phase);
  absl::Status Call(const FunctionSource& fn, int nargs);
  void Evict(uint64_t version);
  // After an invocation that ran out of memory: collect, and start over
  // with a fresh state if the functions' own data fill the VM.
  void Recover();

  static void* Allocate(void* ud, void* ptr, size_t old_size, size_t new_size);
  static void BudgetHook(lua_State* L, lua_Debug* ar);
  // The Lua API (the C functions read the current invocation).
  static int ReqHeader(lua_State* L);
  static int ReqHeaders(lua_State* L);
  static int ReqSetHeader(lua_State* L);
  static int ReqAddHeader(lua_State* L);
  static int SetOrAddHeader(lua_State* L, bool add);
  static int ReqRemoveHeader(lua_State* L);
  static int Respond(lua_State* L);
  static int Log(lua_State* L);
  static int Require(lua_State* L);
  static Vm* Self(lua_State* L);
  net::http1::HeaderFields* CurrentFields(lua_State* L);

  Limits limits_;
  lua_State* L_ = nullptr;
  size_t used_ = 0;
  bool enforce_limit_ = false;  // on during a protected call only (Call)
  // The invocation in progress (null between invocations).
  const FunctionSource* current_fn_ = nullptr;
  RequestAccess* current_request_ = nullptr;
  ResponseAccess* current_response_ = nullptr;
  Phase current_phase_ = Phase::kRequest;
  // Registry refs: the safe modules' originals, the methods of req/resp.
  int request_meta_ref_ = -1, response_meta_ref_ = -1;
  absl::flat_hash_map<uint64_t, Cached> cache_;
  std::list<uint64_t> lru_;  // most recently used first
  uint64_t compilations_ = 0;
};

// Compiled versions a Vm keeps at most (least recently used dropped).
inline constexpr size_t kMaxCachedFunctions = 256;
// A function's source, at most.
inline constexpr size_t kMaxSourceBytes = 1 << 20;

}  // namespace capstan::gateway::edge
