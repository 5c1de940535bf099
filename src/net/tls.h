// TLS for net::Socket (OpenSSL 3): contexts for servers and clients, and the
// per-connection engine a socket runs its bytes through once TLS is started.
//
// A socket with TLS keeps its interface: input() holds decrypted bytes and
// what is written is encrypted at the end of the loop's turn (everything a
// turn wrote becomes as few records as fit), so HTTP/1.1, HTTP/2 and gRPC
// run over it unchanged. The handshake runs inside the socket as bytes
// arrive; a failed one closes the socket with an error saying why.
//
//   TlsServerOptions options;
//   options.certificates = {{"cert.pem", "key.pem", {}}};      // the default
//   options.alpn = {"h2", "http/1.1"};
//   auto tls = TlsContext::NewServer(options).value();
//   auto socket = co_await listener->Accept();
//   (*socket)->StartTls(tls, TlsRole::kServer);
//   ... co_await (*socket)->ReadMore();                         // plaintext
//   (*socket)->tls()->alpn();                                   // "h2"
//
// A server context holds one certificate per SNI name (exact or
// "*.suffix"), the first without names (or else the first) being the
// default. Reloading certificates is building a new context: connections
// keep the one they started with.
//
// Thread-safety: a TlsContext is immutable after creation and shared by
// every loop; a TlsConnection belongs to its socket's loop.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "net/buffer.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct bio_st BIO;

namespace capstan::net {

enum class TlsRole : uint8_t { kServer, kClient };

struct TlsCertificateFiles {
  std::string cert_file;  // PEM: the certificate, then its chain
  std::string key_file;   // PEM private key
  // SNI names it answers: "example.com" or "*.example.com". Empty: default.
  std::vector<std::string> server_names;
};

struct TlsServerOptions {
  std::vector<TlsCertificateFiles> certificates;
  // Offered in preference order; the first the client also offers wins. A
  // client offering ALPN but none of these is refused (RFC 7301).
  std::vector<std::string> alpn;
  bool tls13_only = false;  // else TLS 1.2 and 1.3
  bool session_tickets = true;
  // PEM bundle of CAs whose client certificates are accepted; empty: client
  // certificates are not asked for.
  std::string client_ca_file;
  // With client_ca_file: a client without a certificate is refused (mTLS).
  // Off, one is asked for and verified when sent, and a client may send none.
  bool require_client_certificate = true;
};

struct TlsClientOptions {
  std::string ca_file;  // PEM bundle; empty: the system's default roots
  bool verify = true;   // the peer's chain and name
  std::vector<std::string> alpn;
  // Client certificate (mTLS); empty: none.
  std::string cert_file, key_file;
};

class TlsContext {
 public:
  static absl::StatusOr<std::shared_ptr<TlsContext>> NewServer(const TlsServerOptions& options);
  static absl::StatusOr<std::shared_ptr<TlsContext>> NewClient(const TlsClientOptions& options);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  TlsRole role() const { return role_; }
  SSL_CTX* default_ctx() const { return entries_.front().ctx; }

 private:
  friend class TlsConnection;
  struct Entry {
    SSL_CTX* ctx = nullptr;
    std::vector<std::string> names;  // lowercase; "*.x" kept as ".x"
  };
  explicit TlsContext(TlsRole role) : role_(role) {}
  // The context whose certificate answers `server_name`.
  SSL_CTX* ForServerName(std::string_view server_name) const;
  static int OnServerName(SSL* ssl, int* alert, void* arg);
  static int OnAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                    const unsigned char* in, unsigned int inlen, void* arg);

  TlsRole role_;
  std::vector<Entry> entries_;
  std::string alpn_wire_;  // length-prefixed protocol list
};

// Who the peer's certificate says it is. Empty without a certificate; a
// certificate is only ever there verified (a server asks only with a client
// CA and refuses what it did not sign; a client that verifies refuses the
// rest), except on a client with verify off.
struct TlsPeerIdentity {
  std::string common_name;             // subject CN
  std::vector<std::string> dns_names;  // subjectAltName DNS entries
  std::vector<std::string> uris;       // subjectAltName URI entries (SPIFFE IDs)
  std::string serial;                  // hex
  bool empty() const { return common_name.empty() && dns_names.empty() && uris.empty(); }
};

// One connection's TLS state: ciphertext in from the wire, plaintext out to
// the socket's input; plaintext in from writers, ciphertext out to the wire.
class TlsConnection {
 public:
  static absl::StatusOr<std::unique_ptr<TlsConnection>> Create(
      std::shared_ptr<const TlsContext> context, TlsRole role, std::string_view server_name);
  ~TlsConnection();
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  // Bytes from the kernel land here (the socket's receive buffer).
  Buffer& wire_input() { return wire_input_; }
  // Plaintext written and not yet encrypted.
  Buffer& plain_output() { return plain_output_; }

  // Runs received ciphertext through the engine: handshake messages are
  // answered into `wire_out`, application data is appended to `plain_in`.
  // Returns the bytes of plaintext added, or an error (the connection is
  // then unusable: a bad record, a failed handshake, the peer's alert).
  absl::StatusOr<size_t> OnWireInput(Buffer* plain_in, Buffer* wire_out);
  // Encrypts plain_output() into `wire_out` (after the handshake; before it,
  // the bytes wait). Starts a client's handshake on the first call.
  absl::Status Flush(Buffer* wire_out);
  // The peer's close_notify arrived.
  bool peer_closed() const { return peer_closed_; }

  bool handshake_done() const { return handshake_done_; }
  // The negotiated protocol ("h2", "http/1.1"), or "" when none.
  std::string_view alpn() const;
  // The SNI name the client sent (server side), or "".
  std::string_view server_name() const;
  std::string_view version() const;  // "TLSv1.3"
  bool session_reused() const;
  // The peer certificate's subject CN, or "" without one.
  std::string PeerCommonName() const;
  // The peer certificate's serial number (hex), or "" without one.
  std::string PeerSerial() const;
  // CN, SAN DNS and URI names and serial of the peer's certificate (empty
  // without one). Complete once the handshake is done.
  TlsPeerIdentity PeerIdentity() const;
  SSL* ssl() const { return ssl_; }

 private:
  TlsConnection() = default;
  // Moves what the engine wrote to the wire into `wire_out`.
  void DrainWire(Buffer* wire_out);
  absl::Status Error(std::string_view what, int ret);

  std::shared_ptr<const TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // ciphertext from the peer (owned by ssl_)
  BIO* wbio_ = nullptr;  // ciphertext to the peer (owned by ssl_)
  Buffer wire_input_;
  Buffer plain_output_;
  bool handshake_done_ = false;
  bool peer_closed_ = false;
};

// Where a listener gets the server context for each connection it accepts
// (called on the accepting loop; returns null to refuse the connection).
using TlsContextSource = std::function<std::shared_ptr<const TlsContext>()>;

// A server context built from files and rebuilt when they change, so a
// certificate can be replaced without a restart: connections accepted after
// the change use the new files, open ones keep what they started with.
// Current() compares the files' identity (inode, size, modification time)
// at most once per `check_interval`, on whichever thread asks; a rebuild
// that fails (a half-written file, a key that does not match yet) keeps the
// previous context, logs why and tries again at the next check.
//
// Thread-safety: every method may be called from any thread.
class TlsReloader : public std::enable_shared_from_this<TlsReloader> {
 public:
  static absl::StatusOr<std::shared_ptr<TlsReloader>> Create(
      TlsServerOptions options, std::chrono::milliseconds check_interval);

  std::shared_ptr<const TlsContext> Current();
  // Current() as a TlsContextSource (holds this reloader).
  TlsContextSource Source();
  // Successful rebuilds since creation.
  uint64_t reloads() const;

 private:
  TlsReloader() = default;
  // The identity of every file the context was built from.
  std::string Fingerprint() const;

  TlsServerOptions options_;
  std::chrono::milliseconds check_interval_{0};
  mutable std::mutex mu_;
  std::shared_ptr<const TlsContext> current_;
  std::string fingerprint_;
  std::chrono::steady_clock::time_point next_check_;
  uint64_t reloads_ = 0;
};

// Writes a new self-signed certificate and its private key (P-256, PEM; the
// key file mode 0600), as etcd's --auto-tls does: for tests and for
// encryption without authentication. `hosts` go into subjectAltName (IP
// addresses as IP entries, the rest as DNS names); the first is also the CN.
struct SelfSignedOptions {
  std::string cert_file, key_file;
  std::vector<std::string> hosts;
  std::chrono::hours validity{24 * 365};
};
absl::Status WriteSelfSignedCertificate(const SelfSignedOptions& options);

}  // namespace capstan::net
