#include "net/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "net/block_on.h"
#include "net/http1.h"

namespace capstan::net {
namespace {

// What a request may be: a short head and a body of at most
// `max_body_bytes` (kept for HandleAll's handler, else dropped).
http1::Limits RequestLimits(uint64_t max_body_bytes) {
  http1::Limits limits;
  limits.max_request_line_bytes = 8 << 10;
  limits.max_header_bytes = 16 << 10;
  limits.max_header_fields = 64;
  limits.max_body_bytes = max_body_bytes;
  limits.max_trailer_bytes = 4 << 10;
  return limits;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Answers queued beyond this wait for the client to read them before more
// pipelined requests are parsed, so a client that never reads cannot grow
// the output without bound.
constexpr size_t kMaxQueuedOutput = 1 << 20;

// A request body's space reserved from its Content-Length at most, before
// its bytes arrive (larger ones grow as they come).
constexpr uint64_t kMaxBodyReserve = 1 << 20;

// Bytes read ahead of the parser at most (a head's limits and some body).
constexpr size_t kMaxInputBytes = 64 << 10;

// What a lingering close reads and drops at most before closing anyway.
constexpr size_t kMaxLingerBytes = 1 << 20;

}  // namespace

std::optional<std::string_view> HttpRequest::Header(std::string_view name) const {
  for (const auto& [field, value] : headers) {
    if (EqualsIgnoreCase(field, name)) return value;
  }
  return std::nullopt;
}

HttpStream::~HttpStream() = default;

bool HttpStream::Write(std::string_view bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_ || end_requested_) return false;
  if (loop_ == nullptr) {
    pending_.append(bytes);
    return true;
  }
  loop_->Post(
      [self = shared_from_this(), data = std::string(bytes)]() mutable { self->SendOnLoop(data); });
  return true;
}

void HttpStream::End() {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_ || end_requested_) return;
  end_requested_ = true;
  if (loop_ != nullptr) loop_->Post([self = shared_from_this()] { self->FinishOnLoop(); });
}

bool HttpStream::ended() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ended_ || end_requested_;
}

void HttpStream::Attach(EventLoop* loop, std::shared_ptr<Socket> socket, bool chunked,
                        size_t max_pending) {
  socket_ = socket;
  chunked_ = chunked;
  max_pending_ = max_pending;
  std::string pending;
  bool end_requested = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    loop_ = loop;
    pending.swap(pending_);
    end_requested = end_requested_;
  }
  if (!pending.empty()) SendOnLoop(pending);
  if (end_requested) FinishOnLoop();
  if (options_.keepalive_interval.count() > 0 && !options_.keepalive_bytes.empty()) {
    keepalive_ = std::make_unique<Timer>([this] { OnKeepaliveTimer(); });
    keepalive_->ArmAfter(loop, options_.keepalive_interval);
  }
}

void HttpStream::SendOnLoop(std::string_view bytes) {
  std::shared_ptr<Socket> socket = socket_.lock();
  if (socket == nullptr || socket->closed() || end_requested_on_loop_ || bytes.empty()) return;
  if (socket->pending_output() > max_pending_) {
    // The client reads slower than events come: end it rather than queue
    // without bound (an SSE client reconnects and starts from the current
    // state).
    FinishOnLoop();
    return;
  }
  if (chunked_) {
    Buffer piece;
    piece.Append(bytes);
    http1::AppendChunk(std::move(piece), &socket->output());
  } else {
    socket->output().Append(bytes);
  }
  socket->MarkWritten();
  wrote_since_tick_ = true;
}

void HttpStream::FinishOnLoop() {
  if (end_requested_on_loop_) return;
  end_requested_on_loop_ = true;
  std::shared_ptr<Socket> socket = socket_.lock();
  if (socket == nullptr || socket->closed()) return;
  if (chunked_) {
    http1::AppendLastChunk(nullptr, &socket->output());
    socket->MarkWritten();
  }
  socket->InterruptRead();
}

void HttpStream::OnKeepaliveTimer() {
  if (!wrote_since_tick_) SendOnLoop(options_.keepalive_bytes);
  wrote_since_tick_ = false;
  std::shared_ptr<Socket> socket = socket_.lock();
  if (socket != nullptr && !socket->closed() && !end_requested_on_loop_) {
    keepalive_->ArmAfter(socket->loop(), options_.keepalive_interval);
  }
}

void HttpStream::Detach() {
  keepalive_.reset();
  std::function<void()> on_end;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    ended_ = true;
    loop_ = nullptr;
    pending_.clear();
    on_end = std::move(options_.on_end);
  }
  if (on_end) on_end();
}

void HttpServer::WriteResponse(Socket* socket, const HttpResponse& response, bool head_only,
                               bool keep_alive, bool http10) const {
  http1::ResponseHead head;
  head.status = response.status;
  head.reason = http1::ReasonPhrase(response.status);
  head.fields.Add("Content-Type", response.content_type);
  for (const auto& [name, value] : options_.default_headers) head.fields.Add(name, value);
  for (const auto& [name, value] : response.headers) head.fields.Add(name, value);
  // 204 (a CORS preflight's answer) and 304 (Not Modified) have no body,
  // and no Content-Length (RFC 9110 §8.6: a 304's would have to be the
  // full answer's).
  bool bodiless = response.status == 204 || response.status == 304;
  if (!bodiless) head.fields.Add("Content-Length", std::to_string(response.body.size()));
  if (!keep_alive) {
    head.fields.Add("Connection", "close");
  } else if (http10) {
    head.fields.Add("Connection", "keep-alive");
  }
  http1::WriteResponseHead(head, &socket->output());
  if (!head_only && !bodiless) socket->output().Append(response.body);
  socket->MarkWritten();
}

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start(const std::string& host, int port) {
  if (loop_ != nullptr) return absl::FailedPreconditionError("HttpServer already started");
  if (fallback_ != nullptr && options_.worker_threads > 0) {
    workers_ = std::make_unique<WorkerPool>(
        WorkerPoolOptions{.threads = options_.worker_threads, .name = options_.name + "-work"});
  }
  if (options_.group != nullptr) {
    loop_ = options_.group->PickLoop();
  } else {
    ASSIGN_OR_RETURN(own_group_, LoopGroup::Start({.threads = 1, .name = options_.name}));
    loop_ = own_group_->loop(0);
  }
  EventLoop* loop = loop_;
  absl::Status st;
  RunOn(loop, [&] {
    absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind(loop, host, port);
    if (!listener.ok()) {
      st = listener.status();
      return;
    }
    listener_ = std::move(listener).value();
    port_ = listener_->port();
    tasks_.fetch_add(1);
    loop->StartOwned(AcceptLoop());
  });
  if (!st.ok()) {
    if (own_group_ != nullptr) own_group_->Stop();
    own_group_.reset();
    loop_ = nullptr;
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host, ":", port, ": ", st.message()));
  }
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (loop_ == nullptr || stopped_) return;
  stopped_ = true;
  EventLoop* loop = loop_;
  RunOn(loop, [this] {
    stopping_ = true;
    listener_->Close();
    for (std::weak_ptr<Socket>& weak : connections_) {
      if (std::shared_ptr<Socket> socket = weak.lock()) socket->Close();
    }
  });
  {
    std::unique_lock<std::mutex> lock(tasks_mu_);
    tasks_done_.wait(lock, [this] { return tasks_.load() == 0; });
  }
  // Also a barrier: the coroutines that just said they ended have returned
  // (they ran on this loop), so nothing of the server is left on a shared
  // loop.
  RunOn(loop, [this] {
    listener_.reset();
    connections_.clear();
  });
  if (own_group_ != nullptr) own_group_->Stop();
  workers_.reset();  // idle: every connection waiting on it has ended
}

void HttpServer::TaskEnded() {
  if (tasks_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    tasks_done_.notify_all();
  }
}

Task<void> HttpServer::AcceptLoop() {
  while (true) {
    absl::StatusOr<std::shared_ptr<Socket>> accepted = co_await listener_->Accept();
    if (!accepted.ok()) break;  // the listener closed
    std::shared_ptr<Socket> socket = std::move(accepted).value();
    if (stopping_) {
      socket->Close();
      continue;
    }
    std::erase_if(connections_, [](const std::weak_ptr<Socket>& weak) { return weak.expired(); });
    if (connections_.size() >= options_.max_connections) {
      socket->Close();
      continue;
    }
    if (options_.tls != nullptr) {
      std::shared_ptr<const TlsContext> context = options_.tls();
      if (context == nullptr || !socket->StartTls(std::move(context), TlsRole::kServer).ok()) {
        socket->Close();
        continue;
      }
    }
    // A request is small: read no further ahead than the codec's limits.
    socket->set_input_limit(kMaxInputBytes);
    connections_.push_back(socket);
    tasks_.fetch_add(1);
    socket->loop()->StartOwned(ServeConnection(std::move(socket)));
  }
  TaskEnded();
}

std::optional<HttpResponse> HttpServer::DispatchFixed(std::string_view method,
                                                      std::string_view path) const {
  auto it = handlers_.find(std::string(path));
  bool get = method == "GET" || method == "HEAD";
  if (it != handlers_.end() && get) return it->second();
  if (fallback_ != nullptr) return std::nullopt;
  if (!get) return HttpResponse{405, "text/plain; charset=utf-8", "only GET is supported\n", {}};
  return HttpResponse{404, "text/plain; charset=utf-8", "not found\n", {}};
}

Task<void> HttpServer::ServeStream(std::shared_ptr<Socket> socket, const HttpResponse& response,
                                   bool head_only, bool http10) {
  std::shared_ptr<HttpStream> stream = response.stream;
  http1::ResponseHead head;
  head.status = response.status;
  head.reason = http1::ReasonPhrase(response.status);
  head.fields.Add("Content-Type", response.content_type);
  for (const auto& [name, value] : options_.default_headers) head.fields.Add(name, value);
  for (const auto& [name, value] : response.headers) head.fields.Add(name, value);
  // The connection serves nothing after this answer.
  bool chunked = !http10 && !head_only;
  if (chunked) head.fields.Add("Transfer-Encoding", "chunked");
  head.fields.Add("Connection", "close");
  http1::WriteResponseHead(head, &socket->output());
  socket->MarkWritten();
  if (!head_only && !stopping_) {
    stream->Attach(socket->loop(), socket, chunked, options_.max_stream_pending_bytes);
    // The client sends nothing more that matters; what it sends is dropped
    // (the socket's input limit bounds each read). Its close, End (an
    // interrupted read) or Stop (a closed socket) ends the loop.
    while (!stream->end_requested_on_loop()) {
      socket->input().Clear();
      absl::Status read = co_await socket->ReadMore();
      if (!read.ok() && !stream->end_requested_on_loop()) break;
    }
  }
  stream->Detach();
}

Task<void> HttpServer::ServeConnection(std::shared_ptr<Socket> socket) {
  EventLoop* loop = socket->loop();
  http1::RequestParser parser(RequestLimits(options_.max_body_bytes));
  // Closing the socket wakes the reader: a request that does not arrive in
  // time ends the connection.
  Timer deadline([s = socket.get()] { s->Close(); });
  deadline.ArmAfter(loop, options_.read_timeout);
  HttpRequest request;
  bool keep_alive = false, http10 = false;
  bool open = true;
  while (open && !stopping_) {
    http1::Event event = parser.Next(&socket->input());
    switch (event.type) {
      case http1::Event::kNeedMore: {
        absl::Status read = co_await socket->ReadMore();
        if (!read.ok()) open = false;
        break;
      }
      case http1::Event::kHead: {
        http1::RequestHead& head = parser.head();
        request = HttpRequest{};
        request.method = std::string(head.method);
        std::string_view request_path, query;
        http1::SplitTarget(head, &request_path, &query);
        request.path = std::string(request_path);
        request.query = std::string(query);
        if (fallback_ != nullptr) {
          for (const http1::HeaderFields::Field& field : head.fields) {
            request.headers.emplace_back(std::string(field.name), std::string(field.value));
          }
        }
        if (fallback_ != nullptr && head.framing == http1::Framing::kContentLength) {
          // What the client announced, up to a cap: the bytes have not come yet.
          request.body.reserve(std::min<uint64_t>(head.content_length, kMaxBodyReserve));
        }
        keep_alive = head.keep_alive;
        http10 = head.version == http1::Version::kHttp10;
        // curl asks before sending a body over 1 KiB; the codec has already
        // refused one whose Content-Length is over the limit.
        if (head.expect_continue && !http10) {
          socket->output().Append("HTTP/1.1 100 Continue\r\n\r\n");
          socket->MarkWritten();
        }
        break;
      }
      case http1::Event::kBody:
        // Kept only for HandleAll's handler; the codec bounds its size.
        // Into the space reserved at the head, in one copy.
        if (fallback_ != nullptr) event.body.AppendTo(&request.body);
        break;
      case http1::Event::kComplete: {
        std::optional<HttpResponse> response = DispatchFixed(request.method, request.path);
        if (!response.has_value()) {
          if (workers_ != nullptr) {
            // The handler may block: it runs on a worker while this loop
            // serves other connections; this one waits, keeping answers in
            // order.
            const HttpRequest& whole = request;
            response = co_await workers_->Run(loop, [this, &whole] { return fallback_(whole); });
          } else {
            response = fallback_(request);
          }
        }
        if (response->stream != nullptr) {
          deadline.Cancel();
          Task<void> streaming = ServeStream(socket, *response, request.method == "HEAD", http10);
          co_await std::move(streaming);
          open = false;
          break;
        }
        WriteResponse(socket.get(), *response, request.method == "HEAD", keep_alive, http10);
        if (!keep_alive) {
          open = false;
          break;
        }
        deadline.ArmAfter(loop, options_.read_timeout);
        if (socket->pending_output() > kMaxQueuedOutput) {
          absl::Status drained = co_await socket->Drained(kMaxQueuedOutput / 2);
          if (!drained.ok()) open = false;
        }
        break;
      }
      case http1::Event::kError: {
        const http1::Error& error = parser.error();
        WriteResponse(
            socket.get(),
            {error.status, "text/plain; charset=utf-8", std::string(error.reason) + "\n", {}},
            false, false, false);
        open = false;
        break;
      }
      case http1::Event::kClosed:
        open = false;
        break;
    }
  }
  // Lingering close: the answers leave, then our FIN, and what the client
  // still sends is read and dropped until it closes. Closing with unread
  // bytes would make the kernel answer them with a reset, which can destroy
  // the answer (a 414 or 431 to a client still sending) before it is read.
  // The timer bounds all of it.
  deadline.ArmAfter(loop, std::chrono::seconds(1));
  absl::Status drained = co_await socket->Drained();
  if (drained.ok() && !socket->closed()) {
    ::shutdown(socket->fd(), SHUT_WR);
    size_t dropped = 0;
    while (dropped < kMaxLingerBytes) {
      dropped += socket->input().size();
      socket->input().Clear();
      absl::Status read = co_await socket->ReadMore();
      if (!read.ok()) break;
    }
  }
  socket->Close();
  TaskEnded();
}

}  // namespace capstan::net
