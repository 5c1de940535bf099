#include "bench/raw_unary.h"

#include <nghttp2/nghttp2.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/raw_h2.h"
#include "net/grpc_wire.h"

namespace capstan::bench {

struct RawUnaryPool::Call {
  std::string body;  // the framed request
  size_t sent = 0;
  std::string response;  // framed, as received
  int grpc_status = -1;
  std::string grpc_message;
  Done done;

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* c = static_cast<Call*>(source->ptr);
    size_t n = std::min(length, c->body.size() - c->sent);
    std::memcpy(buf, c->body.data() + c->sent, n);
    c->sent += n;
    if (c->sent == c->body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  absl::Status Status() const {
    if (grpc_status < 0) return absl::InternalError("response without grpc-status");
    if (grpc_status != 0) {
      return absl::Status(static_cast<absl::StatusCode>(grpc_status), grpc_message);
    }
    if (response.size() < 5 || response[0] != 0 ||
        GrpcMessageSize(response) != response.size() - 5) {
      return absl::InternalError("response is not one uncompressed gRPC message");
    }
    return absl::OkStatus();
  }
};

struct RawUnaryPool::Connection {
  int fd = -1;
  std::string authority;
  nghttp2_session* h2 = nullptr;
  // Calls whose streams are open, owned here until they close (a pool
  // stopped early still frees them).
  std::unordered_map<int32_t, std::unique_ptr<Call>> open;
  ~Connection() {
    if (h2 != nullptr) nghttp2_session_del(h2);
    if (fd >= 0) ::close(fd);
  }
};

absl::StatusOr<std::unique_ptr<RawUnaryPool>> RawUnaryPool::Connect(
    const std::vector<std::string>& endpoints, int connections) {
  if (endpoints.empty() || connections < 1) {
    return absl::InvalidArgumentError("raw unary pool: no endpoints or no connections");
  }
  std::unique_ptr<RawUnaryPool> pool(new RawUnaryPool());
  pool->epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (pool->epoll_fd_ < 0) return absl::InternalError(absl::StrCat("epoll: ", strerror(errno)));
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(
      cb,
      [](nghttp2_session* h2, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
         const uint8_t* value, size_t valuelen, uint8_t, void*) -> int {
        auto* call =
            static_cast<Call*>(nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
        if (call == nullptr) return 0;
        std::string_view n(reinterpret_cast<const char*>(name), namelen);
        absl::string_view v(reinterpret_cast<const char*>(value), valuelen);
        if (n == "grpc-status") {
          int code;
          call->grpc_status = absl::SimpleAtoi(v, &code) ? code : 2;
        } else if (n == "grpc-message") {
          call->grpc_message.assign(v.data(), v.size());
        }
        return 0;
      });
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
      cb,
      [](nghttp2_session* h2, uint8_t, int32_t id, const uint8_t* data, size_t len, void*) -> int {
        auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(h2, id));
        if (call != nullptr) call->response.append(reinterpret_cast<const char*>(data), len);
        return 0;
      });
  nghttp2_session_callbacks_set_on_stream_close_callback(
      cb, [](nghttp2_session* h2, int32_t id, uint32_t code, void* user) -> int {
        auto* conn = static_cast<Connection*>(user);
        auto it = conn->open.find(id);
        if (it == conn->open.end()) return 0;
        std::unique_ptr<Call> call = std::move(it->second);
        conn->open.erase(it);
        nghttp2_session_set_stream_user_data(h2, id, nullptr);
        absl::Status st =
            code != NGHTTP2_NO_ERROR
                ? absl::UnavailableError(absl::StrCat("stream reset (HTTP/2 code ", code, ")"))
                : call->Status();
        std::string_view message =
            st.ok() ? std::string_view(call->response).substr(5) : std::string_view();
        call->done(st, message);
        return 0;
      });
  for (int i = 0; i < connections; ++i) {
    auto c = std::make_unique<Connection>();
    ASSIGN_OR_RETURN(
        c->fd, ConnectTcp(endpoints[static_cast<size_t>(i) % endpoints.size()], &c->authority));
    nghttp2_session_client_new(&c->h2, cb, c.get());
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 << 20}};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings, 1);
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 1 << 30);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c.get();
    if (::epoll_ctl(pool->epoll_fd_, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
      nghttp2_session_callbacks_del(cb);
      return absl::InternalError(absl::StrCat("epoll_ctl: ", strerror(errno)));
    }
    pool->connections_.push_back(std::move(c));
  }
  nghttp2_session_callbacks_del(cb);
  return pool;
}

void RawUnaryPool::Send(int client, const std::string& path,
                        const google::protobuf::MessageLite& request, Done done) {
  Connection* c = connections_[static_cast<size_t>(client) % connections_.size()].get();
  auto call = std::make_unique<Call>();
  // Framed in place: the prefix, then the message serialized right after it.
  size_t size = request.ByteSizeLong();
  call->body.resize(5 + size);
  net::EncodeGrpcMessagePrefix(call->body.data(), size);
  request.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(call->body.data() + 5));
  call->done = std::move(done);
  static const std::string kPost = "POST", kHttp = "http", kGrpc = "application/grpc",
                           kTrailers = "trailers";
  nghttp2_nv headers[] = {
      HeaderField(":method", kPost),      HeaderField(":scheme", kHttp),
      HeaderField(":path", path),         HeaderField(":authority", c->authority),
      HeaderField("content-type", kGrpc), HeaderField("te", kTrailers)};
  nghttp2_data_provider body;
  body.source.ptr = call.get();
  body.read_callback = &Call::ReadBody;
  int32_t id = nghttp2_submit_request(c->h2, nullptr, headers, 6, &body, call.get());
  if (id < 0) {
    call->done(absl::InternalError(nghttp2_strerror(id)), {});
    return;
  }
  c->open.emplace(id, std::move(call));
}

void RawUnaryPool::Start(std::function<void()> start) {
  thread_ = std::thread([this, start = std::move(start)] { Run(start); });
}

void RawUnaryPool::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

RawUnaryPool::~RawUnaryPool() {
  Stop();
  connections_.clear();
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

void RawUnaryPool::Fail(std::string why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_.empty()) error_ = std::move(why);
}

std::string RawUnaryPool::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

bool RawUnaryPool::Flush(Connection* c) {
  const uint8_t* out;
  ssize_t n;
  while ((n = nghttp2_session_mem_send(c->h2, &out)) > 0) {
    while (n > 0) {
      ssize_t w = ::send(c->fd, out, static_cast<size_t>(n), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        Fail(absl::StrCat("send: ", std::strerror(errno)));
        return false;
      }
      out += w;
      n -= w;
    }
  }
  return n == 0;
}

void RawUnaryPool::Run(const std::function<void()>& start) {
  start();
  std::vector<char> buf(256 << 10);
  epoll_event events[64];
  while (!stop_.load(std::memory_order_relaxed)) {
    for (auto& c : connections_) {
      if (!Flush(c.get())) return;
    }
    int ready = ::epoll_wait(epoll_fd_, events, 64, 20);
    for (int i = 0; i < ready; ++i) {
      auto* c = static_cast<Connection*>(events[i].data.ptr);
      while (true) {
        ssize_t got = ::recv(c->fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (got <= 0) {
          if (!stop_) Fail(got == 0 ? "server closed the connection" : std::strerror(errno));
          return;
        }
        if (nghttp2_session_mem_recv(c->h2, reinterpret_cast<const uint8_t*>(buf.data()),
                                     static_cast<size_t>(got)) < 0) {
          Fail("HTTP/2 error from the server");
          return;
        }
        if (static_cast<size_t>(got) < buf.size()) break;
      }
    }
  }
}

}  // namespace capstan::bench
