#include "mesh/discovery.h"

#include <condition_variable>
#include <mutex>

#include "gtest/gtest.h"
#include "mesh/endpoint_target.h"
#include "mesh/registry.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;

TEST(DiscoveryTest, ParsesHostPortAndSaysWhatIsWrong) {
  auto e = ParseEndpoint("10.0.0.7:7000");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->host, "10.0.0.7");
  EXPECT_EQ(e->port, 7000);
  EXPECT_EQ(e->id, "10.0.0.7:7000");
  auto v6 = ParseEndpoint("[::1]:80");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(FormatHostPort(v6->host, v6->port), "[::1]:80");
  for (const char* bad : {"", "host", "host:", ":80", "host:0", "host:65536", "host:x", "::1:80",
                          "[::1]80", "[::1"}) {
    auto r = ParseEndpoint(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseEndpoint("host").status().message().find("expected host:port"), std::string::npos);
}

TEST(DiscoveryTest, TargetsNameTheirSourceAndBadOnesListTheForms) {
  auto s = NewEndpointSource("static:///127.0.0.1:1,127.0.0.1:2");
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<Endpoint> got;
  (*s)->Start([&](std::vector<Endpoint> set) { got = std::move(set); });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].port, 2);
  EXPECT_EQ((*s)->Describe(), "static:///127.0.0.1:1,127.0.0.1:2");

  ASSERT_TRUE(NewEndpointSource("127.0.0.1:1").ok()) << "a bare list is a static target";
  auto d = NewEndpointSource("dns:///localhost:7000");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->Describe(), "dns:///localhost:7000");

  for (const char* bad : {"ftp://x/y", "static:///", "dns:///nohost", "store://127.0.0.1:2379",
                          "store:///prefix", "store://127.0.0.1:2379/"}) {
    auto r = NewEndpointSource(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("expected static:///"), std::string::npos)
        << r.status().message();
  }
}

TEST(DiscoveryTest, DnsResolvesLocalhostOnItsThread) {
  auto source = DnsEndpoints("localhost", 7000, {.refresh = 60000ms});
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Endpoint> got;
  bool delivered = false;
  source->Start([&](std::vector<Endpoint> set) {
    std::lock_guard<std::mutex> lock(mu);
    got = std::move(set);
    delivered = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return delivered; }));
  bool loopback = false;
  for (const Endpoint& e : got) {
    EXPECT_EQ(e.port, 7000);
    loopback |= e.host == "127.0.0.1" || e.host == "::1";
  }
  EXPECT_TRUE(loopback);
  lock.unlock();
  source.reset();  // stops without waiting for the refresh interval
}

TEST(RegistryTest, ValuesUseEtcdsNamingLayoutAndAcceptPlainAddresses) {
  Endpoint e{.host = "10.0.0.7", .port = 7000, .weight = 3, .id = "ignored"};
  std::string value = EncodeRegistryValue(e);
  EXPECT_EQ(value, R"({"Addr":"10.0.0.7:7000","Metadata":{"weight":3}})");
  auto back = DecodeRegistryValue("instance-1", value);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->host, "10.0.0.7");
  EXPECT_EQ(back->port, 7000);
  EXPECT_EQ(back->weight, 3u);
  EXPECT_EQ(back->id, "instance-1");

  // What Go's endpoints.Manager writes (Metadata is free-form there).
  auto go = DecodeRegistryValue("e1", R"({"Op":0,"Addr":"1.2.3.4:80","Metadata":"zone-a"})");
  ASSERT_TRUE(go.ok()) << go.status();
  EXPECT_EQ(go->weight, 1u);
  auto plain = DecodeRegistryValue("p", "[::1]:9000");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->host, "::1");

  for (const char* bad : {"{", "{}", R"({"Addr":5})", R"({"Addr":"nope"})",
                          R"({"Addr":"1.2.3.4:80","Metadata":{"weight":0}})",
                          R"({"Addr":"1.2.3.4:80","Metadata":{"weight":-1}})", "junk"}) {
    EXPECT_FALSE(DecodeRegistryValue("x", bad).ok()) << bad;
  }
  EXPECT_EQ(RegistryDirectory("services/echo//"), "services/echo/");
}

}  // namespace
}  // namespace capstan::mesh
