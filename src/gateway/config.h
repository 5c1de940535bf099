// The gateway's configuration: listeners, virtual hosts with their routes,
// and clusters, as one YAML file (`capstan gateway --config FILE`) or as
// documents in the store (one virtual host or one cluster per key, YAML or
// JSON — JSON is YAML). Parsing checks every field and fails with the
// field's path and line ("gateway.yaml:14: routes[2].match.prefix: must
// start with '/'"); nothing half-valid is returned. docs/gateway.md lists
// every option with its default.
//
//   auto config = gateway::ParseGatewayConfig(text, "gateway.yaml");
//   if (!config.ok()) { log(config.status()); return; }
//   auto table = gateway::RouteTable::Build(*config);   // router.h
//
// Thread-safety: plain values; a parsed config is immutable once shared.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace capstan::gateway {

using Duration = std::chrono::milliseconds;

// ---- listeners

struct TlsCertificate {
  std::string cert_file;  // PEM chain
  std::string key_file;   // PEM key
  // SNI names this certificate answers (exact or "*.suffix"); empty: the
  // default certificate (the first one is the default when none is empty).
  std::vector<std::string> server_names;
};

struct ListenerTls {
  std::vector<TlsCertificate> certificates;
  std::vector<std::string> alpn = {"h2", "http/1.1"};
  std::string min_version = "TLSv1.2";  // or TLSv1.3
  bool session_tickets = true;
};

// Limits of what a client may send; the answer when passed in parentheses.
struct HttpLimits {
  size_t max_request_line_bytes = 8 << 10;  // (414)
  size_t max_header_bytes = 64 << 10;       // the whole header block (431)
  size_t max_header_count = 100;            // (431)
  size_t max_body_bytes = 16 << 20;         // per route overridable (413)
  Duration request_header_timeout{10000};   // first byte to end of headers (408, close)
  Duration idle_timeout{60000};             // keep-alive connection with no request
  // Clear-text HTTP/1.1: an idle keep-alive connection is kept as a bare fd
  // (~160 bytes instead of ~2 KB) after this long; 0 never.
  Duration idle_park_after{250};
  // HTTP/2 downstream.
  uint32_t max_concurrent_streams = 100;
  size_t max_header_list_bytes = 64 << 10;
};

struct ListenerConfig {
  std::string name;
  std::string address;  // host:port
  // "http1", "h2c" (prior knowledge and Upgrade); with tls: ALPN decides.
  std::vector<std::string> protocols = {"http1", "h2c"};
  std::optional<ListenerTls> tls;
  HttpLimits limits;
  int line = 0;  // where it was defined, for messages
};

// ---- routes

struct HeaderMatcher {
  std::string name;  // lowercase
  // One of: exact, prefix, regex, present (true: must be there, false: must not).
  std::optional<std::string> exact, prefix, regex;
  std::optional<bool> present;
  bool invert = false;
};

struct QueryMatcher {
  std::string name;
  std::optional<std::string> exact, regex;
  std::optional<bool> present;
};

struct RouteMatch {
  // One of exact path, path prefix, path regex (RE2, whole path); none: every path.
  std::optional<std::string> path, prefix, regex;
  bool case_sensitive = true;
  std::vector<std::string> methods;  // empty: any
  std::vector<HeaderMatcher> headers;
  std::vector<QueryMatcher> query;
};

struct WeightedCluster {
  std::string cluster;
  uint32_t weight = 0;
};

struct Redirect {
  std::optional<std::string> scheme, host, path, prefix_rewrite;
  std::optional<int> port;
  int status = 301;  // 301, 302, 303, 307, 308
  bool strip_query = false;
};

struct DirectResponse {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain";
};

struct RetryPolicy {
  // Conditions: "connect-failure", "reset", "5xx", "gateway-error"
  // (502/503/504), "retriable-status" (the codes below).
  std::vector<std::string> retry_on = {"connect-failure", "reset"};
  std::vector<int> retriable_statuses;
  int max_attempts = 2;  // the first try included
  // Only idempotent methods (GET HEAD OPTIONS PUT DELETE TRACE) are retried
  // unless this is set.
  bool non_idempotent = false;
  Duration per_try_timeout{0};  // 0: the route timeout bounds each try
};

struct HeaderEdits {
  std::vector<std::pair<std::string, std::string>> set;     // replace or add
  std::vector<std::pair<std::string, std::string>> append;  // add another
  std::vector<std::string> remove;
};

// A route's use of the HTTP cache (docs/gateway.md, "HTTP cache").
struct RouteCacheConfig {
  bool enabled = false;  // needs the top-level `cache:` section
};

// A route that splits traffic by an experiment of the native layered model
// (docs/gateway.md, "Experiment routing"): the unit is assigned in process
// (experiment_routing.h) and sent to its variant's cluster.
struct ExperimentRoute {
  std::string experiment;  // the experiment's id in the model
  // Variant id -> cluster. A variant not listed goes to default_cluster.
  std::vector<std::pair<std::string, std::string>> variants;
  // Where a unit in no variant of the experiment goes (not running, outside
  // its coverage or slice, held out, condition false).
  std::string default_cluster;
  // The unit: this request header (lowercase) when present, else the
  // cookie; with neither, a new random id, set as the cookie on the
  // response so an anonymous unit stays in its variant. Empty: not used.
  std::string unit_header;
  std::string unit_cookie = "capstan_uid";
  // The model attribute the unit id is given as (the unit type's attribute).
  std::string attribute = "id";
  // More attributes from request headers (attribute -> lowercase header),
  // for targeting conditions.
  std::vector<std::pair<std::string, std::string>> attribute_headers;
};

struct RouteConfig {
  std::string name;
  RouteMatch match;
  // Exactly one action.
  std::optional<std::string> cluster;
  std::vector<WeightedCluster> split;  // weights sum > 0
  // Sticky split: hash this request header (or cookie) instead of drawing
  // at random, so a unit stays in its split (the experiments issue uses it).
  std::optional<std::string> split_hash_header;
  std::optional<Redirect> redirect;
  std::optional<DirectResponse> direct_response;
  std::optional<ExperimentRoute> experiment;
  // Forwarding options.
  Duration timeout{15000};   // whole response; 0: none
  Duration idle_timeout{0};  // between bytes of a streaming response; 0: none
  RetryPolicy retry;
  std::optional<size_t> max_body_bytes;
  std::optional<std::string> prefix_rewrite;  // replaces the matched prefix
  std::optional<std::string> host_rewrite;
  HeaderEdits request_headers, response_headers;
  // `edge: {function: NAME}`: the edge function (edge_functions) run in
  // this route's requests' phases (docs/gateway.md, "Edge functions").
  std::optional<std::string> edge_function;
  RouteCacheConfig cache;
  int line = 0;
};

struct VirtualHostConfig {
  std::string name;
  // "example.com", "*.example.com" (any subdomain), "*" (any host).
  std::vector<std::string> domains;
  std::vector<RouteConfig> routes;
  int line = 0;
};

// ---- clusters

struct HealthCheckConfig {
  // "http": GET `path`, healthy on an expected status; "tcp": healthy when a
  // TCP connection opens within `timeout` (for L4 clusters).
  std::string type = "http";
  std::string path = "/health";
  std::string host;  // Host header; empty: the endpoint's address
  Duration interval{5000};
  Duration timeout{1000};
  int healthy_threshold = 2;
  int unhealthy_threshold = 3;
  int expected_status_min = 200, expected_status_max = 399;
  bool operator==(const HealthCheckConfig&) const = default;
};

struct ClusterLimits {
  // Circuit breaking by counts (Envoy's thresholds); the overflow answer is
  // 503 with `x-capstan-overflow: <limit name>`.
  uint32_t max_connections = 1024;
  uint32_t max_pending_requests = 1024;
  uint32_t max_requests = 1024;
  bool operator==(const ClusterLimits&) const = default;
};

struct ClusterConfig {
  std::string name;
  // Static "host:port" list, or a discovery URL: "store://HOST:PORT/PREFIX",
  // "dns:///NAME:PORT".
  std::vector<std::string> endpoints;
  std::optional<std::string> discovery;
  // Mesh balancer names; "maglev" hashes hash_on. Absent: "maglev" for a
  // cluster only tcp listeners name, else "round_robin".
  std::string balancer = "round_robin";
  // For maglev: "header:NAME", "cookie:NAME" or "client_address".
  std::string hash_on = "client_address";
  std::string protocol = "http1";  // "http1" or "h2"
  bool tls = false;
  std::string tls_server_name;  // SNI and verification name; empty: the endpoint host
  std::string tls_ca_file;      // empty: the system's roots
  bool tls_verify = true;
  // Client certificate and key (PEM) presented to upstreams that require
  // one (mTLS); both or neither, and only with tls. Read when the cluster
  // is built (at start, or when its configuration changes).
  std::string tls_cert_file;
  std::string tls_key_file;
  Duration connect_timeout{1000};
  // Upstream connections per loop and endpoint.
  uint32_t max_idle_connections = 64;
  Duration idle_timeout{60000};
  Duration max_connection_lifetime{0};  // 0: none
  std::optional<HealthCheckConfig> health_check;
  ClusterLimits limits;
  bool outlier_detection = true;
  // Each endpoint's circuit breaker (mesh: opens after consecutive failures
  // or a high error rate, then probes). Off: an endpoint answering 5xx keeps
  // being sent requests (an origin whose 5xx answers are content).
  bool circuit_breaker = true;
  // How tcp listeners forward to this cluster (L7 routes ignore it): "on"
  // moves bytes with splice(2) through pipes, never through user space;
  // "off" copies them through the loop's buffers; "auto" copies the first
  // TcpListenerConfig::splice_after_bytes and splices the rest (measured:
  // docs/benchmarks/l4.md). A tcp listener's own `splice` wins.
  std::string splice = "auto";
  int line = 0;
  bool operator==(const ClusterConfig&) const = default;
};

// Equal but for where they were defined.
inline bool ClusterConfigsEqual(ClusterConfig a, ClusterConfig b) {
  a.line = b.line = 0;
  return a == b;
}

// ---- L4 (TCP) listeners

// A TCP listener whose connections are forwarded byte for byte to an
// endpoint of a cluster (l4_proxy.h). The endpoint is picked once per
// connection (the cluster's balancer; Maglev hashes the client address) and
// kept for the connection's life.
struct TcpListenerConfig {
  std::string name;
  std::string address;  // host:port
  std::string cluster;  // one of `clusters:`
  // Sent to the upstream before the client's bytes: "none", "v1" (text) or
  // "v2" (binary).
  std::string proxy_protocol = "none";
  // Connection attempts, the first included; each retry goes to another
  // endpoint (a connect failure only: nothing was sent yet).
  int connect_attempts = 3;
  std::optional<Duration> connect_timeout;  // none: the cluster's
  Duration idle_timeout{3600000};           // no byte either way; 0: none
  // Client connections open at once through this listener (all loops);
  // past it a new connection is closed at once.
  uint32_t max_connections = 10000;
  // How far one direction is read ahead of a slow receiver.
  size_t buffer_bytes = 256 << 10;
  // "auto", "on" or "off" (ClusterConfig::splice); none: the cluster's.
  std::optional<std::string> splice;
  // With splice: each direction's pipe (F_SETPIPE_SZ; the kernel rounds up
  // to pages and caps it at fs.pipe-max-size, 1 MiB by default), which is
  // then that direction's read-ahead instead of `buffer_bytes`.
  size_t splice_pipe_bytes = 64 << 10;
  // With splice auto: a connection starts on the copy path and moves to
  // splice once it has relayed this many bytes (both directions); 0: at
  // once, as `on`. Short connections never pay for the hand-over.
  size_t splice_after_bytes = 64 << 10;
  int line = 0;
  bool operator==(const TcpListenerConfig&) const = default;
};

// ---- the whole

struct AccessLogConfig {
  std::string path;  // empty: no access log; "-": standard output
  std::vector<std::string> fields = {"time",     "client", "method",     "authority",
                                     "path",     "status", "bytes_sent", "duration_ms",
                                     "upstream", "route",  "request_id"};
};

// ---- the DNS server (docs/gateway.md, "DNS")
struct DnsConfig {
  std::string listen;              // host:port for UDP and TCP (numeric host)
  std::vector<std::string> zones;  // master files; each zone's apex is its SOA's owner
  // store://HOST:PORT[,HOST:PORT]/PREFIX: the discovery zone from the
  // registry under PREFIX; empty: none.
  std::string registry;
  std::string registry_zone = "svc.capstan.";
  Duration registry_ttl{5000};       // TTL of the discovery records (whole seconds)
  int udp_threads = 0;               // 0: one per event loop
  int udp_answer_slice = 64;         // UDP answers sent every this many queries of a batch (1..64)
  bool udp_latency_metrics = false;  // per-query wait quantiles in /metrics (diagnosis)
  int max_udp_payload = 1232;        // 512..4096
  bool minimal_responses = false;    // no NS in authority on positive answers (Knot's shape)
  int max_tcp_connections = 1024;
  Duration tcp_idle_timeout{10000};
  int rate_limit = 0;       // UDP responses/s per client network; 0: off
  int rate_limit_slip = 2;  // every Nth limited response goes out truncated
  int line = 0;
};

// ---- edge functions (docs/gateway.md, "Edge functions"; src/gateway/edge/)
struct EdgeFunctionConfig {
  std::string name;            // [A-Za-z0-9_.-]+
  std::string source;          // the Lua text (from `source:`, or read from `file:`)
  std::string file;            // where the source was read from, if a file
  int64_t store_revision = 0;  // from the store: the document's mod_revision
  int line = 0;
};

struct EdgeLimitsConfig {
  size_t memory_bytes = 32 << 20;     // per VM (one VM per event loop)
  uint64_t instructions = 1'000'000;  // per invocation of one phase
};

// ---- the HTTP cache (docs/gateway.md, "HTTP cache"): one per process,
// used by the routes that say `cache: {enabled: true}`.
struct CacheConfig {
  size_t memory = size_t{256} << 20;         // the byte budget (read at start)
  size_t max_object_size = size_t{8} << 20;  // larger responses pass uncached
  std::string status_header = "x-cache";     // HIT, MISS, ...; empty: none
  bool age_header = true;                    // Age on stored responses
  // Response fields whose space- or comma-separated tokens tag an object
  // for purge by tag.
  std::vector<std::string> tag_headers = {"surrogate-key", "cache-tag"};
  bool purge = true;  // POST/PURGE /cache/purge on the admin listener
  // The cap on heuristic freshness (10% of the time since Last-Modified).
  Duration heuristic_max{86400000};
  // The disk tier (read at start): a directory and its byte budget; an
  // empty path is none.
  std::string disk_path;
  size_t disk_size = 0;
  // RFC 9213 targeted fields this cache obeys, in order: the first with a
  // valid, non-empty value replaces Cache-Control and Expires for it. Empty:
  // none (Cache-Control alone).
  std::vector<std::string> targeted_fields = {"cdn-cache-control"};
  // Remove the targeted fields from responses sent to clients (RFC 9213
  // §3: forwarded by default, so that caches downstream can use them).
  bool strip_targeted_fields = false;
  int line = 0;
};

// ---- experiments: the model routes split by, and where events go
// (docs/gateway.md, "Experiment routing").
struct ExperimentsConfig {
  // store://HOST:PORT[,HOST:PORT] the model is read (and watched) from;
  // empty: the gateway's `store`.
  std::string store;
  std::string prefix = "/capstan/experiments/";
  // The experiments service's event endpoint (http://HOST:PORT/v1/events);
  // empty: no events leave the gateway.
  std::string events_url;
  size_t batch_events = 500;              // events per POST
  Duration flush_interval{1000};          // a partial batch waits at most this long
  size_t max_pending_batches = 64;        // queued for sending; past it, batches are dropped
  size_t exposure_dedup_slots = 1 << 20;  // 8 bytes each
  std::string assignment_header = "x-capstan-experiment";  // "<experiment>=<variant>" upstream
  std::string unit_header = "x-capstan-unit";              // the unit id upstream
  Duration cookie_max_age{365LL * 24 * 3600 * 1000};
  int line = 0;
};

struct GatewayConfig {
  std::vector<ListenerConfig> listeners;
  std::vector<VirtualHostConfig> virtual_hosts;
  std::vector<ClusterConfig> clusters;
  std::vector<TcpListenerConfig> tcp_listeners;
  // Where live configuration comes from: "store://HOST:PORT" (watched under
  // store_prefix); empty: the file alone.
  std::string store;
  std::string store_prefix = "/capstan/gateway/";
  std::string admin_address;  // /metrics, /health, /status; empty: none
  AccessLogConfig access_log;
  bool add_via = false;
  bool add_x_forwarded = true;  // X-Forwarded-For, -Proto, -Host
  std::string request_id_header = "x-request-id";
  Duration drain_timeout{15000};  // SIGTERM: in-flight requests get this long
  // How often the listeners' certificate and key files are looked at; a change
  // (time, size or inode: a renewal written in place or renamed over)
  // rebuilds the TLS contexts as SIGHUP does. 0: only on SIGHUP.
  Duration certificate_check_interval{5000};
  std::optional<DnsConfig> dns;
  std::vector<EdgeFunctionConfig> edge_functions;
  EdgeLimitsConfig edge_limits;
  std::optional<CacheConfig> cache;
  std::optional<ExperimentsConfig> experiments;
};

// The certificate and key files of a configuration's listeners, each with
// what stat(2) said of it when last looked at.
class CertificateFileWatch {
 public:
  explicit CertificateFileWatch(const GatewayConfig& config);
  // Whether any file differs (appeared, vanished, was rewritten) since the
  // previous call or construction; remembers the new state.
  bool Changed();
  size_t files() const { return files_.size(); }

 private:
  struct Seen {
    std::string path;
    int64_t mtime_ns = -1;  // -1: missing
    int64_t size = -1;
    uint64_t inode = 0;
  };
  static Seen Look(const std::string& path);
  std::vector<Seen> files_;
};

// Parses a whole file. `source` names it in errors.
absl::StatusOr<GatewayConfig> ParseGatewayConfig(std::string_view text, std::string_view source);
absl::StatusOr<GatewayConfig> LoadGatewayConfigFile(const std::string& path);

// One document from the store: a virtual host (under .../routes/) or a
// cluster (under .../clusters/). `source` is the key.
absl::StatusOr<VirtualHostConfig> ParseVirtualHostDocument(std::string_view text,
                                                           std::string_view source);
absl::StatusOr<ClusterConfig> ParseClusterDocument(std::string_view text, std::string_view source);
// Whether `name` may name an edge function ([A-Za-z0-9_.-]+, at most 128).
bool ValidEdgeFunctionName(std::string_view name);

// Cross-checks a whole configuration: names unique, every route's clusters
// defined, listener addresses parse. (Parsing checks each part alone.)
absl::Status ValidateGatewayConfig(const GatewayConfig& config);

// "64KiB", "16MiB", "1GiB", "512" (bytes) -> bytes.
absl::StatusOr<size_t> ParseByteSize(std::string_view text);

}  // namespace capstan::gateway
