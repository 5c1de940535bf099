#include "net/http_server.h"

#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "net/block_on.h"
#include "net/http1.h"

namespace capstan::net {
namespace {

// What an admin request may be: a GET with a short head. Bodies (allowed
// by HTTP, useless here) are read and dropped up to the limit.
http1::Limits AdminLimits() {
  http1::Limits limits;
  limits.max_request_line_bytes = 8 << 10;
  limits.max_header_bytes = 16 << 10;
  limits.max_header_fields = 64;
  limits.max_body_bytes = 64 << 10;
  limits.max_trailer_bytes = 4 << 10;
  return limits;
}

// Answers queued beyond this wait for the client to read them before more
// pipelined requests are parsed, so a client that never reads cannot grow
// the output without bound.
constexpr size_t kMaxQueuedOutput = 1 << 20;

// Bytes read ahead of the parser at most (a head's limits and some body).
constexpr size_t kMaxInputBytes = 64 << 10;

// What a lingering close reads and drops at most before closing anyway.
constexpr size_t kMaxLingerBytes = 1 << 20;

void WriteResponse(Socket* socket, const HttpResponse& response, bool head_only, bool keep_alive,
                   bool http10) {
  http1::ResponseHead head;
  head.status = response.status;
  head.reason = http1::ReasonPhrase(response.status);
  head.fields.Add("Content-Type", response.content_type);
  head.fields.Add("Content-Length", std::to_string(response.body.size()));
  if (!keep_alive) {
    head.fields.Add("Connection", "close");
  } else if (http10) {
    head.fields.Add("Connection", "keep-alive");
  }
  http1::WriteResponseHead(head, &socket->output());
  if (!head_only) socket->output().Append(response.body);
  socket->MarkWritten();
}

}  // namespace

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start(const std::string& host, int port) {
  if (group_ != nullptr) return absl::FailedPreconditionError("HttpServer already started");
  ASSIGN_OR_RETURN(group_, LoopGroup::Start({.threads = 1, .name = "http-admin"}));
  EventLoop* loop = group_->loop(0);
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
    group_->Stop();
    group_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host, ":", port, ": ", st.message()));
  }
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (group_ == nullptr || stopped_) return;
  stopped_ = true;
  EventLoop* loop = group_->loop(0);
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
  RunOn(loop, [this] {
    listener_.reset();
    connections_.clear();
  });
  group_->Stop();
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
    if (connections_.size() >= kMaxConnections) {
      socket->Close();
      continue;
    }
    // A request is small: read no further ahead than the codec's limits.
    socket->set_input_limit(kMaxInputBytes);
    connections_.push_back(socket);
    tasks_.fetch_add(1);
    socket->loop()->StartOwned(ServeConnection(std::move(socket)));
  }
  TaskEnded();
}

HttpResponse HttpServer::Dispatch(std::string_view method, std::string_view path) const {
  if (method != "GET" && method != "HEAD")
    return {405, "text/plain; charset=utf-8", "only GET is supported\n"};
  auto it = handlers_.find(std::string(path));
  if (it == handlers_.end()) return {404, "text/plain; charset=utf-8", "not found\n"};
  return it->second();
}

Task<void> HttpServer::ServeConnection(std::shared_ptr<Socket> socket) {
  EventLoop* loop = socket->loop();
  http1::RequestParser parser(AdminLimits());
  // Closing the socket wakes the reader: a request that does not arrive in
  // time ends the connection.
  Timer deadline([s = socket.get()] { s->Close(); });
  deadline.ArmAfter(loop, kReadTimeout);
  std::string method, path;
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
        const http1::RequestHead& head = parser.head();
        method = std::string(head.method);
        std::string_view request_path, query;
        http1::SplitTarget(head, &request_path, &query);
        path = std::string(request_path);
        keep_alive = head.keep_alive;
        http10 = head.version == http1::Version::kHttp10;
        break;
      }
      case http1::Event::kBody:
        break;  // dropped: no endpoint here takes a body
      case http1::Event::kComplete: {
        WriteResponse(socket.get(), Dispatch(method, path), method == "HEAD", keep_alive, http10);
        if (!keep_alive) {
          open = false;
          break;
        }
        deadline.ArmAfter(loop, kReadTimeout);
        if (socket->pending_output() > kMaxQueuedOutput) {
          absl::Status drained = co_await socket->Drained(kMaxQueuedOutput / 2);
          if (!drained.ok()) open = false;
        }
        break;
      }
      case http1::Event::kError: {
        const http1::Error& error = parser.error();
        WriteResponse(socket.get(),
                      {error.status, "text/plain; charset=utf-8", std::string(error.reason) + "\n"},
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
