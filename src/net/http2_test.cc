// Http2Session's client and server sides against each other over loopback,
// on one loop: bodies larger than every window, trailers both ways, many
// streams on one connection, resets, GOAWAY and manual flow control.
// (The gRPC layer above it is tested against the real gRPC client in
// grpc_server_test.cc; the gateway's e2e tests use curl and nghttp.)
#include "net/http2.h"

#include <map>
#include <span>
#include <string>

#include "gtest/gtest.h"
#include "net/socket.h"
#include "net/test_util.h"
#include "net/wait_group.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::EngineTest;
using testing::RunToCompletion;

using Fields = std::multimap<std::string, std::string>;

// Server side: answers each request at its end with 200, the request's
// body back and trailers that count what it received. A request carrying
// "x-hold: 1" is not answered (for reset and GOAWAY tests).
class EchoStream : public Http2Stream {
 public:
  bool OnHeader(HeadersKind kind, std::string_view name, std::string_view value) override {
    (kind == HeadersKind::kTrailers ? trailers_ : headers_).emplace(name, value);
    return true;
  }
  void OnData(std::string_view bytes) override {
    // Zero copy: the payload stays in the socket's blocks.
    body_.Append(ShareReceived(bytes));
    if (consume_) Consume(bytes.size());
  }
  void OnEndStream() override {
    if (headers_.contains("x-hold")) return;
    HeaderField fields[] = {{":status", "200"}, {"content-type", "application/octet-stream"}};
    SendHeaders(fields, /*end_stream=*/false);
    received_ = std::to_string(body_.size());
    Write(std::move(body_));
    End(/*trailers=*/true);
  }
  void OnSendTrailers() override {
    std::string request_trailer =
        trailers_.contains("x-sum") ? trailers_.find("x-sum")->second : std::string("none");
    HeaderField fields[] = {{"x-received", received_}, {"x-request-trailer", request_trailer}};
    SubmitTrailers(fields);
  }
  void OnClose(uint32_t error_code) override {
    close_code_ = error_code;
    if (closed_ != nullptr) closed_->Done();
  }

  Fields headers_, trailers_;
  Buffer body_;
  std::string received_;
  bool consume_ = true;
  uint32_t close_code_ = ~0u;
  WaitGroup* closed_ = nullptr;
};

class EchoSession : public Http2Session {
 public:
  EchoSession(std::shared_ptr<Socket> socket, Http2Options options)
      : Http2Session(Role::kServer, std::move(socket), options) {}
  std::shared_ptr<Http2Stream> NewStream(int32_t) override {
    auto stream = std::make_shared<EchoStream>();
    stream->consume_ = !options().manual_flow_control || consume_;
    stream->closed_ = stream_closed_;
    streams_.push_back(stream);
    return stream;
  }
  std::vector<std::shared_ptr<EchoStream>> streams_;
  bool consume_ = false;
  WaitGroup* stream_closed_ = nullptr;
};

// Client side: records the response.
class ResponseStream : public Http2Stream {
 public:
  explicit ResponseStream(WaitGroup* done) : done_(done) {}
  bool OnHeader(HeadersKind kind, std::string_view name, std::string_view value) override {
    (kind == HeadersKind::kTrailers ? trailers_ : headers_).emplace(name, value);
    return true;
  }
  void OnData(std::string_view bytes) override { body_.append(bytes); }
  void OnEndStream() override { ended_ = true; }
  void OnClose(uint32_t error_code) override {
    close_code_ = error_code;
    done_->Done();
  }
  std::string Header(const std::string& name) const {
    auto it = headers_.find(name);
    return it == headers_.end() ? "" : it->second;
  }
  std::string Trailer(const std::string& name) const {
    auto it = trailers_.find(name);
    return it == trailers_.end() ? "" : it->second;
  }

  WaitGroup* done_;
  Fields headers_, trailers_;
  std::string body_;
  bool ended_ = false;
  uint32_t close_code_ = ~0u;
};

// A connected client and server session on one loop, each driven by its own
// coroutine until Close.
struct Pair {
  std::shared_ptr<EchoSession> server;
  std::shared_ptr<Http2Session> client;
  std::unique_ptr<WaitGroup> running;

  static Task<void> Drive(std::shared_ptr<Http2Session> session, WaitGroup* running) {
    co_await session->Run();
    running->Done();
  }

  static Task<Pair> Open(EventLoop* loop, Http2Options server_options = {},
                         Http2Options client_options = {}) {
    Pair p;
    auto listener = Listener::Bind(loop, "127.0.0.1", 0);
    EXPECT_TRUE(listener.ok()) << listener.status();
    auto client_socket = co_await Socket::Connect(loop, "127.0.0.1", (*listener)->port());
    EXPECT_TRUE(client_socket.ok()) << client_socket.status();
    auto server_socket = co_await (*listener)->Accept();
    EXPECT_TRUE(server_socket.ok()) << server_socket.status();
    (*listener)->Close();
    p.server = std::make_shared<EchoSession>(std::move(server_socket).value(), server_options);
    p.client = std::make_shared<Http2Session>(Http2Session::Role::kClient,
                                              std::move(client_socket).value(), client_options);
    EXPECT_TRUE(p.server->Start());
    EXPECT_TRUE(p.client->Start());
    p.running = std::make_unique<WaitGroup>(loop);
    p.running->Add(2);
    loop->StartOwned(Drive(p.server, p.running.get()));
    loop->StartOwned(Drive(p.client, p.running.get()));
    co_return p;
  }

  Task<void> Close() {
    client->Close();
    server->Close();
    co_await running->Wait();
  }
};

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// Waits (bounded, 5 s) for a condition the loop's other coroutines make
// true, checking once per loop turn that polled the sockets.
template <typename Condition>
Task<bool> Until(EventLoop* loop, Condition condition) {
  auto give_up = EventLoop::Clock::now() + std::chrono::seconds(5);
  while (!condition()) {
    if (EventLoop::Clock::now() > give_up) {
      ADD_FAILURE() << "condition not met in 5 s";
      co_return false;
    }
    co_await loop->Sleep(std::chrono::microseconds(50));
  }
  co_return true;
}

// Request heads the tests send. (At namespace scope: GCC 12 cannot build a
// coroutine that initializes an array from string literals.)
constexpr HeaderField kGet[] = {
    {":method", "GET"}, {":scheme", "http"}, {":authority", "test"}, {":path", "/"}};
constexpr HeaderField kPost[] = {
    {":method", "POST"}, {":scheme", "http"}, {":authority", "test"}, {":path", "/"}};
constexpr HeaderField kPostEcho[] = {
    {":method", "POST"}, {":scheme", "http"}, {":authority", "test"}, {":path", "/echo"}};
// The echo server holds a request carrying x-hold (never answers it).
constexpr HeaderField kHeld[] = {{":method", "POST"},
                                 {":scheme", "http"},
                                 {":authority", "test"},
                                 {":path", "/"},
                                 {"x-hold", "1"}};

class Http2Test : public EngineTest {};

TEST_P(Http2Test, BodyLargerThanEveryWindowAndTrailersGoBothWays) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    Http2Options small;
    small.stream_window_bytes = 64 << 10;
    small.connection_window_bytes = 128 << 10;
    Pair p = co_await Pair::Open(loop, small, small);
    WaitGroup done(loop);
    done.Add();
    // A request stream that sends its trailers after the body.
    struct Uploader : ResponseStream {
      using ResponseStream::ResponseStream;
      void OnSendTrailers() override {
        HeaderField fields[] = {{"x-sum", "42"}};
        SubmitTrailers(fields);
      }
    };
    auto stream = std::make_shared<Uploader>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(stream, kPostEcho, /*end_stream=*/false).ok());
    const std::string body = Pattern(3 << 20);
    // In pieces, as a proxy would forward them.
    for (size_t at = 0; at < body.size(); at += 100000) {
      stream->Write(Buffer(std::string_view(body).substr(at, 100000)));
    }
    stream->End(/*trailers=*/true);
    co_await done.Wait();
    EXPECT_EQ(stream->Header(":status"), "200");
    EXPECT_EQ(stream->Header("content-type"), "application/octet-stream");
    EXPECT_TRUE(stream->ended_);
    EXPECT_EQ(stream->close_code_, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
    EXPECT_EQ(stream->body_.size(), body.size());
    EXPECT_TRUE(stream->body_ == body);
    EXPECT_EQ(stream->Trailer("x-received"), std::to_string(body.size()));
    EXPECT_EQ(stream->Trailer("x-request-trailer"), "42");
    co_await p.Close();
  }(loop_.get()));
}

TEST_P(Http2Test, ManyStreamsShareOneConnection) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    Http2Options server_options;
    server_options.max_concurrent_streams = 1000;
    Pair p = co_await Pair::Open(loop, server_options);
    // The server's SETTINGS arrive before any stream may be opened past the
    // default limit; one round trip settles them.
    WaitGroup done(loop);
    done.Add();
    auto first = std::make_shared<ResponseStream>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(first, kGet, /*end_stream=*/true).ok());
    co_await done.Wait();
    constexpr int kStreams = 300;
    done.Add(kStreams);
    std::vector<std::shared_ptr<ResponseStream>> streams;
    for (int i = 0; i < kStreams; ++i) {
      EXPECT_TRUE(p.client->CanOpenStream()) << i;
      auto s = std::make_shared<ResponseStream>(&done);
      std::string path = "/" + std::to_string(i);
      HeaderField post[] = {
          {":method", "POST"}, {":scheme", "http"}, {":authority", "test"}, {":path", path}};
      EXPECT_TRUE(p.client->SubmitRequest(s, post, /*end_stream=*/false).ok());
      s->Write(Buffer(std::to_string(i)));
      s->End();
      streams.push_back(s);
    }
    EXPECT_EQ(p.client->open_streams(), static_cast<size_t>(kStreams));
    co_await done.Wait();
    for (int i = 0; i < kStreams; ++i) {
      EXPECT_EQ(streams[i]->body_, std::to_string(i));
      EXPECT_EQ(streams[i]->Trailer("x-request-trailer"), "none");
    }
    EXPECT_EQ(p.client->open_streams(), 0u);
    EXPECT_EQ(p.server->open_streams(), 0u);
    co_await p.Close();
  }(loop_.get()));
}

TEST_P(Http2Test, ClientResetReachesTheServerStream) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    Pair p = co_await Pair::Open(loop);
    WaitGroup server_closed(loop);
    p.server->stream_closed_ = &server_closed;
    server_closed.Add();
    WaitGroup done(loop);
    done.Add();
    auto s = std::make_shared<ResponseStream>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(s, kHeld, /*end_stream=*/true).ok());
    // Once the server has the stream, reset it. (Reset before the HEADERS
    // left, nghttp2 would not send the stream at all.)
    (void)co_await Until(loop, [&] { return !p.server->streams_.empty(); });
    s->Reset(NGHTTP2_CANCEL);
    co_await done.Wait();
    co_await server_closed.Wait();
    EXPECT_EQ(s->close_code_, static_cast<uint32_t>(NGHTTP2_CANCEL));
    EXPECT_EQ(p.server->streams_.size(), 1u);
    if (!p.server->streams_.empty()) {
      EXPECT_EQ(p.server->streams_[0]->close_code_, static_cast<uint32_t>(NGHTTP2_CANCEL));
    }
    EXPECT_EQ(p.server->open_streams(), 0u);
    co_await p.Close();
  }(loop_.get()));
}

TEST_P(Http2Test, GoAwayLetsOpenStreamsFinishAndRefusesNewOnes) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    Pair p = co_await Pair::Open(loop);
    WaitGroup done(loop);
    done.Add();
    auto s = std::make_shared<ResponseStream>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(s, kPost, /*end_stream=*/false).ok());
    s->Write(Buffer("before"));
    // Wait for the server to have the stream: a second request's answer
    // proves the first one's HEADERS were processed (streams are in order).
    done.Add();
    auto probe = std::make_shared<ResponseStream>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(probe, kPost, /*end_stream=*/true).ok());
    (void)co_await Until(loop, [&] { return probe->close_code_ != ~0u; });
    p.server->GoAway();
    (void)co_await Until(loop, [&] { return p.client->peer_went_away(); });
    EXPECT_FALSE(p.client->CanOpenStream());
    auto refused = std::make_shared<ResponseStream>(&done);
    absl::Status st = p.client->SubmitRequest(refused, kPost, /*end_stream=*/true);
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
    // The stream opened before GOAWAY still completes.
    s->Write(Buffer(" after"));
    s->End();
    co_await done.Wait();
    EXPECT_EQ(s->body_, "before after");
    EXPECT_EQ(s->close_code_, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
    co_await p.Close();
  }(loop_.get()));
}

TEST_P(Http2Test, ManualFlowControlHoldsTheSenderUntilConsumed) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    Http2Options manual;
    manual.manual_flow_control = true;
    manual.stream_window_bytes = 16 << 10;
    manual.connection_window_bytes = 1 << 20;
    Pair p = co_await Pair::Open(loop, manual);
    WaitGroup done(loop);
    // Until the server's SETTINGS arrive the client may send the default
    // 65535 bytes; one exchange first settles the window at 16 KiB.
    done.Add();
    auto warm_up = std::make_shared<ResponseStream>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(warm_up, kPost, /*end_stream=*/true).ok());
    co_await done.Wait();
    p.server->streams_.clear();
    done.Add();
    auto s = std::make_shared<ResponseStream>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(s, kPost, /*end_stream=*/false).ok());
    s->Write(Buffer(Pattern(64 << 10)));
    s->End();
    // The server consumes nothing: after the window's worth, the client
    // must stop sending. Once the server holds exactly the window, nothing
    // more can come until it consumes.
    (void)co_await Until(loop, [&] {
      return !p.server->streams_.empty() && p.server->streams_[0]->body_.size() >= (16u << 10);
    });
    EchoStream* server_stream = p.server->streams_[0].get();
    EXPECT_EQ(server_stream->body_.size(), 16u << 10);
    EXPECT_EQ(s->buffered_bytes(), (64u << 10) - (16u << 10));
    // Consuming returns the window: the rest flows and the echo completes.
    server_stream->consume_ = true;
    server_stream->Consume(server_stream->body_.size());
    co_await done.Wait();
    EXPECT_EQ(s->body_.size(), 64u << 10);
    co_await p.Close();
  }(loop_.get()));
}

TEST_P(Http2Test, ServerClosingTheConnectionCancelsClientStreams) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    Pair p = co_await Pair::Open(loop);
    WaitGroup done(loop);
    done.Add();
    auto s = std::make_shared<ResponseStream>(&done);
    EXPECT_TRUE(p.client->SubmitRequest(s, kHeld, /*end_stream=*/true).ok());
    (void)co_await Until(loop, [&] { return !p.server->streams_.empty(); });
    p.server->Close();
    co_await done.Wait();
    EXPECT_EQ(s->close_code_, static_cast<uint32_t>(NGHTTP2_CANCEL));
    EXPECT_FALSE(s->ended_);
    co_await p.Close();
  }(loop_.get()));
}

// A raw HTTP/2 client for what Http2Session's client side does not send
// (PING): frames written by hand, frames read back whole.
struct RawFrame {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint32_t stream = 0;
  std::string payload;
};

std::string EncodeFrame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string f;
  f.push_back(static_cast<char>(payload.size() >> 16));
  f.push_back(static_cast<char>(payload.size() >> 8));
  f.push_back(static_cast<char>(payload.size()));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) f.push_back(static_cast<char>(stream >> shift));
  f.append(payload);
  return f;
}

// A request header block of HPACK literals (no indexing, no Huffman; every
// string here is shorter than 127 bytes).
std::string LiteralHeaderBlock(std::span<const HeaderField> fields) {
  std::string block;
  for (const HeaderField& f : fields) {
    block.push_back('\0');
    block.push_back(static_cast<char>(f.name.size()));
    block.append(f.name);
    block.push_back(static_cast<char>(f.value.size()));
    block.append(f.value);
  }
  return block;
}

// Reads frames until one matches `want` (bounded: 5 s of reads); every frame
// read is appended to `seen`.
template <typename Want>
Task<bool> ReadUntil(Socket* s, std::vector<RawFrame>* seen, Want want) {
  auto give_up = EventLoop::Clock::now() + std::chrono::seconds(5);
  std::string pending;
  while (EventLoop::Clock::now() < give_up) {
    pending += s->input().ToString();
    s->input().Clear();
    bool found = false;
    while (pending.size() >= 9) {
      size_t len = (size_t{static_cast<uint8_t>(pending[0])} << 16) |
                   (size_t{static_cast<uint8_t>(pending[1])} << 8) |
                   static_cast<uint8_t>(pending[2]);
      if (pending.size() < 9 + len) break;
      RawFrame f;
      f.type = static_cast<uint8_t>(pending[3]);
      f.flags = static_cast<uint8_t>(pending[4]);
      for (int i = 5; i < 9; ++i) f.stream = (f.stream << 8) | static_cast<uint8_t>(pending[i]);
      f.stream &= 0x7fffffffu;
      f.payload = pending.substr(9, len);
      pending.erase(0, 9 + len);
      found = found || want(f);
      seen->push_back(std::move(f));
    }
    if (found) co_return true;
    auto more = co_await s->ReadMore();
    if (!more.ok()) break;
  }
  ADD_FAILURE() << "the awaited frame did not come";
  co_return false;
}

bool IsPingAck(const RawFrame& f, std::string_view payload) {
  return f.type == NGHTTP2_PING && (f.flags & NGHTTP2_FLAG_ACK) != 0 && f.payload == payload;
}

// gRPC clients ping once per round trip while calls flow: with
// ping_ack_delay the ACK waits for the next frames (the answer) instead of
// costing a write of its own, and is sent at once when no stream is open.
TEST_P(Http2Test, PingAckWaitsForTheNextFramesWhileStreamsAreOpen) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    auto listener = Listener::Bind(loop, "127.0.0.1", 0);
    EXPECT_TRUE(listener.ok()) << listener.status();
    auto client = co_await Socket::Connect(loop, "127.0.0.1", (*listener)->port());
    EXPECT_TRUE(client.ok()) << client.status();
    auto accepted = co_await (*listener)->Accept();
    EXPECT_TRUE(accepted.ok()) << accepted.status();
    Http2Options options;
    options.ping_ack_delay = std::chrono::hours(1);  // only the answer releases it
    auto server = std::make_shared<EchoSession>(std::move(accepted).value(), options);
    EXPECT_TRUE(server->Start());
    WaitGroup running(loop);
    running.Add();
    loop->StartOwned(Pair::Drive(server, &running));
    Socket* raw = client->get();
    std::vector<RawFrame> seen;

    raw->Write(std::string_view(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN));
    raw->Write(EncodeFrame(NGHTTP2_SETTINGS, 0, 0, ""));
    (void)co_await ReadUntil(raw, &seen, [](const RawFrame& f) {
      return f.type == NGHTTP2_SETTINGS && (f.flags & NGHTTP2_FLAG_ACK) != 0;
    });

    // No stream open: acknowledged at once, whatever the delay.
    raw->Write(EncodeFrame(NGHTTP2_PING, 0, 0, "idleidle"));
    bool idle_acked =
        co_await ReadUntil(raw, &seen, [](const RawFrame& f) { return IsPingAck(f, "idleidle"); });
    EXPECT_TRUE(idle_acked);

    // A request the server holds, then a PING: the ACK waits...
    raw->Write(EncodeFrame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1,
                           LiteralHeaderBlock(kHeld)));
    raw->Write(EncodeFrame(NGHTTP2_PING, 0, 0, "pingpong"));
    bool held = co_await Until(loop, [&] { return server->held_ping_acks() == 1; });
    EXPECT_TRUE(held);
    EXPECT_EQ(server->streams_.size(), 1u);
    // ...for the answer, and leaves with it.
    if (!server->streams_.empty()) {
      HeaderField answer[] = {{":status", "204"}};
      server->streams_[0]->SendHeaders(answer, /*end_stream=*/true);
    }
    seen.clear();
    bool answered = co_await ReadUntil(
        raw, &seen, [](const RawFrame& f) { return f.type == NGHTTP2_HEADERS && f.stream == 1; });
    EXPECT_TRUE(answered);
    bool acked = false;
    for (const RawFrame& f : seen) acked = acked || IsPingAck(f, "pingpong");
    if (!acked) {
      acked = co_await ReadUntil(raw, &seen,
                                 [](const RawFrame& f) { return IsPingAck(f, "pingpong"); });
    }
    EXPECT_TRUE(acked);
    EXPECT_EQ(server->held_ping_acks(), 0u);

    raw->Close();
    server->Close();
    co_await running.Wait();
    (*listener)->Close();
  }(loop_.get()));
}

// Held or not, an ACK leaves once the delay is up.
TEST_P(Http2Test, HeldPingAckLeavesAloneWhenTheDelayIsUp) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    auto listener = Listener::Bind(loop, "127.0.0.1", 0);
    EXPECT_TRUE(listener.ok()) << listener.status();
    auto client = co_await Socket::Connect(loop, "127.0.0.1", (*listener)->port());
    EXPECT_TRUE(client.ok()) << client.status();
    auto accepted = co_await (*listener)->Accept();
    EXPECT_TRUE(accepted.ok()) << accepted.status();
    Http2Options options;
    options.ping_ack_delay = std::chrono::milliseconds(2);
    auto server = std::make_shared<EchoSession>(std::move(accepted).value(), options);
    EXPECT_TRUE(server->Start());
    WaitGroup running(loop);
    running.Add();
    loop->StartOwned(Pair::Drive(server, &running));
    Socket* raw = client->get();
    std::vector<RawFrame> seen;
    raw->Write(std::string_view(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN));
    raw->Write(EncodeFrame(NGHTTP2_SETTINGS, 0, 0, ""));
    raw->Write(EncodeFrame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1,
                           LiteralHeaderBlock(kHeld)));
    bool opened = co_await Until(loop, [&] { return server->streams_.size() == 1; });
    EXPECT_TRUE(opened);
    raw->Write(EncodeFrame(NGHTTP2_PING, 0, 0, "latelate"));
    bool late_acked =
        co_await ReadUntil(raw, &seen, [](const RawFrame& f) { return IsPingAck(f, "latelate"); });
    EXPECT_TRUE(late_acked);
    EXPECT_EQ(server->open_streams(), 1u);  // nothing else released it
    raw->Close();
    server->Close();
    co_await running.Wait();
    (*listener)->Close();
  }(loop_.get()));
}

INSTANTIATE_TEST_SUITE_P(Engines, Http2Test,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

}  // namespace
}  // namespace capstan::net
