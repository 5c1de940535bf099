// Edge functions end to end: a real `capstan gateway` running Lua from its
// configuration file and from store documents, a Python origin, curl.
// docs/gateway.md, "Edge functions".
#include <fstream>
#include <regex>
#include <string>

#include "gateway_harness.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

struct Answer {
  int status = 0;
  std::string head, body;
};

// curl -i, split into status, head and body.
Answer Get(const std::string& url, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--http1.1", "-i"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(url);
  CommandResult r = Curl(args);
  Answer a;
  size_t split = r.out.find("\r\n\r\n");
  a.head = r.out.substr(0, split);
  if (split != std::string::npos) a.body = r.out.substr(split + 4);
  std::smatch m;
  if (std::regex_search(a.head, m, std::regex("^HTTP/1.1 ([0-9]+)"))) a.status = std::stoi(m[1]);
  return a;
}

std::string Server(const Answer& a) {
  std::smatch m;
  if (std::regex_search(a.body, m, std::regex("\"server\": \"([a-z]+)\""))) return m[1].str();
  return "";
}

// Functions as YAML block scalars (indented under `source: |`).
constexpr char kFunctions[] = R"(edge_limits: {instructions: 100000}
edge_functions:
  rewrite:
    source: |
      function on_request(req)
        req:set_header("x-edge", "rewritten")
        if req.path == "/old" then req.path = "/echo/new" end
        if req.path == "/v1/moved" then req.path = "/echo/moved-by-edge" end
        if req:header("x-pick") == "b" then req.cluster = "b" end
      end
      function on_response(resp)
        resp:set_header("x-edge-response", "status " .. resp.status)
        resp:remove_header("server")
      end
      function on_log(info)
        log("edge-log", info.path, info.status)
      end
  deny:
    source: |
      function on_request(req)
        if req:header("authorization") == nil then
          return respond(401, {["www-authenticate"] = "Bearer"}, "login first\n")
        end
      end
  runaway:
    source: |
      function on_request(req)
        if req.query == "spin=1" then
          while true do end
        end
      end
  escape:
    source: |
      function on_request(req)
        local f = io.open("/etc/passwd")
      end
  escape_ffi:
    source: |
      function on_request(req)
        local ffi = require "ffi"
      end
)";

class EdgeE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string config = dir_.path() + "/gateway.yaml";
    int port = PickFreePort();
    admin_ = PickFreePort();
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "admin: 127.0.0.1:" << admin_ << "\n"
        << "clusters:\n"
        << "  - {name: a, endpoints: [\"" << a_.address() << "\"]}\n"
        << "  - {name: b, endpoints: [\"" << b_.address() << "\"]}\n"
        << "virtual_hosts:\n"
        << "  - name: site\n"
        << "    routes:\n"
        << "      - {match: {prefix: /echo/deny}, cluster: a, edge: {function: deny}}\n"
        << "      - {match: {prefix: /echo/spin}, cluster: a, edge: {function: runaway}}\n"
        << "      - {match: {prefix: /echo/escape-ffi}, cluster: a, edge: {function: escape_ffi}}\n"
        << "      - {match: {prefix: /echo/escape}, cluster: a, edge: {function: escape}}\n"
        << "      - {match: {prefix: /v1}, prefix_rewrite: /echo, cluster: a, "
           "edge: {function: rewrite}}\n"
        << "      - {match: {prefix: /}, cluster: a, edge: {function: rewrite}}\n"
        << kFunctions;
    out.close();
    gw_ = std::make_unique<GatewayProcess>(dir_, std::vector<std::string>{"--config", config});
  }

  // The edge failures counter at /metrics.
  std::string Failures() {
    std::smatch m;
    std::string metrics = Curl({"http://127.0.0.1:" + std::to_string(admin_) + "/metrics"}).out;
    if (std::regex_search(metrics, m, std::regex("capstan_gateway_edge_failures_total ([0-9]+)")))
      return m[1].str();
    return metrics;
  }

  int admin_ = 0;
  TempDir dir_{"gw_edge"};
  Origin a_{dir_, "a"};
  Origin b_{dir_, "b"};
  std::unique_ptr<GatewayProcess> gw_;
};

TEST_F(EdgeE2E, RewritesRequestAndResponseHeaders) {
  Answer r = Get(gw_->url("/echo"));
  ASSERT_EQ(r.status, 200) << r.head << r.body;
  EXPECT_NE(r.body.find("[\"x-edge\", \"rewritten\"]"), std::string::npos) << r.body;
  EXPECT_NE(r.head.find("x-edge-response: status 200"), std::string::npos) << r.head;
  // Python's origin sends "Server: BaseHTTP/..."; on_response removed it.
  EXPECT_EQ(r.head.find("BaseHTTP"), std::string::npos) << r.head;
  // The same over HTTP/2 (h2c prior knowledge): one request path for both.
  CommandResult h2 = Curl({"--http2-prior-knowledge", "-i", gw_->url("/echo")});
  EXPECT_NE(h2.out.find("HTTP/2 200"), std::string::npos) << h2.out;
  EXPECT_NE(h2.out.find("x-edge-response: status 200"), std::string::npos) << h2.out;
  EXPECT_NE(h2.out.find("[\"x-edge\", \"rewritten\"]"), std::string::npos) << h2.out;
  // The path rewrite reaches the origin.
  r = Get(gw_->url("/old"));
  EXPECT_NE(r.body.find("\"path\": \"/echo/new\""), std::string::npos) << r.body;
  // The route's prefix_rewrite applies to the client's path, not to one the
  // function set.
  r = Get(gw_->url("/v1/kept"));
  EXPECT_NE(r.body.find("\"path\": \"/echo/kept\""), std::string::npos) << r.body;
  r = Get(gw_->url("/v1/moved"));
  EXPECT_NE(r.body.find("\"path\": \"/echo/moved-by-edge\""), std::string::npos) << r.body;
  // on_log ran and logged through the gateway's log.
  EXPECT_TRUE(Eventually([&] {
    return gw_->process()->Log().find("edge-log /echo 200") != std::string::npos;
  })) << gw_->process()->Log();
}

TEST_F(EdgeE2E, ChoosesTheCluster) {
  EXPECT_EQ(Server(Get(gw_->url("/echo"))), "a");
  EXPECT_EQ(Server(Get(gw_->url("/echo"), {"-H", "x-pick: b"})), "b");
}

TEST_F(EdgeE2E, AnswersDirectly) {
  Answer r = Get(gw_->url("/echo/deny"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body, "login first\n");
  EXPECT_NE(r.head.find("www-authenticate: Bearer"), std::string::npos) << r.head;
  EXPECT_EQ(a_.Requests().find("/deny"), std::string::npos) << "the origin saw it";
  r = Get(gw_->url("/echo/deny"), {"-H", "authorization: Bearer x"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Server(r), "a");
}

TEST_F(EdgeE2E, RunawayLoopFailsThatRequestAlone) {
  EXPECT_EQ(Failures(), "0");
  // /status names the route's function and the versions live.
  std::string status = Curl({"http://127.0.0.1:" + std::to_string(admin_) + "/status"}).out;
  EXPECT_NE(status.find("\"edge_function\": \"runaway\""), std::string::npos) << status;
  EXPECT_NE(status.find("{\"name\": \"runaway\", \"version\": \""), std::string::npos) << status;
  Answer r = Get(gw_->url("/echo/spin?spin=1"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(Failures(), "1");
  EXPECT_EQ(r.body, "edge function failed\n");
  EXPECT_TRUE(Eventually([&] {
    std::string log = gw_->process()->Log();
    return log.find("runaway:3: instruction budget exhausted") != std::string::npos;
  })) << gw_->process()->Log();
  // The next request, on the same route and on others, is fine.
  EXPECT_EQ(Get(gw_->url("/echo/spin")).status, 200);
  EXPECT_EQ(Get(gw_->url("/echo")).status, 200);
}

TEST_F(EdgeE2E, SandboxEscapesFail) {
  EXPECT_EQ(Get(gw_->url("/echo/escape")).status, 500);
  EXPECT_EQ(Get(gw_->url("/echo/escape-ffi")).status, 500);
  EXPECT_TRUE(Eventually([&] {
    std::string log = gw_->process()->Log();
    return log.find("escape:2: attempt to index global 'io'") != std::string::npos &&
           log.find("module 'ffi' is not allowed") != std::string::npos;
  })) << gw_->process()->Log();
  EXPECT_EQ(Get(gw_->url("/echo")).status, 200);
}

TEST(EdgeConfigE2E, BrokenFunctionInTheFileIsRefusedAtStart) {
  TempDir dir("gw_edge_bad");
  std::string config = dir.path() + "/gateway.yaml";
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << PickFreePort() << "\"}]\n"
        << "virtual_hosts: [{name: s, routes: [{direct_response: {status: 200}, "
           "edge: {function: bad}}]}]\n"
        << "edge_functions:\n  bad:\n    source: |\n      function on_request(req)\n"
        << "        req:set_header(\n      end\n";
  }
  // Bounded: a gateway that started anyway would otherwise never return.
  CommandResult r = RunCommand({"timeout", "20", CapstanBinary(), "gateway", "--config", config});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.out + r.err).find("edge function 'bad': bad:3:"), std::string::npos)
      << r.out << r.err;
}

TEST(EdgeStoreE2E, VersionsAreCompiledBeforeTheyGoLive) {
  TempDir dir("gw_edge_store");
  Origin a(dir, "a");
  StoreProcess store(StoreProcess::Kind::kCapstan, dir.path() + "/store");
  ASSERT_TRUE(store.Start()) << store.Log();
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "store: store://" << store.endpoint() << "\n"
        << "clusters: [{name: a, endpoints: [\"" << a.address() << "\"]}]\n"
        << "virtual_hosts: [{name: s, routes: [{cluster: a, edge: {function: tag}}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  // The function is not there yet: the route fails cleanly.
  EXPECT_EQ(Get(gw.url("/echo")).status, 500);
  auto put = [&](const std::string& source) {
    return Etcdctl(store.endpoint(), {"put", "/capstan/gateway/functions/tag", source}).exit_code;
  };
  auto version = [&] {
    std::smatch m;
    std::string body = Get(gw.url("/echo")).body;
    if (std::regex_search(body, m, std::regex("\\[\"x-version\", \"([0-9]+)\"\\]")))
      return m[1].str();
    return body;
  };
  ASSERT_EQ(put("function on_request(req)\n  req:set_header('x-version', '1')\nend\n"), 0);
  EXPECT_TRUE(Eventually([&] { return version() == "1"; })) << version();
  // A version that does not compile is refused, named with its line; the
  // previous one keeps running.
  ASSERT_EQ(put("function on_request(req)\n  req:set_header('x-version', '2'\nend\n"), 0);
  EXPECT_TRUE(Eventually([&] {
    std::string log = gw.process()->Log();
    return log.find("refusing an edge function version") != std::string::npos &&
           log.find("tag:3:") != std::string::npos;
  })) << gw.process()->Log();
  EXPECT_EQ(version(), "1");
  // A version whose top level never ends is refused the same way.
  ASSERT_EQ(put("while true do end\n"), 0);
  EXPECT_TRUE(Eventually([&] {
    return gw.process()->Log().find("tag:1: instruction budget exhausted") != std::string::npos;
  })) << gw.process()->Log();
  EXPECT_EQ(version(), "1");
  // The next good version goes live.
  ASSERT_EQ(put("function on_request(req)\n  req:set_header('x-version', '3')\nend\n"), 0);
  EXPECT_TRUE(Eventually([&] { return version() == "3"; })) << version();
}

}  // namespace
}  // namespace capstan::e2e
