// The gateway configuration's virtual hosts and routes: matches, header
// edits, experiment splits (docs/gateway.md, "Virtual hosts and routes").
#include <string>
#include <string_view>

#include "gateway/config_reader.h"
#include "re2/re2.h"

namespace capstan::gateway::config_internal {
namespace {

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

}  // namespace

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

}  // namespace capstan::gateway::config_internal
