#include "experiments/system_status.h"

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

// An endpoint that does not answer is reported, not an error of the page:
// "ok": false with gRPC's message, no leader, the members unknown. (The
// answering store is covered by tests/e2e/console, against a real one.)
TEST(SystemStatusTest, UnreachableStoreIsReportedDown) {
  Json status = StoreSystemStatus({"127.0.0.1:1"});
  ASSERT_EQ(status["endpoints"].size(), 1u);
  EXPECT_EQ(status["endpoints"][0]["endpoint"], "127.0.0.1:1");
  EXPECT_FALSE(status["endpoints"][0]["ok"].get<bool>());
  EXPECT_FALSE(status["endpoints"][0]["error"].get<std::string>().empty());
  EXPECT_TRUE(status["leader"].is_null());
  EXPECT_TRUE(status["members"].empty());
  EXPECT_TRUE(status.contains("membersError"));
}

TEST(SystemStatusTest, RouteAnswersJson) {
  net::HttpRouter router;
  AddSystemRoutes(&router, {"http://127.0.0.1:1"});
  net::HttpResponse response = router.Dispatch({.method = "GET", .path = "/v1/system/store"});
  EXPECT_EQ(response.status, 200);
  Json body = Json::parse(response.body);
  EXPECT_EQ(body["endpoints"][0]["endpoint"], "http://127.0.0.1:1");
}

}  // namespace
}  // namespace capstan::experiments
