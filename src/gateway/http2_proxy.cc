#include "gateway/http2_proxy.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/http2.h"
#include "net/wait_group.h"

namespace capstan::gateway {
namespace {

namespace http1 = net::http1;

// One coroutine waiting for an event; woken through the loop.
class Waiter {
 public:
  explicit Waiter(net::EventLoop* loop) : loop_(loop) {}
  struct Awaiter {
    Waiter* w;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { w->handle_ = h; }
    void await_resume() const noexcept {}
  };
  Awaiter Wait() { return Awaiter{this}; }
  void Wake() {
    if (handle_) loop_->Schedule(std::exchange(handle_, nullptr));
  }

 private:
  net::EventLoop* loop_;
  std::coroutine_handle<> handle_;
};

class DownstreamSession;

// One request/response: an HTTP/2 stream as the proxy sees it.
class H2Exchange : public net::Http2Stream, public DownstreamExchange {
 public:
  H2Exchange(DownstreamContext& ctx, size_t max_header_bytes,
             std::chrono::milliseconds header_timeout)
      : ctx_(ctx),
        max_header_bytes_(max_header_bytes),
        body_waiter_(ctx.loop),
        room_waiter_(ctx.loop) {
    // A header block left unfinished (HEADERS without END_HEADERS, then
    // silence) would hold nghttp2's partial block: the connection goes.
    header_timer_.ArmAfter(ctx.loop, header_timeout);
  }

  // ---- Http2Stream events
  bool OnHeader(HeadersKind kind, std::string_view name, std::string_view value) override {
    header_bytes_ += name.size() + value.size() + 32;
    if (header_bytes_ > max_header_bytes_) return false;
    if (kind == HeadersKind::kTrailers) {
      trailers_.Add(name, value);
      return true;
    }
    if (name.starts_with(':')) {
      if (name == ":method") {
        method_ = fields_.Own(value);
      } else if (name == ":path") {
        path_ = fields_.Own(value);
      } else if (name == ":authority") {
        authority_ = fields_.Own(value);
      }
      return true;
    }
    if (name == "host" && authority_.empty()) authority_ = fields_.Own(value);
    fields_.Add(name, value);
    return true;
  }

  void OnHeaders(HeadersKind kind, bool end_stream) override;

  void OnData(std::string_view bytes) override {
    body_.Append(ShareReceived(bytes));
    body_waiter_.Wake();
  }
  void OnEndStream() override {
    body_ended_ = true;
    body_waiter_.Wake();
  }
  void OnWriteRoom() override { room_waiter_.Wake(); }
  void OnClose(uint32_t error_code) override {
    header_timer_.Cancel();
    reset_ = error_code != NGHTTP2_NO_ERROR || !response_ended_;
    // A stream that closes before the client's body ended (the response
    // was complete first and the server stopped the rest) has no more body.
    stream_over_ = true;
    body_waiter_.Wake();
    room_waiter_.Wake();
    if (reset_ && cancel_upstream) cancel_upstream();
  }
  void OnSendTrailers() override {
    absl::InlinedVector<net::HeaderField, 8> out;
    for (const auto& f : response_trailers_) out.push_back({f.name, f.value});
    SubmitTrailers(std::span(out.data(), out.size()));
  }

  // ---- DownstreamExchange
  ProxyRequest& request() override { return request_; }

  net::Task<BodyEvent> NextBody() override {
    BodyEvent out;
    while (body_.empty() && !body_ended_ && !stream_over_) co_await body_waiter_.Wait();
    if (!body_.empty()) {
      out.type = BodyEvent::kPiece;
      out.piece = std::move(body_);
      body_ = net::Buffer();
      // The client may send as much again.
      Consume(out.piece.size());
      co_return out;
    }
    if (!body_ended_) {
      out.type = BodyEvent::kError;
      co_return out;
    }
    out.type = BodyEvent::kEnd;
    out.trailers = trailers_.empty() ? nullptr : &trailers_;
    co_return out;
  }

  void SendContinue() override {}  // HTTP/2 clients do not wait for it

  bool SendHead(int code, http1::HeaderFields& fields, bool has_body,
                std::optional<uint64_t> content_length) override {
    if (session() == nullptr) return false;
    std::string status = absl::StrCat(code);
    std::string length = content_length ? absl::StrCat(*content_length) : std::string();
    absl::InlinedVector<net::HeaderField, 16> out;
    out.push_back({":status", status});
    for (const auto& f : fields) {
      // Names are lowercase on the wire; connection-specific fields are not
      // HTTP/2 (RFC 9113 §8.2.2); the length is set below.
      std::string_view name = Lower(f.name);
      if (name == "content-length" || name == "transfer-encoding" || name == "connection" ||
          name == "keep-alive") {
        continue;
      }
      out.push_back({name, f.value});
    }
    if (content_length) out.push_back({"content-length", length});
    bool end = !has_body || request_.method == "HEAD";
    SendHeaders(std::span(out.data(), out.size()), end);
    if (end) response_ended_ = true;
    return true;
  }

  net::Task<bool> SendBody(net::Buffer piece) override {
    if (session() == nullptr || response_ended_) co_return session() != nullptr;
    bytes_sent += piece.size();
    // Held back (the stream's or the connection's mark): OnWriteRoom or
    // OnClose wakes us, once.
    if (!Write(std::move(piece)) && session() != nullptr && !reset_) {
      co_await room_waiter_.Wait();
    }
    co_return session() != nullptr && !reset_;
  }

  void End(const http1::HeaderFields* trailers) override {
    if (session() == nullptr || response_ended_) return;
    response_ended_ = true;
    if (trailers != nullptr && !trailers->empty()) {
      for (const auto& f : *trailers) response_trailers_.Add(Lower(f.name), f.value);
      Http2Stream::End(/*trailers=*/true);
    } else {
      Http2Stream::End();
    }
  }

  void Abort() override { Reset(NGHTTP2_INTERNAL_ERROR); }

  void SendLocal(int code, std::string_view body, std::string_view extra_name,
                 std::string_view extra_value) override {
    if (session() == nullptr) return;
    std::string status = absl::StrCat(code);
    std::string length = absl::StrCat(body.size());
    absl::InlinedVector<net::HeaderField, 4> out = {
        {":status", status}, {"content-type", "text/plain"}, {"content-length", length}};
    if (!extra_name.empty()) out.push_back({extra_name, extra_value});
    bool end = body.empty() || request_.method == "HEAD";
    SendHeaders(std::span(out.data(), out.size()), end);
    if (!end) {
      Write(net::Buffer(body));
      Http2Stream::End();
      bytes_sent += body.size();
    }
    response_ended_ = true;
  }

  static net::Task<void> Run(std::shared_ptr<H2Exchange> self, net::WaitGroup* running) {
    co_await HandleRequest(self->ctx_, *self);
    // Whatever the proxy did not end (a client that went away) is reset.
    if (!self->response_ended_ && self->session() != nullptr) self->Reset(NGHTTP2_INTERNAL_ERROR);
    running->Done();
  }

  net::WaitGroup* running = nullptr;

 private:
  std::string_view Lower(std::string_view name) {
    for (char c : name) {
      if (c >= 'A' && c <= 'Z')
        return response_trailers_.Own(
            absl::AsciiStrToLower(absl::string_view(name.data(), name.size())));
    }
    return name;
  }

  DownstreamContext& ctx_;
  size_t max_header_bytes_;
  size_t header_bytes_ = 0;
  http1::HeaderFields fields_;
  http1::HeaderFields trailers_;
  http1::HeaderFields response_trailers_;
  std::string_view method_, path_, authority_;
  ProxyRequest request_;
  net::Buffer body_;
  bool body_ended_ = false;
  bool reset_ = false;
  bool stream_over_ = false;
  bool response_ended_ = false;
  Waiter body_waiter_;
  Waiter room_waiter_;
  net::Timer header_timer_{[this] {
    if (net::Http2Session* s = session()) s->Close();
  }};
};

void H2Exchange::OnHeaders(HeadersKind kind, bool end_stream) {
  if (kind != HeadersKind::kRequest) return;
  header_timer_.Cancel();
  std::string_view target = path_;
  size_t q = target.find('?');
  request_.method = method_;
  request_.authority = authority_;
  request_.path = target.substr(0, q);
  request_.query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  request_.asterisk = target == "*";
  request_.fields = &fields_;
  request_.has_body = !end_stream;
  request_.http2 = true;
  request_.keep_alive = true;
  body_ended_ = end_stream;
  if (std::optional<std::string_view> cl = fields_.Get("content-length")) {
    uint64_t n;
    if (absl::SimpleAtoi(absl::string_view(cl->data(), cl->size()), &n))
      request_.content_length = n;
  }
  if (std::optional<std::string_view> ct = fields_.Get("content-type")) {
    request_.grpc = ct->starts_with("application/grpc");
  }
  running->Add();
  ctx_.loop->StartOwned(Run(std::static_pointer_cast<H2Exchange>(shared_from_this()), running));
}

class DownstreamSession : public net::Http2Session {
 public:
  DownstreamSession(DownstreamContext& ctx, std::shared_ptr<net::Socket> socket,
                    net::Http2Options options, size_t max_header_bytes,
                    std::chrono::milliseconds header_timeout)
      : Http2Session(Role::kServer, std::move(socket), options),
        ctx_(ctx),
        max_header_bytes_(max_header_bytes),
        header_timeout_(header_timeout),
        running_(ctx.loop) {}

  net::WaitGroup& running() { return running_; }
  uint64_t streams_opened() const { return streams_opened_; }

 private:
  std::shared_ptr<net::Http2Stream> NewStream(int32_t) override {
    if (ctx_.draining->load(std::memory_order_relaxed)) return nullptr;
    ++streams_opened_;
    auto stream = std::make_shared<H2Exchange>(ctx_, max_header_bytes_, header_timeout_);
    stream->running = &running_;
    return stream;
  }
  void OnProtocolError() override {
    ctx_.counters->bad_requests.fetch_add(1, std::memory_order_relaxed);
  }

  DownstreamContext& ctx_;
  size_t max_header_bytes_;
  std::chrono::milliseconds header_timeout_;
  uint64_t streams_opened_ = 0;
  net::WaitGroup running_;
};

}  // namespace

net::Task<void> ServeHttp2(DownstreamContext& ctx, std::shared_ptr<net::Socket> socket,
                           const H2cUpgrade* upgrade) {
  // Copied: a reload replaces the snapshot, which may be gone while this
  // connection lives (its idle check reads the limits later).
  const HttpLimits limits = (*ctx.snapshot)->config.listeners[ctx.listener_index].limits;
  net::Http2Options options;
  options.max_concurrent_streams = limits.max_concurrent_streams;
  options.max_header_list_bytes = static_cast<uint32_t>(limits.max_header_list_bytes);
  options.manual_flow_control = true;  // bodies flow at the upstream's pace
  options.stream_window_bytes = 256 << 10;
  options.connection_window_bytes = 4 << 20;
  // Response bytes held for a client that does not read (a zero window),
  // per stream and per connection: past them the upstream is not read.
  options.stream_high_water_bytes = 256 << 10;
  options.connection_high_water_bytes = 4 << 20;
  auto session = std::make_shared<DownstreamSession>(
      ctx, socket, options, limits.max_header_list_bytes, limits.request_header_timeout);
  // A connection with no stream open and none opened for idle_timeout is
  // closed (GOAWAY first), as an idle HTTP/1.1 keep-alive connection is.
  uint64_t seen = ~0ull;
  net::Timer idle_check([&] {
    if (session->open_streams() == 0 && session->streams_opened() == seen) {
      session->GoAway();
      session->Close();
      return;
    }
    seen = session->streams_opened();
    idle_check.ArmAfter(ctx.loop, limits.idle_timeout);
  });
  idle_check.ArmAfter(ctx.loop, limits.idle_timeout);
  ctx.control->idle = false;
  std::weak_ptr<DownstreamSession> weak = session;
  ctx.control->drain = [weak] {
    if (auto s = weak.lock()) s->GoAway();
  };
  bool started = session->Start();
  if (started && upgrade != nullptr) {
    absl::InlinedVector<net::HeaderField, 16> fields;
    for (const auto& [name, value] : upgrade->fields) fields.push_back({name, value});
    absl::Status st = session->AcceptUpgrade(upgrade->settings, upgrade->head_request,
                                             std::span(fields.data(), fields.size()));
    if (!st.ok()) {
      CAPSTAN_LOG(debug, "gateway: h2c upgrade failed", "error", std::string(st.message()));
      session->GoAway(NGHTTP2_PROTOCOL_ERROR);
      session->Close();
    }
  }
  if (started) co_await session->Run();
  idle_check.Cancel();
  ctx.control->drain = nullptr;
  // Handlers still forwarding see their streams closed; they end soon
  // (their upstream waits are cancelled) and must end before the context
  // they use goes away.
  co_await session->running().Wait();
}

}  // namespace capstan::gateway
