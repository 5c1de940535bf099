// TLS on rpc::Server's port: the certificate (reloaded when its files
// change, through net::TlsReloader as the store's client port does), the
// handshake of each accepted connection, and what the handshake tells the
// calls (ServerContext::tls, peer_identity). The protocol sniff in
// ServeConnection runs on the decrypted bytes, so Capstan frames and gRPC
// share the TLS port as they share a clear-text one.
#include <fstream>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/socket.h"
#include "rpc/server.h"
#include "rpc/server_internal.h"

namespace capstan::rpc {
namespace {

// What rpc::Channel offers in ALPN; gRPC clients offer "h2".
constexpr char kCapstanAlpn[] = "capstan-rpc";

absl::Status Readable(const std::string& path, std::string_view field) {
  if (!std::ifstream(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rpc server tls.", std::string(field), ": cannot read \"", path, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Server::SetUpTls() {
  const ServerTlsOptions& o = options_.tls;
  if (!o.enabled()) {
    if (!o.client_ca_file.empty() || o.require_client_cert) {
      return absl::InvalidArgumentError(
          "rpc server tls.client_ca_file and tls.require_client_cert need tls.cert_file and "
          "tls.key_file (the server's own certificate)");
    }
    return absl::OkStatus();
  }
  if (tls_ != nullptr) return absl::OkStatus();  // a Start that failed later set it up
  if (o.cert_file.empty() || o.key_file.empty()) {
    return absl::InvalidArgumentError(
        "rpc server tls.cert_file and tls.key_file must be given together");
  }
  if (o.require_client_cert && o.client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "rpc server tls.require_client_cert needs tls.client_ca_file (the CAs whose client "
        "certificates are accepted)");
  }
  if (o.reload_check <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rpc server tls.reload_check must be positive, not ", o.reload_check.count(), " ms"));
  }
  RETURN_IF_ERROR(Readable(o.cert_file, "cert_file"));
  RETURN_IF_ERROR(Readable(o.key_file, "key_file"));
  if (!o.client_ca_file.empty()) RETURN_IF_ERROR(Readable(o.client_ca_file, "client_ca_file"));
  net::TlsServerOptions server;
  server.certificates = {{o.cert_file, o.key_file, {}}};
  if (options_.grpc) server.alpn.push_back("h2");
  server.alpn.push_back(kCapstanAlpn);
  server.client_ca_file = o.client_ca_file;
  server.require_client_certificate = o.require_client_cert;
  absl::StatusOr<std::shared_ptr<net::TlsReloader>> reloader =
      net::TlsReloader::Create(std::move(server), o.reload_check);
  if (!reloader.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rpc server tls: ", reloader.status().message()));
  }
  tls_ = *std::move(reloader);
  return absl::OkStatus();
}

bool Server::StartTls(net::Socket& socket) {
  if (tls_ == nullptr) return true;
  std::shared_ptr<const net::TlsContext> context = tls_->Current();
  absl::Status st = socket.StartTls(std::move(context), net::TlsRole::kServer);
  if (st.ok()) return true;
  tls_handshake_failures_.fetch_add(1, std::memory_order_relaxed);
  CAPSTAN_LOG(warn, "rpc server: TLS did not start", "error", std::string(st.message()));
  socket.Close();
  return false;
}

net::Task<bool> Server::FinishHandshake(net::Socket& socket) {
  absl::Status st = co_await socket.TlsHandshake();
  if (st.ok()) co_return true;
  // A client refused (no certificate, an unknown CA, no common protocol)
  // or one that left: not the server's problem, but worth counting.
  tls_handshake_failures_.fetch_add(1, std::memory_order_relaxed);
  CAPSTAN_LOG(debug, "rpc server: TLS handshake failed", "error", std::string(st.message()));
  socket.Close();
  co_return false;
}

}  // namespace capstan::rpc
