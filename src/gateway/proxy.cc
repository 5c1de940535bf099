#include "gateway/proxy.h"

#include <algorithm>
#include <functional>
#include <random>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/logging.h"
#include "gateway/experiment_routing.h"
#include "gateway/upstream_h2.h"
#include "net/http_router.h"
#include "net/wait_group.h"

namespace capstan::gateway {
namespace {

namespace http1 = net::http1;

// Output queued to the upstream beyond which the client's body is not read
// until it drains to the low mark.
constexpr size_t kHighWater = 1 << 20;
constexpr size_t kLowWater = 256 << 10;

// Fields that describe one hop, not the message (RFC 9110 §7.6.1), and are
// never forwarded; plus those the Connection field names.
constexpr std::string_view kHopByHop[] = {"connection", "keep-alive",        "proxy-connection",
                                          "te",         "transfer-encoding", "upgrade"};

void RemoveHopByHop(http1::HeaderFields* fields) {
  // Collect the Connection options first (views die with the fields).
  std::vector<std::string> named;
  for (const auto& f : *fields) {
    if (!absl::EqualsIgnoreCase(absl::string_view(f.name.data(), f.name.size()), "connection")) {
      continue;
    }
    for (absl::string_view token :
         absl::StrSplit(absl::string_view(f.value.data(), f.value.size()), ',')) {
      std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(token));
      if (!t.empty() && t != "close" && t != "keep-alive") named.push_back(std::move(t));
    }
  }
  for (std::string_view name : kHopByHop) fields->Remove(name);
  for (const std::string& name : named) fields->Remove(name);
}

void ApplyEdits(const HeaderEdits& edits, http1::HeaderFields* fields) {
  for (const std::string& name : edits.remove) fields->Remove(name);
  for (const auto& [name, value] : edits.set) fields->Set(name, value);
  for (const auto& [name, value] : edits.append) fields->Add(name, value);
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

bool RetryOn(const RetryPolicy& p, std::string_view condition) {
  return std::find(p.retry_on.begin(), p.retry_on.end(), condition) != p.retry_on.end();
}

// Whether the policy retries on some response status at all.
bool RetriesOnStatus(const RetryPolicy& p) {
  return RetryOn(p, "5xx") || RetryOn(p, "gateway-error") || RetryOn(p, "retriable-status");
}

// Whether `status` is one the policy retries on: any 5xx ("5xx"), 502/503/504
// ("gateway-error"), or one listed in `statuses` ("retriable-status").
bool RetryableStatus(const RetryPolicy& p, int status) {
  if (RetryOn(p, "5xx") && status >= 500 && status <= 599) return true;
  if (RetryOn(p, "gateway-error") && (status == 502 || status == 503 || status == 504)) {
    return true;
  }
  return RetryOn(p, "retriable-status") &&
         std::find(p.retriable_statuses.begin(), p.retriable_statuses.end(), status) !=
             p.retriable_statuses.end();
}

// Reads the rest of a request body the gateway answered itself, so the
// connection can carry the next request. False: close instead.
net::Task<bool> DiscardBody(DownstreamExchange& x) {
  size_t discarded = 0;
  while (true) {
    BodyEvent ev = co_await x.NextBody();
    if (ev.type == BodyEvent::kEnd) co_return true;
    if (ev.type == BodyEvent::kError) co_return false;
    discarded += ev.piece.size();
    // A large body is not worth reading just to keep the connection.
    if (discarded > (64 << 10)) co_return false;
  }
}

// Answers with `status` and, for a keep-alive client, reads away the body.
net::Task<bool> Local(DownstreamExchange& x, int status, std::string_view body,
                      std::string_view extra_name = {}, std::string_view extra_value = {}) {
  x.status = status;
  x.SendLocal(status, body, extra_name, extra_value);
  x.response_started = true;
  bool keep = x.request().keep_alive;
  if (keep && x.request().has_body) keep = co_await DiscardBody(x);
  co_return keep;
}

// The upstream request head: the client's, edited for forwarding.
struct UpstreamRequest {
  std::string method;
  std::string target;  // path (rewritten) and query
  std::string authority;
  // The fields to send: the client's, edited in place (HTTP/2 upstream), or
  // `ordered` (HTTP/1.1: Host first, framing last). The client's own stay
  // alive: the request's views point into their storage.
  http1::HeaderFields* fields;
  http1::HeaderFields ordered;
  bool chunked = false;  // HTTP/1.1 upstream: body length unknown
};

// Copies what `from` receives to `to` until `from` ends; then closes `to`
// so the other direction ends too.
net::Task<void> Pipe(net::Socket* from, net::Socket* to, net::WaitGroup* done) {
  while (true) {
    if (!from->input().empty()) {
      to->output().Append(std::move(from->input()));
      from->input().Clear();
      to->MarkWritten();
      if (to->pending_output() > kHighWater) {
        absl::Status st = co_await to->Drained(kLowWater);
        if (!st.ok()) break;
      }
    }
    absl::Status st = co_await from->ReadMore();
    if (!st.ok()) break;
  }
  // What was read leaves before the close (bounded by the caller's close).
  auto drained = co_await to->Drained();
  (void)drained;
  to->Close();
  from->Close();
  if (done != nullptr) done->Done();
}

// A tunnel between the client and the upstream (after 101).
net::Task<void> Tunnel(net::EventLoop* loop, net::Socket* down, net::Socket* up) {
  net::WaitGroup upward(loop);
  upward.Add();
  loop->StartOwned(Pipe(down, up, &upward));
  co_await Pipe(up, down, nullptr);
  co_await upward.Wait();
}

// One attempt over HTTP/1.1: request out, response back. kRetry: nothing
// of the request body was consumed and nothing received, so another
// attempt is safe (policy decides whether it is made).
net::Task<Outcome> ForwardHttp1(DownstreamContext& ctx, DownstreamExchange& x, const Route& route,
                                UpstreamRequest& req, UpstreamConnection& conn, bool* reusable,
                                mesh::AttemptVerdict* verdict,
                                const std::function<bool(int)>& retry_on_status) {
  *reusable = false;
  *verdict = mesh::AttemptVerdict::kAbandoned;
  net::Socket* up = conn.socket.get();
  ProxyRequest& in = x.request();
  {
    http1::RequestHead head;
    head.method = req.method;
    head.target = req.target;
    head.version = http1::Version::kHttp11;
    head.fields = std::move(*req.fields);
    http1::WriteRequestHead(head, &up->output());
    *req.fields = std::move(head.fields);  // kept for a retry
  }
  up->MarkWritten();
  if (in.has_body) {
    while (true) {
      BodyEvent ev = co_await x.NextBody();
      if (ev.type == BodyEvent::kError) co_return Outcome::kFailed;
      if (ev.type == BodyEvent::kEnd) {
        if (req.chunked) {
          http1::AppendLastChunk(ev.trailers, &up->output());
          up->MarkWritten();
        }
        break;
      }
      if (req.chunked) {
        http1::AppendChunk(std::move(ev.piece), &up->output());
      } else {
        up->output().Append(std::move(ev.piece));
      }
      up->MarkWritten();
      if (up->pending_output() > kHighWater) {
        absl::Status st = co_await up->Drained(kLowWater);
        if (!st.ok()) break;  // the response read below says what happened
      }
    }
  }
  // The response, under the route's timeout.
  bool timed_out = false;
  net::Timer deadline([&timed_out, up] {
    timed_out = true;
    up->Close();
  });
  if (route.config().timeout.count() > 0) deadline.ArmAfter(ctx.loop, route.config().timeout);
  // The route's idle_timeout: the upstream may go quiet at most this long
  // between bytes (a streaming response); then it is cut as a timeout.
  const Duration idle_limit = route.config().idle_timeout;
  net::Timer idle([&timed_out, up] {
    timed_out = true;
    up->Close();
  });
  if (idle_limit.count() > 0) idle.ArmAfter(ctx.loop, idle_limit);
  // The retry policy's per_try_timeout: this attempt's answer must start
  // within it; past it the attempt is abandoned and, as a 504 would be,
  // retried when the policy says so (else the client gets the 504).
  const Duration per_try = route.config().retry.per_try_timeout;
  bool per_try_expired = false;
  net::Timer per_try_timer([&timed_out, &per_try_expired, up] {
    timed_out = per_try_expired = true;
    up->Close();
  });
  if (per_try.count() > 0) per_try_timer.ArmAfter(ctx.loop, per_try);
  // A client that goes away ends the wait (HTTP/2: its stream is reset).
  // That is no failure of the upstream's: its breaker is not told.
  bool client_gone = false;
  x.cancel_upstream = [up, &client_gone] {
    client_gone = true;
    up->Close();
  };
  struct ClearCancel {
    DownstreamExchange& x;
    ~ClearCancel() { x.cancel_upstream = nullptr; }
  } clear_cancel{x};
  http1::ResponseParser rp;
  rp.SetRequestMethod(req.method);
  bool received_any = false;
  bool has_body = false;
  while (true) {
    http1::Event ev = rp.Next(&up->input());
    if (ev.type == http1::Event::kNeedMore) {
      absl::Status st = co_await up->ReadMore();
      if (st.ok()) {
        received_any = true;
        if (idle_limit.count() > 0) idle.ArmAfter(ctx.loop, idle_limit);
        continue;
      }
      ev = rp.Finish(up->input());
      if (ev.type != http1::Event::kComplete) {
        if (client_gone) co_return Outcome::kFailed;  // abandoned: no verdict
        // The upstream went away (or timed out) before the response ended.
        *verdict = mesh::AttemptVerdict::kEndpointFailure;
        if (x.response_started) {
          x.Abort();
          co_return Outcome::kFailed;
        }
        if (per_try_expired && retry_on_status && retry_on_status(504)) {
          *verdict = mesh::AttemptVerdict::kEndpointFailure;
          co_return Outcome::kRetry;
        }
        if (timed_out) {
          x.status = 504;
          x.SendLocal(504, "upstream timed out\n");
          x.response_started = true;
          co_return Outcome::kDone;
        }
        ctx.counters->resets.fetch_add(1, std::memory_order_relaxed);
        if (!received_any && !in.has_body) co_return Outcome::kRetry;
        x.status = 502;
        x.SendLocal(502, "upstream closed the connection\n");
        x.response_started = true;
        co_return Outcome::kDone;
      }
    }
    switch (ev.type) {
      case http1::Event::kHead: {
        http1::ResponseHead& h = rp.head();
        if (h.status >= 100 && h.status < 200 && !h.switched_protocols) break;  // interim
        per_try_timer.Cancel();
        // A status the route retries on, with an attempt left: this answer
        // is dropped (nothing of it reached the client) and the caller tries
        // again; the connection, its body unread, is not reused.
        if (retry_on_status && retry_on_status(h.status)) {
          *verdict = h.status >= 500 ? mesh::AttemptVerdict::kEndpointFailure
                                     : mesh::AttemptVerdict::kRequestFailure;
          co_return Outcome::kRetry;
        }
        x.status = h.status;
        std::optional<std::string> upgrade_answer;
        if (h.switched_protocols) {
          if (std::optional<std::string_view> u = h.fields.Get("upgrade"))
            upgrade_answer = std::string(*u);
        }
        std::optional<uint64_t> length;
        if (h.framing == http1::Framing::kContentLength) length = h.content_length;
        has_body = h.framing != http1::Framing::kNone;
        RemoveHopByHop(&h.fields);
        if (upgrade_answer) h.fields.Add("upgrade", *upgrade_answer);
        EditResponseHead(ctx, x, route, &h.fields);
        x.response_started = true;
        if (h.switched_protocols && x.TunnelSocket() != nullptr && h.status == 101) {
          // The upstream agreed to switch: from here on bytes pass as they
          // are, both ways, until either side closes.
          deadline.Cancel();
          idle.Cancel();
          std::string out = "HTTP/1.1 101 Switching Protocols\r\n";
          for (const auto& field : h.fields) {
            absl::StrAppend(&out, std::string(field.name), ": ", std::string(field.value), "\r\n");
          }
          absl::StrAppend(&out, "connection: upgrade\r\n\r\n");
          net::Socket* down = x.TunnelSocket();
          down->Write(std::string_view(out));
          co_await Tunnel(ctx.loop, down, up);
          co_return Outcome::kFailed;  // the connection ends with the tunnel
        }
        if (!x.SendHead(h.status, h.fields, has_body, length)) co_return Outcome::kFailed;
        break;
      }
      case http1::Event::kBody: {
        bool ok = co_await x.SendBody(std::move(ev.body));
        if (!ok) co_return Outcome::kFailed;
        break;
      }
      case http1::Event::kComplete:
        x.End(has_body ? &rp.trailers() : nullptr);
        // A 5xx says something about the endpoint (breaker, outliers).
        *verdict = x.status >= 500 ? mesh::AttemptVerdict::kEndpointFailure
                                   : mesh::AttemptVerdict::kSuccess;
        *reusable =
            rp.head().keep_alive && rp.head().framing != http1::Framing::kUntilClose && !timed_out;
        co_return Outcome::kDone;
      case http1::Event::kError:
        *verdict = mesh::AttemptVerdict::kEndpointFailure;
        CAPSTAN_LOG(warn, "gateway: bad response from upstream", "endpoint",
                    conn.endpoint->endpoint.id, "error", rp.error().reason);
        if (x.response_started) {
          x.Abort();
          co_return Outcome::kFailed;
        }
        x.status = 502;
        x.SendLocal(502, "bad response from upstream\n");
        x.response_started = true;
        co_return Outcome::kDone;
      default:
        break;
    }
  }
}

// Forwards to the route's cluster. Returns keep-alive.
net::Task<bool> Forward(DownstreamContext& ctx, DownstreamExchange& x, const Route& route,
                        Cluster& cluster) {
  ProxyRequest& in = x.request();
  const RouteConfig& rc = route.config();
  ClusterLoop& cl = cluster.on(ctx.loop_index);
  const ClusterLimits& limits = cluster.config().limits;
  if (cl.active_requests >= static_cast<int>(limits.max_requests)) {
    co_return co_await Local(x, 503, "cluster overloaded\n", "x-capstan-overflow", "max_requests");
  }
  UpstreamRequest req;
  req.method = std::string(in.method);
  req.target = in.asterisk ? "*" : route.RewritePath(in.path);
  if (!in.query.empty()) absl::StrAppend(&req.target, "?", std::string(in.query));
  req.authority = std::string(in.authority);
  req.fields = in.fields;
  http1::HeaderFields& f = *in.fields;
  // A WebSocket (or other) upgrade keeps its Upgrade field, and becomes a
  // tunnel when the upstream answers 101.
  std::string upgrade;
  if (in.upgrade && x.TunnelSocket() != nullptr) {
    if (std::optional<std::string_view> u = f.Get("upgrade")) upgrade = std::string(*u);
    // "h2c" asks this hop to switch to HTTP/2; it is not the upstream's to
    // answer. Not supported yet: the request is served over HTTP/1.1, which
    // RFC 9110 §7.8 allows (the client must accept a non-101 answer).
    if (absl::AsciiStrToLower(absl::string_view(upgrade.data(), upgrade.size())).find("h2c") !=
        std::string::npos) {
      upgrade.clear();
    }
  }
  RemoveHopByHop(&f);
  if (!upgrade.empty()) {
    f.Add("connection", "upgrade");
    f.Add("upgrade", upgrade);
  }
  f.Remove("expect");  // 100-continue is answered here
  f.Remove("host");
  f.Remove("content-length");
  const GatewayConfig& gc = (*ctx.snapshot)->config;
  if (gc.add_x_forwarded) {
    std::optional<std::string_view> xff = f.Get("x-forwarded-for");
    std::string forwarded_for =
        xff ? absl::StrCat(std::string(*xff), ", ", ctx.client_address) : ctx.client_address;
    f.Set("x-forwarded-for", forwarded_for);
    f.Set("x-forwarded-proto", ctx.tls ? "https" : "http");
    f.Set("x-forwarded-host", req.authority);
  }
  if (!gc.request_id_header.empty()) {
    std::optional<std::string_view> id = f.Get(gc.request_id_header);
    if (id) {
      x.request_id = std::string(*id);
    } else {
      x.request_id = NewRequestId();
      f.Set(gc.request_id_header, x.request_id);
    }
  }
  if (gc.add_via) f.Add("via", in.http2 ? "2 capstan" : "1.1 capstan");
  ApplyEdits(rc.request_headers, &f);
  if (rc.host_rewrite) req.authority = *rc.host_rewrite;
  bool h2_upstream = cluster.config().protocol == "h2";
  if (!h2_upstream) {
    // Host first, as HTTP/1.1 wants it; the body's framing last.
    http1::HeaderFields& ordered = req.ordered;
    ordered.Add("host", req.authority);
    for (const auto& field : f) ordered.Add(field.name, field.value);
    if (in.has_body) {
      if (in.content_length) {
        ordered.Add("content-length", absl::StrCat(*in.content_length));
      } else {
        ordered.Add("transfer-encoding", "chunked");
        req.chunked = true;
      }
    }
    req.fields = &ordered;
  } else if (in.grpc) {
    f.Set("te", "trailers");  // gRPC servers require it (hop-by-hop removal took it)
  }
  // The client asked to be told when to send its body: now.
  if (in.expect_continue && in.has_body) x.SendContinue();

  const RetryPolicy& retry = rc.retry;
  bool may_retry = retry.non_idempotent || IsIdempotent(req.method);
  std::vector<std::shared_ptr<PooledEndpoint>> tried;
  uint64_t hash = 0;
  const std::string& hash_on = cluster.config().hash_on;
  if (hash_on.starts_with("header:")) {
    std::optional<std::string_view> v = req.fields->Get(std::string_view(hash_on).substr(7));
    hash = mesh::HashKey(v ? *v : std::string_view());
  } else if (hash_on.starts_with("cookie:")) {
    // Without the cookie (a first visit) the client's address keeps the
    // request on one endpoint all the same.
    std::optional<std::string_view> v = req.fields->Cookie(std::string_view(hash_on).substr(7));
    hash = mesh::HashKey(v ? *v : std::string_view(ctx.client_address));
  } else {
    hash = mesh::HashKey(ctx.client_address);
  }
  ClusterStats* cstats = nullptr;
  if (auto it = (*ctx.snapshot)->cluster_stats.find(cluster.name());
      it != (*ctx.snapshot)->cluster_stats.end()) {
    cstats = it->second;
    cstats->requests->Inc();
  }
  mesh::EndpointPool<EndpointConnections>& pool = cl.pool();
  ++cl.active_requests;
  struct Active {
    ClusterLoop& cl;
    ~Active() { --cl.active_requests; }
  } active{cl};
  // Whether another attempt may follow a failed one: the route's policy
  // first, then the pool's retry budget and back-off (mesh decides).
  auto another = [&](int attempt, bool allowed, bool not_processed) -> mesh::RetryDecision {
    if (!allowed || attempt >= retry.max_attempts) return {};
    mesh::RetryDecision d = pool.DecideRetry(attempt, /*retryable=*/true, not_processed,
                                             mesh::PoolClock::time_point::max());
    if (d.retry) {
      pool.RecordRetry();
      ctx.counters->retries.fetch_add(1, std::memory_order_relaxed);
    }
    return d;
  };
  // Why the previous attempt failed, when it reached (or tried to reach) an
  // endpoint: a retry that then finds no endpoint to try (the one that
  // failed now ejected or behind an open breaker) answers with that failure
  // (502), not 503 — the request was tried, and that is what happened.
  std::string_view last_failure;
  for (int attempt = 1;; ++attempt) {
    std::shared_ptr<PooledEndpoint> endpoint = cl.Pick(hash, tried);
    if (endpoint == nullptr) {
      if (!last_failure.empty()) co_return co_await Local(x, 502, last_failure);
      co_return co_await Local(
          x, 503, cl.has_endpoints() ? "no healthy upstream\n" : "no upstream endpoints\n");
    }
    tried.push_back(endpoint);
    x.upstream = endpoint->endpoint.id;
    mesh::PoolClock::time_point started = pool.BeginAttempt(*endpoint);
    if (h2_upstream) {
      mesh::AttemptVerdict verdict = mesh::AttemptVerdict::kAbandoned;
      Outcome r = co_await ForwardHttp2(ctx, x, route, cluster, endpoint, req.method, req.target,
                                        req.authority, *req.fields, &verdict);
      pool.EndAttempt(*endpoint, verdict, started);
      if (r == Outcome::kRetry) {
        mesh::RetryDecision d = another(attempt, may_retry, /*not_processed=*/true);
        last_failure = "upstream unreachable\n";
        if (d.retry) continue;
        co_return co_await Local(x, 502, "upstream unreachable\n");
      }
      co_return r == Outcome::kDone&& in.keep_alive;
    }
    auto conn = co_await cl.Acquire(endpoint);
    if (!conn.ok()) {
      if (conn.status().code() == absl::StatusCode::kResourceExhausted) {
        pool.EndAttempt(*endpoint, mesh::AttemptVerdict::kAbandoned, started);
        // The limit's name: max_pending_requests, or max_connections when
        // the wait for a busy pool's connection ran out.
        std::string limit(conn.status().message());
        co_return co_await Local(x, 503, "cluster overloaded\n", "x-capstan-overflow", limit);
      }
      pool.EndAttempt(*endpoint, mesh::AttemptVerdict::kEndpointFailure, started);
      ctx.counters->connect_failures.fetch_add(1, std::memory_order_relaxed);
      if (cstats != nullptr) cstats->connect_failures->Inc();
      CAPSTAN_LOG(debug, "gateway: upstream connect failed", "endpoint", endpoint->endpoint.id,
                  "error", std::string(conn.status().message()));
      // Nothing was sent: a connect failure is safe to retry for any method.
      mesh::RetryDecision d =
          another(attempt, RetryOn(retry, "connect-failure"), /*not_processed=*/true);
      last_failure = "upstream unreachable\n";
      if (d.retry) {
        if (d.backoff > mesh::PoolClock::duration::zero()) co_await ctx.loop->Sleep(d.backoff);
        continue;
      }
      co_return co_await Local(x, 502, "upstream unreachable\n");
    }
    conn->socket->set_input_limit(
        in.http2 ? kUpstreamReadAheadForHttp2 : kUpstreamReadAheadForHttp1,
        /*exact=*/true);
    bool reused = conn->requests > 0;
    bool reusable = false;
    mesh::AttemptVerdict verdict = mesh::AttemptVerdict::kAbandoned;
    // Retries on a response status: only for a request that can be sent
    // again whole (no body consumed) and while attempts and budget last.
    bool status_retried = false;
    std::function<bool(int)> retry_on_status;
    if (RetriesOnStatus(retry) && !in.has_body && may_retry && attempt < retry.max_attempts) {
      retry_on_status = [&, attempt](int status) {
        if (!RetryableStatus(retry, status)) return false;
        status_retried = another(attempt, true, /*not_processed=*/false).retry;
        return status_retried;
      };
    }
    Outcome r =
        co_await ForwardHttp1(ctx, x, route, req, *conn, &reusable, &verdict, retry_on_status);
    if (status_retried) {
      cl.Release(std::move(*conn), /*reusable=*/false);
      pool.EndAttempt(*endpoint, verdict, started);
      continue;
    }
    cl.Release(std::move(*conn), reusable);
    if (r == Outcome::kRetry && reused && IsIdempotent(req.method)) {
      // The keep-alive race (an idle connection closed as we sent): the
      // endpoint itself may be fine; a fresh connection, at once.
      pool.EndAttempt(*endpoint, mesh::AttemptVerdict::kAbandoned, started);
      tried.pop_back();
      ctx.counters->retries.fetch_add(1, std::memory_order_relaxed);
      last_failure = "upstream closed the connection\n";
      continue;
    }
    pool.EndAttempt(*endpoint, verdict, started);
    if (r != Outcome::kDone && cstats != nullptr) cstats->resets->Inc();
    if (r == Outcome::kRetry) {
      mesh::RetryDecision d = another(attempt, may_retry && RetryOn(retry, "reset"),
                                      /*not_processed=*/false);
      last_failure = "upstream closed the connection\n";
      if (d.retry) {
        if (d.backoff > mesh::PoolClock::duration::zero()) co_await ctx.loop->Sleep(d.backoff);
        continue;
      }
      co_return co_await Local(x, 502, "upstream closed the connection\n");
    }
    co_return r == Outcome::kDone&& in.keep_alive;
  }
}

// A route that does not forward.
net::Task<bool> AnswerLocally(DownstreamContext& ctx, DownstreamExchange& x, const Route& route) {
  const RouteConfig& rc = route.config();
  ProxyRequest& in = x.request();
  if (rc.direct_response) {
    x.status = rc.direct_response->status;
    http1::HeaderFields fields;
    fields.Add("content-type", rc.direct_response->content_type);
    x.response_started = true;
    bool has_body = in.method != "HEAD";
    if (x.SendHead(x.status, fields, has_body, rc.direct_response->body.size()) && has_body) {
      bool ok = co_await x.SendBody(net::Buffer(rc.direct_response->body));
      if (ok) x.End(nullptr);
    } else if (!has_body) {
      x.End(nullptr);
    }
    bool keep = in.keep_alive;
    if (keep && in.has_body) keep = co_await DiscardBody(x);
    co_return keep;
  }
  const Redirect& r = *rc.redirect;
  std::string scheme = r.scheme.value_or(ctx.tls ? "https" : "http");
  std::string host = r.host.value_or(NormalizeHost(in.authority));
  std::string location = absl::StrCat(scheme, "://", host);
  if (r.port) absl::StrAppend(&location, ":", *r.port);
  if (r.path) {
    absl::StrAppend(&location, *r.path);
  } else if (r.prefix_rewrite && rc.match.prefix) {
    absl::StrAppend(&location, *r.prefix_rewrite,
                    std::string(in.path.substr(std::min(rc.match.prefix->size(), in.path.size()))));
  } else {
    absl::StrAppend(&location, std::string(in.path));
  }
  if (!r.strip_query && !in.query.empty()) absl::StrAppend(&location, "?", std::string(in.query));
  co_return co_await Local(x, r.status, "", "location", location);
}

}  // namespace

namespace {

// One access log line (JSON) with the configured fields.
std::string AccessLine(const GatewayConfig& gc, const DownstreamContext& ctx,
                       const DownstreamExchange& x, const ProxyRequest& in, const Route* route,
                       double millis) {
  std::string line = "{";
  bool first = true;
  auto add = [&](std::string_view key, const std::string& json_value) {
    absl::StrAppend(&line, first ? "\"" : ", \"", std::string(key), "\": ", json_value);
    first = false;
  };
  auto str = [](std::string_view v) { return net::JsonQuote(v); };
  for (const std::string& field : gc.access_log.fields) {
    if (field == "time") {
      add(field, str(absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone())));
    } else if (field == "client") {
      add(field, str(ctx.client_address));
    } else if (field == "method") {
      add(field, str(in.method));
    } else if (field == "authority") {
      add(field, str(in.authority));
    } else if (field == "path") {
      add(field, str(in.path));
    } else if (field == "query") {
      add(field, str(in.query));
    } else if (field == "protocol") {
      add(field, str(in.http2 ? "HTTP/2" : in.http10 ? "HTTP/1.0" : "HTTP/1.1"));
    } else if (field == "status") {
      add(field, absl::StrCat(x.status));
    } else if (field == "bytes_sent") {
      add(field, absl::StrCat(x.bytes_sent));
    } else if (field == "duration_ms") {
      add(field, absl::StrFormat("%.3f", millis));
    } else if (field == "upstream") {
      add(field, str(x.upstream));
    } else if (field == "route") {
      add(field, str(route != nullptr ? route->label() : ""));
    } else if (field == "request_id") {
      add(field, str(x.request_id));
    }
  }
  line += "}";
  return line;
}

}  // namespace

void EditResponseHead(const DownstreamContext& ctx, const DownstreamExchange& x, const Route& route,
                      http1::HeaderFields* fields) {
  ApplyEdits(route.config().response_headers, fields);
  if (ctx.snapshot->get()->config.add_via) fields->Add("via", "1.1 capstan");
  for (const auto& [name, value] : x.extra_response_fields) fields->Add(name, value);
}

net::Task<bool> HandleRequest(DownstreamContext& ctx, DownstreamExchange& x) {
  ctx.counters->requests.fetch_add(1, std::memory_order_relaxed);
  auto started = std::chrono::steady_clock::now();
  std::shared_ptr<const Snapshot> snapshot = *ctx.snapshot;  // held for the request's life
  ProxyRequest& in = x.request();
  std::string host = NormalizeHost(in.authority);
  http1::HeaderFields* fields = in.fields;
  auto lookup = [fields](std::string_view name) { return fields->Get(name); };
  RequestView view{host, in.method, in.path, in.query, lookup};
  const Route* route = snapshot->routes->Match(view);
  bool keep;
  ExperimentRouting::Decision experiment;  // a route splitting by experiment
  if (route == nullptr) {
    keep = co_await Local(x, 404, "no route\n");
  } else if (route->config().max_body_bytes && in.content_length &&
             *in.content_length > *route->config().max_body_bytes) {
    x.status = 413;
    x.SendLocal(413, "request body too large\n");
    x.response_started = true;
    keep = false;
  } else if (!route->config().cluster && route->config().split.empty() &&
             !route->config().experiment) {
    keep = co_await AnswerLocally(ctx, x, *route);
  } else {
    const std::string* cluster = nullptr;
    if (const std::optional<ExperimentRoute>& e = route->config().experiment; e.has_value()) {
      cluster = &e->default_cluster;
      if (ctx.experiments != nullptr) {
        experiment = ctx.experiments->Assign(*e, fields);
        cluster = experiment.cluster;
        if (experiment.new_unit) {
          x.extra_response_fields.emplace_back("set-cookie",
                                               ctx.experiments->SetCookieValue(*e, experiment));
        }
      }
    } else {
      uint64_t draw = RandomDraw();
      if (route->config().split_hash_header) {
        std::optional<std::string_view> unit = fields->Get(*route->config().split_hash_header);
        if (unit) draw = mesh::HashKey(*unit);
      }
      cluster = &route->PickCluster(draw);
    }
    const std::string& cluster_name = *cluster;
    auto it = snapshot->clusters.find(cluster_name);
    if (it == snapshot->clusters.end()) {
      keep = co_await Local(x, 503, absl::StrCat("cluster ", cluster_name, " is not defined\n"));
    } else {
      keep = co_await Forward(ctx, x, *route, *it->second);
    }
  }
  ctx.counters->CountStatus(x.status);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (route != nullptr && route->index() < snapshot->route_stats.size()) {
    snapshot->route_stats[route->index()]->Record(x.status, seconds);
  }
  if (!experiment.variant.empty()) {
    ctx.experiments->RecordOutcome(*route->config().experiment, experiment, x.status,
                                   seconds * 1000, x.bytes_sent);
  }
  if (ctx.access_log != nullptr) {
    ctx.access_log->Write(AccessLine(snapshot->config, ctx, x, in, route, seconds * 1000));
  }
  co_return keep;
}

}  // namespace capstan::gateway
