// BuildFunctions: what a snapshot's edge functions are made of (hooks.h).
#include "gateway/edge/hooks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "gateway/gateway.h"

namespace capstan::gateway::edge {
namespace {

using ::testing::HasSubstr;

GatewayConfig WithFunction(const std::string& name, const std::string& source) {
  GatewayConfig c;
  c.edge_limits.instructions = 10000;
  EdgeFunctionConfig f;
  f.name = name;
  f.source = source;
  f.line = 7;
  c.edge_functions.push_back(f);
  return c;
}

TEST(EdgeBuildFunctionsTest, ReusesAnUnchangedVersionAndCompilesANewOne) {
  Snapshot first;
  ASSERT_TRUE(BuildFunctions(WithFunction("f", "function on_log(i) end"), nullptr, &first).ok());
  ASSERT_EQ(first.edge_functions.size(), 1u);
  EXPECT_EQ(first.edge_limits.instructions, 10000u);
  Snapshot same;
  ASSERT_TRUE(BuildFunctions(WithFunction("f", "function on_log(i) end"), &first, &same).ok());
  // The very same version object: nothing was compiled again.
  EXPECT_EQ(same.edge_functions.at("f").get(), first.edge_functions.at("f").get());
  Snapshot changed;
  ASSERT_TRUE(
      BuildFunctions(WithFunction("f", "function on_log(i) log(1) end"), &first, &changed).ok());
  EXPECT_NE(changed.edge_functions.at("f")->version, first.edge_functions.at("f")->version);
}

TEST(EdgeBuildFunctionsTest, ABrokenVersionFailsTheBuildNamingFunctionAndLine) {
  Snapshot s;
  absl::Status st =
      BuildFunctions(WithFunction("g", "function on_request(req)\n  if then\nend"), nullptr, &s);
  EXPECT_THAT(st.message(), HasSubstr("edge function 'g': g:2:"));
  EXPECT_THAT(st.message(), HasSubstr("(line 7)"));
  GatewayConfig from_store = WithFunction("g", "while true do end");
  from_store.edge_functions[0].store_revision = 42;
  st = BuildFunctions(from_store, nullptr, &s);
  EXPECT_THAT(st.message(), HasSubstr("instruction budget exhausted"));
  EXPECT_THAT(st.message(), HasSubstr("(store revision 42)"));
}

}  // namespace
}  // namespace capstan::gateway::edge
