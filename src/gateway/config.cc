#include "gateway/config.h"

#include <sys/stat.h>

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/config.h"
#include "re2/re2.h"

namespace capstan::gateway {
namespace {

// Reads one YAML mapping into a struct, field by field. The first error
// sticks (later reads do nothing) and names the source, the line and the
// field's path; Finish() also refuses keys nobody read, so a misspelt
// option is an error rather than a silent default.
class MapReader {
 public:
  MapReader(const YAML::Node& node, std::string path, std::string_view source, absl::Status* status)
      : node_(node), path_(std::move(path)), source_(std::string(source)), status_(status) {
    if (status_->ok() && !node_.IsMap()) Fail(node_, "must be a mapping");
  }

  int line() const { return node_.Mark().line + 1; }
  bool ok() const { return status_->ok(); }
  bool Has(const char* key) const { return ok() && node_[key].IsDefined() && !node_[key].IsNull(); }

  void Fail(const YAML::Node& at, std::string_view message, std::string_view key = {}) {
    if (!status_->ok()) return;
    int line = at.Mark().line >= 0 ? at.Mark().line + 1 : this->line();
    std::string where = key.empty() ? path_ : Join(key);
    *status_ = absl::InvalidArgumentError(absl::StrCat(
        source_, ":", line, ": ", where.empty() ? "" : where + ": ", std::string(message)));
  }

  // The child at `key`, or an undefined node; marks it read.
  YAML::Node Get(const char* key) {
    seen_.insert(key);
    if (!ok()) return YAML::Node();
    return node_[key];
  }

  void String(const char* key, std::string* out, bool required = false) {
    YAML::Node n = Get(key);
    if (!ok()) return;
    if (!n.IsDefined() || n.IsNull()) {
      if (required) Fail(node_, "is required", key);
      return;
    }
    if (!n.IsScalar()) return Fail(n, "must be a string", key);
    *out = n.Scalar();
  }
  void OptString(const char* key, std::optional<std::string>* out) {
    if (!Has(key)) {
      Get(key);
      return;
    }
    std::string s;
    String(key, &s);
    *out = std::move(s);
  }
  void OptBool(const char* key, std::optional<bool>* out) {
    if (!Has(key)) {
      Get(key);
      return;
    }
    bool value = false;
    Bool(key, &value);
    *out = value;
  }
  void Bool(const char* key, bool* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    std::string s = n.IsScalar() ? absl::AsciiStrToLower(n.Scalar()) : "";
    if (s == "true" || s == "yes" || s == "on") {
      *out = true;
    } else if (s == "false" || s == "no" || s == "off") {
      *out = false;
    } else {
      Fail(n, "must be true or false", key);
    }
  }
  template <typename T>
  void Int(const char* key, T* out, int64_t min, int64_t max) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    int64_t v;
    if (!n.IsScalar() || !absl::SimpleAtoi(n.Scalar(), &v))
      return Fail(n, "must be a whole number", key);
    if (v < min || v > max) {
      return Fail(n, absl::StrCat("must be from ", min, " to ", max), key);
    }
    *out = static_cast<T>(v);
  }
  void Time(const char* key, Duration* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (!n.IsScalar()) return Fail(n, "must be a duration like 500ms, 10s, 5m", key);
    absl::StatusOr<int64_t> ms = ParseDurationMillis(n.Scalar());
    if (!ms.ok() || *ms < 0) return Fail(n, "must be a duration like 500ms, 10s, 5m", key);
    *out = Duration(*ms);
  }
  void Bytes(const char* key, size_t* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    absl::StatusOr<size_t> v =
        n.IsScalar() ? ParseByteSize(n.Scalar()) : absl::InvalidArgumentError("not a scalar");
    if (!v.ok()) return Fail(n, "must be a size like 512, 64KiB, 16MiB", key);
    *out = *v;
  }
  void StringList(const char* key, std::vector<std::string>* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (n.IsScalar()) {
      *out = {n.Scalar()};
      return;
    }
    if (!n.IsSequence()) return Fail(n, "must be a list of strings", key);
    out->clear();
    for (const YAML::Node& item : n) {
      if (!item.IsScalar()) return Fail(item, "must be a list of strings", key);
      out->push_back(item.Scalar());
    }
  }
  // Calls `each(reader)` for every mapping in the list at `key`.
  void List(const char* key, const std::function<void(MapReader&)>& each) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (!n.IsSequence()) return Fail(n, "must be a list", key);
    size_t i = 0;
    for (const YAML::Node& item : n) {
      MapReader r(item, absl::StrCat(Join(key), "[", i++, "]"), source_, status_);
      if (!ok()) return;
      each(r);
      r.Finish();
      if (!ok()) return;
    }
  }
  // Calls `each(name, reader)` for every entry of the mapping at `key`
  // whose values are mappings (name -> {...}).
  void Entries(const char* key, const std::function<void(const std::string&, MapReader&)>& each) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (!n.IsMap()) return Fail(n, "must be a mapping of names to entries", key);
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string name = it->first.Scalar();
      MapReader r(it->second, absl::StrCat(Join(key), ".", name), source_, status_);
      if (!ok()) return;
      each(name, r);
      r.Finish();
      if (!ok()) return;
    }
  }
  // Calls `fill(reader)` on the mapping at `key` when it is there.
  bool Map(const char* key, const std::function<void(MapReader&)>& fill) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return false;
    MapReader r(n, Join(key), source_, status_);
    if (!ok()) return false;
    fill(r);
    r.Finish();
    return true;
  }
  // The keys of this mapping, in order (for maps whose keys are names the
  // user picks: an experiment's variants).
  std::vector<std::string> Keys() const {
    std::vector<std::string> keys;
    if (!ok()) return keys;
    for (auto it = node_.begin(); it != node_.end(); ++it) keys.push_back(it->first.Scalar());
    return keys;
  }
  // Refuses keys nobody read.
  void Finish() {
    if (!ok()) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string key = it->first.Scalar();
      if (!seen_.contains(key)) return Fail(it->first, "unknown option", key);
    }
  }
  // A check of a value already read: fails pointing at `key`.
  void Check(bool condition, const char* key, std::string_view message) {
    if (ok() && !condition) Fail(node_[key].IsDefined() ? node_[key] : node_, message, key);
  }
  const std::string& path() const { return path_; }

 private:
  std::string Join(std::string_view key) const {
    if (key.empty()) return path_;
    return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", std::string(key));
  }

  YAML::Node node_;
  std::string path_;
  std::string source_;
  absl::Status* status_;
  std::set<std::string> seen_;
};

bool ValidDomain(std::string_view d) {
  if (d == "*") return true;
  if (d.starts_with("*.")) d.remove_prefix(2);
  if (d.empty()) return false;
  for (char c : d) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == ':' ||
          c == '[' || c == ']')) {
      return false;
    }
  }
  return true;
}

bool ValidFieldName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
          std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos)) {
      return false;
    }
  }
  return true;
}

bool ValidFieldValue(std::string_view value) {
  for (char c : value) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

void CheckRegex(MapReader& r, const char* key, const std::optional<std::string>& pattern) {
  if (!pattern || !r.ok()) return;
  RE2 re(*pattern, RE2::Quiet);
  r.Check(re.ok(), key, absl::StrCat("not a valid RE2 expression: ", re.error()));
}

void ReadHeaderEdits(MapReader& r, HeaderEdits* edits) {
  auto pairs = [&r](const char* key, std::vector<std::pair<std::string, std::string>>* out) {
    r.List(key, [out](MapReader& item) {
      std::string name, value;
      item.String("name", &name, /*required=*/true);
      item.String("value", &value, /*required=*/true);
      item.Check(ValidFieldName(name), "name", "is not a valid header name");
      item.Check(ValidFieldValue(value), "value", "must not contain CR, LF or NUL");
      out->emplace_back(absl::AsciiStrToLower(name), value);
    });
  };
  pairs("set", &edits->set);
  pairs("append", &edits->append);
  r.StringList("remove", &edits->remove);
  for (std::string& name : edits->remove) {
    r.Check(ValidFieldName(name), "remove", "holds an invalid header name");
    name = absl::AsciiStrToLower(name);
  }
}

void ReadMatch(MapReader& r, RouteMatch* m) {
  r.OptString("path", &m->path);
  r.OptString("prefix", &m->prefix);
  r.OptString("regex", &m->regex);
  r.Check(int(m->path.has_value()) + m->prefix.has_value() + m->regex.has_value() <= 1, "path",
          "give one of path, prefix and regex");
  if (m->path) r.Check(m->path->starts_with('/'), "path", "must start with '/'");
  if (m->prefix) r.Check(m->prefix->starts_with('/'), "prefix", "must start with '/'");
  CheckRegex(r, "regex", m->regex);
  r.Bool("case_sensitive", &m->case_sensitive);
  r.StringList("methods", &m->methods);
  for (const std::string& method : m->methods) {
    r.Check(ValidFieldName(method), "methods", "holds an invalid method name");
  }
  r.List("headers", [&](MapReader& h) {
    HeaderMatcher hm;
    h.String("name", &hm.name, /*required=*/true);
    hm.name = absl::AsciiStrToLower(hm.name);
    h.OptString("exact", &hm.exact);
    h.OptString("prefix", &hm.prefix);
    h.OptString("regex", &hm.regex);
    h.OptBool("present", &hm.present);
    h.Bool("invert", &hm.invert);
    h.Check(ValidFieldName(hm.name), "name", "is not a valid header name");
    int kinds = hm.exact.has_value() + hm.prefix.has_value() + hm.regex.has_value() +
                hm.present.has_value();
    h.Check(kinds == 1, "name", "give exactly one of exact, prefix, regex and present");
    CheckRegex(h, "regex", hm.regex);
    m->headers.push_back(std::move(hm));
  });
  r.List("query", [&](MapReader& q) {
    QueryMatcher qm;
    q.String("name", &qm.name, /*required=*/true);
    q.OptString("exact", &qm.exact);
    q.OptString("regex", &qm.regex);
    q.OptBool("present", &qm.present);
    int kinds = qm.exact.has_value() + qm.regex.has_value() + qm.present.has_value();
    q.Check(kinds == 1, "name", "give exactly one of exact, regex and present");
    CheckRegex(q, "regex", qm.regex);
    m->query.push_back(std::move(qm));
  });
}

void ReadExperimentRoute(MapReader& m, RouteConfig* route) {
  ExperimentRoute e;
  m.String("id", &e.experiment, /*required=*/true);
  m.Map("variants", [&](MapReader& v) {
    for (const std::string& variant : v.Keys()) {
      std::string cluster;
      v.String(variant.c_str(), &cluster, /*required=*/true);
      e.variants.emplace_back(variant, std::move(cluster));
    }
  });
  m.Check(!e.variants.empty(), "variants", "name at least one variant's cluster");
  m.String("default", &e.default_cluster, /*required=*/true);
  m.String("unit_header", &e.unit_header);
  m.Check(e.unit_header.empty() || ValidFieldName(e.unit_header), "unit_header",
          "is not a valid header name");
  e.unit_header = absl::AsciiStrToLower(e.unit_header);
  m.String("unit_cookie", &e.unit_cookie);
  m.Check(!e.unit_header.empty() || !e.unit_cookie.empty(), "unit_cookie",
          "give unit_header, unit_cookie or both");
  for (char c : e.unit_cookie) {
    m.Check(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-',
            "unit_cookie", "letters, digits, '_' and '-' only");
  }
  m.String("attribute", &e.attribute);
  m.Check(!e.attribute.empty(), "attribute", "must not be empty");
  m.Map("attribute_headers", [&](MapReader& a) {
    for (const std::string& attribute : a.Keys()) {
      std::string header;
      a.String(attribute.c_str(), &header, /*required=*/true);
      a.Check(ValidFieldName(header), attribute.c_str(), "is not a valid header name");
      e.attribute_headers.emplace_back(attribute, absl::AsciiStrToLower(header));
    }
  });
  route->experiment = std::move(e);
}

void ReadRoute(MapReader& r, RouteConfig* route) {
  route->line = r.line();
  r.String("name", &route->name);
  if (!r.Map("match", [&](MapReader& m) { ReadMatch(m, &route->match); })) {
    route->match.prefix = "/";
  }
  r.OptString("cluster", &route->cluster);
  r.List("split", [&](MapReader& w) {
    WeightedCluster wc;
    w.String("cluster", &wc.cluster, /*required=*/true);
    w.Int("weight", &wc.weight, 0, 1000000);
    route->split.push_back(std::move(wc));
  });
  r.OptString("split_hash_header", &route->split_hash_header);
  if (route->split_hash_header)
    *route->split_hash_header = absl::AsciiStrToLower(*route->split_hash_header);
  r.Map("redirect", [&](MapReader& m) {
    Redirect rd;
    m.OptString("scheme", &rd.scheme);
    m.OptString("host", &rd.host);
    m.OptString("path", &rd.path);
    m.OptString("prefix_rewrite", &rd.prefix_rewrite);
    if (m.Has("port")) {
      int port = 0;
      m.Int("port", &port, 1, 65535);
      rd.port = port;
    } else {
      m.Get("port");
    }
    m.Int("status", &rd.status, 300, 399);
    m.Bool("strip_query", &rd.strip_query);
    m.Check(rd.status == 301 || rd.status == 302 || rd.status == 303 || rd.status == 307 ||
                rd.status == 308,
            "status", "must be 301, 302, 303, 307 or 308");
    if (rd.scheme)
      m.Check(*rd.scheme == "http" || *rd.scheme == "https", "scheme", "must be http or https");
    route->redirect = std::move(rd);
  });
  r.Map("direct_response", [&](MapReader& m) {
    DirectResponse d;
    m.Int("status", &d.status, 200, 599);
    m.String("body", &d.body);
    m.String("content_type", &d.content_type);
    route->direct_response = std::move(d);
  });
  r.Map("experiment", [&](MapReader& m) { ReadExperimentRoute(m, route); });
  int actions = route->cluster.has_value() + !route->split.empty() + route->redirect.has_value() +
                route->direct_response.has_value() + route->experiment.has_value();
  r.Check(actions == 1, "cluster",
          "a route takes exactly one of cluster, split, experiment, redirect and "
          "direct_response");
  if (!route->split.empty()) {
    uint64_t total = 0;
    for (const auto& w : route->split) total += w.weight;
    r.Check(total > 0, "split", "the weights must not all be 0");
  }
  r.Map("cache", [&](MapReader& m) { m.Bool("enabled", &route->cache.enabled); });
  r.Time("timeout", &route->timeout);
  r.Time("idle_timeout", &route->idle_timeout);
  r.Map("retry", [&](MapReader& m) {
    RetryPolicy& p = route->retry;
    m.StringList("on", &p.retry_on);
    for (const std::string& on : p.retry_on) {
      m.Check(on == "connect-failure" || on == "reset" || on == "5xx" || on == "gateway-error" ||
                  on == "retriable-status",
              "on", "conditions are connect-failure, reset, 5xx, gateway-error, retriable-status");
    }
    m.Int("attempts", &p.max_attempts, 1, 10);
    m.Bool("non_idempotent", &p.non_idempotent);
    m.Time("per_try_timeout", &p.per_try_timeout);
    YAML::Node statuses = m.Get("statuses");
    if (m.ok() && statuses.IsDefined() && !statuses.IsNull()) {
      if (!statuses.IsSequence())
        return m.Fail(statuses, "must be a list of status codes", "statuses");
      for (const YAML::Node& s : statuses) {
        int code;
        if (!s.IsScalar() || !absl::SimpleAtoi(s.Scalar(), &code) || code < 100 || code > 599) {
          return m.Fail(s, "must be a list of status codes", "statuses");
        }
        p.retriable_statuses.push_back(code);
      }
    }
  });
  if (r.Has("max_body")) {
    size_t max = 0;
    r.Bytes("max_body", &max);
    route->max_body_bytes = max;
  } else {
    r.Get("max_body");
  }
  r.OptString("prefix_rewrite", &route->prefix_rewrite);
  r.OptString("host_rewrite", &route->host_rewrite);
  if (route->prefix_rewrite) {
    r.Check(route->prefix_rewrite->starts_with('/'), "prefix_rewrite", "must start with '/'");
  }
  r.Map("request_headers", [&](MapReader& m) { ReadHeaderEdits(m, &route->request_headers); });
  r.Map("response_headers", [&](MapReader& m) { ReadHeaderEdits(m, &route->response_headers); });
  r.Map("edge", [&](MapReader& m) {
    std::string name;
    m.String("function", &name, /*required=*/true);
    m.Check(ValidEdgeFunctionName(name), "function", "is not a valid edge function name");
    route->edge_function = std::move(name);
  });
}

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

void ReadVirtualHost(MapReader& r, VirtualHostConfig* vh) {
  vh->line = r.line();
  r.String("name", &vh->name, /*required=*/true);
  r.StringList("domains", &vh->domains);
  if (vh->domains.empty()) vh->domains = {"*"};
  for (std::string& d : vh->domains) {
    d = absl::AsciiStrToLower(d);
    r.Check(ValidDomain(d), "domains", absl::StrCat("'", d, "' is not a host name, *.suffix or *"));
  }
  r.List("routes", [&](MapReader& m) {
    RouteConfig route;
    ReadRoute(m, &route);
    vh->routes.push_back(std::move(route));
  });
  r.Check(!vh->routes.empty(), "routes", "a virtual host needs at least one route");
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
