// The PROXY protocol encoders against the examples of HAProxy's
// proxy-protocol.txt (the addresses and ports of its section 2.1 examples;
// the v2 bytes laid out by hand from its section 2.2).
#include "gateway/l4_proxy.h"

#include <arpa/inet.h>

#include "gtest/gtest.h"

namespace capstan::gateway {
namespace {

sockaddr_storage V4(const char* ip, uint16_t port) {
  sockaddr_storage s{};
  auto* a = reinterpret_cast<sockaddr_in*>(&s);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  inet_pton(AF_INET, ip, &a->sin_addr);
  return s;
}

sockaddr_storage V6(const char* ip, uint16_t port) {
  sockaddr_storage s{};
  auto* a = reinterpret_cast<sockaddr_in6*>(&s);
  a->sin6_family = AF_INET6;
  a->sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &a->sin6_addr);
  return s;
}

TEST(L4ProxyProtocolV1, Tcp4) {
  EXPECT_EQ(ProxyProtocolV1(V4("192.168.0.1", 56324), V4("192.168.0.11", 443)),
            "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
}

TEST(L4ProxyProtocolV1, Tcp6AtTheLongestFitsTheSpecsBound) {
  std::string line = ProxyProtocolV1(V6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                                     V6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535));
  EXPECT_EQ(line,
            "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
  EXPECT_LE(line.size(), 107u);  // the spec's worst case
}

TEST(L4ProxyProtocolV1, MixedOrOtherFamiliesAreUnknown) {
  EXPECT_EQ(ProxyProtocolV1(V4("10.0.0.1", 1), V6("::1", 2)), "PROXY UNKNOWN\r\n");
  sockaddr_storage unix_socket{};
  unix_socket.ss_family = AF_UNIX;
  EXPECT_EQ(ProxyProtocolV1(unix_socket, unix_socket), "PROXY UNKNOWN\r\n");
}

const std::string kSignature("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

TEST(L4ProxyProtocolV2, Tcp4) {
  std::string h = ProxyProtocolV2(V4("192.168.0.1", 56324), V4("192.168.0.11", 443));
  std::string want = kSignature + std::string("\x21\x11\x00\x0C", 4) +
                     std::string("\xC0\xA8\x00\x01", 4) + std::string("\xC0\xA8\x00\x0B", 4) +
                     std::string("\xDC\x04", 2) +  // 56324
                     std::string("\x01\xBB", 2);   // 443
  EXPECT_EQ(h, want);
  EXPECT_EQ(h.size(), 16u + 12u);
}

TEST(L4ProxyProtocolV2, Tcp6) {
  std::string h = ProxyProtocolV2(V6("2001:db8::1", 1234), V6("::1", 80));
  ASSERT_EQ(h.size(), 16u + 36u);
  EXPECT_EQ(h.substr(0, 12), kSignature);
  EXPECT_EQ(h.substr(12, 4), std::string("\x21\x21\x00\x24", 4));
  EXPECT_EQ(h.substr(16, 4), std::string("\x20\x01\x0D\xB8", 4));
  EXPECT_EQ(h.substr(32 + 15, 1), std::string("\x01", 1));  // ::1's last byte
  EXPECT_EQ(h.substr(48, 4), std::string("\x04\xD2\x00\x50", 4));
}

TEST(L4ProxyProtocolV2, MixedFamiliesSayLocal) {
  std::string h = ProxyProtocolV2(V4("10.0.0.1", 1), V6("::1", 2));
  EXPECT_EQ(h, kSignature + std::string("\x20\x00\x00\x00", 4));
}

TEST(L4SpliceMode, TheListenersChoiceWinsElseTheClustersAndAutoSplicesAfterAThreshold) {
  using Mode = RelayPolicy::Mode;
  TcpListenerConfig listener;
  EXPECT_EQ(RelayModeFor(listener, "on"), Mode::kSplice);
  EXPECT_EQ(RelayModeFor(listener, "off"), Mode::kCopy);
  EXPECT_EQ(RelayModeFor(listener, "auto"), Mode::kSpliceAfter);
  listener.splice = "off";
  EXPECT_EQ(RelayModeFor(listener, "on"), Mode::kCopy);
  listener.splice = "on";
  EXPECT_EQ(RelayModeFor(listener, "off"), Mode::kSplice);
  listener.splice = "auto";
  EXPECT_EQ(RelayModeFor(listener, "off"), Mode::kSpliceAfter);
  EXPECT_EQ(listener.splice_after_bytes, 64u << 10);
}

}  // namespace
}  // namespace capstan::gateway
