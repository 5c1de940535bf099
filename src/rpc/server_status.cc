// The server's /status page: what an operator looks at first.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "net/block_on.h"
#include "net/socket.h"
#include "rpc/server.h"
#include "rpc/server_internal.h"

namespace capstan::rpc {

namespace {

// The upper bound of the bucket holding quantile q, in milliseconds.
double QuantileMs(const metrics::Histogram& h, double q) {
  std::vector<uint64_t> cumulative;
  double sum = 0;
  uint64_t count = 0;
  h.Read(&cumulative, &sum, &count);
  if (count == 0) return 0;
  const auto& bounds = h.bounds();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (static_cast<double>(cumulative[i]) >= q * static_cast<double>(count)) {
      return bounds[i] * 1e3;
    }
  }
  return bounds.back() * 1e3;
}

}  // namespace

std::string Server::StatusText() {
  if (!started_) return "server not started\n";
  auto uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_at_);
  Stats s = stats();
  std::string out = absl::StrFormat(
      "Capstan RPC server on %s:%d (%s, %d loops), up %d s\n"
      "connections %d, calls in flight %d, calls started %d, shed %d, protocol errors %d\n",
      options_.host, port_, net::IoBackendName(group_->backend()), group_->size(), uptime.count(),
      s.connections, s.calls_in_flight, s.calls_started, s.calls_shed, s.protocol_errors);
  if (tls_ != nullptr) {
    const ServerTlsOptions& tls = options_.tls;
    absl::StrAppendFormat(&out,
                          "tls %s, client certificates %s, handshake failures %d, "
                          "certificate reloads %d\n",
                          tls.cert_file,
                          tls.require_client_cert       ? "required"
                          : !tls.client_ca_file.empty() ? "verified when sent"
                                                        : "not asked for",
                          s.tls_handshake_failures, tls_->reloads());
  }

  absl::StrAppend(&out, "\nmethods\n");
  absl::StrAppendFormat(&out, "  %-44s %10s %8s %9s %12s %8s %9s %9s\n", "method", "calls",
                        "errors", "in flight", "limit", "shed", "p50 ms", "p99 ms");
  for (const auto& m : method_list_) {
    uint64_t calls = 0, errors = 0;
    for (size_t c = 0; c < m->handled.size(); ++c) {
      calls += m->handled[c]->Value();
      if (c != 0) errors += m->handled[c]->Value();
    }
    std::string limit = m->max_concurrency > 0 ? absl::StrCat(m->max_concurrency, " max")
                        : options_.adaptive_concurrency_limit
                            ? absl::StrCat(m->limit->Value(), " adapt")
                            : "none";
    absl::StrAppendFormat(&out, "  %-44s %10d %8d %9d %12s %8d %9.3f %9.3f\n", m->full_name, calls,
                          errors, m->in_flight->Value(), limit, m->shed->Value(),
                          QuantileMs(*m->latency, 0.5), QuantileMs(*m->latency, 0.99));
  }

  constexpr size_t kMaxListed = 100;
  absl::StrAppend(&out, "\nconnections (at most ", kMaxListed, " per loop)\n");
  absl::StrAppendFormat(&out, "  %-4s %-46s %10s %12s %9s\n", "loop", "peer", "age s", "calls",
                        "in flight");
  for (size_t i = 0; i < loops_.size(); ++i) {
    LoopState* state = loops_[i].get();
    std::string lines = net::RunOn(state->loop, [&] {
      std::string text;
      size_t listed = 0;
      for (const auto& weak : state->connections) {
        auto conn = weak.lock();
        if (!conn || conn->socket->closed()) continue;
        if (++listed > kMaxListed) break;
        absl::StrAppendFormat(
            &text, "  %-4d %-46s %10d %12d %9d\n", i, conn->peer,
            std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - conn->opened).count(),
            conn->calls_started, conn->calls.size());
      }
      return text;
    });
    absl::StrAppend(&out, lines);
  }
  return out;
}

}  // namespace capstan::rpc
