// The small HTTP/1.1 server for operational endpoints (/metrics, /health,
// /status) and small JSON services: GET and HEAD to fixed paths
// (Handle), and, through HandleAll, any method with a bounded request body
// (a service's API, usually behind an HttpRouter: http_router.h).
// It runs on the runtime — a loop of its own (one thread), or one loop of a
// caller's LoopGroup (HttpServerOptions::group), Listener and Socket
// coroutines, the http1 codec — so it shares the code and limits of
// every other server: keep-alive and pipelining (answers in order),
// malformed requests answered with the codec's status (400, 414, 431, 505)
// and the connection closed, a bounded request size, and a read deadline
// so a misbehaving scraper cannot hold a connection. Not a general-purpose
// server: the gateway has its own.
//
// Streamed answers (server-sent events): a handler may answer with an
// HttpResponse whose `stream` is set. The head goes out without a
// Content-Length (chunked for HTTP/1.1, until the close for HTTP/1.0), the
// read deadline is lifted, and from then on whatever any thread writes to
// the HttpStream is sent as it comes; the connection serves nothing else and
// ends when the client goes away, the stream is ended, the client falls
// `max_stream_pending_bytes` behind, or the server stops. A streamed
// answer holds one of `max_connections` for as long as it lasts.
//
// Thread-safety: Handle and HandleAll before Start; Start and Stop from one
// thread (not the server's loop, nor any loop of its group). Handle's
// handlers run on the server's loop thread, one at a time. HandleAll's
// handler runs there too, or, with `worker_threads` > 0, on a pool of that
// many threads (so it may block, e.g. on a store round trip), several at
// once: it must then be thread-safe.
//
//   net::HttpServer admin;
//   admin.Handle("/metrics", [&] { return net::HttpResponse{.body = registry.RenderText()}; });
//   RETURN_IF_ERROR(admin.Start("127.0.0.1", 0));
//   ... admin.port() ...
//   admin.Stop();   // also on destruction
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/task.h"
#include "net/tls.h"
#include "net/worker_pool.h"

namespace capstan::net {

class HttpServer;
class HttpStream;

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // Further fields (ETag, Allow, Access-Control-*); never framing fields
  // (Content-Length, Transfer-Encoding, Connection): the server sets those.
  std::vector<std::pair<std::string, std::string>> headers;
  // Set: the answer is streamed (see the banner) and `body` is ignored.
  std::shared_ptr<HttpStream> stream;
};

struct HttpStreamOptions {
  // When nothing was written for this long, `keepalive_bytes` are sent (an
  // SSE comment), so proxies and clients with idle timeouts keep the stream
  // open and a vanished client is noticed. 0: never.
  std::chrono::milliseconds keepalive_interval{0};
  std::string keepalive_bytes;
  // Runs once when the stream has ended, whatever ended it (the client's
  // close included), on the server's loop thread: it must not block. Also
  // runs when the answer never started streaming (a HEAD request, a server
  // stopping).
  std::function<void()> on_end;
};

// The write side of a streamed answer. Created by the handler with
// std::make_shared (writes post it to the loop), which may write to it at
// once (the bytes wait until the head is out), and kept by whoever produces
// the events.
//
// Thread-safety: Write, End and ended from any thread; writes from one
// thread are sent in the order they were made.
class HttpStream : public std::enable_shared_from_this<HttpStream> {
 public:
  explicit HttpStream(HttpStreamOptions options = {}) : options_(std::move(options)) {}
  ~HttpStream();
  HttpStream(const HttpStream&) = delete;
  HttpStream& operator=(const HttpStream&) = delete;

  // Queues `bytes` for the client. False once the stream has ended (the
  // bytes are dropped): the producer should forget this stream.
  bool Write(std::string_view bytes);
  // Ends the answer (its last chunk) and then the connection. Idempotent.
  void End();
  bool ended() const;

 private:
  friend class HttpServer;
  // Loop thread. The head is out: pending bytes follow, later writes are
  // posted to `loop`. `max_pending`: output bytes queued past which the
  // client is too slow and the stream ends.
  void Attach(EventLoop* loop, std::shared_ptr<Socket> socket, bool chunked, size_t max_pending);
  // Loop thread: appends `bytes` to the socket (or ends a stream too far behind).
  void SendOnLoop(std::string_view bytes);
  // Loop thread: the last chunk, then the reader is interrupted.
  void FinishOnLoop();
  // Loop thread, once, when the connection is done with the stream: runs on_end.
  void Detach();
  // Loop thread: true once End was asked (the connection loop stops reading).
  bool end_requested_on_loop() const { return end_requested_on_loop_; }
  // Loop thread: the keepalive timer fired.
  void OnKeepaliveTimer();

  HttpStreamOptions options_;
  mutable std::mutex mu_;
  EventLoop* loop_ = nullptr;   // GUARDED_BY(mu_): set by Attach, cleared by Detach
  std::string pending_;         // GUARDED_BY(mu_): written before Attach
  bool ended_ = false;          // GUARDED_BY(mu_)
  bool end_requested_ = false;  // GUARDED_BY(mu_)
  // Loop thread only.
  std::weak_ptr<Socket> socket_;
  bool chunked_ = false;
  size_t max_pending_ = 0;
  bool end_requested_on_loop_ = false;
  bool wrote_since_tick_ = false;
  std::unique_ptr<Timer> keepalive_;
};

// A whole request as HandleAll's handler sees it: the body read in full
// (at most HttpServerOptions::max_body_bytes; more is answered 413).
struct HttpRequest {
  std::string method;
  std::string path;   // as received (percent-encoded), without the query
  std::string query;  // after '?', as received
  std::vector<std::pair<std::string, std::string>> headers;  // in received order
  std::string body;

  // The first field named `name` (case-insensitive), if any.
  std::optional<std::string_view> Header(std::string_view name) const;
};

struct HttpServerOptions {
  // Names the loop's thread ("<name>-0") and the worker threads.
  std::string name = "http-admin";
  // Null: the server runs a loop (a thread) of its own. Else it serves on one
  // loop of this group (LoopGroup::PickLoop), which the caller owns: it must
  // outlive the server, and Stop closes the server's listener and
  // connections and waits for their coroutines but leaves the group running
  // (the caller stops it after every server on it). Handle's handlers, and
  // HandleAll's without worker_threads, then run on that shared loop: they
  // must not block, nor wait on the group's loops (RunOn would deadlock).
  LoopGroup* group = nullptr;
  // Connections served at once; more are closed as they are accepted, so a
  // flood of idle connections costs a bounded amount of memory.
  size_t max_connections = 64;
  // Request body bytes at most; past it the request is answered 413.
  uint64_t max_body_bytes = 64 << 10;
  // A request (from its first byte, or from the previous answer on a
  // kept-alive connection) must arrive whole within this.
  std::chrono::milliseconds read_timeout{5000};
  // 0: HandleAll's handler runs on the loop thread and must not block. More:
  // it runs on a pool of this many threads (a connection's requests stay in
  // order; different connections run at once).
  int worker_threads = 0;
  // Fields added to every answer, the codec's error answers included (a
  // service's CORS `Access-Control-Allow-Origin: *`).
  std::vector<std::pair<std::string, std::string>> default_headers;
  // A streamed answer's output bytes not yet taken by the client at most;
  // past it the client is too slow and its stream ends.
  size_t max_stream_pending_bytes = 4 << 20;
  // HTTPS: each accepted connection starts TLS with the context this returns
  // (offer ALPN "http/1.1" or none: the server speaks HTTP/1.1 only). Null:
  // clear text.
  TlsContextSource tls;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse()>;
  using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;

  // The defaults of HttpServerOptions (the admin endpoints' limits).
  static constexpr std::chrono::seconds kReadTimeout{5};
  static constexpr size_t kMaxConnections = 64;

  HttpServer() : HttpServer(HttpServerOptions{}) {}
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // REQUIRES: called before Start. `path` is matched exactly, query ignored.
  void Handle(const std::string& path, Handler handler) { handlers_[path] = std::move(handler); }
  // REQUIRES: called before Start. Every request Handle's paths do not
  // answer (another method, another path) goes to `handler`, whole.
  void HandleAll(RequestHandler handler) { fallback_ = std::move(handler); }
  // Binds host:port (a numeric address or localhost; port 0 picks one) and
  // starts serving on a loop of the server's own (or of options.group).
  // UNAVAILABLE ("cannot listen on ...") when the address cannot be bound.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  // Closes the listener and every connection, waits for their coroutines to
  // end and stops the loop when it is the server's own. Idempotent.
  void Stop();

 private:
  Task<void> AcceptLoop();
  Task<void> ServeConnection(std::shared_ptr<Socket> socket);
  // The rest of a connection whose answer streams: the head, then the
  // stream's bytes until one side ends it. Input is read and dropped (a
  // client's close is how it leaves).
  Task<void> ServeStream(std::shared_ptr<Socket> socket, const HttpResponse& response,
                         bool head_only, bool http10);
  // The exact-path handler's answer, or nullopt when HandleAll's handler
  // is to answer.
  std::optional<HttpResponse> DispatchFixed(std::string_view method, std::string_view path) const;
  void WriteResponse(Socket* socket, const HttpResponse& response, bool head_only, bool keep_alive,
                     bool http10) const;
  void TaskEnded();

  HttpServerOptions options_;
  std::map<std::string, Handler> handlers_;
  RequestHandler fallback_;
  std::unique_ptr<WorkerPool> workers_;
  int port_ = 0;
  // The loop served on (set by Start): own_group_'s, or one of options_.group.
  std::unique_ptr<LoopGroup> own_group_;
  EventLoop* loop_ = nullptr;
  // Loop thread only.
  std::unique_ptr<Listener> listener_;
  std::vector<std::weak_ptr<Socket>> connections_;
  bool stopping_ = false;
  // The accept loop and connections still running: Stop waits for none.
  std::atomic<int> tasks_{0};
  std::mutex tasks_mu_;
  std::condition_variable tasks_done_;
  bool stopped_ = false;
};

}  // namespace capstan::net
