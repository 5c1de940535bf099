// A small HTTP/1.1 server for operational endpoints (/metrics, /health):
// GET only, one request per connection, bounded request size and read time,
// so a misbehaving scraper cannot hold resources. Not a general-purpose
// server: the gateway's HTTP stack comes with the runtime.
//
// Thread-safety: handlers run on the server's single thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "base/status.h"

namespace capstan::net {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse()>;

  HttpServer() = default;
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // REQUIRES: called before Start.
  void Handle(const std::string& path, Handler handler) { handlers_[path] = std::move(handler); }
  // Binds host:port (port 0 picks one) and starts serving.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  void Stop();

 private:
  void Serve();
  void ServeConnection(int fd);

  std::map<std::string, Handler> handlers_;
  int listen_fd_ = -1;
  int port_ = 0;
  int wake_pipe_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace capstan::net
