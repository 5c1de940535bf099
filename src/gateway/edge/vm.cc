#include "gateway/edge/vm.h"

// lua.hpp first: it wraps the C headers in extern "C" (luajit.h does not).
#include <lua.hpp>
// clang-format off
#include <luajit.h>
// clang-format on

#include <strings.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace capstan::gateway::edge {
namespace {

// The base functions a function's environment gets (the rest of the base
// library — load, loadstring, dofile, loadfile, getfenv, setfenv,
// collectgarbage, newproxy, gcinfo, module, require, print — is left out
// or replaced).
constexpr const char* kSafeBase[] = {
    "assert", "error",    "ipairs",   "next",         "pairs",        "pcall",
    "select", "tonumber", "tostring", "type",         "unpack",       "xpcall",
    "rawget", "rawset",   "rawequal", "setmetatable", "getmetatable",
};
// The modules a function gets (each its own shallow copy) and may require.
constexpr const char* kSafeModules[] = {"string", "table", "math", "bit", "coroutine"};

// Fields the gateway owns: editing them could change the message's framing
// or the connection (request smuggling, response splitting).
constexpr std::string_view kManagedFields[] = {"content-length", "transfer-encoding", "connection",
                                               "keep-alive",     "upgrade",           "te",
                                               "trailer",        "proxy-connection",  "host"};

constexpr size_t kMaxLogMessage = 4096;
constexpr size_t kMaxRespondBody = 1 << 20;

const char kModulesKey[] = "capstan.edge.modules";

bool IsTokenChar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0;
}

bool ValidToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// No CR, LF or NUL (and no other control but tab).
bool ValidFieldValue(std::string_view s) {
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

// Path and query: visible ASCII only (no space, no control, no '#').
bool ValidTargetPart(std::string_view s) {
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f || c == '#') return false;
  }
  return true;
}

bool Managed(std::string_view name) {
  for (std::string_view m : kManagedFields) {
    if (name.size() == m.size() && strncasecmp(name.data(), m.data(), m.size()) == 0) return true;
  }
  return false;
}

std::string_view ToView(lua_State* L, int index) {
  size_t n = 0;
  const char* s = lua_tolstring(L, index, &n);
  return s == nullptr ? std::string_view() : std::string_view(s, n);
}

void SetString(lua_State* L, const char* key, std::string_view value) {
  lua_pushlstring(L, value.data(), value.size());
  lua_setfield(L, -2, key);
}

}  // namespace

FunctionSource MakeSource(std::string name, std::string source) {
  // FNV-1a over name, a separator and source: same text, same version.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(name);
  mix(std::string_view("\0", 1));
  mix(source);
  return FunctionSource{std::move(name), std::move(source), h};
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const Limits& limits) {
  std::unique_ptr<Vm> vm(new Vm(limits));
  RETURN_IF_ERROR(vm->Init());
  return vm;
}

Vm::~Vm() {
  if (L_ != nullptr) lua_close(L_);
}

void* Vm::Allocate(void* ud, void* ptr, size_t old_size, size_t new_size) {
  Vm* vm = static_cast<Vm*>(ud);
  size_t old = ptr != nullptr ? old_size : 0;
  if (new_size == 0) {
    std::free(ptr);
    vm->used_ -= old;
    return nullptr;
  }
  // Growth past the limit fails: LuaJIT raises "not enough memory" in the
  // invocation that asked. Shrinking always succeeds.
  if (new_size > old && vm->enforce_limit_ &&
      vm->used_ - old + new_size > vm->limits_.memory_bytes) {
    return nullptr;
  }
  void* p = std::realloc(ptr, new_size);
  if (p == nullptr) return nullptr;
  vm->used_ = vm->used_ - old + new_size;
  return p;
}

void Vm::BudgetHook(lua_State* L, lua_Debug* ar) {
  // Once the budget is spent every instruction fails (the count becomes
  // 1), so a pcall in the function cannot swallow the error and go on.
  lua_sethook(L, &Vm::BudgetHook, LUA_MASKCOUNT, 1);
  char where[160] = "?";
  if (lua_getinfo(L, "Sl", ar) != 0 && ar->currentline > 0) {
    std::snprintf(where, sizeof(where), "%s:%d", ar->short_src, ar->currentline);
  }
  Vm* vm = Self(L);
  lua_pushfstring(L, "%s: instruction budget exhausted (%s instructions)", where,
                  std::to_string(vm->limits_.instructions).c_str());
  lua_error(L);
}

Vm* Vm::Self(lua_State* L) {
  void* ud = nullptr;
  lua_getallocf(L, &ud);
  return static_cast<Vm*>(ud);
}

absl::Status Vm::Init() {
  used_ = 0;
  enforce_limit_ = false;
  L_ = lua_newstate(&Vm::Allocate, this);
  if (L_ == nullptr) {
    // LuaJIT without GC64 on x86-64 refuses custom allocators.
    return absl::InternalError("edge: LuaJIT refused a custom allocator (built without GC64?)");
  }
  // The count hook does not run in JIT-compiled traces: with the JIT on, a
  // loop compiled to a trace could not be stopped by the budget.
  luaJIT_setmode(L_, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  const lua_CFunction openers[] = {luaopen_base, luaopen_string, luaopen_table, luaopen_math,
                                   luaopen_bit};
  for (lua_CFunction open : openers) {
    lua_pushcfunction(L_, open);
    lua_call(L_, 0, 0);
  }
  // string.dump would hand out bytecode (and the real string table is
  // what ("").method reaches).
  lua_getglobal(L_, "string");
  lua_pushnil(L_);
  lua_setfield(L_, -2, "dump");
  lua_pop(L_, 1);
  // getmetatable("") answers a string instead of the shared metatable, so
  // no function reaches (and changes) the string methods of the others.
  lua_pushliteral(L_, "");
  lua_getmetatable(L_, -1);
  lua_pushliteral(L_, "locked");
  lua_setfield(L_, -2, "__metatable");
  lua_pop(L_, 2);
  // The modules' originals, copied into each environment.
  lua_newtable(L_);
  for (const char* name : kSafeModules) {
    lua_getglobal(L_, name);
    lua_setfield(L_, -2, name);
  }
  lua_setfield(L_, LUA_REGISTRYINDEX, kModulesKey);
  // req and resp share one metatable: the methods, locked.
  static const luaL_Reg kMethods[] = {{"header", &Vm::ReqHeader},
                                      {"headers", &Vm::ReqHeaders},
                                      {"set_header", &Vm::ReqSetHeader},
                                      {"add_header", &Vm::ReqAddHeader},
                                      {"remove_header", &Vm::ReqRemoveHeader},
                                      {nullptr, nullptr}};
  lua_newtable(L_);  // metatable
  lua_newtable(L_);  // methods
  luaL_register(L_, nullptr, kMethods);
  lua_setfield(L_, -2, "__index");
  lua_pushliteral(L_, "locked");
  lua_setfield(L_, -2, "__metatable");
  request_meta_ref_ = luaL_ref(L_, LUA_REGISTRYINDEX);
  response_meta_ref_ = request_meta_ref_;
  lua_gc(L_, LUA_GCCOLLECT, 0);
  return absl::OkStatus();
}

absl::StatusOr<Vm::Cached*> Vm::Find(const FunctionSource& fn) {
  if (auto it = cache_.find(fn.version); it != cache_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return &it->second;
  }
  if (fn.source.size() > kMaxSourceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("edge function '", fn.name, "': source larger than 1 MiB"));
  }
  if (!fn.source.empty() && fn.source[0] == LUA_SIGNATURE[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat("edge function '", fn.name, "': precompiled bytecode is not accepted"));
  }
  std::string chunk_name = absl::StrCat("=", fn.name);
  // Mode "t": text only, never bytecode.
  if (luaL_loadbufferx(L_, fn.source.data(), fn.source.size(), chunk_name.c_str(), "t") != 0) {
    std::string message(ToView(L_, -1));
    lua_pop(L_, 1);
    lua_gc(L_, LUA_GCCOLLECT, 0);
    return absl::InvalidArgumentError(absl::StrCat("edge function '", fn.name, "': ", message));
  }
  // The environment: the safe base functions, copies of the modules, and
  // the gateway's own (require, respond, log). _G is the environment itself.
  lua_newtable(L_);
  int env = lua_gettop(L_);
  for (const char* name : kSafeBase) {
    lua_getglobal(L_, name);
    lua_setfield(L_, env, name);
  }
  lua_newtable(L_);  // this function's modules (require's upvalue)
  int modules = lua_gettop(L_);
  lua_getfield(L_, LUA_REGISTRYINDEX, kModulesKey);
  for (const char* name : kSafeModules) {
    lua_getfield(L_, -1, name);
    lua_newtable(L_);
    lua_pushnil(L_);
    while (lua_next(L_, -3) != 0) {
      lua_pushvalue(L_, -2);
      lua_insert(L_, -2);
      lua_rawset(L_, -4);
    }
    lua_pushvalue(L_, -1);
    lua_setfield(L_, modules, name);
    lua_setfield(L_, env, name);
    lua_pop(L_, 1);
  }
  lua_pop(L_, 1);  // the originals
  lua_pushcclosure(L_, &Vm::Require, 1);
  lua_setfield(L_, env, "require");
  lua_pushcfunction(L_, &Vm::Respond);
  lua_setfield(L_, env, "respond");
  lua_pushcfunction(L_, &Vm::Log);
  lua_setfield(L_, env, "log");
  lua_pushvalue(L_, env);
  lua_setfield(L_, env, "_G");
  lua_pushvalue(L_, env);
  lua_setfenv(L_, env - 1);  // the chunk's environment
  lua_insert(L_, env - 1);   // env below the chunk
  // The top level runs once per version, under the same limits as a phase.
  current_fn_ = &fn;
  absl::Status st = Call(fn, 0);
  current_fn_ = nullptr;
  if (!st.ok()) {
    lua_pop(L_, 2);  // the result and env
    return st;
  }
  lua_pop(L_, 1);  // the chunk's result
  Phases phases;
  auto defined = [this](const char* name) {
    lua_getfield(L_, -1, name);
    bool is_function = lua_isfunction(L_, -1);
    lua_pop(L_, 1);
    return is_function;
  };
  phases.on_request = defined("on_request");
  phases.on_response = defined("on_response");
  phases.on_log = defined("on_log");
  if (!phases.on_request && !phases.on_response && !phases.on_log) {
    lua_pop(L_, 1);
    return absl::InvalidArgumentError(absl::StrCat(
        "edge function '", fn.name, "' defines none of on_request, on_response, on_log"));
  }
  int ref = luaL_ref(L_, LUA_REGISTRYINDEX);
  ++compilations_;
  if (cache_.size() >= kMaxCachedFunctions) Evict(lru_.back());
  lru_.push_front(fn.version);
  Cached& c = cache_[fn.version];
  c.env_ref = ref;
  c.phases = phases;
  c.lru = lru_.begin();
  return &c;
}

void Vm::Evict(uint64_t version) {
  auto it = cache_.find(version);
  if (it == cache_.end()) return;
  luaL_unref(L_, LUA_REGISTRYINDEX, it->second.env_ref);
  lru_.erase(it->second.lru);
  cache_.erase(it);
}

absl::StatusOr<Phases> Vm::Load(const FunctionSource& fn) {
  absl::StatusOr<Cached*> c = Find(fn);
  if (!c.ok()) {
    Recover();
    return c.status();
  }
  return (*c)->phases;
}

absl::Status Vm::Call(const FunctionSource& fn, int nargs) {
  // The budget counts from here (lua_sethook resets the counter).
  uint64_t budget = limits_.instructions;
  if (budget > 0x7fffffff) budget = 0x7fffffff;
  if (budget == 0) budget = 1;
  lua_sethook(L_, &Vm::BudgetHook, LUA_MASKCOUNT, static_cast<int>(budget));
  // The memory limit holds inside the protected call only: an allocation
  // the gateway makes outside one (the arguments it builds) must not fail,
  // or LuaJIT would panic (abort) instead of failing the request.
  enforce_limit_ = true;
  int rc = lua_pcall(L_, nargs, 1, 0);
  enforce_limit_ = false;
  lua_sethook(L_, nullptr, 0, 0);
  if (rc == 0) return absl::OkStatus();
  std::string message;
  if (rc == LUA_ERRMEM) {
    message =
        absl::StrCat("not enough memory (the VM's limit is ", limits_.memory_bytes, " bytes)");
  } else if (lua_isstring(L_, -1)) {
    message = std::string(ToView(L_, -1));
  } else {
    message = absl::StrCat("error object is a ", luaL_typename(L_, -1), " value");
  }
  lua_pop(L_, 1);
  lua_pushnil(L_);  // the caller pops one result either way
  return absl::InternalError(absl::StrCat("edge function '", fn.name, "': ", message));
}

void Vm::Recover() {
  lua_gc(L_, LUA_GCCOLLECT, 0);
  if (used_ <= limits_.memory_bytes / 4 * 3) return;
  // What remains is the functions' own (their globals): start over, the
  // functions are compiled again on their next use.
  CAPSTAN_LOG(warn, "edge: VM memory still near its limit after a collection; resetting the VM",
              "used", used_, "limit", limits_.memory_bytes);
  lua_close(L_);
  L_ = nullptr;
  cache_.clear();
  lru_.clear();
  absl::Status st = Init();
  if (!st.ok()) std::abort();  // Init succeeded once with this allocator
}

bool Vm::PushPhase(const Cached& c, const char* phase) {
  lua_rawgeti(L_, LUA_REGISTRYINDEX, c.env_ref);
  lua_getfield(L_, -1, phase);
  lua_remove(L_, -2);
  if (lua_isfunction(L_, -1)) return true;
  lua_pop(L_, 1);
  return false;
}

absl::Status Vm::OnRequest(const FunctionSource& fn, RequestAccess& request) {
  absl::StatusOr<Cached*> c = Find(fn);
  if (!c.ok()) {
    Recover();
    return c.status();
  }
  if (!(*c)->phases.on_request || !PushPhase(**c, "on_request")) return absl::OkStatus();
  lua_createtable(L_, 0, 8);
  SetString(L_, "method", request.method);
  SetString(L_, "path", request.path);
  SetString(L_, "query", request.query);
  SetString(L_, "authority", request.authority);
  SetString(L_, "client", request.client);
  if (!request.experiment_key.empty()) {
    lua_createtable(L_, 0, 2);
    SetString(L_, "key", request.experiment_key);
    SetString(L_, "variant", request.experiment_variant);
    lua_setfield(L_, -2, "experiment");
  }
  lua_rawgeti(L_, LUA_REGISTRYINDEX, request_meta_ref_);
  lua_setmetatable(L_, -2);
  lua_pushvalue(L_, -1);
  lua_insert(L_, -3);  // req, on_request, req
  current_fn_ = &fn;
  current_request_ = &request;
  current_phase_ = Phase::kRequest;
  absl::Status st = Call(fn, 1);
  current_request_ = nullptr;
  current_fn_ = nullptr;
  lua_pop(L_, 1);  // the result
  if (st.ok()) {
    // Read back what the function may have changed.
    auto read = [&](const char* key, std::string* out) {
      lua_getfield(L_, -1, key);
      if (lua_type(L_, -1) == LUA_TSTRING) {
        *out = std::string(ToView(L_, -1));
      } else if (st.ok()) {
        st = absl::InvalidArgumentError(
            absl::StrCat("edge function '", fn.name, "': req.", key, " must be a string"));
      }
      lua_pop(L_, 1);
    };
    read("method", &request.method);
    read("path", &request.path);
    read("query", &request.query);
    lua_getfield(L_, -1, "cluster");
    if (lua_type(L_, -1) == LUA_TSTRING) {
      request.cluster = std::string(ToView(L_, -1));
    } else if (!lua_isnil(L_, -1) && st.ok()) {
      st = absl::InvalidArgumentError(
          absl::StrCat("edge function '", fn.name, "': req.cluster must be a string"));
    }
    lua_pop(L_, 1);
    if (st.ok() && !ValidToken(request.method)) {
      st = absl::InvalidArgumentError(
          absl::StrCat("edge function '", fn.name, "': req.method is not a valid method"));
    }
    if (st.ok() && (!request.path.starts_with('/') || !ValidTargetPart(request.path))) {
      st = absl::InvalidArgumentError(absl::StrCat(
          "edge function '", fn.name, "': req.path must start with '/' and hold visible ASCII"));
    }
    if (st.ok() && !ValidTargetPart(request.query)) {
      st = absl::InvalidArgumentError(
          absl::StrCat("edge function '", fn.name, "': req.query must hold visible ASCII"));
    }
  }
  lua_pop(L_, 1);  // req
  if (!st.ok()) Recover();
  return st;
}

absl::Status Vm::OnResponse(const FunctionSource& fn, ResponseAccess& response) {
  absl::StatusOr<Cached*> c = Find(fn);
  if (!c.ok()) {
    Recover();
    return c.status();
  }
  if (!(*c)->phases.on_response || !PushPhase(**c, "on_response")) return absl::OkStatus();
  lua_createtable(L_, 0, 1);
  lua_pushinteger(L_, response.status);
  lua_setfield(L_, -2, "status");
  lua_rawgeti(L_, LUA_REGISTRYINDEX, response_meta_ref_);
  lua_setmetatable(L_, -2);
  current_fn_ = &fn;
  current_response_ = &response;
  current_phase_ = Phase::kResponse;
  absl::Status st = Call(fn, 1);
  current_response_ = nullptr;
  current_fn_ = nullptr;
  lua_pop(L_, 1);
  if (!st.ok()) Recover();
  return st;
}

absl::Status Vm::OnLog(const FunctionSource& fn, const LogInfo& info) {
  absl::StatusOr<Cached*> c = Find(fn);
  if (!c.ok()) {
    Recover();
    return c.status();
  }
  if (!(*c)->phases.on_log || !PushPhase(**c, "on_log")) return absl::OkStatus();
  lua_createtable(L_, 0, 8);
  lua_pushinteger(L_, info.status);
  lua_setfield(L_, -2, "status");
  lua_pushnumber(L_, info.latency_ms);
  lua_setfield(L_, -2, "latency_ms");
  lua_pushnumber(L_, static_cast<lua_Number>(info.bytes_sent));
  lua_setfield(L_, -2, "bytes_sent");
  SetString(L_, "method", info.method);
  SetString(L_, "path", info.path);
  SetString(L_, "route", info.route);
  SetString(L_, "upstream", info.upstream);
  SetString(L_, "request_id", info.request_id);
  current_fn_ = &fn;
  current_phase_ = Phase::kLog;
  absl::Status st = Call(fn, 1);
  current_fn_ = nullptr;
  lua_pop(L_, 1);
  if (!st.ok()) Recover();
  return st;
}

// ---- the Lua API. Errors are raised after every C++ temporary is gone.

net::http1::HeaderFields* Vm::CurrentFields(lua_State* L) {
  if (current_request_ != nullptr) return current_request_->headers;
  if (current_response_ != nullptr) return current_response_->headers;
  luaL_error(L, "headers can be read and edited only in on_request and on_response");
  return nullptr;
}

int Vm::ReqHeader(lua_State* L) {
  Vm* vm = Self(L);
  net::http1::HeaderFields* fields = vm->CurrentFields(L);
  size_t n = 0;
  const char* name = luaL_checklstring(L, 2, &n);
  std::optional<std::string_view> v = fields->Get(std::string_view(name, n));
  if (!v) {
    lua_pushnil(L);
  } else {
    lua_pushlstring(L, v->data(), v->size());
  }
  return 1;
}

int Vm::ReqHeaders(lua_State* L) {
  Vm* vm = Self(L);
  net::http1::HeaderFields* fields = vm->CurrentFields(L);
  lua_createtable(L, 0, static_cast<int>(fields->size()));
  for (const auto& f : *fields) {
    // Names as lowercase keys; the first value of a repeated field.
    char lower[256];
    if (f.name.size() >= sizeof(lower)) continue;
    for (size_t i = 0; i < f.name.size(); ++i) {
      lower[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(f.name[i])));
    }
    lua_pushlstring(L, lower, f.name.size());
    lua_rawget(L, -2);
    bool present = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (present) continue;
    lua_pushlstring(L, lower, f.name.size());
    lua_pushlstring(L, f.value.data(), f.value.size());
    lua_rawset(L, -3);
  }
  return 1;
}

namespace {

// Checks a header edit's arguments; the error to raise, or null.
const char* CheckEdit(std::string_view name, const std::string_view* value) {
  if (!ValidToken(name)) return "invalid header name";
  if (Managed(name)) return "this header is managed by the gateway and cannot be edited";
  if (value != nullptr && !ValidFieldValue(*value)) {
    return "header value must not contain CR, LF, NUL or other control characters";
  }
  return nullptr;
}

}  // namespace

// set_header and add_header: the same checks, then replace or add.
int Vm::SetOrAddHeader(lua_State* L, bool add) {
  Vm* vm = Self(L);
  net::http1::HeaderFields* fields = vm->CurrentFields(L);
  size_t nn = 0, vn = 0;
  const char* name = luaL_checklstring(L, 2, &nn);
  const char* value = luaL_checklstring(L, 3, &vn);
  std::string_view v(value, vn);
  if (const char* error = CheckEdit(std::string_view(name, nn), &v)) {
    return luaL_error(L, "%s('%s'): %s", add ? "add_header" : "set_header", name, error);
  }
  if (add) {
    fields->Add(std::string_view(name, nn), v);
  } else {
    fields->Set(std::string_view(name, nn), v);
  }
  return 0;
}

int Vm::ReqSetHeader(lua_State* L) { return SetOrAddHeader(L, /*add=*/false); }

int Vm::ReqAddHeader(lua_State* L) { return SetOrAddHeader(L, /*add=*/true); }

int Vm::ReqRemoveHeader(lua_State* L) {
  Vm* vm = Self(L);
  net::http1::HeaderFields* fields = vm->CurrentFields(L);
  size_t nn = 0;
  const char* name = luaL_checklstring(L, 2, &nn);
  if (const char* error = CheckEdit(std::string_view(name, nn), nullptr)) {
    return luaL_error(L, "remove_header('%s'): %s", name, error);
  }
  lua_pushinteger(L, static_cast<lua_Integer>(fields->Remove(std::string_view(name, nn))));
  return 1;
}

int Vm::Respond(lua_State* L) {
  Vm* vm = Self(L);
  if (vm->current_request_ == nullptr) {
    return luaL_error(L, "respond() is allowed only in on_request");
  }
  lua_Integer status = luaL_checkinteger(L, 1);
  if (status < 200 || status > 599) return luaL_error(L, "respond: status must be 200..599");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  size_t body_size = 0;
  const char* body = luaL_optlstring(L, 3, "", &body_size);
  if (body_size > kMaxRespondBody) return luaL_error(L, "respond: body larger than 1 MiB");
  const char* error = nullptr;
  {
    DirectAnswer answer;
    answer.status = static_cast<int>(status);
    answer.body.assign(body, body_size);
    if (!lua_isnoneornil(L, 2)) {
      lua_pushnil(L);
      while (error == nullptr && lua_next(L, 2) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
          error = "respond: headers must map strings to strings";
        } else {
          std::string_view name = ToView(L, -2), value = ToView(L, -1);
          error = CheckEdit(name, &value);
          if (error == nullptr) answer.headers.emplace_back(name, value);
        }
        lua_pop(L, 1);
      }
      if (error != nullptr) lua_pop(L, 1);  // the key left by the interrupted walk
    }
    if (error == nullptr) vm->current_request_->answer = std::move(answer);
  }
  if (error != nullptr) return luaL_error(L, "%s", error);
  lua_pushboolean(L, 1);
  return 1;
}

int Vm::Log(lua_State* L) {
  Vm* vm = Self(L);
  {
    std::string message;
    int n = lua_gettop(L);
    for (int i = 1; i <= n && message.size() < kMaxLogMessage; ++i) {
      if (i > 1) message += ' ';
      if (lua_type(L, i) == LUA_TSTRING || lua_type(L, i) == LUA_TNUMBER) {
        message += ToView(L, i);
      } else if (lua_isboolean(L, i)) {
        message += lua_toboolean(L, i) ? "true" : "false";
      } else {
        message += luaL_typename(L, i);
      }
    }
    if (message.size() > kMaxLogMessage) message.resize(kMaxLogMessage);
    CAPSTAN_LOG(info, "edge function log", "function",
                vm->current_fn_ != nullptr ? vm->current_fn_->name : std::string("?"), "message",
                message);
  }
  return 0;
}

int Vm::Require(lua_State* L) {
  const char* name = luaL_checkstring(L, 1);
  lua_getfield(L, lua_upvalueindex(1), name);
  if (lua_isnil(L, -1)) {
    return luaL_error(
        L, "module '%s' is not allowed (allowed: string, table, math, bit, coroutine)", name);
  }
  return 1;
}

absl::Status Validate(const FunctionSource& fn, const Limits& limits) {
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm, Vm::Create(limits));
  absl::StatusOr<Phases> phases = vm->Load(fn);
  return phases.status();
}

}  // namespace capstan::gateway::edge
