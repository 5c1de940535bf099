#include "gateway/http1_proxy.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/logging.h"
#include "net/http1.h"

namespace capstan::gateway {
namespace {

namespace http1 = net::http1;

// Output queued to the client beyond which the upstream is not read until
// it drains to the low mark: a slow reader holds back a fast writer.
constexpr size_t kHighWater = 1 << 20;
constexpr size_t kLowWater = 256 << 10;

// Writes a whole response of the gateway's own.
void WriteLocalResponse(net::Socket* socket, int status, std::string_view body, bool close,
                        std::string_view extra_name = {}, std::string_view extra_value = {},
                        bool head_request = false) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", status, " ", std::string(http1::ReasonPhrase(status)),
                   "\r\ncontent-type: text/plain\r\ncontent-length: ", body.size(), "\r\n");
  if (!extra_name.empty()) {
    absl::StrAppend(&out, std::string(extra_name), ": ", std::string(extra_value), "\r\n");
  }
  if (close) out += "connection: close\r\n";
  out += "\r\n";
  if (!head_request) out.append(body);
  socket->Write(std::string_view(out));
}

class Http1Exchange : public DownstreamExchange {
 public:
  Http1Exchange(DownstreamContext& ctx, net::Socket* down, http1::RequestParser* parser)
      : ctx_(ctx), down_(down), parser_(parser) {
    http1::RequestHead& head = parser_->head();
    http1::SplitTarget(head, &request_.path, &request_.query);
    request_.method = head.method;
    request_.authority = head.authority;
    request_.asterisk = head.target_form == http1::TargetForm::kAsterisk;
    request_.fields = &head.fields;
    request_.has_body = head.framing != http1::Framing::kNone;
    if (head.framing == http1::Framing::kContentLength)
      request_.content_length = head.content_length;
    request_.keep_alive = head.keep_alive && !ctx.draining->load(std::memory_order_relaxed);
    request_.expect_continue = head.expect_continue;
    request_.http10 = head.version == http1::Version::kHttp10;
    request_.upgrade = head.upgrade;
    body_done_ = !request_.has_body;
    head_request_ = head.method == "HEAD";
  }

  ProxyRequest& request() override { return request_; }
  bool body_done() const { return body_done_; }

  net::Task<BodyEvent> NextBody() override {
    BodyEvent out;
    if (body_done_) co_return out;
    while (true) {
      http1::Event ev = parser_->Next(&down_->input());
      switch (ev.type) {
        case http1::Event::kNeedMore: {
          absl::Status st = co_await down_->ReadMore();
          if (!st.ok()) {
            out.type = BodyEvent::kError;
            co_return out;
          }
          break;
        }
        case http1::Event::kBody:
          out.type = BodyEvent::kPiece;
          out.piece = std::move(ev.body);
          co_return out;
        case http1::Event::kComplete:
          body_done_ = true;
          out.type = BodyEvent::kEnd;
          out.trailers = &parser_->trailers();
          co_return out;
        case http1::Event::kError:
          ctx_.counters->bad_requests.fetch_add(1, std::memory_order_relaxed);
          if (!response_started) {
            status = parser_->error().status;
            WriteLocalResponse(down_, status, parser_->error().reason, /*close=*/true);
            response_started = true;
          }
          request_.keep_alive = false;
          out.type = BodyEvent::kError;
          co_return out;
        default:
          out.type = BodyEvent::kError;
          co_return out;
      }
    }
  }

  void SendContinue() override { down_->Write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n")); }

  bool SendHead(int code, http1::HeaderFields& fields, bool has_body,
                std::optional<uint64_t> content_length) override {
    if (down_->closed()) return false;
    http1::ResponseHead head;
    head.status = code;
    head.reason = http1::ReasonPhrase(code);
    head.version = http1::Version::kHttp11;
    bool no_body = head_request_ || code == 204 || code == 304;
    if (has_body && !no_body) {
      if (content_length) {
        fields.Set("content-length", absl::StrCat(*content_length));
      } else if (!request_.http10) {
        // Length unknown: chunked to an HTTP/1.1 client; an HTTP/1.0
        // client reads until we close.
        fields.Set("transfer-encoding", "chunked");
        chunked_ = true;
      } else {
        request_.keep_alive = false;
      }
    } else if (content_length && head_request_) {
      fields.Set("content-length", absl::StrCat(*content_length));
    } else if (!has_body && !no_body && code >= 200) {
      fields.Set("content-length", "0");
    }
    if (!request_.keep_alive || ctx_.draining->load(std::memory_order_relaxed)) {
      request_.keep_alive = false;
      fields.Set("connection", "close");
    } else if (request_.http10) {
      fields.Set("connection", "keep-alive");
    }
    head.fields = std::move(fields);
    http1::WriteResponseHead(head, &down_->output());
    fields = std::move(head.fields);
    down_->MarkWritten();
    return true;
  }

  net::Task<bool> SendBody(net::Buffer piece) override {
    if (head_request_) co_return true;
    bytes_sent += piece.size();
    if (chunked_) {
      http1::AppendChunk(std::move(piece), &down_->output());
    } else {
      down_->output().Append(std::move(piece));
    }
    down_->MarkWritten();
    if (down_->pending_output() > kHighWater) {
      absl::Status st = co_await down_->Drained(kLowWater);
      if (!st.ok()) co_return false;
    }
    co_return !down_->closed();
  }

  void End(const http1::HeaderFields* trailers) override {
    if (chunked_ && !head_request_) {
      http1::AppendLastChunk(trailers, &down_->output());
      down_->MarkWritten();
    }
  }

  net::Socket* TunnelSocket() override { return down_; }

  void Abort() override {
    request_.keep_alive = false;
    down_->Close();
  }

  void SendLocal(int code, std::string_view body, std::string_view extra_name,
                 std::string_view extra_value) override {
    // A body the gateway does not read to its end leaves the connection
    // unusable: close it after the answer.
    if (!body_done_ && code >= 400) request_.keep_alive = false;
    if (ctx_.draining->load(std::memory_order_relaxed)) request_.keep_alive = false;
    WriteLocalResponse(down_, code, body, !request_.keep_alive, extra_name, extra_value,
                       head_request_);
    if (!head_request_) bytes_sent += body.size();
  }

 private:
  DownstreamContext& ctx_;
  net::Socket* down_;
  http1::RequestParser* parser_;
  ProxyRequest request_;
  bool body_done_ = false;
  bool head_request_ = false;
  bool chunked_ = false;
};

// One request whose head `parser` has read: proxied, answered. Its own
// coroutine, so the exchange's state lives only while the request does,
// not in the connection's frame for the connection's life. Whether the
// connection may serve another (false too when the body was left unread).
net::Task<bool> ServeRequest(DownstreamContext& ctx, net::Socket* down,
                             http1::RequestParser* parser) {
  Http1Exchange exchange(ctx, down, parser);
  bool keep = co_await HandleRequest(ctx, exchange);
  co_return keep&& exchange.body_done();
}

// Whether `head` asks to continue as HTTP/2 in clear text and may (RFC 7540
// §3.2: Upgrade names h2c, one HTTP2-Settings field; we switch only
// requests without a body — the body would have to be read first — and
// only on listeners that speak h2c). Fills `*out` for the switch.
bool TakeH2cUpgrade(const http1::RequestHead& head, bool listener_speaks_h2c,
                    std::optional<H2cUpgrade>* out) {
  if (!listener_speaks_h2c || !head.upgrade || head.framing != http1::Framing::kNone ||
      head.version != http1::Version::kHttp11) {
    return false;
  }
  bool h2c = false;
  for (const auto& f : head.fields) {
    if (!absl::EqualsIgnoreCase(absl::string_view(f.name.data(), f.name.size()), "upgrade")) {
      continue;
    }
    for (absl::string_view token :
         absl::StrSplit(absl::string_view(f.value.data(), f.value.size()), ',')) {
      h2c |= absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(token), "h2c");
    }
  }
  if (!h2c || head.fields.Count("http2-settings") != 1) return false;
  H2cUpgrade up;
  up.settings = std::string(*head.fields.Get("http2-settings"));
  up.head_request = head.method == "HEAD";
  std::string_view path;
  std::string_view query;
  http1::SplitTarget(head, &path, &query);
  std::string target(path.empty() ? "/" : path);
  if (!query.empty()) absl::StrAppend(&target, "?", std::string(query));
  up.fields.emplace_back(":method", std::string(head.method));
  up.fields.emplace_back(":path", std::move(target));
  up.fields.emplace_back(":authority", std::string(head.authority));
  for (const auto& f : head.fields) {
    std::string name = absl::AsciiStrToLower(absl::string_view(f.name.data(), f.name.size()));
    // This hop's fields, and Host (now :authority).
    if (name == "connection" || name == "upgrade" || name == "http2-settings" ||
        name == "keep-alive" || name == "proxy-connection" || name == "te" ||
        name == "transfer-encoding" || name == "host") {
      continue;
    }
    up.fields.emplace_back(std::move(name), std::string(f.value));
  }
  *out = std::move(up);
  return true;
}

}  // namespace

net::Task<void> ServeHttp1(DownstreamContext& ctx, std::shared_ptr<net::Socket> socket,
                           std::optional<H2cUpgrade>* upgrade, int* parked_fd) {
  net::Socket* down = socket.get();
  const GatewayConfig& first = (*ctx.snapshot)->config;
  // Copied: the snapshot `first` belongs to is replaced by a reload and may
  // be gone while this connection lives.
  const HttpLimits limits = first.listeners[ctx.listener_index].limits;
  http1::Limits codec_limits;
  codec_limits.max_request_line_bytes = limits.max_request_line_bytes;
  codec_limits.max_header_bytes = limits.max_header_bytes;
  codec_limits.max_header_fields = limits.max_header_count;
  codec_limits.max_body_bytes = limits.max_body_bytes;
  // The parser (1.7 KB with its inline fields) exists while a request is
  // being read or served; an idle keep-alive connection holds none.
  std::unique_ptr<http1::RequestParser> parser;
  bool speaks_h2c = std::find(first.listeners[ctx.listener_index].protocols.begin(),
                              first.listeners[ctx.listener_index].protocols.end(),
                              "h2c") != first.listeners[ctx.listener_index].protocols.end();
  // Idle keep-alive connections and slow request heads (slowloris) are
  // closed; a head must be complete within request_header_timeout of its
  // first byte. A clear-text connection idle for idle_park_after is first
  // parked (its fd handed to the gateway, this coroutine ended); the
  // gateway keeps the rest of the idle timeout.
  const bool may_park = !ctx.tls && limits.idle_park_after > Duration(0) &&
                        limits.idle_park_after < limits.idle_timeout;
  bool park_due = false;
  net::Timer idle_timer([down, &park_due, may_park] {
    if (may_park && !park_due) {
      park_due = true;
      down->InterruptRead();
    } else {
      down->Close();
    }
  });
  auto arm_idle = [&] {
    park_due = false;
    idle_timer.ArmAfter(ctx.loop, may_park ? limits.idle_park_after : limits.idle_timeout);
    ctx.control->idle = true;
  };
  net::Timer header_timer([down] { down->Close(); });
  arm_idle();
  while (true) {
    if (parser == nullptr) {
      if (down->input().empty()) {
        if (ctx.draining->load(std::memory_order_relaxed)) break;
        absl::Status st = co_await down->ReadMore();
        if (st.code() == absl::StatusCode::kAborted && park_due) {
          int fd = co_await down->Release();
          if (fd >= 0) {
            *parked_fd = fd;
            co_return;
          }
          // Bytes beat the release: served; the idle timeout's rest still
          // bounds the wait (park_due: the timer closes next).
          idle_timer.ArmAfter(ctx.loop, limits.idle_timeout - limits.idle_park_after);
          continue;
        }
        if (!st.ok()) break;
        continue;
      }
      parser = std::make_unique<http1::RequestParser>(codec_limits);
    }
    http1::Event ev = parser->Next(&down->input());
    if (ev.type == http1::Event::kNeedMore) {
      if (!down->input().empty() && !header_timer.armed()) {
        ctx.control->idle = false;
        idle_timer.Cancel();
        header_timer.ArmAfter(ctx.loop, limits.request_header_timeout);
      }
      if (ctx.draining->load(std::memory_order_relaxed) && down->input().empty()) break;
      absl::Status st = co_await down->ReadMore();
      if (!st.ok()) break;
      continue;
    }
    if (ev.type == http1::Event::kError) {
      ctx.counters->bad_requests.fetch_add(1, std::memory_order_relaxed);
      const http1::Error& e = parser->error();
      ctx.counters->CountStatus(e.status);
      WriteLocalResponse(down, e.status, absl::StrCat(e.reason, "\n"), /*close=*/true);
      break;
    }
    // A request without a body completes right after its head: nothing to do.
    if (ev.type == http1::Event::kComplete) continue;
    if (ev.type != http1::Event::kHead) break;  // kClosed
    header_timer.Cancel();
    idle_timer.Cancel();
    ctx.control->idle = false;
    if (!ctx.draining->load(std::memory_order_relaxed) &&
        TakeH2cUpgrade(parser->head(), speaks_h2c, upgrade)) {
      ctx.counters->CountStatus(101);
      down->Write(std::string_view(
          "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"));
      break;
    }
    bool keep = co_await ServeRequest(ctx, down, parser.get());
    // (A body left half-read leaves the parser mid-message: keep is false.)
    if (!keep || down->closed()) break;
    // The message is over (the parser would only say kComplete next). With
    // nothing pipelined behind it the parser goes, and with it the slice of
    // the 16 KiB block the request's fields arrived in.
    if (down->input().empty()) {
      parser.reset();
    } else {
      parser->head().fields.Clear();
    }
    arm_idle();
  }
  // What was written leaves before the caller closes (bounded).
  net::Timer give_up([down] { down->Close(); });
  give_up.ArmAfter(ctx.loop, std::chrono::seconds(5));
  auto drained = co_await down->Drained();
  (void)drained;
}

}  // namespace capstan::gateway
