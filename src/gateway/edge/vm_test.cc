#include "gateway/edge/vm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace capstan::gateway::edge {
namespace {

using ::testing::HasSubstr;

Limits SmallLimits() { return Limits{.memory_bytes = 8 << 20, .instructions = 200'000}; }

class EdgeVmTest : public ::testing::Test {
 protected:
  void SetUp() override { vm_ = Vm::Create(SmallLimits()).value(); }

  // Runs `body` as on_request's body of a function named `name`.
  absl::Status RunRequest(const std::string& name, const std::string& body) {
    FunctionSource fn = MakeSource(name, "function on_request(req)\n" + body + "\nend\n");
    request_ = RequestAccess{};
    request_.method = "GET";
    request_.path = "/a";
    request_.query = "x=1";
    request_.authority = "example.com";
    request_.client = "127.0.0.1";
    request_.headers = &fields_;
    return vm_->OnRequest(fn, request_);
  }

  std::unique_ptr<Vm> vm_;
  net::http1::HeaderFields fields_;
  RequestAccess request_;
};

// ---- escapes: every one must fail cleanly, naming the function and line.

TEST_F(EdgeVmTest, NoIo) {
  absl::Status st = RunRequest("esc", "io.open('/etc/passwd')");
  EXPECT_THAT(st.message(), HasSubstr("edge function 'esc': esc:2:"));
  EXPECT_THAT(st.message(), HasSubstr("'io'"));
}

TEST_F(EdgeVmTest, NoOs) {
  EXPECT_THAT(RunRequest("esc", "os.execute('touch /tmp/x')").message(), HasSubstr("'os'"));
}

TEST_F(EdgeVmTest, RequireOutsideTheAllowListFails) {
  for (const char* module : {"ffi", "io", "os", "debug", "jit", "package"}) {
    absl::Status st = RunRequest("esc", std::string("local m = require '") + module + "'");
    EXPECT_THAT(st.message(), HasSubstr("is not allowed")) << module;
  }
  EXPECT_TRUE(RunRequest("ok", "local s = require 'string' assert(s.upper('a') == 'A')").ok());
}

TEST_F(EdgeVmTest, DangerousGlobalsAreAbsent) {
  for (const char* name :
       {"load", "loadstring", "dofile", "loadfile", "getfenv", "setfenv", "collectgarbage",
        "newproxy", "module", "print", "debug", "jit", "ffi", "package", "gcinfo"}) {
    EXPECT_TRUE(RunRequest("g", std::string("assert(") + name + " == nil)").ok()) << name;
    EXPECT_TRUE(RunRequest("g", std::string("assert(_G['") + name + "'] == nil)").ok()) << name;
  }
}

TEST_F(EdgeVmTest, BytecodeIsRefused) {
  // Precompiled chunks are refused whatever they hold.
  FunctionSource fn = MakeSource("bc", std::string("\x1bLJ\x02\x00junk", 9));
  EXPECT_THAT(Validate(fn, SmallLimits()).message(), HasSubstr("bytecode"));
  // string.dump, by name and through the string metatable.
  EXPECT_TRUE(RunRequest("d", "assert(string.dump == nil and ('').dump == nil)").ok());
}

TEST_F(EdgeVmTest, SetfenvCannotReachTheRealGlobals) {
  EXPECT_FALSE(RunRequest("e", "setfenv(1, {})").ok());
  EXPECT_FALSE(RunRequest("e", "local g = getfenv(0)").ok());
  // _G is the function's own environment.
  EXPECT_TRUE(RunRequest("e", "assert(_G.io == nil and _G._G == _G)").ok());
}

TEST_F(EdgeVmTest, StringMetatableIsLocked) {
  EXPECT_TRUE(RunRequest("m", "assert(getmetatable('') == 'locked')").ok());
  absl::Status st = RunRequest("m", "getmetatable('').__index.upper = nil");
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(RunRequest("m", "assert(getmetatable(req) == 'locked')").ok());
  EXPECT_FALSE(RunRequest("m", "setmetatable(req, {})").ok());
}

TEST_F(EdgeVmTest, FunctionsCannotSeeEachOthersGlobals) {
  ASSERT_TRUE(RunRequest("a", "secret = 42; string.upper = nil; table.insert = nil").ok());
  EXPECT_TRUE(RunRequest("b",
                         "assert(secret == nil); assert(string.upper('x') == 'X'); "
                         "local t = {}; table.insert(t, 1); assert(('x'):upper() == 'X')")
                  .ok());
}

// ---- limits

TEST_F(EdgeVmTest, InfiniteLoopExhaustsTheBudget) {
  absl::Status st = RunRequest("loop", "while true do end");
  EXPECT_THAT(st.message(), HasSubstr("loop:2: instruction budget exhausted"));
  // A pcall in the function cannot swallow it.
  st = RunRequest("loop2", "while true do pcall(function() while true do end end) end");
  EXPECT_THAT(st.message(), HasSubstr("instruction budget exhausted"));
  // A coroutine neither.
  st = RunRequest("loop3", "local co = coroutine.wrap(function() while true do end end) co()");
  EXPECT_THAT(st.message(), HasSubstr("instruction budget exhausted"));
  // The VM keeps working.
  EXPECT_TRUE(RunRequest("fine", "req.path = '/ok'").ok());
  EXPECT_EQ(request_.path, "/ok");
}

TEST_F(EdgeVmTest, TheBudgetIsPerInvocation) {
  // Each call runs ~ 150k instructions: under the budget every time.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(RunRequest("work", "local x = 0 for i = 1, 50000 do x = x + i end").ok());
  }
}

TEST_F(EdgeVmTest, MemoryBombHitsTheLimit) {
  absl::Status st =
      RunRequest("bomb", "local t = {} for i = 1, 1e5 do t[i] = string.rep('y', 4096) .. i end");
  EXPECT_THAT(st.message(), HasSubstr("not enough memory"));
  st = RunRequest("bomb2", "local s = string.rep('x', 1e9)");
  EXPECT_THAT(st.message(), HasSubstr("not enough memory"));
  EXPECT_LE(vm_->memory_used(), SmallLimits().memory_bytes);
  EXPECT_TRUE(RunRequest("fine", "req.path = '/ok'").ok());
}

TEST_F(EdgeVmTest, GlobalsThatFillTheVmResetIt) {
  // Each call keeps 1 MiB in a global: after a few the VM is full; the
  // invocation that fails resets the VM, and others keep working.
  bool failed = false;
  for (int i = 0; i < 20 && !failed; ++i) {
    failed =
        !RunRequest("hoard",
                    "hoard = hoard or {} hoard[#hoard + 1] = string.rep('x', 1048576 - #hoard)")
             .ok();
  }
  EXPECT_TRUE(failed);
  EXPECT_LE(vm_->memory_used(), SmallLimits().memory_bytes / 4 * 3);
  EXPECT_TRUE(RunRequest("fine", "req.path = '/ok'").ok());
}

TEST_F(EdgeVmTest, AFullVmDoesNotPanicWhenTheGatewayBuildsArguments) {
  // The function fills the VM to its limit and swallows the memory error:
  // the invocation succeeds and leaves the VM full.
  ASSERT_TRUE(RunRequest("fill",
                         "hoard = {}\n"
                         "pcall(function() while true do hoard[#hoard + 1] = "
                         "string.rep('x', 4000) .. #hoard end end)")
                  .ok());
  EXPECT_GT(vm_->memory_used(), SmallLimits().memory_bytes - (64 << 10));
  // Building the next request's table happens outside the protected call:
  // it must not be refused (LuaJIT would panic). The next invocations fail
  // or pass, but the process survives and the VM recovers.
  for (int i = 0; i < 100; ++i) fields_.Add("x-h" + std::to_string(i), std::string(100, 'v'));
  bool recovered = false;
  for (int i = 0; i < 3 && !recovered; ++i)
    recovered = RunRequest("other", "req.path = '/ok'").ok();
  EXPECT_TRUE(recovered);
}

TEST(EdgeValidateTest, RefusesHugeSources) {
  std::string source = "function on_log(i) end\n-- " + std::string(kMaxSourceBytes, 'x');
  EXPECT_THAT(Validate(MakeSource("huge", source), SmallLimits()).message(),
              HasSubstr("larger than 1 MiB"));
}

TEST_F(EdgeVmTest, ErrorsNameTheFunctionAndLine) {
  absl::Status st = RunRequest("named", "local x = nil\nreturn x.y");
  EXPECT_THAT(st.message(), HasSubstr("edge function 'named': named:3:"));
  st = RunRequest("named", "error('boom')");
  EXPECT_THAT(st.message(), HasSubstr("named:2: boom"));
  st = RunRequest("named", "error({})");
  EXPECT_THAT(st.message(), HasSubstr("error object is a table value"));
}

TEST(EdgeValidateTest, RefusesBrokenSourceNamingTheLine) {
  absl::Status st =
      Validate(MakeSource("broken", "function on_request(req)\n  x = = 1\nend\n"), SmallLimits());
  EXPECT_THAT(st.message(), HasSubstr("edge function 'broken': broken:2:"));
  st = Validate(MakeSource("none", "x = 1"), SmallLimits());
  EXPECT_THAT(st.message(), HasSubstr("defines none of"));
  st = Validate(MakeSource("top", "while true do end"), SmallLimits());
  EXPECT_THAT(st.message(), HasSubstr("instruction budget exhausted"));
  EXPECT_TRUE(Validate(MakeSource("good", "function on_log(i) end"), SmallLimits()).ok());
}

TEST_F(EdgeVmTest, CompiledOncePerVersion) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(RunRequest("v", "n = (n or 0) + 1").ok());
  EXPECT_EQ(vm_->compilations(), 1u);
  // Globals persist within a version on one VM.
  ASSERT_TRUE(RunRequest("v", "n = (n or 0) + 1").ok());
  ASSERT_TRUE(RunRequest("v2", "assert(n == nil)").ok());
  EXPECT_EQ(vm_->compilations(), 2u);
}

// ---- the request API

TEST_F(EdgeVmTest, RequestEdits) {
  fields_.Add("User-Agent", "curl");
  absl::Status st = RunRequest("edit",
                               "assert(req.method == 'GET' and req.path == '/a' and "
                               "req.query == 'x=1' and req.authority == 'example.com')\n"
                               "assert(req:header('user-agent') == 'curl')\n"
                               "assert(req:headers()['user-agent'] == 'curl')\n"
                               "assert(req.experiment == nil)\n"
                               "req:set_header('x-edge', 'yes')\n"
                               "req:remove_header('user-agent')\n"
                               "req.path = '/b' req.query = '' req.method = 'POST'\n"
                               "req.cluster = 'blue'");
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(fields_.Get("x-edge").value_or(""), "yes");
  EXPECT_FALSE(fields_.Get("user-agent").has_value());
  EXPECT_EQ(request_.path, "/b");
  EXPECT_EQ(request_.method, "POST");
  EXPECT_EQ(request_.cluster.value_or(""), "blue");
  EXPECT_FALSE(request_.answer.has_value());
}

TEST_F(EdgeVmTest, InvalidEditsFail) {
  EXPECT_THAT(RunRequest("h", "req:set_header('content-length', '1')").message(),
              HasSubstr("managed by the gateway"));
  EXPECT_THAT(RunRequest("h", "req:set_header('x', 'a\\r\\nb: c')").message(),
              HasSubstr("must not contain CR"));
  EXPECT_THAT(RunRequest("h", "req:set_header('bad name', 'v')").message(),
              HasSubstr("invalid header name"));
  EXPECT_THAT(RunRequest("h", "req.path = 'nope'").message(), HasSubstr("req.path"));
  EXPECT_THAT(RunRequest("h", "req.path = '/a b'").message(), HasSubstr("req.path"));
  EXPECT_THAT(RunRequest("h", "req.method = 'GE T'").message(), HasSubstr("req.method"));
}

TEST_F(EdgeVmTest, Respond) {
  ASSERT_TRUE(RunRequest("r", "return respond(403, {['x-why'] = 'no'}, 'denied\\n')").ok());
  ASSERT_TRUE(request_.answer.has_value());
  EXPECT_EQ(request_.answer->status, 403);
  EXPECT_EQ(request_.answer->body, "denied\n");
  ASSERT_EQ(request_.answer->headers.size(), 1u);
  EXPECT_EQ(request_.answer->headers[0].first, "x-why");
  EXPECT_THAT(RunRequest("r", "respond(99)").message(), HasSubstr("200..599"));
}

TEST_F(EdgeVmTest, StaleRequestObjectCannotEditLater) {
  ASSERT_TRUE(RunRequest("s", "saved = req").ok());
  FunctionSource fn = MakeSource("s",
                                 "function on_request(req)\nsaved = req\nend\n"
                                 "function on_log(info) saved:set_header('a', 'b') end");
  ASSERT_TRUE(vm_->OnRequest(fn, request_).ok());
  absl::Status st = vm_->OnLog(fn, LogInfo{.status = 200});
  EXPECT_THAT(st.message(), HasSubstr("only in on_request and on_response"));
}

TEST_F(EdgeVmTest, ResponseAndLogPhases) {
  FunctionSource fn = MakeSource("resp",
                                 "function on_response(resp)\n"
                                 "  assert(resp.status == 200)\n"
                                 "  resp:set_header('x-served-by', 'edge')\n"
                                 "  resp:remove_header('server')\n"
                                 "end\n"
                                 "function on_log(info)\n"
                                 "  assert(info.status == 200 and info.bytes_sent == 5)\n"
                                 "  log('done', info.status, info.latency_ms > 0)\n"
                                 "end\n");
  net::http1::HeaderFields response;
  response.Add("server", "origin");
  ResponseAccess access{.status = 200, .headers = &response};
  ASSERT_TRUE(vm_->OnResponse(fn, access).ok());
  EXPECT_EQ(response.Get("x-served-by").value_or(""), "edge");
  EXPECT_FALSE(response.Get("server").has_value());
  absl::Status st = vm_->OnLog(fn, LogInfo{.status = 200, .latency_ms = 1.5, .bytes_sent = 5});
  EXPECT_TRUE(st.ok()) << st;
  // respond() outside on_request.
  FunctionSource late = MakeSource("late", "function on_response(resp) respond(200) end");
  EXPECT_THAT(vm_->OnResponse(late, access).message(), HasSubstr("only in on_request"));
}

TEST_F(EdgeVmTest, MissingPhaseIsANoOp) {
  FunctionSource fn = MakeSource("only_log", "function on_log(info) end");
  EXPECT_TRUE(vm_->OnRequest(fn, request_).ok());
  net::http1::HeaderFields response;
  ResponseAccess access{.status = 200, .headers = &response};
  EXPECT_TRUE(vm_->OnResponse(fn, access).ok());
}

}  // namespace
}  // namespace capstan::gateway::edge
