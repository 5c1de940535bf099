#include "mesh/discovery.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <thread>

#include <charconv>
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/logging.h"
#include "base/stop_signal.h"
#include "net/address.h"

namespace capstan::mesh {

namespace {

class StaticSource final : public EndpointSource {
 public:
  explicit StaticSource(std::vector<Endpoint> endpoints) : endpoints_(std::move(endpoints)) {}
  void Start(EndpointsCallback on_update) override { on_update(endpoints_); }
  std::string Describe() const override {
    std::vector<std::string> ids;
    for (const Endpoint& e : endpoints_) ids.push_back(e.id);
    return absl::StrCat("static:///", absl::StrJoin(ids, ","));
  }

 private:
  std::vector<Endpoint> endpoints_;
};

class DnsSource final : public EndpointSource {
 public:
  DnsSource(std::string host, int port, DnsOptions options)
      : host_(std::move(host)), port_(port), options_(options) {}
  ~DnsSource() override {
    stop_.Stop();
    if (thread_.joinable()) thread_.join();
  }
  void Start(EndpointsCallback on_update) override {
    thread_ = std::thread([this, cb = std::move(on_update)] { Run(cb); });
  }
  std::string Describe() const override {
    return absl::StrCat("dns:///", FormatHostPort(host_, port_));
  }

 private:
  void Run(const EndpointsCallback& on_update) {
    std::vector<Endpoint> last;
    bool delivered = false;
    while (true) {
      absl::StatusOr<std::vector<Endpoint>> resolved = Resolve();
      std::chrono::milliseconds wait = options_.refresh;
      if (!resolved.ok()) {
        CAPSTAN_LOG(warn, "dns lookup failed; keeping the last endpoints", "target", Describe(),
                    "error", std::string(resolved.status().message()));
        wait = options_.retry;
      } else if (!delivered || *resolved != last) {
        last = *resolved;
        delivered = true;
        on_update(last);
      }
      if (stop_.WaitFor(wait)) return;
    }
  }

  absl::StatusOr<std::vector<Endpoint>> Resolve() const {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    int rc = getaddrinfo(host_.c_str(), nullptr, &hints, &result);
    if (rc != 0) {
      return absl::UnavailableError(absl::StrCat("cannot resolve ", host_, ": ", gai_strerror(rc)));
    }
    std::vector<Endpoint> out;
    for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* addr =
          a->ai_family == AF_INET
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
      if (inet_ntop(a->ai_family, addr, text, sizeof(text)) == nullptr) continue;
      Endpoint e{.host = text, .port = port_, .weight = 1, .id = FormatHostPort(text, port_)};
      if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(std::move(e));
    }
    freeaddrinfo(result);
    // The resolver's order rotates between answers; a sorted set changes
    // only when the addresses do.
    std::sort(out.begin(), out.end(),
              [](const Endpoint& a, const Endpoint& b) { return a.id < b.id; });
    return out;
  }

  std::string host_;
  int port_;
  DnsOptions options_;
  StopSignal stop_;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::vector<Endpoint>> ParseEndpointList(std::string_view list) {
  std::vector<Endpoint> out;
  for (absl::string_view item :
       absl::StrSplit(absl::string_view(list.data(), list.size()), ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    absl::StatusOr<Endpoint> e = ParseEndpoint(std::string_view(item.data(), item.size()));
    if (!e.ok()) return e.status();
    out.push_back(*std::move(e));
  }
  if (out.empty()) return absl::InvalidArgumentError("no endpoints in the list");
  return out;
}

std::string FormatHostPort(const std::string& host, int port) {
  return net::FormatHostPort(host, port);
}

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view host_port, bool allow_any_port) {
  absl::StatusOr<net::HostPort> parsed = net::ParseHostPort(host_port, allow_any_port);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("endpoint ", parsed.status().message()));
  }
  return Endpoint{.host = std::move(parsed->host),
                  .port = parsed->port,
                  .weight = 1,
                  .id = std::string(host_port)};
}

std::unique_ptr<EndpointSource> StaticEndpoints(std::vector<Endpoint> endpoints) {
  for (Endpoint& e : endpoints) {
    if (e.id.empty()) e.id = FormatHostPort(e.host, e.port);
  }
  return std::make_unique<StaticSource>(std::move(endpoints));
}

std::unique_ptr<EndpointSource> DnsEndpoints(std::string host, int port, DnsOptions options) {
  return std::make_unique<DnsSource>(std::move(host), port, options);
}

}  // namespace capstan::mesh
