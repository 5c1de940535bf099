#include "net/address.h"

#include <netinet/in.h>

#include "gtest/gtest.h"

namespace capstan::net {
namespace {

TEST(ParseUrlTest, SchemeHostPortPath) {
  absl::StatusOr<Url> u = ParseUrl("HTTP://127.0.0.1:2379/v3/kv?x=1");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 2379);
  EXPECT_TRUE(u->port_given);
  EXPECT_EQ(u->path, "/v3/kv?x=1");
  EXPECT_EQ(u->Authority(), "127.0.0.1:2379");

  u = ParseUrl("https://[::1]:8443");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->Authority(), "[::1]:8443");
  EXPECT_EQ(u->path, "");

  u = ParseUrl("store://store-0.internal:2379/services/echo");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->scheme, "store");
  EXPECT_EQ(u->host, "store-0.internal");
  EXPECT_EQ(u->path, "/services/echo");
}

TEST(ParseUrlTest, BareHostPortTakesTheDefaultScheme) {
  absl::StatusOr<Url> u = ParseUrl("localhost:8080");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->port, 8080);
  u = ParseUrl("10.0.0.1:53", {.default_scheme = "dns"});
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->scheme, "dns");
}

TEST(ParseUrlTest, DefaultPortsPerSchemeUnlessAPortIsRequired) {
  EXPECT_EQ(ParseUrl("http://example.com")->port, 80);
  EXPECT_EQ(ParseUrl("https://example.com/x")->port, 443);
  EXPECT_EQ(ParseUrl("etcd://10.0.0.1")->port, 2379);
  EXPECT_FALSE(ParseUrl("http://example.com")->port_given);
  absl::StatusOr<Url> u = ParseUrl("http://example.com", {.require_port = true});
  EXPECT_EQ(u.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(u.status().message().find("needs a host and a port"), std::string::npos);
  EXPECT_FALSE(ParseUrl("unknown://h").ok());  // no default to take
  EXPECT_EQ(DefaultPort("wss"), 443);
  EXPECT_EQ(DefaultPort("gopher"), 0);
}

TEST(ParseUrlTest, PortZeroOnlyForListenAddresses) {
  EXPECT_FALSE(ParseUrl("http://127.0.0.1:0").ok());
  absl::StatusOr<Url> u = ParseUrl("http://127.0.0.1:0", {.allow_port_zero = true});
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->port, 0);
}

TEST(ParseUrlTest, RejectsWhatIsNotAnAddressWithAReason) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"", "needs a host"},
      {"http://", "needs a host"},
      {"http://:80", "no host"},
      {"http://h:port", "port between"},
      {"http://h:65536", "port between"},
      {"http://h:-1", "port between"},
      {"http://h:+80", "port between"},
      {"http://h:123456", "port between"},
      {"http://::1:80", "need brackets"},
      {"http://[::1:80", "expected [ipv6]:port"},
      {"http://[::1]80", "expected [ipv6]:port"},
      {"http://[zz]:80", "not an IPv6 address"},
      {"http://user@h:80", "user info"},
      {"http://h h:80", "invalid character"},
      {"1http://h:80", "invalid scheme"},
      {"://h:80", "invalid scheme"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Url> u = ParseUrl(c.text);
    ASSERT_FALSE(u.ok()) << c.text;
    EXPECT_EQ(u.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(u.status().message().find(c.says), std::string::npos)
        << c.text << ": " << u.status().message();
    EXPECT_NE(u.status().message().find(std::string("'") + c.text + "'"), std::string::npos)
        << "the error quotes the input: " << u.status().message();
  }
}

TEST(ParseHostPortTest, BareFormsOnly) {
  absl::StatusOr<HostPort> hp = ParseHostPort("10.0.0.7:7000");
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->host, "10.0.0.7");
  EXPECT_EQ(hp->port, 7000);
  hp = ParseHostPort("[2001:db8::1]:443");
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->host, "2001:db8::1");
  EXPECT_EQ(FormatHostPort(hp->host, hp->port), "[2001:db8::1]:443");
  for (const char* bad : {"", "host", "host:", ":80", "host:0", "host:65536", "host:x", "::1:80",
                          "[::1]80", "[::1", "[::1]", "http://h:80", "h:80/x", "u@h:80"}) {
    EXPECT_EQ(ParseHostPort(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseHostPort("host").status().message().find("expected host:port"), std::string::npos);
  EXPECT_TRUE(ParseHostPort("host:0", /*allow_port_zero=*/true).ok());
}

TEST(GrpcTargetTest, UrlsBecomeHostPortAndOtherTargetsPassThrough) {
  EXPECT_EQ(GrpcTarget("http://127.0.0.1:2379"), "127.0.0.1:2379");
  EXPECT_EQ(GrpcTarget("https://[::1]:2379/"), "[::1]:2379");
  EXPECT_EQ(GrpcTarget("127.0.0.1:2380"), "127.0.0.1:2380");
  EXPECT_EQ(GrpcTarget("unix:///run/capstan.sock"), "unix:///run/capstan.sock");
  EXPECT_EQ(GrpcTarget("http://name-without-port"), "name-without-port");
}

TEST(ResolveAddressTest, NumericAndLocalhostOnly) {
  sockaddr_storage addr;
  socklen_t len = 0;
  ASSERT_TRUE(ResolveAddress("localhost", 2379, &addr, &len).ok());
  EXPECT_EQ(addr.ss_family, AF_INET);
  EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port), 2379);
  ASSERT_TRUE(ResolveAddress("[::1]", 80, &addr, &len).ok());
  EXPECT_EQ(addr.ss_family, AF_INET6);
  EXPECT_EQ(len, sizeof(sockaddr_in6));
  EXPECT_FALSE(ResolveAddress("127.0.0.1", 65536, &addr, &len).ok());
  absl::Status st = ResolveAddress("example.com", 80, &addr, &len);
  EXPECT_NE(st.message().find("DNS discovery"), std::string::npos);
}

}  // namespace
}  // namespace capstan::net
