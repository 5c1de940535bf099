// TLS for a store member's ports, with etcd's flags and meaning: one TlsInfo
// for the client side (--cert-file, --key-file, --trusted-ca-file,
// --client-cert-auth, --auto-tls) and one for the peer side (the same with
// --peer-), and what the member builds from them: the contexts of its
// native listeners (client port, metrics), the libgrpc++ credentials of its
// peer server and of the channels it opens (to other members' peer URLs,
// to the leader's client URL).
//
// Certificates are read from their files again when the files change: the
// native listeners through net::TlsReloader (checked at most every
// kTlsReloadCheck, at the next accepted connection), libgrpc++ through its
// FileWatcherCertificateProvider (same interval). Open connections keep the
// certificate they started with. docs/security.md has the model.
//
//   TlsInfo client{.cert_file = "s.pem", .key_file = "s.key",
//                  .trusted_ca_file = "ca.pem", .client_cert_auth = true};
//   RETURN_IF_ERROR(ResolveAutoTls(&client, "", dir, {"127.0.0.1"}));
//   auto reloader = net::TlsReloader::Create(ServerTlsOptions(client, {"h2"}),
//                                            kTlsReloadCheck);
//
// Thread-safety: plain functions; the objects they return are thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "grpcpp/grpcpp.h"
#include "net/tls.h"

namespace capstan::store {

struct TlsInfo {
  std::string cert_file;  // PEM certificate (and chain) this member presents
  std::string key_file;   // its PEM private key
  // PEM bundle: the CAs client certificates (and, for channels this member
  // opens, servers' certificates) must chain to.
  std::string trusted_ca_file;
  // Require a client certificate signed by trusted_ca_file; with it the
  // certificate's CN is the caller's identity (GrpcCall::peer_common_name).
  bool client_cert_auth = false;
  // Without cert_file: a self-signed certificate made at start (in the data
  // directory's fixtures/), and channels that do not verify the server's
  // certificate — encryption without authentication, for tests.
  bool auto_tls = false;
  // Set by ResolveTls: the certificate was generated (so nothing verifies
  // against it).
  bool generated = false;

  // Whether this side serves TLS (a certificate given or to be made).
  bool enabled() const { return !cert_file.empty() || auto_tls; }
};

// How often certificate files are checked for a change.
inline constexpr std::chrono::seconds kTlsReloadCheck{1};

// Checks the flags of one side (`prefix` is "" or "peer-", for messages that
// name the flags) and, with auto_tls and no cert_file, writes a self-signed
// certificate for `hosts` into `dir` (or reuses the one there), pointing
// cert_file and key_file at it.
absl::Status ResolveTls(TlsInfo* info, const std::string& prefix, const std::string& dir,
                        const std::vector<std::string>& hosts);

// The options of a native TLS listener on this side.
net::TlsServerOptions ServerTlsOptions(const TlsInfo& info, std::vector<std::string> alpn);

// libgrpc++ credentials for the peer server on this side's certificate,
// requiring and verifying client certificates when client_cert_auth.
std::shared_ptr<grpc::ServerCredentials> GrpcServerTlsCredentials(const TlsInfo& info);
// libgrpc++ credentials for channels to a server of this side: verify its
// certificate against trusted_ca_file (not with auto TLS) and its name, and
// present this member's own certificate (peers that require one get it).
std::shared_ptr<grpc::ChannelCredentials> GrpcChannelTlsCredentials(const TlsInfo& info);

// The credentials for a channel to `url`: `tls` for https://, clear text
// for http:// (or when `tls` is null).
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(
    const std::string& url, const std::shared_ptr<grpc::ChannelCredentials>& tls);

}  // namespace capstan::store
