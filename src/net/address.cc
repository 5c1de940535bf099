#include "net/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace capstan::net {
namespace {

absl::Status Bad(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("'", std::string(text), "': ", std::string(why)));
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

// Parses "host[:port]" (IPv6 in brackets). `whole` is the text errors quote.
// When the port is absent *port_given is false and *port untouched.
absl::Status ParseAuthority(std::string_view authority, std::string_view whole,
                            bool allow_port_zero, std::string* host, int* port, bool* port_given) {
  std::string_view port_text;
  *port_given = false;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return Bad(whole, "expected [ipv6]:port, e.g. [::1]:7000");
    }
    std::string literal(authority.substr(1, close - 1));
    in6_addr scratch;
    if (literal.empty() || inet_pton(AF_INET6, literal.c_str(), &scratch) != 1) {
      return Bad(whole, "the bracketed host is not an IPv6 address");
    }
    *host = std::move(literal);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Bad(whole, "expected [ipv6]:port, e.g. [::1]:7000");
      port_text = rest.substr(1);
      *port_given = true;
    }
  } else {
    size_t colon = authority.find(':');
    if (colon != std::string_view::npos &&
        authority.find(':', colon + 1) != std::string_view::npos) {
      return Bad(whole, "IPv6 addresses need brackets, e.g. [::1]:7000");
    }
    std::string_view name = authority.substr(0, colon);
    if (name.empty()) return Bad(whole, "expected host:port, e.g. 10.0.0.7:7000 (no host)");
    for (char c : name) {
      if (!IsNameChar(c)) {
        return Bad(whole, absl::StrCat("invalid character '", std::string(1, c), "' in the host"));
      }
    }
    *host = std::string(name);
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      *port_given = true;
    }
  }
  if (!*port_given) return absl::OkStatus();
  int value = 0;
  bool digits = !port_text.empty() && port_text.size() <= 5;
  for (char c : port_text) {
    if (c < '0' || c > '9') digits = false;
    if (digits) value = value * 10 + (c - '0');
  }
  int min = allow_port_zero ? 0 : 1;
  if (!digits || value < min || value > 65535) {
    return Bad(whole, absl::StrCat("needs a port between ", min, " and 65535"));
  }
  *port = value;
  return absl::OkStatus();
}

}  // namespace

std::string Url::Authority() const { return FormatHostPort(host, port); }

int DefaultPort(std::string_view scheme) {
  if (scheme == "http" || scheme == "ws") return 80;
  if (scheme == "https" || scheme == "wss") return 443;
  if (scheme == "etcd" || scheme == "store") return 2379;
  if (scheme == "dns") return 53;
  return 0;
}

absl::StatusOr<Url> ParseUrl(std::string_view text, const UrlOptions& options) {
  Url url;
  std::string_view rest = text;
  size_t sep = text.find("://");
  if (sep != std::string_view::npos) {
    std::string_view scheme = text.substr(0, sep);
    bool ok = !scheme.empty() && absl::ascii_isalpha(static_cast<unsigned char>(scheme[0]));
    for (char c : scheme) {
      ok = ok &&
           (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.');
    }
    if (!ok) return Bad(text, "invalid scheme");
    url.scheme = absl::AsciiStrToLower(std::string(scheme));
    rest = text.substr(sep + 3);
  } else {
    url.scheme = std::string(options.default_scheme);
  }
  size_t path_start = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path_start);
  if (path_start != std::string_view::npos) url.path = std::string(rest.substr(path_start));
  if (authority.find('@') != std::string_view::npos) {
    return Bad(text, "user info (user@host) is not supported");
  }
  if (authority.empty()) {
    return Bad(text, "needs a host and a port, e.g. http://127.0.0.1:2379");
  }
  RETURN_IF_ERROR(ParseAuthority(authority, text, options.allow_port_zero, &url.host, &url.port,
                                 &url.port_given));
  if (!url.port_given) {
    url.port = DefaultPort(url.scheme);
    if (options.require_port || url.port == 0) {
      return Bad(text, "needs a host and a port, e.g. http://127.0.0.1:2379");
    }
  }
  return url;
}

absl::StatusOr<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero) {
  HostPort hp;
  bool port_given = false;
  if (text.find_first_of("/?#@") != std::string_view::npos) {
    return Bad(text, "expected host:port, e.g. 10.0.0.7:7000");
  }
  RETURN_IF_ERROR(ParseAuthority(text, text, allow_port_zero, &hp.host, &hp.port, &port_given));
  if (!port_given) return Bad(text, "expected host:port, e.g. 10.0.0.7:7000 (no port)");
  return hp;
}

std::string FormatHostPort(std::string_view host, int port) {
  return host.find(':') != std::string_view::npos ? absl::StrCat("[", std::string(host), "]:", port)
                                                  : absl::StrCat(std::string(host), ":", port);
}

std::string GrpcTarget(std::string_view url) {
  absl::StatusOr<Url> parsed = ParseUrl(url, {.require_port = true});
  if (parsed.ok() && (parsed->scheme == "http" || parsed->scheme == "https")) {
    return parsed->Authority();
  }
  for (std::string_view scheme : {"http://", "https://"}) {
    if (url.starts_with(scheme)) url.remove_prefix(scheme.size());
  }
  return std::string(url);
}

absl::Status ResolveAddress(const std::string& host, int port, sockaddr_storage* addr,
                            socklen_t* len) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", port, " is out of range 0..65535"));
  }
  std::memset(addr, 0, sizeof(*addr));
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  auto* v4 = reinterpret_cast<sockaddr_in*>(addr);
  if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in);
    return absl::OkStatus();
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(addr);
  if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in6);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", host,
                   "' is not a numeric IP address; names are resolved by the mesh's DNS "
                   "discovery, not by the socket layer"));
}

}  // namespace capstan::net
