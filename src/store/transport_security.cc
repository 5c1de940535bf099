#include "store/transport_security.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "net/address.h"

namespace capstan::store {
namespace {

absl::Status Readable(const std::string& path, const std::string& flag) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read \"", path, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ResolveTls(TlsInfo* info, const std::string& prefix, const std::string& dir,
                        const std::vector<std::string>& hosts) {
  if (info->cert_file.empty() != info->key_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", prefix, "cert-file and --", prefix, "key-file must be given together"));
  }
  if (info->client_cert_auth && info->trusted_ca_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", prefix, "client-cert-auth needs --", prefix,
                     "trusted-ca-file (the CAs whose client certificates are accepted)"));
  }
  if (!info->cert_file.empty()) {
    RETURN_IF_ERROR(Readable(info->cert_file, prefix + "cert-file"));
    RETURN_IF_ERROR(Readable(info->key_file, prefix + "key-file"));
  }
  if (!info->trusted_ca_file.empty()) {
    RETURN_IF_ERROR(Readable(info->trusted_ca_file, prefix + "trusted-ca-file"));
  }
  if (!info->cert_file.empty() || !info->auto_tls) return absl::OkStatus();
  // etcd's --auto-tls: a certificate of our own in <data-dir>/fixtures/,
  // kept across restarts.
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", prefix, "auto-tls: cannot create ", dir, ": ", ec.message()));
  }
  net::SelfSignedOptions self;
  self.cert_file = dir + "/cert.pem";
  self.key_file = dir + "/key.pem";
  self.hosts = hosts;
  if (self.hosts.empty()) self.hosts = {"localhost"};
  if (!std::filesystem::exists(self.cert_file) || !std::filesystem::exists(self.key_file)) {
    absl::Status st = net::WriteSelfSignedCertificate(self);
    if (!st.ok()) {
      return absl::InternalError(absl::StrCat("--", prefix, "auto-tls: ", st.message()));
    }
  }
  info->cert_file = self.cert_file;
  info->key_file = self.key_file;
  info->generated = true;
  return absl::OkStatus();
}

net::TlsServerOptions ServerTlsOptions(const TlsInfo& info, std::vector<std::string> alpn) {
  net::TlsServerOptions options;
  options.certificates = {{info.cert_file, info.key_file, {}}};
  options.alpn = std::move(alpn);
  // As etcd: the trusted CAs are asked for client certificates only with
  // client-cert-auth, and then a client without one is refused.
  if (info.client_cert_auth) options.client_ca_file = info.trusted_ca_file;
  return options;
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerTlsCredentials(const TlsInfo& info) {
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      info.key_file, info.cert_file, info.client_cert_auth ? info.trusted_ca_file : "",
      static_cast<unsigned int>(kTlsReloadCheck.count()));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (info.client_cert_auth) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> GrpcChannelTlsCredentials(const TlsInfo& info) {
  bool verify = !info.generated && !info.trusted_ca_file.empty();
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      info.key_file, info.cert_file, verify ? info.trusted_ca_file : "",
      static_cast<unsigned int>(kTlsReloadCheck.count()));
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_identity_key_cert_pairs();
  if (verify) {
    options.watch_root_certs();
    options.set_certificate_verifier(
        std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  } else if (info.generated) {
    // Auto TLS: another member's certificate is self-signed; encrypt, but
    // trust whoever answers (etcd's --peer-auto-tls does the same).
    options.set_verify_server_certs(false);
    options.set_certificate_verifier(
        std::make_shared<grpc::experimental::NoOpCertificateVerifier>());
    options.set_check_call_host(false);
  } else {
    // No CA given: the system's roots verify the server.
    options.set_certificate_verifier(
        std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  }
  return grpc::experimental::TlsCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(
    const std::string& url, const std::shared_ptr<grpc::ChannelCredentials>& tls) {
  if (tls != nullptr && url.starts_with("https://")) return tls;
  return grpc::InsecureChannelCredentials();
}

}  // namespace capstan::store
