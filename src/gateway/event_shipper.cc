#include "gateway/event_shipper.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/buffer.h"
#include "net/http1.h"

namespace capstan::gateway {

namespace {

constexpr std::chrono::milliseconds kMinBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};
constexpr std::chrono::milliseconds kMaxRetryAfter{10000};

}  // namespace

absl::StatusOr<std::unique_ptr<EventShipper>> EventShipper::Start(EventShipperOptions options) {
  std::string_view url = options.url;
  if (!url.starts_with("http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("events URL '", options.url, "' must start with http://"));
  }
  url.remove_prefix(7);
  size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  std::string path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  size_t colon = authority.rfind(':');
  int port = 80;
  std::string host(authority.substr(0, colon));
  if (colon != std::string_view::npos) {
    std::string_view digits = authority.substr(colon + 1);
    if (!absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &port) || port <= 0 ||
        port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("events URL '", options.url, "': bad port"));
    }
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("events URL '", options.url, "': no host"));
  }
  std::unique_ptr<EventShipper> shipper(new EventShipper(std::move(options)));
  shipper->host_ = std::move(host);
  shipper->port_ = port;
  shipper->path_ = std::move(path);
  shipper->host_header_ = std::string(authority);
  shipper->current_started_ = std::chrono::steady_clock::now();
  shipper->thread_ = std::thread([raw = shipper.get()] { raw->Run(); });
  return shipper;
}

EventShipper::~EventShipper() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    SealLocked();
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  CloseConnection();
}

void EventShipper::Add(std::string_view json_line) {
  bool sealed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (current_events_ == 0) current_started_ = std::chrono::steady_clock::now();
    current_.append(json_line);
    current_.push_back('\n');
    if (++current_events_ >= options_.batch_events) {
      SealLocked();
      sealed = true;
    }
  }
  if (sealed) wake_.notify_one();
}

void EventShipper::SealLocked() {
  if (current_events_ == 0) return;
  if (queue_.size() >= options_.max_pending_batches) {
    // The service is behind or down: traffic is never made to wait for it.
    batches_dropped_.fetch_add(1, std::memory_order_relaxed);
  } else {
    queue_.emplace_back(std::move(current_), current_events_);
  }
  current_.clear();
  current_events_ = 0;
}

EventShipper::Stats EventShipper::stats() const {
  Stats s;
  s.events_sent = events_sent_.load(std::memory_order_relaxed);
  s.batches_sent = batches_sent_.load(std::memory_order_relaxed);
  s.batches_dropped = batches_dropped_.load(std::memory_order_relaxed);
  s.batches_refused = batches_refused_.load(std::memory_order_relaxed);
  s.send_failures = send_failures_.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  s.pending_batches = queue_.size();
  return s;
}

void EventShipper::Run() {
  std::chrono::milliseconds backoff = kMinBackoff;
  std::chrono::steady_clock::time_point stop_deadline{};
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (stopping_ && stop_deadline == std::chrono::steady_clock::time_point{}) {
      stop_deadline = std::chrono::steady_clock::now() + options_.io_timeout;
    }
    if (queue_.empty()) {
      if (stopping_) return;
      // A partial batch leaves after flush_interval.
      auto due = current_events_ > 0 ? current_started_ + options_.flush_interval
                                     : std::chrono::steady_clock::now() + options_.flush_interval;
      wake_.wait_until(lock, due, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() && current_events_ > 0 &&
          std::chrono::steady_clock::now() >= current_started_ + options_.flush_interval) {
        SealLocked();
      }
      continue;
    }
    if (stopping_ && std::chrono::steady_clock::now() >= stop_deadline) {
      CAPSTAN_LOG(warn, "gateway: experiment events not sent at shutdown", "batches",
                  queue_.size());
      return;
    }
    std::string body = queue_.front().first;  // a copy: Add may run meanwhile
    size_t events = queue_.front().second;
    lock.unlock();
    std::chrono::milliseconds retry_after{0};
    int status = Post(body, &retry_after);
    lock.lock();
    if (status >= 200 && status < 300) {
      queue_.pop_front();
      events_sent_.fetch_add(events, std::memory_order_relaxed);
      batches_sent_.fetch_add(1, std::memory_order_relaxed);
      backoff = kMinBackoff;
      continue;
    }
    if (status >= 400 && status < 500 && status != 429 && status != 408) {
      queue_.pop_front();
      batches_refused_.fetch_add(1, std::memory_order_relaxed);
      CAPSTAN_LOG(err, "gateway: the experiments service refused a batch of events", "status",
                  status, "events", events, "url", options_.url);
      continue;
    }
    send_failures_.fetch_add(1, std::memory_order_relaxed);
    std::chrono::milliseconds wait =
        retry_after.count() > 0 ? std::min(retry_after, kMaxRetryAfter) : backoff;
    backoff = std::min(backoff * 2, kMaxBackoff);
    // Sealed batches do not cut the back-off short (a down service is not
    // hammered); a shutdown does, to use what is left of its deadline.
    bool was_stopping = stopping_;
    wake_.wait_for(lock, was_stopping ? kMinBackoff : wait,
                   [&] { return stopping_ != was_stopping; });
  }
}

void EventShipper::CloseConnection() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int EventShipper::Post(const std::string& body, std::chrono::milliseconds* retry_after) {
  if (fd_ < 0) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    std::string port = std::to_string(port_);
    if (::getaddrinfo(host_.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
      return 0;
    }
    int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      // SO_SNDTIMEO also bounds connect(2) on Linux.
      timeval tv{.tv_sec = options_.io_timeout.count() / 1000,
                 .tv_usec = (options_.io_timeout.count() % 1000) * 1000};
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(found);
    if (fd < 0) return 0;
    fd_ = fd;
  }
  std::string request =
      absl::StrCat("POST ", path_, " HTTP/1.1\r\nhost: ", host_header_,
                   "\r\ncontent-type: application/x-ndjson\r\ncontent-length: ", body.size(),
                   "\r\nuser-agent: capstan-gateway\r\n\r\n");
  request += body;
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      CloseConnection();
      return 0;
    }
    sent += static_cast<size_t>(n);
  }
  net::http1::ResponseParser parser;
  net::Buffer input;
  int status = 0;
  bool keep_alive = false;
  char chunk[16 << 10];
  while (true) {
    net::http1::Event ev = parser.Next(&input);
    if (ev.type == net::http1::Event::kHead) {
      status = parser.head().status;
      keep_alive = parser.head().keep_alive;
      if (std::optional<std::string_view> ra = parser.head().fields.Get("retry-after")) {
        int seconds = 0;
        if (absl::SimpleAtoi(absl::string_view(ra->data(), ra->size()), &seconds) && seconds > 0) {
          *retry_after = std::chrono::seconds(seconds);
        }
      }
      continue;
    }
    if (ev.type == net::http1::Event::kBody) continue;  // the answer's body is not needed
    if (ev.type == net::http1::Event::kComplete) break;
    if (ev.type == net::http1::Event::kError) {
      CloseConnection();
      return 0;
    }
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      bool complete = n == 0 && parser.Finish(input).type == net::http1::Event::kComplete;
      CloseConnection();
      return complete ? status : 0;
    }
    input.Append(std::string_view(chunk, static_cast<size_t>(n)));
  }
  if (!keep_alive) CloseConnection();
  return status;
}

}  // namespace capstan::gateway
