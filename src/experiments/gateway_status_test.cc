#include "experiments/gateway_status.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "net/http_server.h"

namespace capstan::experiments {
namespace {

// A /status answer shaped as the gateway's (src/gateway/gateway.cc StatusJson).
constexpr char kStatus[] =
    R"({"routes": [{"route": "dev/hello", "experiment": {"id": "hello-v2", "default": "hello",)"
    R"( "variants": {"v1": "hello", "v2": "hello-v2"}}}], "clusters": [{"cluster": "hello",)"
    R"( "source": "store", "protocol": "http1", "balancer": "round_robin", "endpoints":)"
    R"( [{"endpoint": "127.0.0.1:4000", "weight": 1, "breaker": "closed", "healthy": true,)"
    R"( "ejected": false, "ewma_ms": 0.4}], "open_connections": 1, "idle_connections": 1,)"
    R"( "active_requests": 0}], "edge_functions": [], "downstream_connections": 0,)"
    R"( "parked_connections": 0, "requests": 12})";

std::string Admin(int port) { return absl::StrCat("http://127.0.0.1:", port); }

// A port that refuses connections: bound, never listening.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  int port() const { return port_; }
  // Listens but never accepts nor answers: connects succeed, reads wait.
  void ListenSilently() { ::listen(fd_, 4); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(GatewayStatusTest, ParsesAdminUrls) {
  EXPECT_EQ(*ParseGatewayAdminUrl("http://127.0.0.1:9901"), "http://127.0.0.1:9901");
  EXPECT_EQ(*ParseGatewayAdminUrl("127.0.0.1:9901"), "http://127.0.0.1:9901");
  EXPECT_EQ(*ParseGatewayAdminUrl("http://[::1]:9901/status"), "http://[::1]:9901");
  absl::StatusOr<std::string> no_port = ParseGatewayAdminUrl("http://gw.internal");
  ASSERT_FALSE(no_port.ok());
  EXPECT_NE(no_port.status().message().find("--gateway-admin http://gw.internal"),
            std::string::npos);
  absl::StatusOr<std::string> tls = ParseGatewayAdminUrl("https://127.0.0.1:9901");
  ASSERT_FALSE(tls.ok());
  EXPECT_NE(tls.status().message().find("http:// only"), std::string::npos);
}

TEST(GatewayStatusTest, AnsweringGatewayIsPassedThrough) {
  net::HttpServer admin;
  admin.Handle("/status", [] {
    return net::HttpResponse{.content_type = "application/json", .body = kStatus};
  });
  ASSERT_TRUE(admin.Start("127.0.0.1", 0).ok());
  Json row = FetchGatewayStatus(Admin(admin.port()), {});
  ASSERT_TRUE(row["ok"].get<bool>()) << row.dump();
  EXPECT_EQ(row["admin"], Admin(admin.port()));
  EXPECT_EQ(row["status"], Json::parse(kStatus));
  EXPECT_TRUE(row["elapsedMs"].is_number());
  admin.Stop();
}

TEST(GatewayStatusTest, UnreachableGatewayIsReportedNotFailed) {
  ClosedPort closed;
  Json row = FetchGatewayStatus(Admin(closed.port()), {});
  EXPECT_FALSE(row["ok"].get<bool>());
  EXPECT_NE(row["error"].get<std::string>().find("connect"), std::string::npos) << row.dump();
  EXPECT_FALSE(row.contains("status"));
}

// A gateway that accepts but never answers costs the page one timeout,
// not a hung worker thread.
TEST(GatewayStatusTest, SilentGatewayTimesOut) {
  ClosedPort silent;
  silent.ListenSilently();
  auto start = std::chrono::steady_clock::now();
  Json row = FetchGatewayStatus(Admin(silent.port()), {.timeout = std::chrono::milliseconds(200)});
  EXPECT_FALSE(row["ok"].get<bool>());
  EXPECT_NE(row["error"].get<std::string>().find("timed out"), std::string::npos) << row.dump();
  // Bounded by the timeout (a generous ceiling: the machine is shared).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(GatewayStatusTest, WrongAnswersAreReported) {
  net::HttpServer admin;
  admin.Handle("/status", [] { return net::HttpResponse{.body = "not json"}; });
  ASSERT_TRUE(admin.Start("127.0.0.1", 0).ok());
  Json row = FetchGatewayStatus(Admin(admin.port()), {});
  EXPECT_FALSE(row["ok"].get<bool>());
  EXPECT_EQ(row["error"], "/status did not answer a JSON object");
  admin.Stop();

  net::HttpServer big;
  big.Handle("/status", [] { return net::HttpResponse{.body = std::string(5000, ' ') + "{}"}; });
  ASSERT_TRUE(big.Start("127.0.0.1", 0).ok());
  row = FetchGatewayStatus(Admin(big.port()), {.max_answer_bytes = 1000});
  EXPECT_FALSE(row["ok"].get<bool>());
  EXPECT_NE(row["error"].get<std::string>().find("over 1000 bytes"), std::string::npos);
  big.Stop();

  net::HttpServer missing;  // no /status: 404
  ASSERT_TRUE(missing.Start("127.0.0.1", 0).ok());
  row = FetchGatewayStatus(Admin(missing.port()), {});
  EXPECT_FALSE(row["ok"].get<bool>());
  EXPECT_EQ(row["error"], "/status answered 404");
  missing.Stop();
}

// The route keeps the directory's order, mixes up and down gateways in one
// 200 answer, and follows a directory changed after it was added (what
// `capstan dev` does once its gateway is up).
TEST(GatewayStatusTest, RouteListsEveryGatewayFromTheDirectory) {
  net::HttpServer admin;
  admin.Handle("/status", [] {
    return net::HttpResponse{.content_type = "application/json", .body = kStatus};
  });
  ASSERT_TRUE(admin.Start("127.0.0.1", 0).ok());
  ClosedPort closed;
  auto directory = std::make_shared<GatewayDirectory>();
  net::HttpRouter router;
  AddGatewayRoutes(&router, directory);
  net::HttpResponse empty = router.Dispatch({.method = "GET", .path = "/v1/gateways"});
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(Json::parse(empty.body), Json::parse(R"({"gateways": []})"));

  directory->Set({Admin(closed.port()), Admin(admin.port())});
  net::HttpResponse response = router.Dispatch({.method = "GET", .path = "/v1/gateways"});
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "application/json");
  Json body = Json::parse(response.body);
  ASSERT_EQ(body["gateways"].size(), 2u);
  EXPECT_EQ(body["gateways"][0]["admin"], Admin(closed.port()));
  EXPECT_FALSE(body["gateways"][0]["ok"].get<bool>());
  EXPECT_EQ(body["gateways"][1]["admin"], Admin(admin.port()));
  EXPECT_TRUE(body["gateways"][1]["ok"].get<bool>());
  EXPECT_EQ(body["gateways"][1]["status"]["clusters"][0]["endpoints"][0]["healthy"], true);
  admin.Stop();
}

}  // namespace
}  // namespace capstan::experiments
