#include "gateway/config.h"

#include <sys/stat.h>

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/config.h"
#include "gateway/config_reader.h"

namespace capstan::gateway {
namespace {

using config_internal::MapReader;
using config_internal::ReadVirtualHost;

// An entry of `edge_functions:`; a relative `file` is read from the
// directory of the configuration file (`source`).
void ReadEdgeFunction(MapReader& r, const std::string& name, std::string_view source,
                      EdgeFunctionConfig* fn) {
  fn->name = name;
  fn->line = r.line();
  r.Check(ValidEdgeFunctionName(name), "", "is not a valid edge function name ([A-Za-z0-9_.-]+)");
  r.String("source", &fn->source);
  r.String("file", &fn->file);
  r.Check(fn->source.empty() != fn->file.empty(), "source", "give exactly one of source and file");
  if (!r.ok() || fn->file.empty()) return;
  std::string path = fn->file;
  size_t slash = source.rfind('/');
  if (!path.starts_with('/') && slash != std::string_view::npos) {
    path = absl::StrCat(std::string(source.substr(0, slash + 1)), path);
  }
  // A regular file of at most 1 MiB (the engine's limit): never a device
  // or a pipe that would not end.
  struct stat st;
  bool regular = ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  r.Check(regular, "file", absl::StrCat("cannot read ", path, " (not a regular file)"));
  r.Check(!regular || st.st_size <= (1 << 20), "file", absl::StrCat(path, " is larger than 1MiB"));
  if (!r.ok()) return;
  std::ifstream in(path);
  std::stringstream text;
  if (in) text << in.rdbuf();
  r.Check(static_cast<bool>(in), "file", absl::StrCat("cannot read ", path));
  fn->source = text.str();
  fn->file = path;
}

void ReadCluster(MapReader& r, ClusterConfig* c) {
  c->line = r.line();
  r.String("name", &c->name, /*required=*/true);
  r.StringList("endpoints", &c->endpoints);
  r.OptString("discovery", &c->discovery);
  r.Check(c->endpoints.empty() != !c->discovery.has_value(), "endpoints",
          "give endpoints (host:port list) or discovery (store://... or dns:///...), not both");
  if (c->discovery) {
    r.Check(c->discovery->starts_with("store://") || c->discovery->starts_with("dns:///") ||
                c->discovery->starts_with("static:///"),
            "discovery", "must be store://HOST:PORT/PREFIX, dns:///NAME:PORT or static:///A,B");
  }
  // Absent: left empty here and chosen by DefaultBalancers (maglev for a
  // cluster only tcp listeners use, else round_robin).
  c->balancer.clear();
  r.String("balancer", &c->balancer);
  r.Check(!c->balancer.empty() || !r.Has("balancer"), "balancer", "must not be empty");
  r.String("hash_on", &c->hash_on);
  r.Check(c->hash_on == "client_address" || c->hash_on.starts_with("header:") ||
              c->hash_on.starts_with("cookie:"),
          "hash_on", "must be client_address, header:NAME or cookie:NAME");
  r.String("protocol", &c->protocol);
  r.Check(c->protocol == "http1" || c->protocol == "h2", "protocol", "must be http1 or h2");
  r.Bool("tls", &c->tls);
  r.String("tls_server_name", &c->tls_server_name);
  r.String("tls_ca_file", &c->tls_ca_file);
  r.Bool("tls_verify", &c->tls_verify);
  r.String("tls_cert_file", &c->tls_cert_file);
  r.String("tls_key_file", &c->tls_key_file);
  if (!c->tls_cert_file.empty() || !c->tls_key_file.empty()) {
    r.Check(!c->tls_cert_file.empty(), "tls_cert_file",
            "tls_key_file needs tls_cert_file (the client certificate it belongs to)");
    r.Check(!c->tls_key_file.empty(), "tls_key_file",
            "tls_cert_file needs tls_key_file (the certificate's private key)");
    r.Check(c->tls, r.Has("tls_cert_file") ? "tls_cert_file" : "tls_key_file",
            "a client certificate needs tls: true");
    // Unreadable files fail the load here, naming the field, rather than
    // when the cluster is built.
    for (auto [key, path] :
         {std::pair<const char*, const std::string*>{"tls_cert_file", &c->tls_cert_file},
          {"tls_key_file", &c->tls_key_file}}) {
      if (!path->empty()) {
        r.Check(static_cast<bool>(std::ifstream(*path)), key, absl::StrCat("cannot read ", *path));
      }
    }
  }
  r.Time("connect_timeout", &c->connect_timeout);
  r.Int("max_idle_connections", &c->max_idle_connections, 0, 1 << 20);
  r.Time("idle_timeout", &c->idle_timeout);
  r.Time("max_connection_lifetime", &c->max_connection_lifetime);
  r.Map("health_check", [&](MapReader& m) {
    HealthCheckConfig h;
    m.String("type", &h.type);
    m.Check(h.type == "http" || h.type == "tcp", "type", "must be http or tcp");
    m.String("path", &h.path);
    m.String("host", &h.host);
    m.Time("interval", &h.interval);
    m.Time("timeout", &h.timeout);
    m.Int("healthy_threshold", &h.healthy_threshold, 1, 100);
    m.Int("unhealthy_threshold", &h.unhealthy_threshold, 1, 100);
    m.Int("expected_status_min", &h.expected_status_min, 100, 599);
    m.Int("expected_status_max", &h.expected_status_max, 100, 599);
    m.Check(h.path.starts_with('/'), "path", "must start with '/'");
    m.Check(h.interval.count() > 0, "interval", "must be more than 0");
    c->health_check = std::move(h);
  });
  r.Map("limits", [&](MapReader& m) {
    m.Int("max_connections", &c->limits.max_connections, 1, 1 << 24);
    m.Int("max_pending_requests", &c->limits.max_pending_requests, 0, 1 << 24);
    m.Int("max_requests", &c->limits.max_requests, 1, 1 << 24);
  });
  r.Bool("outlier_detection", &c->outlier_detection);
  r.Bool("circuit_breaker", &c->circuit_breaker);
  r.String("splice", &c->splice);
  r.Check(c->splice == "auto" || c->splice == "on" || c->splice == "off", "splice",
          "must be auto, on or off");
}

void ReadListener(MapReader& r, ListenerConfig* l) {
  l->line = r.line();
  r.String("name", &l->name);
  r.String("address", &l->address, /*required=*/true);
  if (l->name.empty()) l->name = l->address;
  r.StringList("protocols", &l->protocols);
  for (const std::string& p : l->protocols) {
    r.Check(p == "http1" || p == "h2c" || p == "h2", "protocols",
            "protocols are http1, h2c and h2");
  }
  r.Map("tls", [&](MapReader& m) {
    ListenerTls tls;
    m.List("certificates", [&](MapReader& c) {
      TlsCertificate cert;
      c.String("cert", &cert.cert_file, /*required=*/true);
      c.String("key", &cert.key_file, /*required=*/true);
      c.StringList("server_names", &cert.server_names);
      tls.certificates.push_back(std::move(cert));
    });
    m.Check(!tls.certificates.empty(), "certificates", "TLS needs at least one certificate");
    m.StringList("alpn", &tls.alpn);
    m.String("min_version", &tls.min_version);
    m.Check(tls.min_version == "TLSv1.2" || tls.min_version == "TLSv1.3", "min_version",
            "must be TLSv1.2 or TLSv1.3");
    m.Bool("session_tickets", &tls.session_tickets);
    l->tls = std::move(tls);
  });
  r.Map("limits", [&](MapReader& m) {
    HttpLimits& lim = l->limits;
    m.Bytes("max_request_line", &lim.max_request_line_bytes);
    m.Bytes("max_header_bytes", &lim.max_header_bytes);
    m.Int("max_header_count", &lim.max_header_count, 1, 10000);
    m.Bytes("max_body", &lim.max_body_bytes);
    m.Time("request_header_timeout", &lim.request_header_timeout);
    m.Time("idle_timeout", &lim.idle_timeout);
    m.Time("idle_park_after", &lim.idle_park_after);
    m.Int("max_concurrent_streams", &lim.max_concurrent_streams, 1, 1 << 20);
    m.Bytes("max_header_list", &lim.max_header_list_bytes);
  });
}

void ReadTcpListener(MapReader& r, TcpListenerConfig* t) {
  t->line = r.line();
  r.String("name", &t->name);
  r.String("address", &t->address, /*required=*/true);
  if (t->name.empty()) t->name = t->address;
  r.String("cluster", &t->cluster, /*required=*/true);
  r.String("proxy_protocol", &t->proxy_protocol);
  r.Check(t->proxy_protocol == "none" || t->proxy_protocol == "v1" || t->proxy_protocol == "v2",
          "proxy_protocol", "must be none, v1 or v2");
  r.Int("connect_attempts", &t->connect_attempts, 1, 10);
  if (r.Has("connect_timeout")) {
    Duration d{0};
    r.Time("connect_timeout", &d);
    r.Check(d.count() > 0, "connect_timeout", "must be more than 0");
    t->connect_timeout = d;
  } else {
    r.Get("connect_timeout");
  }
  r.Time("idle_timeout", &t->idle_timeout);
  r.Int("max_connections", &t->max_connections, 1, 1 << 24);
  r.Bytes("buffer", &t->buffer_bytes);
  r.Check(t->buffer_bytes >= (4 << 10) && t->buffer_bytes <= (64 << 20), "buffer",
          "must be from 4KiB to 64MiB");
  r.OptString("splice", &t->splice);
  if (t->splice) {
    r.Check(*t->splice == "auto" || *t->splice == "on" || *t->splice == "off", "splice",
            "must be auto, on or off");
  }
  r.Bytes("splice_pipe", &t->splice_pipe_bytes);
  r.Check(t->splice_pipe_bytes >= (4 << 10) && t->splice_pipe_bytes <= (1 << 20), "splice_pipe",
          "must be from 4KiB to 1MiB (fs.pipe-max-size's default)");
  r.Bytes("splice_after", &t->splice_after_bytes);
  r.Check(t->splice_after_bytes <= (size_t{1} << 30), "splice_after", "must be at most 1GiB");
}

// Fills the balancer of clusters that did not name one: maglev (hashing the
// client address) for a cluster that only tcp listeners use — a client keeps
// its endpoint across connections and an endpoint-set change moves few
// clients — else round_robin.
void DefaultBalancers(GatewayConfig* config) {
  std::set<std::string> l7, l4;
  for (const VirtualHostConfig& vh : config->virtual_hosts) {
    for (const RouteConfig& r : vh.routes) {
      if (r.cluster) l7.insert(*r.cluster);
      for (const WeightedCluster& w : r.split) l7.insert(w.cluster);
      if (r.experiment) {
        l7.insert(r.experiment->default_cluster);
        for (const auto& [variant, cluster] : r.experiment->variants) l7.insert(cluster);
      }
    }
  }
  for (const TcpListenerConfig& t : config->tcp_listeners) l4.insert(t.cluster);
  for (ClusterConfig& c : config->clusters) {
    if (!c.balancer.empty()) continue;
    c.balancer = l4.contains(c.name) && !l7.contains(c.name) ? "maglev" : "round_robin";
  }
}

}  // namespace

absl::StatusOr<size_t> ParseByteSize(std::string_view text) {
  std::string_view digits = text;
  uint64_t multiplier = 1;
  static constexpr std::pair<std::string_view, uint64_t> kUnits[] = {{"KiB", 1ull << 10},
                                                                     {"MiB", 1ull << 20},
                                                                     {"GiB", 1ull << 30},
                                                                     {"KB", 1000},
                                                                     {"MB", 1000000},
                                                                     {"GB", 1000000000},
                                                                     {"B", 1}};
  for (const auto& [suffix, m] : kUnits) {
    if (digits.size() > suffix.size() - 1 && digits.ends_with(suffix)) {
      digits.remove_suffix(suffix.size());
      multiplier = m;
      break;
    }
  }
  uint64_t n;
  if (digits.empty() || !absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &n) ||
      n > (uint64_t{1} << 50) / multiplier) {
    return absl::InvalidArgumentError(absl::StrCat("not a size: '", std::string(text), "'"));
  }
  return static_cast<size_t>(n * multiplier);
}

namespace {

// Parses YAML text into a node, turning yaml-cpp's exceptions (its only
// way to report) into a status that names the source and line.
absl::StatusOr<YAML::Node> ParseYaml(std::string_view text, std::string_view source) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source), ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
}

template <typename T, typename Fill>
absl::StatusOr<T> ParseDocument(std::string_view text, std::string_view source, Fill fill) {
  absl::StatusOr<YAML::Node> root = ParseYaml(text, source);
  if (!root.ok()) return root.status();
  absl::Status status;
  T out;
  try {
    MapReader r(*root, "", source, &status);
    if (status.ok()) {
      fill(r, &out);
      r.Finish();
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source), ":", e.mark.line + 1, ": ", e.msg));
  }
  if (!status.ok()) return status;
  return out;
}

}  // namespace

absl::StatusOr<GatewayConfig> ParseGatewayConfig(std::string_view text, std::string_view source) {
  absl::StatusOr<GatewayConfig> config =
      ParseDocument<GatewayConfig>(text, source, [source](MapReader& r, GatewayConfig* c) {
        r.List("listeners", [c](MapReader& m) {
          ListenerConfig l;
          ReadListener(m, &l);
          c->listeners.push_back(std::move(l));
        });
        r.List("virtual_hosts", [c](MapReader& m) {
          VirtualHostConfig vh;
          ReadVirtualHost(m, &vh);
          c->virtual_hosts.push_back(std::move(vh));
        });
        r.List("clusters", [c](MapReader& m) {
          ClusterConfig cl;
          ReadCluster(m, &cl);
          c->clusters.push_back(std::move(cl));
        });
        r.List("tcp_listeners", [c](MapReader& m) {
          TcpListenerConfig t;
          ReadTcpListener(m, &t);
          c->tcp_listeners.push_back(std::move(t));
        });
        r.String("store", &c->store);
        r.String("store_prefix", &c->store_prefix);
        if (!c->store.empty()) {
          r.Check(c->store.starts_with("store://"), "store",
                  "must be store://HOST:PORT[,HOST:PORT]");
        }
        r.Check(c->store_prefix.starts_with('/') && c->store_prefix.ends_with('/'), "store_prefix",
                "must start and end with '/'");
        r.String("admin", &c->admin_address);
        r.Map("access_log", [c](MapReader& m) {
          m.String("path", &c->access_log.path);
          m.StringList("fields", &c->access_log.fields);
        });
        r.Bool("via", &c->add_via);
        r.Bool("x_forwarded", &c->add_x_forwarded);
        r.String("request_id_header", &c->request_id_header);
        r.Time("drain_timeout", &c->drain_timeout);
        r.Time("certificate_check_interval", &c->certificate_check_interval);
        r.Entries("edge_functions", [c, source](const std::string& name, MapReader& m) {
          EdgeFunctionConfig fn;
          ReadEdgeFunction(m, name, source, &fn);
          c->edge_functions.push_back(std::move(fn));
        });
        r.Map("edge_limits", [c](MapReader& m) {
          m.Bytes("memory", &c->edge_limits.memory_bytes);
          m.Check(c->edge_limits.memory_bytes >= (1 << 20), "memory", "must be at least 1MiB");
          m.Int("instructions", &c->edge_limits.instructions, 1000, 2000000000);
        });
        if (r.Has("cache")) {
          r.Map("cache", [c](MapReader& m) {
            CacheConfig k;
            k.line = m.line();
            m.Bytes("memory", &k.memory);
            m.Bytes("max_object_size", &k.max_object_size);
            m.Map("headers", [&k](MapReader& h) {
              h.String("status", &k.status_header);
              h.Bool("age", &k.age_header);
              h.StringList("tags", &k.tag_headers);
            });
            m.Map("purge", [&k](MapReader& p) { p.Bool("enabled", &k.purge); });
            m.Time("heuristic_max", &k.heuristic_max);
            m.Map("disk", [&k](MapReader& d) {
              d.String("path", &k.disk_path);
              d.Bytes("size", &k.disk_size);
              d.Check(!k.disk_path.empty(), "path", "is required (the tier's directory)");
              d.Check(k.disk_size >= (size_t{1} << 20), "size", "must be at least 1MiB");
            });
            m.StringList("targeted_fields", &k.targeted_fields);
            m.Bool("strip_targeted_fields", &k.strip_targeted_fields);
            m.Check(k.memory >= (size_t{1} << 20), "memory", "must be at least 1MiB");
            m.Check(k.max_object_size > 0 && k.max_object_size <= k.memory, "max_object_size",
                    "must be more than 0 and at most memory");
            k.status_header = absl::AsciiStrToLower(k.status_header);
            for (std::string& t : k.tag_headers) t = absl::AsciiStrToLower(t);
            for (std::string& t : k.targeted_fields) t = absl::AsciiStrToLower(t);
            c->cache = std::move(k);
          });
        }
        if (r.Has("experiments")) {
          r.Map("experiments", [c](MapReader& m) {
            ExperimentsConfig e;
            e.line = m.line();
            m.String("store", &e.store);
            m.String("prefix", &e.prefix);
            m.String("events", &e.events_url);
            m.Int("batch_events", &e.batch_events, 1, 10000);
            m.Time("flush_interval", &e.flush_interval);
            m.Int("max_pending_batches", &e.max_pending_batches, 1, 1 << 16);
            m.Int("exposure_dedup_slots", &e.exposure_dedup_slots, 8, size_t{1} << 30);
            m.String("assignment_header", &e.assignment_header);
            m.String("unit_header", &e.unit_header);
            m.Time("cookie_max_age", &e.cookie_max_age);
            e.assignment_header = absl::AsciiStrToLower(e.assignment_header);
            e.unit_header = absl::AsciiStrToLower(e.unit_header);
            if (!e.store.empty()) {
              m.Check(e.store.starts_with("store://"), "store",
                      "must be store://HOST:PORT[,HOST:PORT]");
            }
            m.Check(e.prefix.starts_with('/') && e.prefix.ends_with('/'), "prefix",
                    "must start and end with '/'");
            if (!e.events_url.empty()) {
              m.Check(e.events_url.starts_with("http://"), "events",
                      "must be http://HOST:PORT/PATH (the experiments service's /v1/events)");
            }
            m.Check(e.flush_interval.count() > 0, "flush_interval", "must be more than 0");
            c->experiments = std::move(e);
          });
        }
        if (r.Has("dns")) {
          r.Map("dns", [c](MapReader& m) {
            DnsConfig d;
            d.line = m.line();
            m.String("listen", &d.listen, /*required=*/true);
            m.StringList("zones", &d.zones);
            m.String("registry", &d.registry);
            m.String("registry_zone", &d.registry_zone);
            m.Time("registry_ttl", &d.registry_ttl);
            m.Int("udp_threads", &d.udp_threads, 0, 1024);
            m.Int("udp_answer_slice", &d.udp_answer_slice, 1, 64);
            m.Bool("udp_latency_metrics", &d.udp_latency_metrics);
            m.Int("max_udp_payload", &d.max_udp_payload, 512, 4096);
            m.Bool("minimal_responses", &d.minimal_responses);
            m.Int("max_tcp_connections", &d.max_tcp_connections, 1, 1 << 20);
            m.Time("tcp_idle_timeout", &d.tcp_idle_timeout);
            m.Int("rate_limit", &d.rate_limit, 0, 1 << 24);
            m.Int("rate_limit_slip", &d.rate_limit_slip, 0, 100);
            if (!d.registry.empty()) {
              m.Check(d.registry.starts_with("store://"), "registry",
                      "must be store://HOST:PORT/PREFIX");
            }
            m.Check(!d.zones.empty() || !d.registry.empty(), "zones",
                    "give zone files, a registry, or both");
            c->dns = std::move(d);
          });
        }
      });
  if (!config.ok()) return config.status();
  DefaultBalancers(&*config);
  absl::Status valid = ValidateGatewayConfig(*config);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source), ": ", std::string(valid.message())));
  }
  return config;
}

absl::StatusOr<GatewayConfig> LoadGatewayConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseGatewayConfig(text.str(), path);
}

absl::StatusOr<VirtualHostConfig> ParseVirtualHostDocument(std::string_view text,
                                                           std::string_view source) {
  return ParseDocument<VirtualHostConfig>(text, source, ReadVirtualHost);
}

absl::StatusOr<ClusterConfig> ParseClusterDocument(std::string_view text, std::string_view source) {
  absl::StatusOr<ClusterConfig> c = ParseDocument<ClusterConfig>(text, source, ReadCluster);
  if (c.ok() && c->balancer.empty()) c->balancer = "round_robin";
  return c;
}

bool ValidEdgeFunctionName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

absl::Status ValidateGatewayConfig(const GatewayConfig& config) {
  std::set<std::string> clusters, hosts, listeners, functions;
  for (const EdgeFunctionConfig& f : config.edge_functions) {
    if (!functions.insert(f.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", f.line, ": edge function '", f.name, "' is defined twice"));
    }
  }
  for (const ClusterConfig& c : config.clusters) {
    if (!clusters.insert(c.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", c.line, ": cluster '", c.name, "' is defined twice"));
    }
  }
  for (const ListenerConfig& l : config.listeners) {
    if (!listeners.insert(l.address).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", l.line, ": two listeners on ", l.address));
    }
  }
  for (const TcpListenerConfig& t : config.tcp_listeners) {
    if (!listeners.insert(t.address).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", t.line, ": two listeners on ", t.address));
    }
    // With live configuration a cluster may arrive from the store later.
    if (!clusters.contains(t.cluster) && config.store.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", t.line, ": tcp listener '", t.name,
                                                     "' names cluster '", t.cluster,
                                                     "', which is not defined"));
    }
  }
  for (const VirtualHostConfig& vh : config.virtual_hosts) {
    if (!hosts.insert(vh.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", vh.line, ": virtual host '", vh.name, "' is defined twice"));
    }
    for (const RouteConfig& r : vh.routes) {
      // With live configuration a function may arrive from the store later.
      if (r.edge_function && !functions.contains(*r.edge_function) && config.store.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("line ", r.line, ": route of '", vh.name,
                                                       "' names edge function '", *r.edge_function,
                                                       "', which is not defined"));
      }
      if (r.cache.enabled && !config.cache) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", r.line, ": route of '", vh.name,
                         "' enables cache, but there is no top-level cache: section"));
      }
      std::vector<std::string> used;
      if (r.cluster) used.push_back(*r.cluster);
      for (const WeightedCluster& w : r.split) used.push_back(w.cluster);
      if (r.experiment) {
        // A route from the store is checked against the file's sections.
        if (!config.experiments && config.store.empty()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "line ", r.line, ": route of '", vh.name, "' splits by experiment '",
              r.experiment->experiment, "', which needs the top-level experiments section"));
        }
        used.push_back(r.experiment->default_cluster);
        for (const auto& [variant, cluster] : r.experiment->variants) used.push_back(cluster);
      }
      for (const std::string& name : used) {
        // With live configuration a cluster may arrive from the store later.
        if (!clusters.contains(name) && config.store.empty()) {
          return absl::InvalidArgumentError(absl::StrCat("line ", r.line, ": route of '", vh.name,
                                                         "' names cluster '", name,
                                                         "', which is not defined"));
        }
      }
    }
  }
  return absl::OkStatus();
}

CertificateFileWatch::CertificateFileWatch(const GatewayConfig& config) {
  for (const ListenerConfig& l : config.listeners) {
    if (!l.tls) continue;
    for (const TlsCertificate& c : l.tls->certificates) {
      files_.push_back(Look(c.cert_file));
      files_.push_back(Look(c.key_file));
    }
  }
  // Clusters' CA files are not watched: a reload keeps a cluster whose
  // configuration is unchanged, with its TLS context (and pools).
}

CertificateFileWatch::Seen CertificateFileWatch::Look(const std::string& path) {
  Seen seen;
  seen.path = path;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return seen;
  seen.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  seen.size = static_cast<int64_t>(st.st_size);
  seen.inode = static_cast<uint64_t>(st.st_ino);
  return seen;
}

bool CertificateFileWatch::Changed() {
  bool changed = false;
  for (Seen& seen : files_) {
    Seen now = Look(seen.path);
    if (now.mtime_ns != seen.mtime_ns || now.size != seen.size || now.inode != seen.inode) {
      changed = true;
      seen = std::move(now);
    }
  }
  return changed;
}

}  // namespace capstan::gateway
