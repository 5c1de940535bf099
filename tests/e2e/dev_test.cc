// `capstan dev` as a black box: one process with a store member, the example
// "hello" service registered in it and a gateway in front of that service,
// driven by curl and etcdctl. Every port is picked by the test.
#include <signal.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "experiments_rpc/client.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

CommandResult Curl(std::vector<std::string> args) {
  std::vector<std::string> argv = {"curl", "-sS", "--max-time", "10"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

// `capstan dev` on picked ports, data in `dir`; `extra` flags last (the
// gateway on a picked port unless they say --gateway-listen).
class DevProcess {
 public:
  DevProcess(const TempDir& dir, std::vector<std::string> extra) {
    store_port_ = PickFreePort();
    gateway_port_ = PickFreePort();
    std::vector<std::string> argv = {
        CapstanBinary(),
        "dev",
        "--data-dir",
        dir.path() + "/data",
        "--listen-client-urls",
        "http://127.0.0.1:" + std::to_string(store_port_),
        "--listen-metrics-urls",
        "http://127.0.0.1:" + std::to_string(PickFreePort()),
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:" + std::to_string(PickFreePort()),
        // The loops every server of the process shares.
        "--threads",
        "2",
    };
    bool gateway_given = false;
    for (const std::string& flag : extra) gateway_given |= flag == "--gateway-listen";
    if (!gateway_given) {
      argv.push_back("--gateway-listen");
      argv.push_back("127.0.0.1:" + std::to_string(gateway_port_));
    }
    // Never the fixed default port: tests run side by side.
    argv.push_back("--experiments-listen");
    argv.push_back("127.0.0.1:0");
    argv.insert(argv.end(), extra.begin(), extra.end());
    process_ = std::make_unique<Process>(argv, dir.path() + "/dev.log");
  }
  // Until the process says every part is up (or it exits).
  bool WaitReady() {
    return Eventually(
               [&] {
                 return process_->Log().find("ready to serve client requests") !=
                            std::string::npos ||
                        !process_->Running();
               },
               std::chrono::seconds(30)) &&
           process_->Running();
  }
  std::string store() const { return "127.0.0.1:" + std::to_string(store_port_); }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(gateway_port_) + path;
  }
  Process* process() { return process_.get(); }

 private:
  int store_port_ = 0;
  int gateway_port_ = 0;
  std::unique_ptr<Process> process_;
};

// SIGTERM (or SIGINT): everything drains and the process exits 0.
void ExpectCleanStop(Process* p, int sig) {
  p->Signal(sig);
  int status = p->Wait(std::chrono::seconds(30));
  ASSERT_NE(status, -1) << "capstan dev did not stop\n" << p->Log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << p->Log();
}

TEST(DevE2E, GatewayServesTheRegisteredExampleAndFollowsRoutesFromTheStore) {
  TempDir dir("dev_gateway");
  DevProcess dev(dir, {});
  ASSERT_TRUE(dev.WaitReady()) << dev.process()->Log();
  EXPECT_NE(dev.process()->Log().find("gateway listening on port"), std::string::npos);
  // The experiments service runs too, on the port it printed, and has listed
  // its configuration from the store.
  std::string log = dev.process()->Log();
  size_t printed = log.find("experiments listening on port ");
  ASSERT_NE(printed, std::string::npos) << log;
  std::string experiments =
      "http://127.0.0.1:" + std::to_string(std::stoi(log.substr(printed + 30)));
  std::string experiments_health = experiments + "/health";
  CommandResult health;
  EXPECT_TRUE(Eventually([&] {
    health = Curl({"-s", experiments_health});
    return health.exit_code == 0 && health.out.find("\"health\":\"true\"") != std::string::npos;
  })) << health.out
      << health.err;
  // It ingests events, into a log in the store's data directory.
  CommandResult events = Curl(
      {"-s", "--data-binary",
       R"({"type":"exposure","key":"dev-1","experiment":"e","unit":"u1","variant":"control","ts":1})",
       experiments + "/v1/events"});
  EXPECT_NE(events.out.find("\"accepted\":1"), std::string::npos) << events.out << events.err;
  // And serves its RPC API on the port it printed, on the same event log:
  // the event just posted over HTTP is a duplicate over RPC.
  printed = log.find("experiments rpc listening on port ");
  ASSERT_NE(printed, std::string::npos) << log;
  auto rpc = experiments_rpc::ExperimentsRpcClient::Connect(
      "127.0.0.1",
      std::stoi(log.substr(printed + std::string("experiments rpc listening on port ").size())));
  ASSERT_TRUE(rpc.ok()) << rpc.status();
  experiments::v1::IngestEventsRequest again;
  experiments::v1::Event* event = again.add_events();
  event->set_key("dev-1");
  event->set_experiment("e");
  event->set_unit("u1");
  event->set_timestamp_ms(1);
  event->mutable_exposure()->set_variant("control");
  auto ingested = (*rpc)->IngestEvents(again);
  ASSERT_TRUE(ingested.ok()) << ingested.status();
  EXPECT_EQ(ingested->duplicates(), 1u);
  rpc->reset();

  // curl through the gateway reaches the example service it found in the registry.
  CommandResult r;
  EXPECT_TRUE(Eventually([&] {
    r = Curl({"--http1.1", dev.url("/")});
    return r.exit_code == 0 && r.out.starts_with("hello from capstan dev");
  })) << r.out
      << r.err << dev.process()->Log();
  CommandResult registry = Etcdctl(dev.store(), {"get", "--prefix", "services/hello/"});
  ASSERT_EQ(registry.exit_code, 0) << registry.err;
  EXPECT_NE(registry.out.find("\"Addr\":\"127.0.0.1:"), std::string::npos) << registry.out;

  // A route put with etcdctl takes effect: the "dev" virtual host replaced
  // by one with a direct answer on /hi and the example service elsewhere.
  ASSERT_EQ(Etcdctl(dev.store(), {"put", "/capstan/gateway/routes/dev",
                                  R"({"name": "dev", "routes": [)"
                                  R"({"match": {"path": "/hi"},)"
                                  R"( "direct_response": {"body": "hi from the store"}},)"
                                  R"({"cluster": "hello"}]})"})
                .exit_code,
            0);
  EXPECT_TRUE(Eventually([&] {
    r = Curl({"--http1.1", dev.url("/hi")});
    return r.out == "hi from the store";
  })) << r.out
      << r.err << dev.process()->Log();
  r = Curl({"--http1.1", dev.url("/")});
  EXPECT_TRUE(r.out.starts_with("hello from capstan dev")) << r.out << r.err;
  // A new virtual host for another Host and a new cluster, both from the
  // store (the cluster finds the example service in the registry too).
  ASSERT_EQ(Etcdctl(dev.store(), {"put", "/capstan/gateway/clusters/again",
                                  R"({"name": "again", "discovery": "store://)" + dev.store() +
                                      R"(/services/hello"})"})
                .exit_code,
            0);
  ASSERT_EQ(Etcdctl(dev.store(), {"put", "/capstan/gateway/routes/local",
                                  R"({"name": "local", "domains": ["localhost"], "routes": [)"
                                  R"({"cluster": "again", "response_headers":)"
                                  R"( {"set": [{"name": "x-route", "value": "local"}]}}]})"})
                .exit_code,
            0);
  EXPECT_TRUE(Eventually([&] {
    r = Curl({"--http1.1", "-i", "-H", "Host: localhost", dev.url("/")});
    return r.out.find("x-route: local") != std::string::npos &&
           r.out.find("hello from capstan dev") != std::string::npos;
  })) << r.out
      << r.err << dev.process()->Log();

  ExpectCleanStop(dev.process(), SIGTERM);
}

TEST(DevE2E, PartsTurnOffAndSigintStopsCleanly) {
  TempDir dir("dev_off");
  // No gateway: the store and the registered example service only.
  DevProcess dev(dir, {"--gateway-listen", ""});
  ASSERT_TRUE(dev.WaitReady()) << dev.process()->Log();
  EXPECT_EQ(dev.process()->Log().find("gateway listening"), std::string::npos)
      << dev.process()->Log();
  CommandResult r = Curl({"--http1.1", dev.url("/")});
  EXPECT_NE(r.exit_code, 0) << r.out;  // nothing listens there
  CommandResult registry = Etcdctl(dev.store(), {"get", "--prefix", "--keys-only", "services/"});
  ASSERT_EQ(registry.exit_code, 0) << registry.err;
  EXPECT_NE(registry.out.find("services/hello/127.0.0.1:"), std::string::npos) << registry.out;
  ExpectCleanStop(dev.process(), SIGINT);

  // A bad gateway address is refused, naming the flag.
  TempDir bad_dir("dev_bad");
  DevProcess bad(bad_dir, {"--gateway-listen", "nowhere"});
  int status = bad.process()->Wait(std::chrono::seconds(30));
  ASSERT_NE(status, -1) << bad.process()->Log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_NE(bad.process()->Log().find("--gateway-listen"), std::string::npos)
      << bad.process()->Log();
}

// The walkthrough's core (issue 19): the dev gateway splits the example
// service's two versions by experiment "hello-v2"; until it exists everyone
// gets v1; once it runs, units go to their variant's version, which sees
// the assignment, and the gateway's exposures reach the results.
TEST(DevE2E, TheGatewaySplitsTheTwoVersionsByTheDevExperiment) {
  TempDir dir("dev_split");
  DevProcess dev(dir, {});
  ASSERT_TRUE(dev.WaitReady()) << dev.process()->Log();
  std::string log = dev.process()->Log();
  size_t printed = log.find("experiments listening on port ");
  ASSERT_NE(printed, std::string::npos) << log;
  std::string api = "http://127.0.0.1:" + std::to_string(std::stoi(log.substr(printed + 30)));

  CommandResult before;
  ASSERT_TRUE(Eventually([&] {
    before = Curl({"-s", "-H", "X-User-Id: u1", dev.url("/")});
    return before.out.starts_with("hello from capstan dev");
  })) << before.out << before.err;
  EXPECT_NE(before.out.find("service v1"), std::string::npos) << before.out;
  EXPECT_NE(before.out.find("experiment hello-v2="), std::string::npos) << before.out;

  auto put = [&](const std::string& path, const std::string& body) {
    return Curl({"-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H",
                 "Content-Type: application/json", "--data-binary", body, api + path})
        .out;
  };
  ASSERT_EQ(put("/v1/domains/main", "{}"), "201");
  ASSERT_EQ(put("/v1/layers/web", R"({"domain": "main"})"), "201");
  // Everyone to v2: weight 0 for v1.
  ASSERT_EQ(put("/v1/experiments/hello-v2", R"({"layer": "web", "state": "running",
      "variants": [{"id": "v1", "weight": 0}, {"id": "v2", "weight": 1}]})"),
            "201");
  CommandResult after;
  ASSERT_TRUE(Eventually([&] {
    after = Curl({"-s", "-H", "X-User-Id: u1", dev.url("/")});
    return after.out.find("service v2") != std::string::npos;
  })) << after.out << after.err;
  EXPECT_NE(after.out.find("experiment hello-v2=v2"), std::string::npos) << after.out;
  for (int i = 0; i < 10; ++i) {
    CommandResult r = Curl({"-s", "-H", "X-User-Id: user-" + std::to_string(i), dev.url("/")});
    EXPECT_NE(r.out.find("service v2"), std::string::npos) << r.out;
  }
  // An anonymous visitor is given a unit in a cookie.
  CommandResult anonymous = Curl({"-s", "-i", dev.url("/")});
  EXPECT_NE(anonymous.out.find("set-cookie: capstan_uid="), std::string::npos) << anonymous.out;
  // u1, user-0..9 and the anonymous unit: 12 units exposed to v2.
  CommandResult results;
  EXPECT_TRUE(Eventually(
      [&] {
        results = Curl({"-s", api + "/v1/experiments/hello-v2/results"});
        return results.out.find(R"("variant":"v2","units":12)") != std::string::npos;
      },
      std::chrono::seconds(30)))
      << results.out;
  ExpectCleanStop(dev.process(), SIGTERM);
}

}  // namespace
}  // namespace capstan::e2e
