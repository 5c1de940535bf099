#include "net/http_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <future>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "net/http1.h"

namespace capstan::net {
namespace {

struct Answer {
  int status = 0;
  std::string body;
  std::string content_type;
  std::string content_length;
  bool keep_alive = false;
  std::string allow_origin;  // Access-Control-Allow-Origin
};

// A blocking client on 127.0.0.1, reading answers with the codec.
class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval bound{10, 0};  // a hang fails the test instead of blocking it
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { ::close(fd_); }
  bool connected() const { return connected_; }

  void Send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  // Reads `count` answers (fewer if the server closes first); `methods`
  // are the requests' methods in order (HEAD answers have no body).
  std::vector<Answer> Read(std::vector<std::string> methods) {
    std::vector<Answer> answers;
    http1::ResponseParser parser;
    size_t next = 0;
    if (!methods.empty()) parser.SetRequestMethod(methods[0]);
    Answer current;
    while (answers.size() < methods.size()) {
      http1::Event ev = parser.Next(&input_);
      if (ev.type == http1::Event::kNeedMore) {
        char buf[4096];
        ssize_t n = Recv(buf, sizeof(buf));
        if (n <= 0) break;
        input_.Append(std::string_view(buf, static_cast<size_t>(n)));
        continue;
      }
      if (ev.type == http1::Event::kError) {
        ADD_FAILURE() << "bad answer: " << http1::ErrorCodeName(parser.error().code);
        break;
      }
      if (ev.type == http1::Event::kHead) {
        const http1::ResponseHead& h = parser.head();
        current = Answer{h.status,
                         "",
                         std::string(h.fields.Get("content-type").value_or("")),
                         std::string(h.fields.Get("content-length").value_or("")),
                         h.keep_alive,
                         std::string(h.fields.Get("access-control-allow-origin").value_or(""))};
      } else if (ev.type == http1::Event::kBody) {
        current.body += ev.body.ToString();
      } else if (ev.type == http1::Event::kComplete) {
        answers.push_back(current);
        if (++next < methods.size()) parser.SetRequestMethod(methods[next]);
      }
    }
    return answers;
  }
  // A streamed answer, read piece by piece: after the head, reads until
  // `enough(body so far)` holds, the answer completes (*complete set) or the
  // server closes. The parser persists across calls.
  std::string ReadStream(const std::function<bool(const std::string&)>& enough,
                         Answer* head = nullptr, bool* complete = nullptr) {
    if (stream_parser_ == nullptr) {
      stream_parser_ = std::make_unique<http1::ResponseParser>();
      stream_parser_->SetRequestMethod("GET");
    }
    while (!enough(stream_body_)) {
      http1::Event ev = stream_parser_->Next(&input_);
      if (ev.type == http1::Event::kNeedMore) {
        char buf[4096];
        ssize_t n = Recv(buf, sizeof(buf));
        if (n <= 0) break;
        input_.Append(std::string_view(buf, static_cast<size_t>(n)));
      } else if (ev.type == http1::Event::kHead && head != nullptr) {
        const http1::ResponseHead& h = stream_parser_->head();
        head->status = h.status;
        head->content_type = std::string(h.fields.Get("content-type").value_or(""));
        head->content_length = std::string(h.fields.Get("transfer-encoding").value_or(""));
      } else if (ev.type == http1::Event::kBody) {
        stream_body_ += ev.body.ToString();
      } else if (ev.type == http1::Event::kComplete) {
        if (complete != nullptr) *complete = true;
        break;
      } else if (ev.type == http1::Event::kError || ev.type == http1::Event::kClosed) {
        break;
      }
    }
    return stream_body_;
  }
  // True when the server closed the connection (after any unread bytes).
  bool ServerClosed() {
    char buf[256];
    while (true) {
      ssize_t n = Recv(buf, sizeof(buf));
      if (n == 0) return true;
      if (n < 0) return false;
    }
  }

 private:
  // recv, again when a signal interrupts it (the runtime's threads get some).
  ssize_t Recv(char* buf, size_t size) {
    while (true) {
      ssize_t n = ::recv(fd_, buf, size, 0);
      if (n >= 0 || errno != EINTR) return n;
    }
  }

  int fd_ = -1;
  bool connected_ = false;
  Buffer input_;
  std::unique_ptr<http1::ResponseParser> stream_parser_;
  std::string stream_body_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Handle("/metrics", [this] {
      ++scrapes_;
      return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", "up 1\n"};
    });
    server_.Handle("/health", [] { return HttpResponse{503, "application/json", "{}"}; });
    ASSERT_TRUE(server_.Start("127.0.0.1", 0).ok());
    ASSERT_GT(server_.port(), 0);
  }

  HttpServer server_;
  std::atomic<int> scrapes_{0};
};

TEST_F(HttpServerTest, AnswersGetAndKeepsTheConnection) {
  Client c(server_.port());
  ASSERT_TRUE(c.connected());
  c.Send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  std::vector<Answer> a = c.Read({"GET"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].status, 200);
  EXPECT_EQ(a[0].body, "up 1\n");
  EXPECT_EQ(a[0].content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_TRUE(a[0].keep_alive);
  c.Send("GET /health?verbose=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  a = c.Read({"GET"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].status, 503);
  EXPECT_EQ(a[0].body, "{}");
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  Client c(server_.port());
  c.Send(
      "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
      "HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
      "GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"
      "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
      "GET http://a/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  std::vector<Answer> a = c.Read({"GET", "HEAD", "GET", "POST", "GET"});
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(a[0].status, 200);
  EXPECT_EQ(a[1].status, 200);
  EXPECT_EQ(a[1].body, "");  // HEAD: the length of the GET body, no body
  EXPECT_EQ(a[1].content_length, "5");
  EXPECT_EQ(a[2].status, 404);
  EXPECT_EQ(a[3].status, 405);
  EXPECT_EQ(a[4].status, 503);
  EXPECT_FALSE(a[4].keep_alive);
  EXPECT_TRUE(c.ServerClosed());
  EXPECT_EQ(scrapes_.load(), 2);
}

TEST_F(HttpServerTest, MalformedRequestsGetTheCodecsStatusAndAClose) {
  struct Case {
    std::string request;
    int status;
  } cases[] = {
      {"GET /metrics HTTP/1.1\nHost: a\n\n", 400},
      {"GET /metrics HTTP/1.1\r\n\r\n", 400},  // no Host
      {"GET /metrics HTTP/2.0\r\nHost: a\r\n\r\n", 505},
      {"GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
      {"GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(17000, 'v') + "\r\n\r\n", 431},
  };
  for (const Case& k : cases) {
    Client c(server_.port());
    c.Send(k.request);
    std::vector<Answer> a = c.Read({"GET"});
    ASSERT_EQ(a.size(), 1u) << k.status;
    EXPECT_EQ(a[0].status, k.status);
    EXPECT_FALSE(a[0].keep_alive);
    EXPECT_TRUE(c.ServerClosed()) << k.status;
  }
}

TEST_F(HttpServerTest, Http10ClosesUnlessAskedToKeepAlive) {
  Client c(server_.port());
  c.Send("GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  std::vector<Answer> a = c.Read({"GET"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(a[0].keep_alive);
  c.Send("GET /metrics HTTP/1.0\r\n\r\n");
  a = c.Read({"GET"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].status, 200);
  EXPECT_TRUE(c.ServerClosed());
}

TEST_F(HttpServerTest, StopClosesIdleConnectionsAndReturns) {
  Client idle(server_.port());
  Client half(server_.port());
  half.Send("GET /metr");  // a request that never completes
  // Both connections are accepted once a full exchange on a third is done.
  Client probe(server_.port());
  probe.Send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(probe.Read({"GET"}).size(), 1u);
  server_.Stop();
  EXPECT_TRUE(idle.ServerClosed());
  EXPECT_TRUE(half.ServerClosed());
  server_.Stop();  // idempotent
}

TEST_F(HttpServerTest, ConnectionsBeyondTheLimitAreClosed) {
  std::vector<std::unique_ptr<Client>> held;
  for (size_t i = 0; i < HttpServer::kMaxConnections; ++i) {
    held.push_back(std::make_unique<Client>(server_.port()));
    // An answer proves the server holds this connection.
    held.back()->Send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(held.back()->Read({"GET"}).size(), 1u) << i;
  }
  Client one_too_many(server_.port());
  one_too_many.Send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_TRUE(one_too_many.Read({"GET"}).empty());
  // The held ones are still served.
  held.front()->Send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(held.front()->Read({"GET"}).size(), 1u);
}

TEST(HttpServerStartTest, ABoundPortSaysCannotListen) {
  HttpServer first;
  ASSERT_TRUE(first.Start("127.0.0.1", 0).ok());
  HttpServer second;
  absl::Status st = second.Start("127.0.0.1", first.port());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("cannot listen on"), std::string::npos) << st;
  second.Stop();  // never started: nothing to do
}

// A service: HandleAll with bodies, workers, CORS and its own limits.
class HttpServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<HttpServer>(
        HttpServerOptions{.name = "http-svc-test",
                          .max_connections = 3,
                          .max_body_bytes = 1000,
                          .worker_threads = 2,
                          .default_headers = {{"Access-Control-Allow-Origin", "*"}}});
    server_->Handle("/health", [] { return HttpResponse{.body = "ok\n"}; });
    server_->HandleAll([](const HttpRequest& r) {
      HttpResponse answer;
      answer.body = r.method + " " + r.path + "?" + r.query + " " +
                    std::string(r.Header("x-user").value_or("-")) + " " + r.body;
      return answer;
    });
    ASSERT_TRUE(server_->Start("127.0.0.1", 0).ok());
  }

  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServiceTest, BodiesMethodsAndHeadersReachTheHandler) {
  Client c(server_->port());
  c.Send(
      "POST /v1/a?x=1 HTTP/1.1\r\nHost: a\r\nX-User: ann\r\nContent-Length: 5\r\n\r\nhello"
      "PUT /v1/b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
      "GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
      "POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
  std::vector<Answer> a = c.Read({"POST", "PUT", "GET", "POST"});
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a[0].body, "POST /v1/a?x=1 ann hello");
  EXPECT_EQ(a[1].body, "PUT /v1/b? - abcde");
  EXPECT_EQ(a[2].body, "ok\n");              // the fixed GET handler first
  EXPECT_EQ(a[3].body, "POST /health? - ");  // other methods go to HandleAll
  for (const Answer& answer : a) EXPECT_EQ(answer.allow_origin, "*");
  EXPECT_TRUE(a[3].keep_alive);
}

TEST_F(HttpServiceTest, ABodyOverTheLimitIs413WithCors) {
  Client c(server_->port());
  c.Send("POST /v1/a HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n" + std::string(1001, 'x'));
  std::vector<Answer> a = c.Read({"POST"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].status, 413);
  EXPECT_EQ(a[0].allow_origin, "*");
  EXPECT_TRUE(c.ServerClosed());
}

TEST_F(HttpServiceTest, ExpectContinueGetsA100First) {
  Client c(server_->port());
  c.Send("POST /v1/a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
  c.Send("hi");
  // This client counts the interim 100 as an answer of its own.
  std::vector<Answer> a = c.Read({"POST", "POST"});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].status, 100);
  EXPECT_EQ(a[1].status, 200);
  EXPECT_EQ(a[1].body, "POST /v1/a? - hi");
}

// With worker threads a handler may block (a store round trip): the loop
// keeps serving other connections meanwhile.
TEST(HttpServiceWorkersTest, ABlockedHandlerDoesNotStopOtherConnections) {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, released = false;
  HttpServer server(HttpServerOptions{.worker_threads = 2});
  server.HandleAll([&](const HttpRequest& r) {
    if (r.path == "/wait") {
      std::unique_lock lock(mu);
      entered = true;
      cv.notify_all();
      cv.wait(lock, [&] { return released; });
      return HttpResponse{.body = "waited"};
    }
    {
      std::lock_guard lock(mu);
      released = true;
    }
    cv.notify_all();
    return HttpResponse{.body = "released"};
  });
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  Client waiting(server.port());
  waiting.Send("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n");
  {
    std::unique_lock lock(mu);  // the first handler is blocked before the second request
    cv.wait(lock, [&] { return entered; });
  }
  Client releasing(server.port());
  releasing.Send("GET /release HTTP/1.1\r\nHost: a\r\n\r\n");
  std::vector<Answer> a = releasing.Read({"GET"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].body, "released");
  a = waiting.Read({"GET"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].body, "waited");
}

TEST_F(HttpServiceTest, TheConnectionLimitIsConfigurable) {
  std::vector<std::unique_ptr<Client>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<Client>(server_->port()));
    held.back()->Send("GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(held.back()->Read({"GET"}).size(), 1u) << i;
  }
  Client one_too_many(server_->port());
  one_too_many.Send("GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_TRUE(one_too_many.Read({"GET"}).empty());
}

// Streamed answers (server-sent events): a handler answers with an
// HttpStream that other threads write to.
class HttpStreamTest : public ::testing::Test {
 protected:
  // The server first: its handlers and streams' on_end touch the members
  // below, which are destroyed before server_ otherwise (TSan saw it).
  void TearDown() override { server_.reset(); }
  void Start(HttpServerOptions options, HttpStreamOptions stream_options = {}) {
    server_ = std::make_unique<HttpServer>(std::move(options));
    server_->HandleAll([this, stream_options](const HttpRequest&) {
      HttpStreamOptions with_end = stream_options;
      with_end.on_end = [this] {
        std::lock_guard lock(mu_);
        ++ended_;
        cv_.notify_all();
      };
      auto stream = std::make_shared<HttpStream>(std::move(with_end));
      stream->Write("first\n");  // before the head is out: waits for it
      {
        std::lock_guard lock(mu_);
        streams_.push_back(stream);
        cv_.notify_all();
      }
      return HttpResponse{.content_type = "text/event-stream", .stream = stream};
    });
    ASSERT_TRUE(server_->Start("127.0.0.1", 0).ok());
  }
  std::shared_ptr<HttpStream> WaitForStream(size_t index) {
    std::unique_lock lock(mu_);
    bool there =
        cv_.wait_for(lock, std::chrono::seconds(10), [&] { return streams_.size() > index; });
    return there ? streams_[index] : nullptr;
  }
  bool WaitForEnded(int count) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return ended_ >= count; });
  }
  int ended() {
    std::lock_guard lock(mu_);
    return ended_;
  }
  static std::function<bool(const std::string&)> Contains(std::string what) {
    return [what](const std::string& body) { return body.find(what) != std::string::npos; };
  }

  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<HttpStream>> streams_;
  int ended_ = 0;
};

TEST_F(HttpStreamTest, WritesFromAnotherThreadArriveAsTheyComeAndEndCompletesTheAnswer) {
  Start(HttpServerOptions{.worker_threads = 1});
  Client c(server_->port());
  c.Send("GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n");
  Answer head;
  EXPECT_EQ(c.ReadStream(Contains("first\n"), &head), "first\n");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.content_type, "text/event-stream");
  EXPECT_EQ(head.content_length, "chunked");  // (the transfer coding, see ReadStream)
  std::shared_ptr<HttpStream> stream = WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->Write("second\n"));
  EXPECT_EQ(c.ReadStream(Contains("second\n")), "first\nsecond\n");
  EXPECT_EQ(ended(), 0);
  stream->End();
  EXPECT_FALSE(stream->Write("dropped\n"));
  bool complete = false;
  EXPECT_EQ(c.ReadStream([](const std::string&) { return false; }, nullptr, &complete),
            "first\nsecond\n");
  EXPECT_TRUE(complete);  // the last chunk came
  EXPECT_TRUE(c.ServerClosed());
  EXPECT_TRUE(WaitForEnded(1));
}

TEST_F(HttpStreamTest, TheClientsCloseEndsTheStreamAndRunsOnEndOnce) {
  Start(HttpServerOptions{});
  {
    Client c(server_->port());
    c.Send("GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n");
    EXPECT_EQ(c.ReadStream(Contains("first\n")), "first\n");
  }  // closed
  ASSERT_TRUE(WaitForEnded(1));
  std::shared_ptr<HttpStream> stream = WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->ended());
  EXPECT_FALSE(stream->Write("late\n"));
  stream->End();  // idempotent, nothing runs again
  EXPECT_EQ(ended(), 1);
}

TEST_F(HttpStreamTest, AnIdleStreamGetsKeepaliveBytes) {
  Start(HttpServerOptions{}, HttpStreamOptions{.keepalive_interval = std::chrono::milliseconds(20),
                                               .keepalive_bytes = ":\n\n"});
  Client c(server_->port());
  c.Send("GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n");
  std::string body = c.ReadStream([](const std::string& b) { return b.size() >= 6 + 3 * 3; });
  EXPECT_EQ(body, "first\n:\n\n:\n\n:\n\n");
}

TEST_F(HttpStreamTest, StopEndsStreamsAndReturns) {
  Start(HttpServerOptions{});
  Client c1(server_->port()), c2(server_->port());
  c1.Send("GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n");
  c2.Send("GET /sub/b HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(c1.ReadStream(Contains("first\n")), "first\n");
  EXPECT_EQ(c2.ReadStream(Contains("first\n")), "first\n");
  server_->Stop();
  EXPECT_EQ(ended(), 2);  // on_end ran before Stop returned
  EXPECT_TRUE(c1.ServerClosed());
  EXPECT_FALSE(WaitForStream(0)->Write("after stop\n"));
}

TEST_F(HttpStreamTest, HeadGetsTheHeadAndNoStream) {
  Start(HttpServerOptions{});
  Client c(server_->port());
  c.Send("HEAD /sub/a HTTP/1.1\r\nHost: a\r\n\r\n");
  std::vector<Answer> a = c.Read({"HEAD"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].content_type, "text/event-stream");
  EXPECT_TRUE(WaitForEnded(1));
  EXPECT_TRUE(c.ServerClosed());
}

TEST_F(HttpStreamTest, Http10GetsTheBodyUntilTheClose) {
  Start(HttpServerOptions{});
  Client c(server_->port());
  c.Send("GET /sub/a HTTP/1.0\r\n\r\n");
  EXPECT_EQ(c.ReadStream(Contains("first\n")), "first\n");
  WaitForStream(0)->End();
  EXPECT_TRUE(c.ServerClosed());  // close-delimited: no last chunk, the close ends it
  EXPECT_TRUE(WaitForEnded(1));
}

TEST_F(HttpStreamTest, AClientThatDoesNotReadIsEndedPastThePendingLimit) {
  Start(HttpServerOptions{.max_stream_pending_bytes = 256 << 10});
  Client c(server_->port());
  c.Send("GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n");
  std::shared_ptr<HttpStream> stream = WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  // The kernel's buffers take a few MiB on loopback before the server's
  // output queues up; 64 MiB is far past both.
  std::string piece(4 << 10, 'x');
  for (int i = 0; i < 16384 && !stream->ended(); ++i) {
    stream->Write(piece);
    if (i % 16 == 15) {
      std::unique_lock lock(mu_);  // let the loop catch up (bounded wait)
      cv_.wait_for(lock, std::chrono::milliseconds(1), [&] { return ended_ > 0; });
    }
  }
  EXPECT_TRUE(WaitForEnded(1));
  EXPECT_TRUE(stream->ended());
}

TEST_F(HttpStreamTest, AClientThatReadsGetsMoreThanThePendingLimitOverTime) {
  Start(HttpServerOptions{.max_stream_pending_bytes = 256 << 10});
  Client c(server_->port());
  c.Send("GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n");
  std::shared_ptr<HttpStream> stream = WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  std::string piece(4 << 10, 'y');
  size_t expected = 6;                        // "first\n"
  for (int batch = 0; batch < 16; ++batch) {  // 2 MiB in all, 128 KiB at a time
    for (int i = 0; i < 32; ++i) ASSERT_TRUE(stream->Write(piece));
    expected += 32 * piece.size();
    ASSERT_EQ(c.ReadStream([&](const std::string& b) { return b.size() >= expected; }).size(),
              expected);
  }
  EXPECT_FALSE(stream->ended());
  EXPECT_EQ(ended(), 0);
}

}  // namespace
}  // namespace capstan::net

namespace capstan::net {
namespace {

// True when every loop of the group still runs posted work (bounded: a
// stopped loop fails the test instead of hanging it).
bool GroupRuns(LoopGroup* group) {
  for (int i = 0; i < group->size(); ++i) {
    auto ran = std::make_shared<std::promise<void>>();
    std::future<void> done = ran->get_future();
    group->loop(i)->Post([ran] { ran->set_value(); });
    if (done.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return false;
  }
  return true;
}

// Servers on a caller's group (HttpServerOptions::group) spread over its
// loops, and Stop closes what each has there but leaves the loops running.
TEST(HttpServerSharedLoopsTest, ServersShareTheGroupAndStopWithoutStoppingIt) {
  auto started = LoopGroup::Start({.threads = 2, .name = "shared"});
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<LoopGroup> group = std::move(started).value();
  // Which loop each server's handler ran on (-1: none of the group's).
  auto loop_index = [g = group.get()] {
    for (int i = 0; i < g->size(); ++i) {
      if (g->loop(i)->InLoopThread()) return i;
    }
    return -1;
  };
  std::atomic<int> a_loop{-2}, b_loop{-2};
  HttpServer a(HttpServerOptions{.name = "a", .group = group.get()});
  a.Handle("/who", [&] {
    a_loop = loop_index();
    return HttpResponse{.body = "a"};
  });
  HttpServer b(HttpServerOptions{.name = "b", .group = group.get(), .worker_threads = 1});
  b.HandleAll([&](const HttpRequest&) { return HttpResponse{.body = "b"}; });
  b.Handle("/who", [&] {
    b_loop = loop_index();
    return HttpResponse{.body = "b"};
  });
  ASSERT_TRUE(a.Start("127.0.0.1", 0).ok());
  ASSERT_TRUE(b.Start("127.0.0.1", 0).ok());
  // Accepted once the exchange on a later connection (to_a) is done: the
  // listener's queue is in order.
  Client idle(a.port());
  Client to_a(a.port()), to_b(b.port());
  to_a.Send("GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
  to_b.Send("GET /who HTTP/1.1\r\nHost: x\r\n\r\nPOST /any HTTP/1.1\r\nHost: x\r\n\r\n");
  std::vector<Answer> from_a = to_a.Read({"GET"});
  std::vector<Answer> from_b = to_b.Read({"GET", "POST"});
  ASSERT_EQ(from_a.size(), 1u);
  ASSERT_EQ(from_b.size(), 2u);
  EXPECT_EQ(from_a[0].body, "a");
  EXPECT_EQ(from_b[1].body, "b");  // HandleAll's answer, from b's worker
  // One loop each (LoopGroup::PickLoop), both the group's.
  EXPECT_EQ(a_loop.load(), 0);
  EXPECT_EQ(b_loop.load(), 1);

  a.Stop();
  EXPECT_TRUE(to_a.ServerClosed());
  EXPECT_TRUE(idle.ServerClosed());
  EXPECT_FALSE(Client(a.port()).connected());  // the listener closed on a running loop
  EXPECT_TRUE(GroupRuns(group.get()));
  // b, on the same group, still serves.
  to_b.Send("GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
  from_b = to_b.Read({"GET"});
  ASSERT_EQ(from_b.size(), 1u);
  EXPECT_EQ(from_b[0].body, "b");
  b.Stop();
  EXPECT_TRUE(to_b.ServerClosed());
  EXPECT_TRUE(GroupRuns(group.get()));
  // The caller stops the group after every server on it.
  group->Stop();
}

// On a shared group a blocked HandleAll handler holds Stop until it
// returns (its connection's coroutine resumes on the shared loop after it).
TEST(HttpServerSharedLoopsTest, StopWaitsForAHandlerOnAWorker) {
  auto started = LoopGroup::Start({.threads = 1, .name = "shared"});
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<LoopGroup> group = std::move(started).value();
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, released = false;
  auto server = std::make_unique<HttpServer>(
      HttpServerOptions{.name = "held", .group = group.get(), .worker_threads = 1});
  server->HandleAll([&](const HttpRequest&) {
    std::unique_lock lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
    return HttpResponse{.body = "late"};
  });
  ASSERT_TRUE(server->Start("127.0.0.1", 0).ok());
  Client c(server->port());
  c.Send("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return entered; }));
  }
  std::atomic<bool> stopped{false};
  bool released_when_stopped = false;
  std::thread stopper([&] {
    server->Stop();
    std::lock_guard lock(mu);
    released_when_stopped = released;
    stopped = true;
  });
  // The connection closes at once; Stop still waits for the handler.
  EXPECT_TRUE(c.ServerClosed());
  {
    std::lock_guard lock(mu);
    released = true;
  }
  cv.notify_all();
  stopper.join();
  EXPECT_TRUE(stopped.load());
  EXPECT_TRUE(released_when_stopped);
  server.reset();
  EXPECT_TRUE(GroupRuns(group.get()));
  group->Stop();
}

}  // namespace
}  // namespace capstan::net
