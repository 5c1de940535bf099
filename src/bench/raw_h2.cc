#include "bench/raw_h2.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "net/address.h"

namespace capstan::bench {

absl::StatusOr<int> ConnectTcp(const std::string& endpoint, std::string* authority) {
  absl::StatusOr<net::Url> url = net::ParseUrl(endpoint, {.require_port = true});
  if (!url.ok()) return url.status();
  *authority = url->Authority();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string host = url->host, port = std::to_string(url->port);
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrCat("resolve ", endpoint, ": ", gai_strerror(rc)));
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc = fd < 0 ? -1 : ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", endpoint, ": ", std::strerror(err)));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace capstan::bench
