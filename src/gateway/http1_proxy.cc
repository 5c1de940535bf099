#include "gateway/http1_proxy.h"

#include <random>

#include "absl/container/flat_hash_set.h"
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
using Clock = net::EventLoop::Clock;

// Output queued to a peer beyond which the other side stops reading until
// it drains to the low mark: a slow reader holds back a fast writer.
constexpr size_t kHighWater = 1 << 20;
constexpr size_t kLowWater = 256 << 10;

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "";
  }
}

// Fields that describe one hop, not the message (RFC 9110 §7.6.1), and are
// never forwarded; plus those the Connection field names.
constexpr std::string_view kHopByHop[] = {"connection", "keep-alive",        "proxy-connection",
                                          "te",         "transfer-encoding", "upgrade"};

void RemoveHopByHop(http1::HeaderFields* fields, bool keep_upgrade) {
  // Collect the Connection options first (views die with the fields).
  std::vector<std::string> named;
  for (const auto& f : *fields) {
    if (!absl::EqualsIgnoreCase(absl::string_view(f.name.data(), f.name.size()), "connection")) {
      continue;
    }
    for (absl::string_view token :
         absl::StrSplit(absl::string_view(f.value.data(), f.value.size()), ',')) {
      std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(token));
      if (!t.empty() && t != "close" && t != "keep-alive" && !(keep_upgrade && t == "upgrade")) {
        named.push_back(std::move(t));
      }
    }
  }
  for (std::string_view name : kHopByHop) {
    if (keep_upgrade && name == "upgrade") continue;
    fields->Remove(name);
  }
  for (const std::string& name : named) fields->Remove(name);
}

void ApplyEdits(const HeaderEdits& edits, http1::HeaderFields* fields) {
  for (const std::string& name : edits.remove) fields->Remove(name);
  for (const auto& [name, value] : edits.set) fields->Set(name, value);
  for (const auto& [name, value] : edits.append) fields->Add(name, value);
}

// "/a/b?x=1" -> path "/a/b", query "x=1"; an absolute-form target
// ("http://h/a?x") gives its path part.
void SplitTarget(const http1::RequestHead& head, std::string_view* path, std::string_view* query) {
  std::string_view target = head.target;
  if (head.target_form == http1::TargetForm::kAbsolute) {
    size_t scheme_end = target.find("://");
    size_t path_start =
        scheme_end == std::string_view::npos ? target.size() : target.find('/', scheme_end + 3);
    target =
        path_start == std::string_view::npos ? std::string_view("/") : target.substr(path_start);
  }
  size_t q = target.find('?');
  *path = target.substr(0, q);
  *query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

bool IsIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

std::string NewRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  uint64_t a = rng(), b = rng();
  for (int i = 0; i < 16; ++i) {
    id[i] = kHex[(a >> (i * 4)) & 15];
    id[16 + i] = kHex[(b >> (i * 4)) & 15];
  }
  return id;
}

uint64_t RandomDraw() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

// Writes a whole response of the gateway's own.
void WriteLocalResponse(net::Socket* socket, int status, std::string_view body, bool close,
                        std::string_view extra_headers = {}, bool head_request = false) {
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ", std::string(ReasonPhrase(status)),
                                 "\r\ncontent-type: text/plain\r\ncontent-length: ", body.size(),
                                 "\r\n", std::string(extra_headers));
  if (close) out += "connection: close\r\n";
  out += "\r\n";
  if (!head_request) out.append(body);
  socket->Write(std::string_view(out));
}

// One request's forwarding state.
struct Exchange {
  DownstreamContext* ctx;
  net::Socket* down;
  http1::RequestParser* parser;
  std::shared_ptr<const Snapshot> snapshot;
  const Route* route = nullptr;
  Cluster* cluster = nullptr;
  bool client_keep_alive = true;
  bool head_request = false;
  bool request_has_body = false;
  bool request_body_done = false;
  bool response_started = false;  // a head went downstream
  int status = 0;
};

// Reads the downstream request body to its end and sends it upstream
// (chunked or as is). False if the client went away or sent a bad body
// (then the response has been written, if one can be).
net::Task<bool> StreamRequestBody(Exchange& x, net::Socket* up, bool chunked) {
  while (!x.request_body_done) {
    http1::Event ev = x.parser->Next(&x.down->input());
    switch (ev.type) {
      case http1::Event::kNeedMore: {
        absl::Status st = co_await x.down->ReadMore();
        if (!st.ok()) co_return false;
        break;
      }
      case http1::Event::kBody:
        if (chunked) {
          http1::AppendChunk(std::move(ev.body), &up->output());
        } else {
          up->output().Append(std::move(ev.body));
        }
        up->MarkWritten();
        if (up->pending_output() > kHighWater) {
          absl::Status st = co_await up->Drained(kLowWater);
          if (!st.ok()) co_return false;
        }
        break;
      case http1::Event::kComplete:
        if (chunked) {
          http1::AppendLastChunk(&x.parser->trailers(), &up->output());
          up->MarkWritten();
        }
        x.request_body_done = true;
        break;
      case http1::Event::kError:
        x.ctx->counters->bad_requests.fetch_add(1, std::memory_order_relaxed);
        if (!x.response_started) {
          x.status = x.parser->error().status;
          WriteLocalResponse(x.down, x.status, x.parser->error().reason, /*close=*/true);
          x.response_started = true;
        }
        co_return false;
      default:
        co_return false;
    }
  }
  co_return true;
}

// Discards the rest of a request body the gateway answered itself, so the
// connection can carry the next request. False: close instead.
net::Task<bool> DiscardRequestBody(Exchange& x) {
  size_t discarded = 0;
  while (!x.request_body_done) {
    http1::Event ev = x.parser->Next(&x.down->input());
    if (ev.type == http1::Event::kNeedMore) {
      absl::Status st = co_await x.down->ReadMore();
      if (!st.ok()) co_return false;
    } else if (ev.type == http1::Event::kBody) {
      discarded += ev.body.size();
      // A large body is not worth reading just to keep the connection.
      if (discarded > (64 << 10)) co_return false;
    } else if (ev.type == http1::Event::kComplete) {
      x.request_body_done = true;
    } else {
      co_return false;
    }
  }
  co_return true;
}

enum class ForwardResult { kDone, kRetry, kClose };

// One attempt on one upstream connection: request out, response back.
// kRetry: nothing was received and nothing of the request body consumed, so
// another attempt is safe (the caller decides whether policy allows it).
net::Task<ForwardResult> ForwardOnce(Exchange& x, http1::RequestHead& up_head,
                                     UpstreamConnection& conn, bool* reusable) {
  *reusable = false;
  net::Socket* up = conn.socket.get();
  bool chunked_up = up_head.framing == http1::Framing::kChunked;
  http1::WriteRequestHead(up_head, &up->output());
  up->MarkWritten();
  if (x.request_has_body) {
    bool sent = co_await StreamRequestBody(x, up, chunked_up);
    if (!sent) co_return ForwardResult::kClose;
  }
  // The response, under the route's timeout.
  bool timed_out = false;
  net::Timer deadline([&timed_out, up] {
    timed_out = true;
    up->Close();
  });
  if (x.route->config().timeout.count() > 0) {
    deadline.ArmAfter(x.ctx->loop, x.route->config().timeout);
  }
  http1::ResponseParser rp;
  rp.SetRequestMethod(up_head.method);
  bool chunked_down = false;
  bool received_any = false;
  while (true) {
    http1::Event ev = rp.Next(&up->input());
    if (ev.type == http1::Event::kNeedMore) {
      absl::Status st = co_await up->ReadMore();
      if (st.ok()) {
        received_any = true;
        continue;
      }
      ev = rp.Finish(up->input());
      if (ev.type == http1::Event::kNeedMore || ev.type == http1::Event::kClosed ||
          ev.type == http1::Event::kError) {
        // The upstream went away (or timed out) before the response ended.
        conn.endpoint->breaker.RecordFailure();
        if (x.response_started) co_return ForwardResult::kClose;  // the client sees a cut
        if (timed_out) {
          x.status = 504;
          WriteLocalResponse(x.down, 504, "upstream timed out\n", !x.client_keep_alive, {},
                             x.head_request);
          x.response_started = true;
          co_return x.client_keep_alive ? ForwardResult::kDone : ForwardResult::kClose;
        }
        x.ctx->counters->resets.fetch_add(1, std::memory_order_relaxed);
        if (!received_any && !x.request_has_body) co_return ForwardResult::kRetry;
        x.status = 502;
        WriteLocalResponse(x.down, 502, "upstream closed the connection\n", !x.client_keep_alive,
                           {}, x.head_request);
        x.response_started = true;
        co_return x.client_keep_alive ? ForwardResult::kDone : ForwardResult::kClose;
      }
    }
    switch (ev.type) {
      case http1::Event::kHead: {
        http1::ResponseHead& h = rp.head();
        if (h.status >= 100 && h.status < 200 && !h.switched_protocols) break;  // interim
        x.status = h.status;
        RemoveHopByHop(&h.fields, /*keep_upgrade=*/false);
        ApplyEdits(x.route->config().response_headers, &h.fields);
        bool has_body = h.framing != http1::Framing::kNone;
        if (h.framing == http1::Framing::kChunked || h.framing == http1::Framing::kUntilClose) {
          // Length unknown: chunked to an HTTP/1.1 client; to an HTTP/1.0
          // client the body runs until we close.
          if (x.parser->head().version == http1::Version::kHttp11) {
            h.fields.Set("transfer-encoding", "chunked");
            chunked_down = true;
          } else {
            x.client_keep_alive = false;
          }
        }
        (void)has_body;
        if (!x.client_keep_alive || x.ctx->draining->load(std::memory_order_relaxed)) {
          x.client_keep_alive = false;
          h.fields.Set("connection", "close");
        } else if (x.parser->head().version == http1::Version::kHttp10) {
          h.fields.Set("connection", "keep-alive");
        }
        h.version = http1::Version::kHttp11;
        http1::WriteResponseHead(h, &x.down->output());
        x.down->MarkWritten();
        x.response_started = true;
        break;
      }
      case http1::Event::kBody:
        if (chunked_down) {
          http1::AppendChunk(std::move(ev.body), &x.down->output());
        } else {
          x.down->output().Append(std::move(ev.body));
        }
        x.down->MarkWritten();
        if (x.down->pending_output() > kHighWater) {
          absl::Status st = co_await x.down->Drained(kLowWater);
          if (!st.ok()) co_return ForwardResult::kClose;
        }
        break;
      case http1::Event::kComplete:
        if (chunked_down) {
          http1::AppendLastChunk(&rp.trailers(), &x.down->output());
          x.down->MarkWritten();
        }
        conn.endpoint->breaker.RecordSuccess();
        *reusable =
            rp.head().keep_alive && rp.head().framing != http1::Framing::kUntilClose && !timed_out;
        co_return x.client_keep_alive ? ForwardResult::kDone : ForwardResult::kClose;
      case http1::Event::kError:
        conn.endpoint->breaker.RecordFailure();
        CAPSTAN_LOG(warn, "gateway: bad response from upstream", "endpoint",
                    conn.endpoint->endpoint.id, "error", rp.error().reason);
        if (x.response_started) co_return ForwardResult::kClose;
        x.status = 502;
        WriteLocalResponse(x.down, 502, "bad response from upstream\n", !x.client_keep_alive, {},
                           x.head_request);
        x.response_started = true;
        co_return x.client_keep_alive ? ForwardResult::kDone : ForwardResult::kClose;
      default:
        break;
    }
  }
}

// Forwards the request whose head the parser holds. Returns whether the
// downstream connection may carry another request.
net::Task<bool> Forward(Exchange& x) {
  http1::RequestHead& head = x.parser->head();
  const RouteConfig& rc = x.route->config();
  ClusterLoop& cl = x.cluster->on(x.ctx->loop_index);
  const ClusterLimits& limits = x.cluster->config().limits;
  if (cl.active_requests >= static_cast<int>(limits.max_requests)) {
    x.status = 503;
    WriteLocalResponse(x.down, 503, "cluster overloaded\n", true,
                       "x-capstan-overflow: max_requests\r\n", x.head_request);
    co_return false;
  }
  // The upstream request head: the client's, edited.
  std::string_view path, query;
  SplitTarget(head, &path, &query);
  std::string target = x.route->RewritePath(path);
  if (head.target_form == http1::TargetForm::kAsterisk) target = "*";
  if (!query.empty()) absl::StrAppend(&target, "?", std::string(query));
  std::string authority(head.authority);
  bool upgrade = head.upgrade;
  RemoveHopByHop(&head.fields, /*keep_upgrade=*/upgrade);
  head.fields.Remove("expect");  // 100-continue is answered here
  if (upgrade) head.fields.Set("connection", "upgrade");
  if (rc.host_rewrite) head.fields.Set("host", *rc.host_rewrite);
  const GatewayConfig& gc = x.snapshot->config;
  if (gc.add_x_forwarded) {
    std::optional<std::string_view> xff = head.fields.Get("x-forwarded-for");
    std::string forwarded_for =
        xff ? absl::StrCat(std::string(*xff), ", ", x.ctx->client_address) : x.ctx->client_address;
    head.fields.Set("x-forwarded-for", forwarded_for);
    head.fields.Set("x-forwarded-proto", x.ctx->tls ? "https" : "http");
    head.fields.Set("x-forwarded-host", authority);
  }
  if (!gc.request_id_header.empty() && !head.fields.Get(gc.request_id_header)) {
    head.fields.Set(gc.request_id_header, NewRequestId());
  }
  if (gc.add_via) head.fields.Add("via", "1.1 capstan");
  ApplyEdits(rc.request_headers, &head.fields);
  if (head.framing == http1::Framing::kChunked) head.fields.Set("transfer-encoding", "chunked");
  http1::RequestHead up_head;
  up_head.method = head.method;
  up_head.target = target;
  up_head.version = http1::Version::kHttp11;
  up_head.framing = head.framing;
  up_head.fields = std::move(head.fields);
  // The client asked to be told when to send its body: now.
  if (head.expect_continue && x.request_has_body) {
    x.down->Write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"));
  }

  const RetryPolicy& retry = rc.retry;
  bool may_retry = retry.non_idempotent || IsIdempotent(up_head.method);
  absl::flat_hash_set<const mesh::EndpointState*> tried;
  uint64_t hash = 0;
  const std::string& hash_on = x.cluster->config().hash_on;
  if (hash_on.starts_with("header:")) {
    std::optional<std::string_view> v = up_head.fields.Get(std::string_view(hash_on).substr(7));
    hash = mesh::HashKey(v ? *v : std::string_view());
  } else {
    hash = mesh::HashKey(x.ctx->client_address);
  }
  ++cl.active_requests;
  struct Active {
    ClusterLoop& cl;
    ~Active() { --cl.active_requests; }
  } active{cl};
  for (int attempt = 1;; ++attempt) {
    std::shared_ptr<mesh::EndpointState> endpoint = cl.Pick(hash, tried);
    if (endpoint == nullptr && attempt > 1) {
      // Every endpoint left has been tried: the failure seen is the answer.
      x.status = 502;
      WriteLocalResponse(x.down, 502, "upstream unreachable\n", true, {}, x.head_request);
      co_return false;
    }
    if (endpoint == nullptr) {
      x.status = 503;
      std::string why = cl.has_endpoints() ? "no healthy upstream\n" : "no upstream endpoints\n";
      WriteLocalResponse(x.down, 503, why, !x.client_keep_alive, {}, x.head_request);
      bool keep = x.client_keep_alive;
      if (keep && x.request_has_body) keep = co_await DiscardRequestBody(x);
      co_return keep;
    }
    tried.insert(endpoint.get());
    bool last = attempt >= retry.max_attempts || !may_retry;
    auto conn = co_await cl.Acquire(endpoint);
    if (!conn.ok()) {
      if (conn.status().code() == absl::StatusCode::kResourceExhausted) {
        x.status = 503;
        WriteLocalResponse(x.down, 503, "cluster overloaded\n", true,
                           "x-capstan-overflow: max_connections\r\n", x.head_request);
        co_return false;
      }
      x.ctx->counters->connect_failures.fetch_add(1, std::memory_order_relaxed);
      endpoint->breaker.RecordFailure();
      CAPSTAN_LOG(debug, "gateway: upstream connect failed", "endpoint", endpoint->endpoint.id,
                  "error", std::string(conn.status().message()));
      bool retry_connect = std::find(retry.retry_on.begin(), retry.retry_on.end(),
                                     "connect-failure") != retry.retry_on.end();
      // Nothing was sent: a connect failure is safe to retry for any method.
      if (retry_connect && attempt < retry.max_attempts) {
        x.ctx->counters->retries.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      x.status = 502;
      WriteLocalResponse(x.down, 502, "upstream unreachable\n", true, {}, x.head_request);
      co_return false;
    }
    bool reused = conn->requests > 0;
    bool reusable = false;
    ForwardResult r = co_await ForwardOnce(x, up_head, *conn, &reusable);
    cl.Release(std::move(*conn), reusable);
    if (r == ForwardResult::kRetry) {
      // The keep-alive race (an idle connection closed as we sent) is
      // retried on a fresh connection whatever the policy, for requests
      // that are safe to repeat; other resets by policy.
      bool retry_reset =
          std::find(retry.retry_on.begin(), retry.retry_on.end(), "reset") != retry.retry_on.end();
      if ((reused && IsIdempotent(up_head.method)) || (retry_reset && !last)) {
        x.ctx->counters->retries.fetch_add(1, std::memory_order_relaxed);
        if (reused) tried.erase(endpoint.get());  // the endpoint itself may be fine
        continue;
      }
      x.status = 502;
      WriteLocalResponse(x.down, 502, "upstream closed the connection\n", !x.client_keep_alive, {},
                         x.head_request);
      co_return x.client_keep_alive;
    }
    co_return r == ForwardResult::kDone;
  }
}

// Answers a route that does not forward. Returns keep-alive.
net::Task<bool> AnswerLocally(Exchange& x) {
  const RouteConfig& rc = x.route->config();
  bool keep = x.client_keep_alive;
  if (rc.direct_response) {
    x.status = rc.direct_response->status;
    std::string extra = absl::StrCat("content-type: ", rc.direct_response->content_type, "\r\n");
    std::string out =
        absl::StrCat("HTTP/1.1 ", x.status, " ", std::string(ReasonPhrase(x.status)), "\r\n", extra,
                     "content-length: ", rc.direct_response->body.size(), "\r\n");
    if (!keep) out += "connection: close\r\n";
    out += "\r\n";
    if (!x.head_request) out += rc.direct_response->body;
    x.down->Write(std::string_view(out));
  } else if (rc.redirect) {
    const Redirect& r = *rc.redirect;
    std::string_view path, query;
    SplitTarget(x.parser->head(), &path, &query);
    std::string scheme = r.scheme.value_or(x.ctx->tls ? "https" : "http");
    std::string host = r.host.value_or(NormalizeHost(x.parser->head().authority));
    std::string location = absl::StrCat(scheme, "://", host);
    if (r.port) absl::StrAppend(&location, ":", *r.port);
    if (r.path) {
      absl::StrAppend(&location, *r.path);
    } else if (r.prefix_rewrite && x.route->config().match.prefix) {
      absl::StrAppend(&location, *r.prefix_rewrite,
                      std::string(path.substr(x.route->config().match.prefix->size())));
    } else {
      absl::StrAppend(&location, std::string(path));
    }
    if (!r.strip_query && !query.empty()) absl::StrAppend(&location, "?", std::string(query));
    x.status = r.status;
    WriteLocalResponse(x.down, r.status, "", !keep, absl::StrCat("location: ", location, "\r\n"),
                       x.head_request);
  }
  if (!keep) co_return false;
  if (x.request_has_body) co_return co_await DiscardRequestBody(x);
  co_return true;
}

}  // namespace

net::Task<void> ServeHttp1(DownstreamContext& ctx, std::shared_ptr<net::Socket> socket) {
  net::Socket* down = socket.get();
  const GatewayConfig& first = (*ctx.snapshot)->config;
  const HttpLimits& limits = first.listeners[ctx.listener_index].limits;
  http1::Limits codec_limits;
  codec_limits.max_request_line_bytes = limits.max_request_line_bytes;
  codec_limits.max_header_bytes = limits.max_header_bytes;
  codec_limits.max_header_fields = limits.max_header_count;
  codec_limits.max_body_bytes = limits.max_body_bytes;
  http1::RequestParser parser(codec_limits);
  // Idle keep-alive connections and slow request heads (slowloris) are
  // closed; a head must be complete within request_header_timeout of its
  // first byte.
  bool header_timed_out = false;
  net::Timer idle_timer([down] { down->Close(); });
  net::Timer header_timer([down, &header_timed_out] {
    header_timed_out = true;
    down->Close();
  });
  idle_timer.ArmAfter(ctx.loop, limits.idle_timeout);
  *ctx.idle = true;
  while (true) {
    http1::Event ev = parser.Next(&down->input());
    if (ev.type == http1::Event::kNeedMore) {
      if (!down->input().empty() && !header_timer.armed()) {
        *ctx.idle = false;
        idle_timer.Cancel();
        header_timer.ArmAfter(ctx.loop, limits.request_header_timeout);
      }
      if (ctx.draining->load(std::memory_order_relaxed) && down->input().empty()) break;
      absl::Status st = co_await down->ReadMore();
      if (!st.ok()) {
        if (header_timed_out && !down->input().empty()) {
          // Too late to answer on a closed socket; counted.
          ctx.counters->bad_requests.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      continue;
    }
    if (ev.type == http1::Event::kError) {
      ctx.counters->bad_requests.fetch_add(1, std::memory_order_relaxed);
      const http1::Error& e = parser.error();
      ctx.counters->CountStatus(e.status);
      WriteLocalResponse(down, e.status, absl::StrCat(e.reason, "\n"), /*close=*/true);
      break;
    }
    // A request without a body completes right after its head: nothing to do.
    if (ev.type == http1::Event::kComplete) continue;
    if (ev.type != http1::Event::kHead) break;  // kClosed
    header_timer.Cancel();
    idle_timer.Cancel();
    *ctx.idle = false;
    ctx.counters->requests.fetch_add(1, std::memory_order_relaxed);

    Exchange x{&ctx, down, &parser, *ctx.snapshot};
    http1::RequestHead& head = parser.head();
    x.client_keep_alive = head.keep_alive && !ctx.draining->load(std::memory_order_relaxed);
    x.head_request = head.method == "HEAD";
    x.request_has_body = head.framing != http1::Framing::kNone;
    x.request_body_done = !x.request_has_body;
    std::string_view path, query;
    SplitTarget(head, &path, &query);
    std::string host = NormalizeHost(head.authority);
    auto lookup = [&head](std::string_view name) { return head.fields.Get(name); };
    RequestView view{host, head.method, path, query, lookup};
    x.route = x.snapshot->routes->Match(view);
    bool keep;
    if (x.route == nullptr) {
      x.status = 404;
      WriteLocalResponse(down, 404, "no route\n", !x.client_keep_alive, {}, x.head_request);
      keep = x.client_keep_alive;
      if (keep && x.request_has_body) keep = co_await DiscardRequestBody(x);
    } else if (x.route->config().max_body_bytes && head.framing == http1::Framing::kContentLength &&
               head.content_length > *x.route->config().max_body_bytes) {
      x.status = 413;
      WriteLocalResponse(down, 413, "request body too large\n", true, {}, x.head_request);
      keep = false;
    } else if (!x.route->config().cluster && x.route->config().split.empty()) {
      keep = co_await AnswerLocally(x);
    } else {
      uint64_t draw = RandomDraw();
      if (x.route->config().split_hash_header) {
        std::optional<std::string_view> unit =
            head.fields.Get(*x.route->config().split_hash_header);
        if (unit) draw = mesh::HashKey(*unit);
      }
      const std::string& cluster_name = x.route->PickCluster(draw);
      auto it = x.snapshot->clusters.find(cluster_name);
      if (it == x.snapshot->clusters.end()) {
        x.status = 503;
        WriteLocalResponse(down, 503, absl::StrCat("cluster ", cluster_name, " is not defined\n"),
                           !x.client_keep_alive, {}, x.head_request);
        keep = x.client_keep_alive;
        if (keep && x.request_has_body) keep = co_await DiscardRequestBody(x);
      } else {
        x.cluster = it->second.get();
        keep = co_await Forward(x);
      }
    }
    ctx.counters->CountStatus(x.status);
    if (!keep || down->closed()) break;
    idle_timer.ArmAfter(ctx.loop, limits.idle_timeout);
    *ctx.idle = true;
  }
  // What was written leaves before the caller closes (bounded).
  net::Timer give_up([down] { down->Close(); });
  give_up.ArmAfter(ctx.loop, std::chrono::seconds(5));
  auto drained = co_await down->Drained();
  (void)drained;
}

}  // namespace capstan::gateway
