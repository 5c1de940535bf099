// The edge parts of the gateway's configuration (config.h): edge_functions,
// edge_limits and a route's `edge:`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "gateway/config.h"

namespace capstan::gateway {
namespace {

using ::testing::HasSubstr;

constexpr char kBase[] =
    "listeners: [{address: \"127.0.0.1:0\"}]\n"
    "virtual_hosts: [{name: s, routes: [{direct_response: {status: 200}, edge: {function: f}}]}]\n";

TEST(EdgeConfigTest, ReadsFunctionsLimitsAndTheRoute) {
  auto c = ParseGatewayConfig(std::string(kBase) +
                                  "edge_limits: {memory: 8MiB, instructions: 5000}\n"
                                  "edge_functions:\n"
                                  "  f: {source: \"function on_log(i) end\"}\n",
                              "gw.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->edge_functions.size(), 1u);
  EXPECT_EQ(c->edge_functions[0].name, "f");
  EXPECT_EQ(c->edge_functions[0].source, "function on_log(i) end");
  EXPECT_EQ(c->edge_limits.memory_bytes, 8u << 20);
  EXPECT_EQ(c->edge_limits.instructions, 5000u);
  EXPECT_EQ(c->virtual_hosts[0].routes[0].edge_function.value_or(""), "f");
}

TEST(EdgeConfigTest, DefaultLimits) {
  auto c = ParseGatewayConfig(std::string(kBase) + "edge_functions: {f: {source: x}}\n", "gw.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->edge_limits.memory_bytes, 32u << 20);
  EXPECT_EQ(c->edge_limits.instructions, 1000000u);
}

TEST(EdgeConfigTest, ReadsAFileBesideTheConfig) {
  char dir_template[] = "/tmp/edge_config_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string dir = dir_template;
  std::ofstream(dir + "/f.lua") << "function on_request(req) end\n";
  auto c = ParseGatewayConfig(std::string(kBase) + "edge_functions: {f: {file: f.lua}}\n",
                              dir + "/gw.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->edge_functions[0].source, "function on_request(req) end\n");
  EXPECT_EQ(c->edge_functions[0].file, dir + "/f.lua");
  auto missing = ParseGatewayConfig(std::string(kBase) + "edge_functions: {f: {file: nope.lua}}\n",
                                    dir + "/gw.yaml");
  EXPECT_THAT(missing.status().message(), HasSubstr("edge_functions.f.file: cannot read"));
  auto device = ParseGatewayConfig(std::string(kBase) + "edge_functions: {f: {file: /dev/zero}}\n",
                                   dir + "/gw.yaml");
  EXPECT_THAT(device.status().message(), HasSubstr("not a regular file"));
  std::remove((dir + "/f.lua").c_str());
  std::remove(dir.c_str());
}

TEST(EdgeConfigTest, RefusesWhatIsInvalid) {
  auto undefined = ParseGatewayConfig(kBase, "gw.yaml");
  EXPECT_THAT(undefined.status().message(), HasSubstr("edge function 'f', which is not defined"));
  auto both = ParseGatewayConfig(std::string(kBase) + "edge_functions: {f: {source: x, file: y}}\n",
                                 "gw.yaml");
  EXPECT_THAT(both.status().message(), HasSubstr("exactly one of source and file"));
  auto bad_name = ParseGatewayConfig(
      std::string(kBase) + "edge_functions: {f: {source: x}, \"a b\": {source: x}}\n", "gw.yaml");
  EXPECT_THAT(bad_name.status().message(), HasSubstr("not a valid edge function name"));
  auto small = ParseGatewayConfig(
      std::string(kBase) + "edge_functions: {f: {source: x}}\nedge_limits: {memory: 1KiB}\n",
      "gw.yaml");
  EXPECT_THAT(small.status().message(), HasSubstr("edge_limits.memory: must be at least 1MiB"));
  auto unknown = ParseGatewayConfig(
      std::string(kBase) + "edge_functions: {f: {source: x, phase: y}}\n", "gw.yaml");
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown option"));
}

}  // namespace
}  // namespace capstan::gateway
