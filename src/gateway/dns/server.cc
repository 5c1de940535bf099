#include "gateway/dns/server.h"

#include <time.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/block_on.h"

namespace capstan::gateway::dns {

struct DnsServer::LoopState {
  net::EventLoop* loop = nullptr;
  std::unique_ptr<net::Listener> listener;
  std::vector<std::weak_ptr<net::Socket>> connections;
};

// One UDP socket and what its coroutine answers with; touched only on the
// socket's loop (Start and Stop reach it through RunOn).
struct DnsServer::UdpState {
  std::unique_ptr<net::UdpSocket> socket;
  std::unique_ptr<net::UdpBatch> batch = std::make_unique<net::UdpBatch>();
  std::unique_ptr<uint8_t[]> replies;  // kBatch slots of max_udp_payload bytes
  std::unique_ptr<ResponseRateLimiter> rrl;
  // With udp_latency_metrics: this socket's histograms (in the counters).
  Counters::UdpLatencyHistograms* latency = nullptr;
};

namespace {

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

// The clock of the kernel's SO_TIMESTAMPNS arrival times.
int64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DnsServer>> DnsServer::Start(DnsServerOptions options,
                                                            net::LoopGroup* loops,
                                                            std::shared_ptr<const ZoneSet> zones) {
  // With port 0 the UDP socket picks a port, and TCP may find it taken (a
  // client's ephemeral port is from the same range): pick again.
  int attempts = options.port == 0 ? 10 : 1;
  absl::StatusOr<std::unique_ptr<DnsServer>> server;
  for (int i = 0; i < attempts; ++i) {
    server = StartOnce(options, loops, zones);
    if (server.ok() || !absl::IsUnavailable(server.status())) break;
  }
  return server;
}

absl::StatusOr<std::unique_ptr<DnsServer>> DnsServer::StartOnce(
    DnsServerOptions options, net::LoopGroup* loops, std::shared_ptr<const ZoneSet> zones) {
  if (options.udp_sockets < 0) return absl::InvalidArgumentError("dns: udp_sockets must be >= 0");
  if (options.udp_answer_slice < 1 || options.udp_answer_slice > net::UdpBatch::kBatch) {
    return absl::InvalidArgumentError(
        absl::StrCat("dns: udp_answer_slice must be within 1..", net::UdpBatch::kBatch));
  }
  if (options.answer.max_udp_payload < 512 || options.answer.max_udp_payload > 4096) {
    return absl::InvalidArgumentError("dns: max_udp_payload must be within 512..4096");
  }
  std::unique_ptr<DnsServer> server(new DnsServer(std::move(options), loops));
  DnsServer* s = server.get();
  s->zones_ = zones != nullptr ? std::move(zones) : std::make_shared<const ZoneSet>();
  const DnsServerOptions& o = s->options_;
  int udp_sockets = o.udp_sockets == 0 ? loops->size() : std::min(o.udp_sockets, loops->size());
  // The first socket picks the port when asked for 0; the others and the
  // TCP listeners take the same.
  int port = o.port;
  for (int i = 0; i < udp_sockets; ++i) {
    auto state = std::make_unique<UdpState>();
    ASSIGN_OR_RETURN(state->socket,
                     net::UdpSocket::Bind(loops->loop(i), o.host, port, /*reuse_port=*/true));
    port = state->socket->port();
    state->replies.reset(new uint8_t[net::UdpBatch::kBatch * o.answer.max_udp_payload]);
    state->rrl = std::make_unique<ResponseRateLimiter>(o.rrl);
    if (o.udp_latency_metrics) {
      RETURN_IF_ERROR(state->socket->EnableArrivalTimes());
      s->counters_->udp_latency.push_back(std::make_unique<Counters::UdpLatencyHistograms>());
      state->latency = s->counters_->udp_latency.back().get();
    }
    s->udp_states_.push_back(std::move(state));
  }
  s->port_ = port;
  for (int i = 0; i < loops->size(); ++i) {
    auto state = std::make_unique<LoopState>();
    state->loop = loops->loop(i);
    LoopState* raw = state.get();
    s->loop_states_.push_back(std::move(state));
    absl::Status st;
    net::RunOn(raw->loop, [&] {
      auto listener = net::Listener::Bind(raw->loop, o.host, port, /*reuse_port=*/true);
      if (!listener.ok()) {
        st = listener.status();
        return;
      }
      raw->listener = std::move(listener).value();
      {
        std::lock_guard lock(s->tasks_mu_);
        ++s->tasks_;
      }
      raw->loop->StartOwned(s->AcceptLoop(raw));
    });
    if (!st.ok()) {
      server->Stop();
      return absl::UnavailableError(absl::StrCat("dns: TCP listener on ", o.host, ":", port, ": ",
                                                 std::string(st.message())));
    }
  }
  for (auto& state : s->udp_states_) {
    UdpState* raw = state.get();
    {
      std::lock_guard lock(s->tasks_mu_);
      ++s->tasks_;
    }
    net::EventLoop* loop = raw->socket->loop();
    net::RunOn(loop, [s, raw, loop] { loop->StartOwned(s->ServeUdp(raw)); });
  }
  CAPSTAN_LOG(info, "dns server listening", "address", absl::StrCat(o.host, ":", port),
              "udp_sockets", udp_sockets, "loops", loops->size());
  return server;
}

void DnsServer::SetZones(std::shared_ptr<const ZoneSet> zones) {
  std::lock_guard lock(zones_mu_);
  zones_ = std::move(zones);
  zones_generation_.fetch_add(1, std::memory_order_release);
}

std::shared_ptr<const ZoneSet> DnsServer::zones() const {
  std::lock_guard lock(zones_mu_);
  return zones_;
}

void DnsServer::Count(const AnswerResult& r) {
  if (r.truncated) counters_->truncated.fetch_add(1, std::memory_order_relaxed);
  if (r.rcode == kRcodeNxDomain) counters_->nxdomain.fetch_add(1, std::memory_order_relaxed);
  if (r.rcode == kRcodeRefused) counters_->refused.fetch_add(1, std::memory_order_relaxed);
}

void DnsServer::AnswerUdp(UdpState* state, const ZoneSet& zones, int i, uint64_t now) {
  net::UdpBatch* batch = state->batch.get();
  if (batch->truncated(i)) return;  // larger than any query we answer
  const size_t reply_size = options_.answer.max_udp_payload;
  uint8_t* out = state->replies.get() + static_cast<size_t>(i) * reply_size;
  AnswerResult r = Answer(zones, batch->datagram(i), Transport::kUdp, options_.answer, out);
  if (r.size == 0) return;
  Count(r);
  ResponseRateLimiter& rrl = *state->rrl;
  if (rrl.enabled()) {
    switch (rrl.Check(batch->peer(i), now)) {
      case ResponseRateLimiter::Verdict::kSend:
        break;
      case ResponseRateLimiter::Verdict::kDrop:
        counters_->rrl_dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      case ResponseRateLimiter::Verdict::kSlip:
        counters_->rrl_slipped.fetch_add(1, std::memory_order_relaxed);
        r.size = TruncatedResponse(batch->datagram(i), out, reply_size);
        break;
    }
  }
  batch->SetReply(i, out, r.size);
}

net::Task<void> DnsServer::ServeUdp(UdpState* state) {
  net::UdpSocket* socket = state->socket.get();
  net::UdpBatch* batch = state->batch.get();
  const int slice = options_.udp_answer_slice;
  Counters::UdpLatencyHistograms* latency = state->latency;
  std::shared_ptr<const ZoneSet> zones;
  uint64_t generation = ~uint64_t{0};
  // A batch of fewer than 64 emptied the socket a moment ago: wait for it
  // to be readable rather than ask recvmmsg again for nothing (a system call
  // saved per wake-up at light load; the wait ends at once if more came).
  bool drained = false;
  while (!socket->closed()) {
    if (drained) {
      auto readable = socket->Readable();
      absl::Status st = co_await readable;
      if (!st.ok()) {
        if (!socket->closed()) CAPSTAN_LOG(err, "dns udp: wait failed", "error", st.ToString());
        break;
      }
    }
    int n = socket->Receive(batch);
    drained = n < net::UdpBatch::kBatch;
    if (n == 0) continue;
    int64_t read_at = latency != nullptr ? RealtimeNs() : 0;
    uint64_t g = zones_generation_.load(std::memory_order_acquire);
    if (g != generation) {
      std::lock_guard lock(zones_mu_);
      zones = zones_;
      generation = zones_generation_.load(std::memory_order_relaxed);
    }
    uint64_t now = state->rrl->enabled() ? MonotonicNs() : 0;
    // Answer a slice, send it, answer the next: the first answers of a
    // large batch leave before the last are computed.
    for (int begin = 0; begin < n && !socket->closed(); begin += slice) {
      int end = std::min(n, begin + slice);
      for (int i = begin; i < end; ++i) AnswerUdp(state, *zones, i, now);
      socket->Send(batch, begin, end);
      // A full send buffer: wait for room rather than drop answers already
      // computed (the kernel drains it at line rate).
      while (batch->unsent() > 0) {
        auto writable = socket->Writable();
        absl::Status st = co_await writable;
        if (!st.ok()) {
          batch->DropUnsent();  // closed: nothing more goes out
          break;
        }
        socket->SendMore(batch);
      }
      if (latency != nullptr) {
        int64_t sent_at = RealtimeNs();
        for (int i = begin; i < end; ++i) {
          int64_t arrived = batch->arrival_ns(i);
          if (arrived != 0) latency->socket_wait.Record(read_at - arrived);
          latency->in_server.Record(sent_at - read_at);
        }
      }
    }
    // Counted once answered, so a reader that sees the count sees the answers sent.
    counters_->udp_batches.fetch_add(1, std::memory_order_relaxed);
    counters_->udp_queries.fetch_add(static_cast<uint64_t>(n), std::memory_order_release);
    if (!drained) {
      // More may be waiting: let the loop's other sockets and timers have
      // this turn first.
      auto yield = state->socket->loop()->Yield();
      co_await yield;
    }
  }
  TaskEnded();
}

net::Task<void> DnsServer::AcceptLoop(LoopState* state) {
  while (true) {
    auto accepted = co_await state->listener->Accept();
    if (!accepted.ok()) break;  // closed by Stop
    std::shared_ptr<net::Socket> socket = std::move(accepted).value();
    if (tcp_connections_.load(std::memory_order_relaxed) >= options_.max_tcp_connections) {
      counters_->tcp_connections_refused.fetch_add(1, std::memory_order_relaxed);
      socket->Close();
      continue;
    }
    std::erase_if(state->connections, [](const auto& c) { return c.expired(); });
    state->connections.push_back(socket);
    {
      std::lock_guard lock(tasks_mu_);
      ++tasks_;
    }
    tcp_connections_.fetch_add(1, std::memory_order_relaxed);
    state->loop->StartOwned(ServeTcp(state, std::move(socket)));
  }
  TaskEnded();
}

net::Task<void> DnsServer::ServeTcp(LoopState* state, std::shared_ptr<net::Socket> socket) {
  socket->set_input_limit(2 + kMaxMessage + 1);
  net::Timer idle([raw = socket.get()] { raw->Close(); });
  std::unique_ptr<uint8_t[]> out(new uint8_t[2 + kMaxMessage]);
  std::string scratch;
  bool open = true;
  while (open) {
    idle.ArmAfter(state->loop, options_.tcp_idle_timeout);
    net::Buffer& in = socket->input();
    // The two-byte length, then the message.
    size_t need = 2;
    while (open) {
      if (in.size() >= 2) {
        char len[2];
        in.CopyTo(len, 2);
        need = 2 + ((static_cast<uint8_t>(len[0]) << 8) | static_cast<uint8_t>(len[1]));
        if (in.size() >= need) break;
      }
      absl::Status st = co_await socket->ReadMore();
      if (!st.ok()) open = false;
    }
    if (!open) break;
    in.Consume(2);
    std::string_view query = in.Peek(need - 2, &scratch);
    std::shared_ptr<const ZoneSet> zones = this->zones();
    AnswerResult r = Answer(*zones, query, Transport::kTcp, options_.answer, out.get() + 2);
    in.Consume(need - 2);
    counters_->tcp_queries.fetch_add(1, std::memory_order_relaxed);
    if (r.size == 0) break;  // not a query: end the connection
    Count(r);
    out[0] = static_cast<uint8_t>(r.size >> 8);
    out[1] = static_cast<uint8_t>(r.size);
    socket->Write(std::string_view(reinterpret_cast<char*>(out.get()), r.size + 2));
    // Back-pressure: a client that does not read its answers stops being read.
    if (socket->pending_output() > (256 << 10)) {
      absl::Status st = co_await socket->Drained(64 << 10);
      if (!st.ok()) break;
    }
  }
  idle.Cancel();
  if (!socket->closed()) {
    co_await socket->Drained();
    socket->Close();
  }
  tcp_connections_.fetch_sub(1, std::memory_order_relaxed);
  TaskEnded();
}

void DnsServer::TaskEnded() {
  std::lock_guard lock(tasks_mu_);
  if (--tasks_ == 0) tasks_done_.notify_all();
}

DnsUdpLatency DnsServer::Counters::UdpLatency() const {
  std::vector<const LatencyHistogram*> socket_wait, in_server;
  for (const auto& h : udp_latency) {
    socket_wait.push_back(&h->socket_wait);
    in_server.push_back(&h->in_server);
  }
  DnsUdpLatency l;
  for (const LatencyHistogram* h : in_server) l.count += h->count();
  l.socket_wait_p50 = LatencyHistogram::Quantile(socket_wait, 0.5);
  l.socket_wait_p99 = LatencyHistogram::Quantile(socket_wait, 0.99);
  l.socket_wait_p999 = LatencyHistogram::Quantile(socket_wait, 0.999);
  l.in_server_p50 = LatencyHistogram::Quantile(in_server, 0.5);
  l.in_server_p99 = LatencyHistogram::Quantile(in_server, 0.99);
  l.in_server_p999 = LatencyHistogram::Quantile(in_server, 0.999);
  return l;
}

DnsUdpLatency DnsServer::udp_latency() const { return counters_->UdpLatency(); }

DnsServerStats DnsServer::stats() const {
  const Counters& c = *counters_;
  return DnsServerStats{
      c.udp_queries.load(), c.udp_batches.load(), c.tcp_queries.load(),
      c.truncated.load(),   c.nxdomain.load(),    c.refused.load(),
      c.rrl_dropped.load(), c.rrl_slipped.load(), c.tcp_connections_refused.load()};
}

void DnsServer::RegisterMetrics(metrics::Registry* registry) const {
  std::shared_ptr<Counters> c = counters_;
  auto add = [&](const char* name, const char* help, std::atomic<uint64_t> Counters::*field) {
    registry->AddGaugeFunc(name, help,
                           [c, field] { return static_cast<double>((*c.*field).load()); });
  };
  add("capstan_dns_udp_queries_total", "DNS queries received over UDP; a counter.",
      &Counters::udp_queries);
  add("capstan_dns_udp_batches_total",
      "recvmmsg calls that returned UDP queries (up to 64 each); a counter.",
      &Counters::udp_batches);
  add("capstan_dns_tcp_queries_total", "DNS queries received over TCP; a counter.",
      &Counters::tcp_queries);
  add("capstan_dns_truncated_total", "UDP answers sent truncated (TC); a counter.",
      &Counters::truncated);
  add("capstan_dns_nxdomain_total", "NXDOMAIN answers; a counter.", &Counters::nxdomain);
  add("capstan_dns_refused_total", "REFUSED answers (no zone served); a counter.",
      &Counters::refused);
  add("capstan_dns_rate_limited_dropped_total",
      "UDP answers dropped by response rate limiting; a counter.", &Counters::rrl_dropped);
  add("capstan_dns_rate_limited_slipped_total",
      "UDP answers sent truncated by response rate limiting; a counter.", &Counters::rrl_slipped);
  add("capstan_dns_tcp_connections_refused_total",
      "TCP connections closed at accept (max_tcp_connections); a counter.",
      &Counters::tcp_connections_refused);
  if (c->udp_latency.empty()) return;
  const char* help =
      "udp_latency_metrics: quantiles of a UDP query's wait in the socket before it was read "
      "(part=socket, from the kernel's arrival time) and of the time from reading it to its "
      "answer handed to the kernel (part=server); a gauge.";
  struct Series {
    const char* part;
    const char* quantile;
    double DnsUdpLatency::*field;
  };
  static constexpr Series kSeries[] = {
      {"socket", "0.5", &DnsUdpLatency::socket_wait_p50},
      {"socket", "0.99", &DnsUdpLatency::socket_wait_p99},
      {"socket", "0.999", &DnsUdpLatency::socket_wait_p999},
      {"server", "0.5", &DnsUdpLatency::in_server_p50},
      {"server", "0.99", &DnsUdpLatency::in_server_p99},
      {"server", "0.999", &DnsUdpLatency::in_server_p999},
  };
  for (const Series& series : kSeries) {
    registry->AddGaugeFunc("capstan_dns_udp_latency_microseconds", help,
                           [c, field = series.field] { return c->UdpLatency().*field; },
                           {{"part", series.part}, {"quantile", series.quantile}});
  }
}

DnsServer::DnsServer(DnsServerOptions options, net::LoopGroup* loops)
    : options_(std::move(options)), loops_(loops) {}

DnsServer::~DnsServer() { Stop(); }

void DnsServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& state : udp_states_) {
    UdpState* raw = state.get();
    net::RunOn(raw->socket->loop(), [raw] { raw->socket->Close(); });
  }
  for (auto& state : loop_states_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] {
      if (raw->listener != nullptr) raw->listener->Close();
      for (auto& c : raw->connections) {
        if (auto socket = c.lock()) socket->Close();
      }
    });
  }
  // The coroutines see their sockets closed within a turn or two; the
  // deadline only guards against a stuck loop.
  std::unique_lock lock(tasks_mu_);
  tasks_done_.wait_for(lock, std::chrono::seconds(5), [this] { return tasks_ == 0; });
  lock.unlock();
  for (auto& state : loop_states_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] { raw->listener.reset(); });
  }
  // The sockets' waits ended with their coroutines; each closes on its loop.
  for (auto& state : udp_states_) {
    UdpState* raw = state.get();
    net::RunOn(raw->socket->loop(), [raw] { raw->socket.reset(); });
  }
  udp_states_.clear();
}

}  // namespace capstan::gateway::dns
