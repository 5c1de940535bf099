#include "gateway/upstream_h2.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/http2.h"
#include "net/wait_group.h"

namespace capstan::gateway {
namespace {

namespace http1 = net::http1;

// The upstream side of one forwarded request.
class UpstreamStream : public net::Http2Stream {
 public:
  explicit UpstreamStream(net::EventLoop* loop) : loop_(loop) {}

  bool OnHeader(HeadersKind kind, std::string_view name, std::string_view value) override {
    if (kind == HeadersKind::kTrailers) {
      trailers_.Add(name, value);
    } else if (name == ":status") {
      int status = 0;
      if (absl::SimpleAtoi(absl::string_view(value.data(), value.size()), &status)) {
        pending_status_ = status;
      }
      if (status >= 200) {
        headers_ = http1::HeaderFields();  // an interim head's fields are dropped
        status_ = status;
      }
    } else if (!name.starts_with(':') && pending_status_ >= 200) {
      headers_.Add(name, value);
    }
    return true;
  }
  void OnHeaders(HeadersKind kind, bool end_stream) override {
    if (kind == HeadersKind::kResponse && pending_status_ >= 200) {
      headers_done_ = true;
      if (end_stream) ended_ = true;
    }
    if (kind == HeadersKind::kTrailers) ended_ = true;
    Wake();
  }
  void OnData(std::string_view bytes) override {
    body_.Append(ShareReceived(bytes));
    Wake();
  }
  void OnEndStream() override {
    ended_ = true;
    Wake();
  }
  void OnWriteRoom() override { WakeRoom(); }
  void OnClose(uint32_t error_code) override {
    closed_ = true;
    close_code_ = error_code;
    Wake();
    WakeRoom();
  }
  void OnSendTrailers() override {
    absl::InlinedVector<net::HeaderField, 8> out;
    for (const auto& f : request_trailers_) out.push_back({f.name, f.value});
    SubmitTrailers(std::span(out.data(), out.size()));
  }

  // ---- for the forwarding coroutines
  struct Awaiter {
    std::coroutine_handle<>* slot;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { *slot = h; }
    void await_resume() const noexcept {}
  };
  Awaiter NextEvent() { return Awaiter{&waiter_}; }
  Awaiter Room() { return Awaiter{&room_waiter_}; }

  net::EventLoop* loop_;
  http1::HeaderFields headers_, trailers_, request_trailers_;
  int pending_status_ = 0;
  int status_ = 0;
  bool headers_done_ = false;
  bool ended_ = false;
  bool closed_ = false;
  uint32_t close_code_ = 0;
  net::Buffer body_;

 private:
  void Wake() {
    if (waiter_) loop_->Schedule(std::exchange(waiter_, nullptr));
  }
  void WakeRoom() {
    if (room_waiter_) loop_->Schedule(std::exchange(room_waiter_, nullptr));
  }
  std::coroutine_handle<> waiter_;
  std::coroutine_handle<> room_waiter_;
};

// Sends the client's body up as it arrives (concurrently with the response
// coming down: gRPC streams need both at once).
net::Task<void> PumpRequestBody(DownstreamExchange& x, std::shared_ptr<UpstreamStream> up,
                                net::WaitGroup* done) {
  while (!up->closed_) {
    BodyEvent ev = co_await x.NextBody();
    if (ev.type == BodyEvent::kError) {
      up->Reset(NGHTTP2_CANCEL);
      break;
    }
    if (ev.type == BodyEvent::kEnd) {
      if (ev.trailers != nullptr && !ev.trailers->empty()) {
        for (const auto& f : *ev.trailers) up->request_trailers_.Add(f.name, f.value);
        up->End(/*trailers=*/true);
      } else {
        up->End();
      }
      break;
    }
    if (!up->Write(std::move(ev.piece))) {
      while (!up->closed_ && up->buffered_bytes() > (256u << 10)) co_await up->Room();
    }
  }
  done->Done();
}

bool ConnectionSpecific(std::string_view name) {
  return name == "host" || name == "connection" || name == "keep-alive" ||
         name == "proxy-connection" || name == "transfer-encoding" || name == "upgrade";
}

}  // namespace

net::Task<Outcome> ForwardHttp2(DownstreamContext& ctx, DownstreamExchange& x, const Route& route,
                                Cluster& cluster, std::shared_ptr<PooledEndpoint> endpoint,
                                const std::string& method, const std::string& target,
                                const std::string& authority, http1::HeaderFields& fields,
                                mesh::AttemptVerdict* verdict) {
  *verdict = mesh::AttemptVerdict::kAbandoned;
  ClusterLoop& cl = cluster.on(ctx.loop_index);
  auto session = co_await cl.AcquireHttp2(endpoint);
  if (!session.ok()) {
    ctx.counters->connect_failures.fetch_add(1, std::memory_order_relaxed);
    *verdict = mesh::AttemptVerdict::kEndpointFailure;
    co_return Outcome::kRetry;
  }
  ProxyRequest& in = x.request();
  absl::InlinedVector<net::HeaderField, 24> out = {
      {":method", method},
      {":scheme", cluster.config().tls ? "https" : "http"},
      {":authority", authority},
      {":path", target}};
  // HTTP/2 wants lowercase names; keep the lowered copies alive here.
  http1::HeaderFields lowered;
  for (const auto& f : fields) {
    std::string_view name = f.name;
    bool upper = false;
    for (char c : name) upper |= (c >= 'A' && c <= 'Z');
    if (upper)
      name = lowered.Own(absl::AsciiStrToLower(absl::string_view(name.data(), name.size())));
    if (ConnectionSpecific(name) || (name == "te" && f.value != "trailers")) continue;
    out.push_back({name, f.value});
  }
  auto up = std::make_shared<UpstreamStream>(ctx.loop);
  absl::Status st =
      (*session)->SubmitRequest(up, std::span(out.data(), out.size()), /*end_stream=*/!in.has_body);
  if (!st.ok()) co_return Outcome::kRetry;
  bool client_gone = false;
  x.cancel_upstream = [up, &client_gone] {
    client_gone = true;
    up->Reset(NGHTTP2_CANCEL);
  };
  struct ClearCancel {
    DownstreamExchange& x;
    ~ClearCancel() { x.cancel_upstream = nullptr; }
  } clear_cancel{x};
  net::WaitGroup pump(ctx.loop);
  if (in.has_body) {
    pump.Add();
    ctx.loop->StartOwned(PumpRequestBody(x, up, &pump));
  }
  bool timed_out = false;
  net::Timer deadline([&timed_out, up] {
    timed_out = true;
    up->Reset(NGHTTP2_CANCEL);
  });
  if (route.config().timeout.count() > 0) deadline.ArmAfter(ctx.loop, route.config().timeout);

  Outcome outcome = Outcome::kDone;
  bool head_sent = false;
  while (true) {
    if (!head_sent && up->headers_done_) {
      std::optional<uint64_t> length;
      if (std::optional<std::string_view> cl_field = up->headers_.Get("content-length")) {
        uint64_t n;
        if (absl::SimpleAtoi(absl::string_view(cl_field->data(), cl_field->size()), &n)) length = n;
      }
      x.status = up->status_;
      x.response_started = true;
      head_sent = true;
      bool has_body = !(up->ended_ && up->body_.empty() && up->trailers_.empty());
      EditResponseHead(ctx, x, route, &up->headers_);
      if (!x.SendHead(up->status_, up->headers_, has_body, length)) {
        up->Reset(NGHTTP2_CANCEL);
        outcome = Outcome::kFailed;
        break;
      }
    }
    if (head_sent && !up->body_.empty()) {
      net::Buffer piece = std::move(up->body_);
      up->body_ = net::Buffer();
      size_t n = piece.size();
      bool ok = co_await x.SendBody(std::move(piece));
      up->Consume(n);  // the upstream may send as much again
      if (!ok) {
        up->Reset(NGHTTP2_CANCEL);
        outcome = Outcome::kFailed;
        break;
      }
      continue;
    }
    if (head_sent && up->ended_) {
      x.End(up->trailers_.empty() ? nullptr : &up->trailers_);
      *verdict = up->status_ >= 500 ? mesh::AttemptVerdict::kEndpointFailure
                                    : mesh::AttemptVerdict::kSuccess;
      break;
    }
    if (up->closed_ && client_gone) {
      // The client went away: no failure of the upstream's (abandoned).
      outcome = Outcome::kFailed;
      break;
    }
    if (up->closed_) {
      // Reset (or the connection lost) before the response ended.
      *verdict = mesh::AttemptVerdict::kEndpointFailure;
      if (head_sent) {
        x.Abort();
        outcome = Outcome::kFailed;
      } else if (timed_out) {
        x.status = 504;
        x.SendLocal(504, "upstream timed out\n");
        x.response_started = true;
      } else if (up->close_code_ == NGHTTP2_REFUSED_STREAM) {
        outcome = Outcome::kRetry;  // the server did not process it (RFC 9113 §8.7)
      } else {
        ctx.counters->resets.fetch_add(1, std::memory_order_relaxed);
        x.status = 502;
        x.SendLocal(502, "upstream reset the stream\n");
        x.response_started = true;
      }
      break;
    }
    co_await up->NextEvent();
  }
  deadline.Cancel();
  if (!up->closed_ && !up->ended_) up->Reset(NGHTTP2_CANCEL);
  // The pump ends once the client's body ends or the stream is over.
  if (pump.count() > 0 && !up->closed_) up->Reset(NGHTTP2_CANCEL);
  co_await pump.Wait();
  co_return outcome;
}

}  // namespace capstan::gateway
