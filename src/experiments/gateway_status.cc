#include "experiments/gateway_status.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "net/address.h"
#include "net/buffer.h"
#include "net/http1.h"

namespace capstan::experiments {
namespace {

using Clock = std::chrono::steady_clock;

// A socket closed when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

int MillisLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitReady(int fd, short events, Clock::time_point deadline, const char* what) {
  while (true) {
    int left = MillisLeft(deadline);
    if (left == 0) return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    pollfd p{.fd = fd, .events = events, .revents = 0};
    int n = ::poll(&p, 1, left);
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
    }
  }
}

absl::Status Connect(const std::string& host, int port, Clock::time_point deadline, Fd* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string port_text = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &found);
  if (rc != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("resolve ", host, ": ", ::gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(found, ::freeaddrinfo);
  out->fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (out->fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  int one = 1;
  ::setsockopt(out->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(out->fd, found->ai_addr, found->ai_addrlen) == 0) return absl::OkStatus();
  if (errno != EINPROGRESS) {
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
  }
  RETURN_IF_ERROR(WaitReady(out->fd, POLLOUT, deadline, "connect"));
  int error = 0;
  socklen_t len = sizeof error;
  ::getsockopt(out->fd, SOL_SOCKET, SO_ERROR, &error, &len);
  if (error != 0) return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(error)));
  return absl::OkStatus();
}

absl::Status SendAll(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      RETURN_IF_ERROR(WaitReady(fd, POLLOUT, deadline, "send"));
      continue;
    }
    return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// GET /status on `url` (http://host:port): the body of a 200 answer.
absl::StatusOr<std::string> GetStatusBody(const net::Url& url, const GatewayFetchOptions& options) {
  const Clock::time_point deadline = Clock::now() + options.timeout;
  Fd fd;
  RETURN_IF_ERROR(Connect(url.host, url.port, deadline, &fd));
  RETURN_IF_ERROR(SendAll(fd.fd,
                          absl::StrCat("GET /status HTTP/1.1\r\nhost: ", url.Authority(),
                                       "\r\naccept: application/json\r\nuser-agent: "
                                       "capstan-experiments\r\nconnection: close\r\n\r\n"),
                          deadline));
  net::http1::ResponseParser parser;
  net::Buffer input;
  std::string body;
  int status = 0;
  char chunk[16 << 10];
  while (true) {
    net::http1::Event ev = parser.Next(&input);
    switch (ev.type) {
      case net::http1::Event::kHead:
        status = parser.head().status;
        if (status != 200) return absl::UnavailableError(absl::StrCat("/status answered ", status));
        continue;
      case net::http1::Event::kBody:
        if (body.size() + ev.body.size() > options.max_answer_bytes) {
          return absl::ResourceExhaustedError(
              absl::StrCat("/status answer over ", options.max_answer_bytes, " bytes"));
        }
        ev.body.AppendTo(&body);
        continue;
      case net::http1::Event::kComplete:
        return body;
      case net::http1::Event::kError:
      case net::http1::Event::kClosed:
        return absl::UnavailableError(
            absl::StrCat("/status answer is not valid HTTP/1.1: ", parser.error().reason));
      case net::http1::Event::kNeedMore:
        break;
    }
    RETURN_IF_ERROR(WaitReady(fd.fd, POLLIN, deadline, "reading /status"));
    ssize_t n = ::recv(fd.fd, chunk, sizeof chunk, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    if (n == 0) {
      net::http1::Event last = parser.Finish(input);
      if (last.type == net::http1::Event::kComplete && status == 200) return body;
      return absl::UnavailableError("the gateway closed the connection before answering");
    }
    input.Append(std::string_view(chunk, static_cast<size_t>(n)));
  }
}

}  // namespace

absl::StatusOr<std::string> ParseGatewayAdminUrl(std::string_view text) {
  absl::StatusOr<net::Url> url = net::ParseUrl(text, {.require_port = true});
  if (!url.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--gateway-admin ", std::string(text), ": ",
                                                   std::string(url.status().message())));
  }
  if (url->scheme != "http") {
    return absl::InvalidArgumentError(absl::StrCat("--gateway-admin ", std::string(text),
                                                   ": the gateway's admin endpoint speaks "
                                                   "http:// only"));
  }
  return absl::StrCat("http://", url->Authority());
}

void GatewayDirectory::Set(std::vector<std::string> admin_urls) {
  MutexLock lock(&mu_);
  urls_ = std::move(admin_urls);
}

std::vector<std::string> GatewayDirectory::Get() const {
  MutexLock lock(&mu_);
  return urls_;
}

Json FetchGatewayStatus(const std::string& admin_url, const GatewayFetchOptions& options) {
  Json row = {{"admin", admin_url}};
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::string> body;
  absl::StatusOr<net::Url> url = net::ParseUrl(admin_url, {.require_port = true});
  if (!url.ok()) {
    body = url.status();
  } else {
    body = GetStatusBody(*url, options);
  }
  row["elapsedMs"] = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  if (!body.ok()) {
    row["ok"] = false;
    row["error"] = std::string(body.status().message());
    return row;
  }
  Json status = Json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (status.is_discarded() || !status.is_object()) {
    row["ok"] = false;
    row["error"] = "/status did not answer a JSON object";
    return row;
  }
  row["ok"] = true;
  row["status"] = std::move(status);
  return row;
}

Json GatewaysStatus(const std::vector<std::string>& urls, const GatewayFetchOptions& options) {
  std::vector<std::future<Json>> rows;
  rows.reserve(urls.size());
  for (const std::string& url : urls) {
    rows.push_back(std::async(std::launch::async,
                              [&url, &options] { return FetchGatewayStatus(url, options); }));
  }
  Json out = {{"gateways", Json::array()}};
  for (std::future<Json>& row : rows) out["gateways"].push_back(row.get());
  return out;
}

void AddGatewayRoutes(net::HttpRouter* router, std::shared_ptr<const GatewayDirectory> directory,
                      GatewayFetchOptions options) {
  router->Add(
      "GET", "/v1/gateways",
      [directory = std::move(directory), options](const net::HttpRequest&, const net::PathParams&) {
        return net::JsonResponse(200, GatewaysStatus(directory->Get(), options).dump());
      });
}

}  // namespace capstan::experiments
