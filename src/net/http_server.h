// The small HTTP/1.1 server for operational endpoints (/metrics, /health,
// /status): GET and HEAD to fixed paths, answered by synchronous handlers.
// It runs on the runtime — a loop of its own (one thread), Listener and
// Socket coroutines, the http1 codec — so it shares the code and limits of
// every other server: keep-alive and pipelining (answers in order),
// malformed requests answered with the codec's status (400, 414, 431, 505)
// and the connection closed, a bounded request size, and a read deadline
// so a misbehaving scraper cannot hold a connection. Not a general-purpose
// server: the gateway has its own.
//
// Thread-safety: Handle before Start; Start and Stop from one thread (not
// the server's); handlers run on the server's loop thread, one at a time.
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
#include <string>
#include <vector>

#include "base/status.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::net {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse()>;

  // A request (from its first byte, or from the previous answer on a
  // kept-alive connection) must arrive whole within this.
  static constexpr std::chrono::seconds kReadTimeout{5};
  // Connections served at once; more are closed as they are accepted, so a
  // flood of idle connections costs a bounded amount of memory.
  static constexpr size_t kMaxConnections = 64;

  HttpServer() = default;
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // REQUIRES: called before Start. `path` is matched exactly, query ignored.
  void Handle(const std::string& path, Handler handler) { handlers_[path] = std::move(handler); }
  // Binds host:port (a numeric address or localhost; port 0 picks one) and
  // starts serving on a loop of the server's own. UNAVAILABLE ("cannot
  // listen on ...") when the address cannot be bound.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  // Closes the listener and every connection, waits for their coroutines to
  // end and stops the loop. Idempotent.
  void Stop();

 private:
  Task<void> AcceptLoop();
  Task<void> ServeConnection(std::shared_ptr<Socket> socket);
  HttpResponse Dispatch(std::string_view method, std::string_view path) const;
  void TaskEnded();

  std::map<std::string, Handler> handlers_;
  int port_ = 0;
  std::unique_ptr<LoopGroup> group_;
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
