#include "gateway/router.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace capstan::gateway {
namespace {

// Debian's abseil has its own string_view type.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::unique_ptr<re2::RE2> CompileRegex(const std::string& pattern, absl::Status* status) {
  re2::RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_unique<re2::RE2>(pattern, options);
  if (!re->ok() && status->ok()) {
    *status = absl::InvalidArgumentError(
        absl::StrCat("regex '", pattern, "' is not valid RE2: ", re->error()));
  }
  return re;
}

bool FullMatch(const re2::RE2& re, std::string_view text) {
  return re2::RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re);
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::string NormalizeHost(std::string_view host) {
  if (host.starts_with('[')) {
    size_t close = host.find(']');
    if (close != std::string_view::npos) host = host.substr(0, close + 1);
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) host = host.substr(0, colon);
  }
  // A trailing dot names the same host (absolute form of the name).
  if (host.size() > 1 && host.ends_with('.')) host.remove_suffix(1);
  return absl::AsciiStrToLower(Absl(host));
}

std::optional<std::string> FindQueryParameter(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (key == name ||
        (key.find_first_of("%+") != std::string_view::npos && PercentDecode(key) == name)) {
      return PercentDecode(value);
    }
  }
  return std::nullopt;
}

struct Route::CompiledHeader {
  HeaderMatcher config;
  std::unique_ptr<re2::RE2> regex;
};

struct Route::CompiledQuery {
  QueryMatcher config;
  std::unique_ptr<re2::RE2> regex;
};

Route::Route(RouteConfig config) : config_(std::move(config)) {}
Route::~Route() = default;
Route::Route(Route&&) noexcept = default;

absl::Status Route::Compile() {
  absl::Status status;
  const RouteMatch& m = config_.match;
  if (m.regex) path_regex_ = CompileRegex(*m.regex, &status);
  for (const HeaderMatcher& h : m.headers) {
    CompiledHeader c{h, nullptr};
    if (h.regex) c.regex = CompileRegex(*h.regex, &status);
    headers_.push_back(std::move(c));
  }
  for (const QueryMatcher& q : m.query) {
    CompiledQuery c{q, nullptr};
    if (q.regex) c.regex = CompileRegex(*q.regex, &status);
    query_.push_back(std::move(c));
  }
  uint64_t sum = 0;
  for (const WeightedCluster& w : config_.split) {
    sum += w.weight;
    split_cumulative_.push_back(sum);
  }
  if (!config_.split.empty() && sum == 0) {
    status = absl::InvalidArgumentError("a split's weights must not all be 0");
  }
  return status;
}

bool Route::Matches(const RequestView& request) const {
  const RouteMatch& m = config_.match;
  if (m.path) {
    bool eq = m.case_sensitive ? request.path == *m.path
                               : absl::EqualsIgnoreCase(Absl(request.path), *m.path);
    if (!eq) return false;
  } else if (m.prefix) {
    bool starts = m.case_sensitive ? request.path.starts_with(*m.prefix)
                                   : absl::StartsWithIgnoreCase(Absl(request.path), *m.prefix);
    if (!starts) return false;
  } else if (path_regex_ != nullptr) {
    if (!FullMatch(*path_regex_, request.path)) return false;
  }
  if (!m.methods.empty() &&
      std::find(m.methods.begin(), m.methods.end(), request.method) == m.methods.end()) {
    return false;
  }
  for (const CompiledHeader& h : headers_) {
    std::optional<std::string_view> value = request.header(h.config.name);
    bool ok;
    if (h.config.present) {
      ok = value.has_value() == *h.config.present;
    } else if (!value) {
      ok = false;
    } else if (h.config.exact) {
      ok = *value == *h.config.exact;
    } else if (h.config.prefix) {
      ok = value->starts_with(*h.config.prefix);
    } else {
      ok = FullMatch(*h.regex, *value);
    }
    if (ok == h.config.invert) return false;
  }
  for (const CompiledQuery& q : query_) {
    std::optional<std::string> value = FindQueryParameter(request.query, q.config.name);
    bool ok;
    if (q.config.present) {
      ok = value.has_value() == *q.config.present;
    } else if (!value) {
      ok = false;
    } else if (q.config.exact) {
      ok = *value == *q.config.exact;
    } else {
      ok = FullMatch(*q.regex, *value);
    }
    if (!ok) return false;
  }
  return true;
}

const std::string& Route::PickCluster(uint64_t draw) const {
  if (config_.cluster) return *config_.cluster;
  uint64_t point = draw % split_cumulative_.back();
  // The first cluster whose running sum passes the point.
  size_t i = std::upper_bound(split_cumulative_.begin(), split_cumulative_.end(), point) -
             split_cumulative_.begin();
  return config_.split[i].cluster;
}

std::string Route::label() const {
  return absl::StrCat(virtual_host_, "/",
                      config_.name.empty() ? absl::StrCat("#", index_) : config_.name);
}

std::string Route::RewritePath(std::string_view path) const {
  if (!config_.prefix_rewrite) return std::string(path);
  const RouteMatch& m = config_.match;
  size_t matched = 0;
  if (m.prefix) {
    matched = m.prefix->size();
  } else if (m.path) {
    matched = m.path->size();
  }
  std::string out = *config_.prefix_rewrite;
  std::string_view rest = path.substr(std::min(matched, path.size()));
  // "/api/" -> "/" on "/api/x" gives "/x", not "//x".
  if (out.ends_with('/') && rest.starts_with('/')) rest.remove_prefix(1);
  out.append(rest);
  return out;
}

absl::StatusOr<std::shared_ptr<const RouteTable>> RouteTable::Build(
    const std::vector<VirtualHostConfig>& virtual_hosts) {
  auto table = std::shared_ptr<RouteTable>(new RouteTable());
  table->hosts_.reserve(virtual_hosts.size());
  size_t next_index = 0;
  for (const VirtualHostConfig& vh : virtual_hosts) {
    Host host{vh.name, {}};
    host.routes.reserve(vh.routes.size());
    for (const RouteConfig& rc : vh.routes) {
      Route route(rc);
      route.virtual_host_ = vh.name;
      route.index_ = next_index++;
      absl::Status st = route.Compile();
      if (!st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "virtual host '", vh.name, "', route at line ", rc.line, ": ", st.message()));
      }
      host.routes.push_back(std::move(route));
    }
    table->hosts_.push_back(std::move(host));
  }
  // Pointers into hosts_ are taken once it no longer grows.
  for (size_t i = 0; i < virtual_hosts.size(); ++i) {
    const Host* host = &table->hosts_[i];
    for (const std::string& domain : virtual_hosts[i].domains) {
      std::string d = absl::AsciiStrToLower(domain);
      const Host** slot = nullptr;
      if (d == "*") {
        slot = &table->any_;
      } else if (d.starts_with("*.")) {
        auto it = std::find_if(table->suffixes_.begin(), table->suffixes_.end(),
                               [&](const auto& s) { return s.first == d.substr(1); });
        if (it == table->suffixes_.end()) {
          table->suffixes_.emplace_back(d.substr(1), nullptr);
          it = table->suffixes_.end() - 1;
        }
        slot = &it->second;
      } else {
        slot = &table->exact_[d];
      }
      if (*slot != nullptr && *slot != host) {
        return absl::InvalidArgumentError(absl::StrCat("domain '", d,
                                                       "' is claimed by virtual hosts '",
                                                       (*slot)->name, "' and '", host->name, "'"));
      }
      *slot = host;
    }
  }
  std::stable_sort(table->suffixes_.begin(), table->suffixes_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return std::shared_ptr<const RouteTable>(std::move(table));
}

const RouteTable::Host* RouteTable::FindHost(std::string_view host) const {
  if (!exact_.empty()) {
    auto it = exact_.find(Absl(host));
    if (it != exact_.end()) return it->second;
  }
  for (const auto& [suffix, h] : suffixes_) {
    // "*.example.com" matches "a.example.com", not "example.com".
    if (host.size() > suffix.size() && host.ends_with(suffix)) return h;
  }
  return any_;
}

const Route* RouteTable::Match(const RequestView& request) const {
  const Host* host = FindHost(request.host);
  if (host == nullptr) return nullptr;
  for (const Route& route : host->routes) {
    if (route.Matches(request)) return &route;
  }
  return nullptr;
}

size_t RouteTable::route_count() const {
  size_t n = 0;
  for (const Host& h : hosts_) n += h.routes.size();
  return n;
}

}  // namespace capstan::gateway
