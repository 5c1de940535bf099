// Addresses in one place: every "host:port", URL and listen address Capstan
// reads (flags, config, registry entries, peer URLs) is parsed here, and
// numeric addresses become sockaddrs here, so every subsystem accepts the
// same forms and says the same things about bad ones.
//
// Forms:
//   host:port                 10.0.0.7:7000, localhost:2379, [::1]:7000
//   scheme://host[:port][/p]  http://127.0.0.1:2379, https://h/x (port from
//                             the scheme: DefaultPort), store://h:2379/svc
// IPv6 literals need brackets; hosts are names (letters, digits, '-', '.',
// '_'), IPv4 or bracketed IPv6; ports are decimal 1..65535 (0 only where a
// listen address asks for "any free port"). User info ("u@h") is refused.
//
// Thread-safety: plain functions on values.
//
//   ASSIGN_OR_RETURN(net::Url url, net::ParseUrl(flag, {.require_port = true}));
//   ASSIGN_OR_RETURN(net::HostPort hp, net::ParseHostPort("[::1]:7000"));
//   sockaddr_storage addr; socklen_t len;
//   RETURN_IF_ERROR(net::ResolveAddress(hp.host, hp.port, &addr, &len));
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "base/status.h"

namespace capstan::net {

struct HostPort {
  std::string host;  // IPv6 without brackets: "::1"
  int port = 0;
};

struct Url {
  std::string scheme;  // lowercase; UrlOptions::default_scheme when absent
  std::string host;    // IPv6 without brackets
  int port = 0;        // as written, or the scheme's default
  bool port_given = false;
  std::string path;  // "" or from the first '/' on, query included
  // "host:port", IPv6 in brackets: what a channel or a Host header takes.
  std::string Authority() const;
};

struct UrlOptions {
  // The scheme of a bare "host:port".
  std::string_view default_scheme = "http";
  // Refuse a URL without an explicit port (listen addresses, etcd-style
  // flags) instead of taking the scheme's default.
  bool require_port = false;
  // Accept port 0 ("any free port") for listen addresses.
  bool allow_port_zero = false;
};

absl::StatusOr<Url> ParseUrl(std::string_view text, const UrlOptions& options = {});

// A bare "host:port" (no scheme, no path); the port is required.
absl::StatusOr<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero = false);

// The port a scheme implies: http/ws 80, https/wss 443, etcd/store 2379,
// dns 53; 0 when it implies none.
int DefaultPort(std::string_view scheme);

// "10.0.0.7:7000", "[::1]:7000".
std::string FormatHostPort(std::string_view host, int port);

// "http://host:port" (or https://, or a bare "host:port") -> "host:port",
// the form gRPC channels take; anything that is not such a URL (a
// "unix:///path" target) is returned with only an http(s):// prefix removed.
std::string GrpcTarget(std::string_view url);

// A numeric address ("127.0.0.1", "::1" or "[::1]") or "localhost" into a
// sockaddr. No DNS here: names are resolved by the mesh's DNS discovery.
absl::Status ResolveAddress(const std::string& host, int port, sockaddr_storage* addr,
                            socklen_t* len);

}  // namespace capstan::net
