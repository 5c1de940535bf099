#include "net/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace capstan::net {
namespace {

// OpenSSL's error queue as one line (and the queue emptied, so the next
// error does not carry this one's leftovers).
std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

absl::Status CtxError(std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("tls: ", std::string(what), ": ", OpenSslErrors()));
}

absl::StatusOr<std::string> AlpnWire(const std::vector<std::string>& protocols) {
  std::string wire;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls: ALPN protocol '", p, "' is not 1-255 bytes"));
    }
    wire.push_back(static_cast<char>(p.size()));
    wire.append(p);
  }
  return wire;
}

bool IsIpAddress(std::string_view host) {
  std::string h(host);
  unsigned char buf[16];
  return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

}  // namespace

// ---- TlsContext

TlsContext::~TlsContext() {
  for (Entry& e : entries_) SSL_CTX_free(e.ctx);
}

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::NewServer(const TlsServerOptions& options) {
  if (options.certificates.empty()) {
    return absl::InvalidArgumentError("tls: a server needs at least one certificate");
  }
  std::shared_ptr<TlsContext> context(new TlsContext(TlsRole::kServer));
  ASSIGN_OR_RETURN(context->alpn_wire_, AlpnWire(options.alpn));
  ERR_clear_error();
  for (const TlsCertificateFiles& files : options.certificates) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) return CtxError("SSL_CTX_new");
    Entry entry{ctx, {}};
    context->entries_.push_back(entry);  // freed with the context from here on
    SSL_CTX_set_min_proto_version(ctx, options.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
    // Idle connections give their record buffers back (memory per idle
    // connection matters to a proxy holding many).
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(
        ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    if (!options.session_tickets) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    static const unsigned char kSessionContext[] = "capstan";
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1) {
      return CtxError(absl::StrCat("cannot load certificate ", files.cert_file));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return CtxError(absl::StrCat("cannot load key ", files.key_file));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return CtxError(absl::StrCat("key ", files.key_file, " does not match ", files.cert_file));
    }
    if (!options.client_ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, options.client_ca_file.c_str(), nullptr) != 1) {
        return CtxError(absl::StrCat("cannot load client CAs ", options.client_ca_file));
      }
      SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(options.client_ca_file.c_str()));
      int mode = SSL_VERIFY_PEER;
      if (options.require_client_certificate) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      SSL_CTX_set_verify(ctx, mode, nullptr);
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, &TlsContext::OnServerName);
    SSL_CTX_set_tlsext_servername_arg(ctx, context.get());
    if (!context->alpn_wire_.empty()) {
      SSL_CTX_set_alpn_select_cb(ctx, &TlsContext::OnAlpn, context.get());
    }
    for (const std::string& name : files.server_names) {
      std::string n = absl::AsciiStrToLower(name);
      context->entries_.back().names.push_back(n.starts_with("*.") ? n.substr(1) : n);
    }
  }
  // The default answers names no certificate claims: the first one without
  // names, else the first. Keep it in front.
  for (size_t i = 0; i < context->entries_.size(); ++i) {
    if (context->entries_[i].names.empty()) {
      std::swap(context->entries_[0], context->entries_[i]);
      break;
    }
  }
  return context;
}

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::NewClient(const TlsClientOptions& options) {
  std::shared_ptr<TlsContext> context(new TlsContext(TlsRole::kClient));
  ASSIGN_OR_RETURN(context->alpn_wire_, AlpnWire(options.alpn));
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return CtxError("SSL_CTX_new");
  context->entries_.push_back(Entry{ctx, {}});
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (options.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    int ok = options.ca_file.empty()
                 ? SSL_CTX_set_default_verify_paths(ctx)
                 : SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr);
    if (ok != 1) return CtxError(absl::StrCat("cannot load CAs ", options.ca_file));
  }
  if (!context->alpn_wire_.empty() &&
      SSL_CTX_set_alpn_protos(ctx,
                              reinterpret_cast<const unsigned char*>(context->alpn_wire_.data()),
                              static_cast<unsigned int>(context->alpn_wire_.size())) != 0) {
    return CtxError("ALPN");
  }
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1) {
      return CtxError(absl::StrCat("cannot load client certificate ", options.cert_file));
    }
    // OpenSSL also checks here that the key is the certificate's.
    if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return CtxError(absl::StrCat("cannot load client key ", options.key_file,
                                   " or it does not match ", options.cert_file));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return CtxError(
          absl::StrCat("key ", options.key_file, " does not match ", options.cert_file));
    }
  }
  return context;
}

SSL_CTX* TlsContext::ForServerName(std::string_view name) const {
  for (const Entry& e : entries_) {
    for (const std::string& n : e.names) {
      if (n.starts_with('.')) {
        if (name.size() > n.size() && name.ends_with(n)) return e.ctx;
      } else if (n == name) {
        return e.ctx;
      }
    }
  }
  return entries_.front().ctx;
}

int TlsContext::OnServerName(SSL* ssl, int*, void* arg) {
  auto* self = static_cast<TlsContext*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;  // the default answers
  std::string lower = absl::AsciiStrToLower(name);
  SSL_CTX* ctx = self->ForServerName(lower);
  if (ctx != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, ctx);
  return SSL_TLSEXT_ERR_OK;
}

int TlsContext::OnAlpn(SSL*, const unsigned char** out, unsigned char* outlen,
                       const unsigned char* in, unsigned int inlen, void* arg) {
  auto* self = static_cast<TlsContext*>(arg);
  unsigned char* selected = nullptr;
  // Server preference: our list's order.
  int rv = SSL_select_next_proto(&selected, outlen,
                                 reinterpret_cast<const unsigned char*>(self->alpn_wire_.data()),
                                 static_cast<unsigned int>(self->alpn_wire_.size()), in, inlen);
  if (rv != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// ---- TlsConnection

absl::StatusOr<std::unique_ptr<TlsConnection>> TlsConnection::Create(
    std::shared_ptr<const TlsContext> context, TlsRole role, std::string_view server_name) {
  if (context->role() != role) {
    return absl::InvalidArgumentError("tls: the context is for the other side");
  }
  std::unique_ptr<TlsConnection> c(new TlsConnection());
  ERR_clear_error();
  c->ssl_ = SSL_new(context->default_ctx());
  if (c->ssl_ == nullptr) return CtxError("SSL_new");
  c->rbio_ = BIO_new(BIO_s_mem());
  c->wbio_ = BIO_new(BIO_s_mem());
  // An empty input BIO means "more to come", not end of file.
  BIO_set_mem_eof_return(c->rbio_, -1);
  SSL_set_bio(c->ssl_, c->rbio_, c->wbio_);
  if (role == TlsRole::kServer) {
    SSL_set_accept_state(c->ssl_);
  } else {
    SSL_set_connect_state(c->ssl_);
    if (!server_name.empty()) {
      std::string name(server_name);
      if (IsIpAddress(name)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl_), name.c_str());
      } else {
        SSL_set_tlsext_host_name(c->ssl_, name.c_str());
        SSL_set1_host(c->ssl_, name.c_str());
      }
    }
  }
  c->context_ = std::move(context);
  return c;
}

TlsConnection::~TlsConnection() {
  if (ssl_ != nullptr) SSL_free(ssl_);  // frees both BIOs
}

absl::Status TlsConnection::Error(std::string_view what, int ret) {
  int err = SSL_get_error(ssl_, ret);
  std::string detail = OpenSslErrors();
  long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    // Name the certificate that failed: most failures are the wrong one.
    std::string subject;
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl_);
    if (chain != nullptr && sk_X509_num(chain) > 0) {
      char cn[256] = {0};
      X509_NAME_get_text_by_NID(X509_get_subject_name(sk_X509_value(chain, 0)), NID_commonName, cn,
                                sizeof(cn));
      subject = absl::StrCat(" (the peer's certificate is for CN=", cn, ")");
    }
    detail =
        absl::StrCat("certificate verification failed: ", X509_verify_cert_error_string(verify),
                     subject, detail.empty() ? "" : "; ", detail);
  }
  if (detail.empty()) {
    detail = err == SSL_ERROR_SYSCALL ? "the peer closed the connection unexpectedly"
                                      : absl::StrCat("SSL error ", err);
  }
  return absl::UnavailableError(absl::StrCat("tls ", std::string(what), ": ", detail));
}

void TlsConnection::DrainWire(Buffer* wire_out) {
  size_t pending;
  while ((pending = BIO_ctrl_pending(wbio_)) > 0) {
    std::span<char> space = wire_out->Reserve(pending);
    int n = BIO_read(wbio_, space.data(), static_cast<int>(std::min(space.size(), pending)));
    wire_out->Commit(n > 0 ? static_cast<size_t>(n) : 0);
    if (n <= 0) break;
  }
}

absl::StatusOr<size_t> TlsConnection::OnWireInput(Buffer* plain_in, Buffer* wire_out) {
  for (size_t i = 0; i < wire_input_.slice_count(); ++i) {
    std::string_view bytes = wire_input_.slice(i);
    BIO_write(rbio_, bytes.data(), static_cast<int>(bytes.size()));
  }
  wire_input_.Clear();
  ERR_clear_error();
  if (!handshake_done_) {
    int r = SSL_do_handshake(ssl_);
    if (r != 1) {
      int err = SSL_get_error(ssl_, r);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        DrainWire(wire_out);
        return 0;
      }
      absl::Status st = Error("handshake", r);
      DrainWire(wire_out);  // the alert that says why
      return st;
    }
    handshake_done_ = true;
  }
  size_t added = 0;
  while (true) {
    std::span<char> space = plain_in->Reserve(16 << 10);
    int n = SSL_read(ssl_, space.data(), static_cast<int>(space.size()));
    if (n > 0) {
      plain_in->Commit(static_cast<size_t>(n));
      added += static_cast<size_t>(n);
      continue;
    }
    plain_in->Commit(0);
    int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) break;
    if (err == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      break;
    }
    absl::Status st = Error("read", n);
    DrainWire(wire_out);
    return st;
  }
  // Post-handshake messages (TLS 1.3 session tickets, key updates).
  DrainWire(wire_out);
  return added;
}

absl::Status TlsConnection::Flush(Buffer* wire_out) {
  ERR_clear_error();
  if (!handshake_done_) {
    // A client starts (or goes on with) its handshake; a server waits for
    // the ClientHello. Application bytes wait for the handshake either way.
    if (SSL_is_server(ssl_) == 0) {
      int r = SSL_do_handshake(ssl_);
      if (r == 1) {
        handshake_done_ = true;
      } else {
        int err = SSL_get_error(ssl_, r);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
          absl::Status st = Error("handshake", r);
          DrainWire(wire_out);
          return st;
        }
      }
    }
    DrainWire(wire_out);
    if (!handshake_done_) return absl::OkStatus();
  }
  while (!plain_output_.empty()) {
    std::string_view bytes = plain_output_.slice(0);
    int n = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
    if (n <= 0) return Error("write", n);
    plain_output_.Consume(static_cast<size_t>(n));
  }
  DrainWire(wire_out);
  return absl::OkStatus();
}

std::string_view TlsConnection::alpn() const {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &data, &len);
  return std::string_view(reinterpret_cast<const char*>(data), len);
}

std::string_view TlsConnection::server_name() const {
  const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return name == nullptr ? std::string_view() : std::string_view(name);
}

std::string_view TlsConnection::version() const { return SSL_get_version(ssl_); }

bool TlsConnection::session_reused() const { return SSL_session_reused(ssl_) == 1; }

std::string TlsConnection::PeerCommonName() const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return "";
  char cn[256] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  X509_free(cert);
  return cn;
}

std::string TlsConnection::PeerSerial() const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return "";
  std::string out;
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      out = hex;
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  X509_free(cert);
  return out;
}

TlsPeerIdentity TlsConnection::PeerIdentity() const {
  TlsPeerIdentity identity;
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return identity;
  char cn[256] = {0};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) > 0) {
    identity.common_name = cn;
  }
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
      if (name->type != GEN_DNS && name->type != GEN_URI) continue;
      const ASN1_IA5STRING* text =
          name->type == GEN_DNS ? name->d.dNSName : name->d.uniformResourceIdentifier;
      std::string value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                        static_cast<size_t>(ASN1_STRING_length(text)));
      (name->type == GEN_DNS ? identity.dns_names : identity.uris).push_back(std::move(value));
    }
    GENERAL_NAMES_free(names);
  }
  X509_free(cert);
  identity.serial = PeerSerial();
  return identity;
}

// ---- TlsReloader

absl::StatusOr<std::shared_ptr<TlsReloader>> TlsReloader::Create(
    TlsServerOptions options, std::chrono::milliseconds check_interval) {
  std::shared_ptr<TlsReloader> r(new TlsReloader());
  r->options_ = std::move(options);
  r->check_interval_ = check_interval;
  r->fingerprint_ = r->Fingerprint();
  ASSIGN_OR_RETURN(r->current_, TlsContext::NewServer(r->options_));
  r->next_check_ = std::chrono::steady_clock::now() + check_interval;
  return r;
}

std::string TlsReloader::Fingerprint() const {
  std::string out;
  auto add = [&out](const std::string& path) {
    if (path.empty()) return;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      absl::StrAppend(&out, path, ":missing;");
      return;
    }
    absl::StrAppend(&out, path, ":", st.st_dev, ":", st.st_ino, ":", st.st_size, ":",
                    st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ";");
  };
  for (const TlsCertificateFiles& files : options_.certificates) {
    add(files.cert_file);
    add(files.key_file);
  }
  add(options_.client_ca_file);
  return out;
}

std::shared_ptr<const TlsContext> TlsReloader::Current() {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (now < next_check_) return current_;
  next_check_ = now + check_interval_;
  std::string fingerprint = Fingerprint();
  if (fingerprint == fingerprint_) return current_;
  absl::StatusOr<std::shared_ptr<TlsContext>> rebuilt = TlsContext::NewServer(options_);
  if (!rebuilt.ok()) {
    // Left as it was: the next check tries again (the files may be halfway
    // through being replaced).
    CAPSTAN_LOG(warn, "tls: certificate files changed but cannot be loaded; keeping the old ones",
                "error", std::string(rebuilt.status().message()));
    return current_;
  }
  fingerprint_ = std::move(fingerprint);
  current_ = *std::move(rebuilt);
  ++reloads_;
  CAPSTAN_LOG(info, "tls: certificate files reloaded", "cert",
              options_.certificates.front().cert_file);
  return current_;
}

TlsContextSource TlsReloader::Source() {
  return [self = shared_from_this()] { return self->Current(); };
}

uint64_t TlsReloader::reloads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reloads_;
}

// ---- self-signed certificates

namespace {

absl::Status WritePem(const std::string& path, mode_t mode, bool key, void* object) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls: cannot write ", path, ": ", std::strerror(errno)));
  }
  FILE* f = ::fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("tls: fdopen ", path));
  }
  int ok = key ? PEM_write_PrivateKey(f, static_cast<EVP_PKEY*>(object), nullptr, nullptr, 0,
                                      nullptr, nullptr)
               : PEM_write_X509(f, static_cast<X509*>(object));
  bool closed = std::fclose(f) == 0;
  if (ok != 1 || !closed) return CtxError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSelfSignedCertificate(const SelfSignedOptions& options) {
  if (options.hosts.empty()) {
    return absl::InvalidArgumentError("tls: a self-signed certificate needs at least one host");
  }
  ERR_clear_error();
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) return CtxError("cannot generate a P-256 key");
  X509* cert = X509_new();
  auto cleanup = [&] {
    X509_free(cert);
    EVP_PKEY_free(key);
  };
  if (cert == nullptr) {
    EVP_PKEY_free(key);
    return CtxError("X509_new");
  }
  X509_set_version(cert, 2);  // v3
  // A random 64-bit positive serial: a regenerated certificate differs.
  BIGNUM* serial = BN_new();
  BN_rand(serial, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert));
  BN_free(serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);  // clocks a little behind
  X509_gmtime_adj(X509_getm_notAfter(cert),
                  std::chrono::duration_cast<std::chrono::seconds>(options.validity).count());
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("capstan auto-tls"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(options.hosts[0].c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(cert, name);
  std::string san;
  for (const std::string& host : options.hosts) {
    if (!san.empty()) san += ",";
    san += (IsIpAddress(host) ? "IP:" : "DNS:") + host;
  }
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair<int, std::string>{NID_subject_alt_name, san},
                            {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
                            {NID_ext_key_usage, "serverAuth,clientAuth"},
                            {NID_basic_constraints, "critical,CA:FALSE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str());
    if (ext == nullptr || X509_add_ext(cert, ext, -1) != 1) {
      X509_EXTENSION_free(ext);
      cleanup();
      return CtxError(absl::StrCat("cannot add extension ", value));
    }
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert, key, EVP_sha256()) == 0) {
    cleanup();
    return CtxError("cannot sign the certificate");
  }
  absl::Status st = WritePem(options.key_file, 0600, true, key);
  if (st.ok()) st = WritePem(options.cert_file, 0644, false, cert);
  cleanup();
  return st;
}

}  // namespace capstan::net
