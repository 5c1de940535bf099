// Black-box tests of the gateway's HTTP cache: a real `capstan gateway`
// (YAML config with a cache section and an admin listener, or the quick
// start's --cache) in front of a Python origin that counts its fetches
// (gateway_cache_origin.py), driven by curl.
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gateway_harness.h"
#include "gtest/gtest.h"

namespace capstan::e2e {
namespace {

class CacheOrigin {
 public:
  explicit CacheOrigin(const TempDir& dir, const std::string& name = "") {
    std::vector<std::string> argv = {
        "python3", std::string(CAPSTAN_SOURCE_DIR) + "/tests/e2e/gateway_cache_origin.py"};
    if (!name.empty()) argv.push_back(name);
    process_ = std::make_unique<Process>(argv, dir.path() + "/origin" + name + ".log");
    bool up = Eventually([&] {
      std::smatch m;
      std::string log = process_->Log();
      if (!std::regex_search(log, m, std::regex("port ([0-9]+)"))) return false;
      port_ = std::stoi(m[1]);
      return true;
    });
    EXPECT_TRUE(up) << process_->Log();
  }
  int port() const { return port_; }
  // How many full responses (not 304s) the origin sent for `path`.
  int Fetches(const std::string& path) const { return Ask("/__count?p=" + path); }
  int NotModified(const std::string& path) const { return Ask("/__304?p=" + path); }

 private:
  int Ask(const std::string& target) const {
    CommandResult r = Curl({"http://127.0.0.1:" + std::to_string(port_) + target});
    int n = -1;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &n)) return -1;
    return n;
  }
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

// A response as curl -D - prints it: head, then body.
struct Answer {
  int status = 0;
  std::string head, body;
  std::string Header(const std::string& name) const {
    for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
      size_t colon = line.find(':');
      if (colon == absl::string_view::npos) continue;
      if (absl::EqualsIgnoreCase(line.substr(0, colon), name)) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
    return "";
  }
};

Answer Get(const std::string& url, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"-D", "-"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(url);
  CommandResult r = Curl(args);
  Answer a;
  size_t end = r.out.find("\r\n\r\n");
  if (end == std::string::npos) return a;
  a.head = r.out.substr(0, end);
  a.body = r.out.substr(end + 4);
  std::smatch m;
  if (std::regex_search(a.head, m, std::regex("^HTTP/[0-9.]+ ([0-9]+)")))
    a.status = std::stoi(m[1]);
  return a;
}

class CacheTest : public ::testing::Test {
 protected:
  CacheTest() : dir_("gw_cache"), origin_(dir_) {
    std::string config = dir_.path() + "/gateway.yaml";
    log_ = dir_.path() + "/access.log";
    int port = PickFreePort();
    admin_ = PickFreePort();
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "admin: 127.0.0.1:" << admin_ << "\n"
        << "access_log: {path: " << log_ << ", fields: [method, path, status, cache, upstream]}\n"
        << "cache: {memory: 128MiB, max_object_size: 8MiB}\n"
        << "clusters: [{name: web, endpoints: [\"127.0.0.1:" << origin_.port() << "\"]}]\n"
        << "virtual_hosts: [{name: site, routes: [\n"
        << "  {match: {prefix: /nocache/}, cluster: web},\n"
        << "  {match: {prefix: /}, cluster: web, cache: {enabled: true}}]}]\n";
    out.close();
    gw_ = std::make_unique<GatewayProcess>(dir_, std::vector<std::string>{"--config", config});
  }
  std::string Url(const std::string& target) const { return gw_->url(target); }
  std::string Admin(const std::string& target) const {
    return "http://127.0.0.1:" + std::to_string(admin_) + target;
  }

  TempDir dir_;
  CacheOrigin origin_;
  std::string log_;
  int admin_ = 0;
  std::unique_ptr<GatewayProcess> gw_;
};

TEST_F(CacheTest, MissThenHitWithAgeMetricsAndLog) {
  Answer first = Get(Url("/a?cc=max-age=600"));
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.Header("x-cache"), "MISS");
  EXPECT_EQ(first.body, "/a #1 ");
  for (int i = 0; i < 3; ++i) {
    Answer hit = Get(Url("/a?cc=max-age=600"));
    EXPECT_EQ(hit.status, 200);
    EXPECT_EQ(hit.Header("x-cache"), "HIT");
    EXPECT_EQ(hit.body, "/a #1 ");
    EXPECT_FALSE(hit.Header("age").empty());
  }
  EXPECT_EQ(origin_.Fetches("/a"), 1);
  // HTTP/2 clients hit the same store.
  Answer h2 = Get(Url("/a?cc=max-age=600"), {"--http2-prior-knowledge"});
  EXPECT_EQ(h2.Header("x-cache"), "HIT");
  EXPECT_EQ(h2.body, "/a #1 ");
  // A route without the cache is untouched.
  Get(Url("/nocache/x?cc=max-age=600"));
  Answer uncached = Get(Url("/nocache/x?cc=max-age=600"));
  EXPECT_EQ(uncached.Header("x-cache"), "");
  EXPECT_EQ(origin_.Fetches("/nocache/x"), 2);
  std::string metrics = Curl({Admin("/metrics")}).out;
  EXPECT_TRUE(absl::StrContains(metrics, "capstan_gateway_cache_hits_total 4")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "capstan_gateway_cache_misses_total 1")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "capstan_gateway_cache_objects 1")) << metrics;
  EXPECT_TRUE(Eventually([&] {
    std::ifstream in(log_);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return absl::StrContains(text, "\"cache\": \"HIT\"") &&
           absl::StrContains(text, "\"cache\": \"MISS\"");
  }));
}

TEST_F(CacheTest, RevalidationWith304UpdatesTheStoredResponse) {
  const std::string url = Url("/r?cc=max-age=0&etag=v1");
  EXPECT_EQ(Get(url).Header("x-cache"), "MISS");
  Answer again = Get(url);
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.Header("x-cache"), "REVALIDATED");
  EXPECT_EQ(again.body, "/r #1 ");  // the stored body, confirmed by a 304
  EXPECT_EQ(origin_.Fetches("/r"), 1);
  EXPECT_EQ(origin_.NotModified("/r"), 1);
  // The client's own conditional is answered from the store.
  Answer conditional = Get(url, {"-H", "If-None-Match: \"v1\""});
  EXPECT_EQ(conditional.status, 304);
  EXPECT_EQ(origin_.Fetches("/r"), 1);
}

TEST_F(CacheTest, VarySecondaryKeys) {
  const std::string url = Url("/v?cc=max-age=600&vary=Accept-Language");
  EXPECT_EQ(Get(url, {"-H", "Accept-Language: en"}).body, "/v #1 en");
  EXPECT_EQ(Get(url, {"-H", "Accept-Language: fr"}).body, "/v #2 fr");
  Answer en = Get(url, {"-H", "Accept-Language:   en"});
  EXPECT_EQ(en.Header("x-cache"), "HIT");
  EXPECT_EQ(en.body, "/v #1 en");
  EXPECT_EQ(Get(url, {"-H", "Accept-Language: fr"}).Header("x-cache"), "HIT");
  EXPECT_EQ(origin_.Fetches("/v"), 2);
}

TEST_F(CacheTest, ConcurrentMissesMakeOneUpstreamFetch) {
  constexpr int kClients = 8;
  std::vector<std::string> args = {"-Z",
                                   "--parallel-immediate",
                                   "--parallel-max",
                                   std::to_string(kClients),
                                   "-o",
                                   "/dev/null",
                                   "-w",
                                   "%{http_code} %{time_total}\\n"};
  for (int i = 0; i < kClients; ++i) {
    args.push_back(Url("/slow?cc=max-age=600&delay=1"));
    if (i + 1 < kClients) {
      args.push_back("-o");
      args.push_back("/dev/null");
    }
  }
  CommandResult r = Curl(args);
  EXPECT_EQ(CountOf(r.out, "200"), static_cast<size_t>(kClients)) << r.out << r.err;
  EXPECT_EQ(origin_.Fetches("/slow"), 1);
  std::string metrics = Curl({Admin("/metrics")}).out;
  // The requests that came while the first one's fetch was under way waited
  // for it (the rest, if any, found it stored).
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(metrics, m, std::regex("capstan_gateway_cache_coalesced_total ([0-9]+)")));
  EXPECT_GE(std::stoi(m[1]), 1) << metrics << r.out;
  // A response stored already stale (max-age=0) still answers the requests
  // that waited for it: it is the origin's answer given after they asked.
  std::vector<std::string> stale_args = {"-Z", "--parallel-immediate", "--parallel-max",
                                         std::to_string(kClients)};
  for (int i = 0; i < kClients; ++i) {
    stale_args.push_back("-o");
    stale_args.push_back("/dev/null");
    stale_args.push_back(Url("/zero?cc=max-age=0&delay=1"));
  }
  Curl(stale_args);
  EXPECT_EQ(origin_.Fetches("/zero"), 1);
  // A response that cannot be stored releases the waiters: each fetches.
  std::vector<std::string> nostore = {"-Z", "--parallel-immediate", "--parallel-max",
                                      std::to_string(kClients)};
  for (int i = 0; i < kClients; ++i) {
    nostore.push_back("-o");
    nostore.push_back("/dev/null");
    nostore.push_back(Url("/ns?cc=no-store&delay=0.3"));
  }
  Curl(nostore);
  EXPECT_EQ(origin_.Fetches("/ns"), kClients);
}

TEST_F(CacheTest, PurgeByUrlAndByTag) {
  const std::string tagged = Url("/t?cc=max-age=600&tag=product-7%20all");
  const std::string plain = Url("/u?cc=max-age=600");
  Get(tagged);
  Get(plain);
  EXPECT_EQ(Get(tagged).Header("x-cache"), "HIT");
  EXPECT_EQ(Get(plain).Header("x-cache"), "HIT");
  CommandResult by_tag = Curl({"-X", "POST", Admin("/cache/purge?tag=product-7")});
  EXPECT_TRUE(absl::StrContains(by_tag.out, "\"purged\": 1")) << by_tag.out;
  EXPECT_EQ(Get(tagged).Header("x-cache"), "MISS");
  std::string key_url =
      "http%3A%2F%2F127.0.0.1%3A" + std::to_string(gw_->port()) + "%2Fu%3Fcc%3Dmax-age%3D600";
  CommandResult by_url = Curl({"-X", "PURGE", Admin("/cache/purge?url=" + key_url)});
  EXPECT_TRUE(absl::StrContains(by_url.out, "\"purged\": 1")) << by_url.out;
  EXPECT_EQ(Get(plain).Header("x-cache"), "MISS");
  CommandResult nothing =
      Curl({"-X", "POST", "-w", "%{http_code}", Admin("/cache/purge?tag=none")});
  EXPECT_TRUE(absl::StrContains(nothing.out, "404")) << nothing.out;
  CommandResult bad = Curl({"-X", "POST", "-w", "%{http_code}", Admin("/cache/purge?what=1")});
  EXPECT_TRUE(absl::StrContains(bad.out, "400")) << bad.out;
}

TEST_F(CacheTest, RangesAndHeadFromTheStoredResponse) {
  const std::string url = Url("/big?cc=max-age=600&size=1000");
  Answer full = Get(url);
  ASSERT_EQ(full.body.size(), 1000u);
  Answer part = Get(url, {"-H", "Range: bytes=10-19"});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.Header("content-range"), "bytes 10-19/1000");
  EXPECT_EQ(part.body, full.body.substr(10, 10));
  Answer suffix = Get(url, {"-H", "Range: bytes=-5"});
  EXPECT_EQ(suffix.status, 206);
  EXPECT_EQ(suffix.body, full.body.substr(995));
  Answer beyond = Get(url, {"-H", "Range: bytes=5000-"});
  EXPECT_EQ(beyond.status, 416);
  EXPECT_EQ(beyond.Header("content-range"), "bytes */1000");
  Answer head = Get(url, {"-I"});
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("x-cache"), "HIT");
  EXPECT_EQ(head.Header("content-length"), "1000");
  EXPECT_EQ(origin_.Fetches("/big"), 1);
}

// Bodies from 64 KiB up are stored in mapped blocks and leave by
// vmsplice/splice (net/splice_sender.h): whole, as ranges, and to a reader
// slower than the socket's buffers (the part the socket does not take goes
// on by copy), every byte must be the origin's.
TEST_F(CacheTest, LargeBodiesLeaveIntactWholeAsRangesAndToSlowReaders) {
  const std::string url = Url("/large?cc=max-age=600&size=300000");
  Answer first = Get(url);
  ASSERT_EQ(first.body.size(), 300000u);
  for (int i = 0; i < 5; ++i) {
    Answer hit = Get(url);
    EXPECT_EQ(hit.Header("x-cache"), "HIT");
    EXPECT_EQ(hit.body, first.body) << "hit " << i;
  }
  Answer part = Get(url, {"-H", "Range: bytes=1000-200999"});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.body, first.body.substr(1000, 200000));
  Answer slow = Get(url, {"--limit-rate", "2M"});
  EXPECT_EQ(slow.Header("x-cache"), "HIT");
  EXPECT_EQ(slow.body, first.body);
  // A body far larger than the socket takes at once, read slowly: the
  // socket fills again and again, and each time the rest goes on by splice.
  const std::string huge_url = Url("/large?cc=max-age=600&size=7000000");
  Answer huge = Get(huge_url);
  ASSERT_EQ(huge.body.size(), 7000000u);
  Answer huge_slow = Get(huge_url, {"--limit-rate", "40M"});
  EXPECT_EQ(huge_slow.Header("x-cache"), "HIT");
  EXPECT_TRUE(huge_slow.body == huge.body) << huge_slow.body.size() << " bytes";
  // Several responses on one connection: each body follows its own head.
  CommandResult twice = Curl({"-s", url, url});
  EXPECT_TRUE(twice.out == first.body + first.body) << twice.out.size() << " bytes";
  EXPECT_EQ(origin_.Fetches("/large"), 2);
  // And they did leave by splice, every byte of the hits' bodies: the five
  // whole hits, the range, the slow readers' (whose sockets took them a
  // piece at a time) and the two on one connection.
  std::smatch m;
  std::string metrics = Curl({Admin("/metrics")}).out;
  ASSERT_TRUE(
      std::regex_search(metrics, m, std::regex("capstan_gateway_spliced_bytes_total ([0-9.e+]+)")))
      << metrics;
  EXPECT_GE(std::stod(m[1]), 5 * 300000.0 + 200000 + 300000 + 7000000 + 2 * 300000);
}

TEST_F(CacheTest, UnsafeMethodInvalidates) {
  const std::string url = Url("/i?cc=max-age=600");
  Get(url);
  EXPECT_EQ(Get(url).Header("x-cache"), "HIT");
  Answer post = Get(url, {"-X", "POST", "-d", "x=1"});
  EXPECT_EQ(post.status, 200);
  Answer after = Get(url);
  EXPECT_EQ(after.Header("x-cache"), "MISS");
  EXPECT_EQ(origin_.Fetches("/i"), 3);  // GET, POST, GET
}

TEST_F(CacheTest, OnlyIfCachedAndPrivate) {
  EXPECT_EQ(Get(Url("/o?cc=max-age=600"), {"-H", "Cache-Control: only-if-cached"}).status, 504);
  EXPECT_EQ(origin_.Fetches("/o"), 0);
  const std::string priv = Url("/p?cc=private,max-age=600");
  Get(priv);
  EXPECT_EQ(Get(priv).Header("x-cache"), "MISS");
  EXPECT_EQ(origin_.Fetches("/p"), 2);
  // Authorization: stored only with public / s-maxage / must-revalidate.
  const std::string auth = Url("/auth?cc=max-age=600");
  Get(auth, {"-H", "Authorization: Bearer t"});
  Get(auth, {"-H", "Authorization: Bearer t"});
  EXPECT_EQ(origin_.Fetches("/auth"), 2);
}

TEST_F(CacheTest, StaleWhileRevalidateRefreshesInTheBackground) {
  const std::string url = Url("/s?cc=max-age=1,stale-while-revalidate=600");
  EXPECT_EQ(Get(url).body, "/s #1 ");
  // Once the response is stale, it is served at once (STALE) and the origin
  // is asked again in the background.
  Answer stale;
  EXPECT_TRUE(Eventually([&] {
    stale = Get(url);
    return stale.Header("x-cache") == "STALE";
  }));
  EXPECT_EQ(stale.body, "/s #1 ");
  EXPECT_TRUE(Eventually([&] { return origin_.Fetches("/s") == 2; }));
  EXPECT_TRUE(Eventually([&] { return Get(url).body == "/s #2 "; }));
}

TEST_F(CacheTest, StaleIfErrorServesTheStoredResponse) {
  // max-age=0 with validators absent: each request asks the origin, which
  // fails after the first fetch; stale-if-error lets the stored one answer.
  const std::string url = Url("/e?cc=max-age=0,stale-if-error=600&fail_after=1");
  EXPECT_EQ(Get(url).body, "/e #1 ");
  Answer stale = Get(url);
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.Header("x-cache"), "STALE");
  EXPECT_EQ(stale.body, "/e #1 ");
  EXPECT_EQ(origin_.Fetches("/e"), 2);
  // Without stale-if-error the origin's error goes through.
  const std::string strict = Url("/f?cc=max-age=0&fail_after=1");
  Get(strict);
  EXPECT_EQ(Get(strict).status, 503);
}

TEST_F(CacheTest, HeadMissIsNotStoredAsTheGetBody) {
  const std::string url = Url("/h?cc=max-age=600");
  Answer head = Get(url, {"-I"});
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("x-cache"), "PASS");
  Answer get = Get(url);
  EXPECT_EQ(get.Header("x-cache"), "MISS");
  EXPECT_EQ(get.body, "/h #2 ");
  EXPECT_EQ(Get(url, {"-I"}).Header("x-cache"), "HIT");
}

// A route that splits between clusters keeps one object per cluster: a
// user sticky to one cluster never gets the other's stored answer.
TEST(CacheSplit, EachClusterHasItsOwnObject) {
  TempDir dir("gw_cache_split");
  CacheOrigin a(dir, "a"), b(dir, "b");
  std::string config = dir.path() + "/gateway.yaml";
  int port = PickFreePort();
  {
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << port << "\"}]\n"
        << "cache: {memory: 16MiB}\n"
        << "clusters: [{name: a, endpoints: [\"127.0.0.1:" << a.port() << "\"]},"
        << " {name: b, endpoints: [\"127.0.0.1:" << b.port() << "\"]}]\n"
        << "virtual_hosts: [{name: site, routes: [{match: {prefix: /}, cache: {enabled: true},"
        << " split: [{cluster: a, weight: 1}, {cluster: b, weight: 1}],"
        << " split_hash_header: x-user}]}]\n";
  }
  GatewayProcess gw(dir, {"--config", config});
  std::set<std::string> seen;
  for (int user = 0; user < 20; ++user) {
    std::vector<std::string> header = {"-H", "x-user: u" + std::to_string(user)};
    Answer first = Get(gw.url("/s?cc=max-age=600"), header);
    Answer second = Get(gw.url("/s?cc=max-age=600"), header);
    EXPECT_EQ(second.Header("x-origin"), first.Header("x-origin")) << "user " << user;
    EXPECT_EQ(second.Header("x-cache"), "HIT");
    seen.insert(first.Header("x-origin"));
  }
  EXPECT_EQ(seen, (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(a.Fetches("/s"), 1);
  EXPECT_EQ(b.Fetches("/s"), 1);
}

// RFC 9111 §4.3.5: a HEAD that validates a stale stored GET and gets a 200
// updates the stored response's fields (here its freshness): the next GET is
// a hit, without fetching the body again.
TEST_F(CacheTest, HeadResponseUpdatesTheStoredGet) {
  const std::string url = Url("/hu?cc=max-age=0");
  Answer first = Get(url);
  EXPECT_EQ(first.Header("x-cache"), "MISS");
  EXPECT_EQ(Get(url).Header("x-cache"), "MISS");  // stale at once, no validator: fetched
  EXPECT_EQ(origin_.Fetches("/hu"), 2);
  Answer head = Get(url, {"-I", "-H", "X-Origin-CC: max-age=600"});
  EXPECT_EQ(head.status, 200);
  // Answered from the updated stored response, as after a 304.
  EXPECT_EQ(head.Header("x-cache"), "REVALIDATED");
  EXPECT_EQ(head.Header("cache-control"), "max-age=600");
  Answer hit = Get(url);
  EXPECT_EQ(hit.Header("x-cache"), "HIT");
  EXPECT_EQ(hit.Header("cache-control"), "max-age=600");
  EXPECT_EQ(hit.body, "/hu #2 ");        // the stored body, with the HEAD's fields
  EXPECT_EQ(origin_.Fetches("/hu"), 3);  // the two GETs and the HEAD
  std::string metrics = Curl({Admin("/metrics")}).out;
  EXPECT_TRUE(absl::StrContains(metrics, "capstan_gateway_cache_head_updates_total 1")) << metrics;
}

// RFC 9213: CDN-Cache-Control decides for the gateway (here: store for 600
// s despite Cache-Control: no-store) and is forwarded to the client.
TEST_F(CacheTest, CdnCacheControlTakesPrecedence) {
  const std::string url = Url("/cdn?cc=no-store&cdn=max-age=600");
  Answer first = Get(url);
  EXPECT_EQ(first.Header("x-cache"), "MISS");
  EXPECT_EQ(first.Header("cdn-cache-control"), "max-age=600");
  Answer hit = Get(url);
  EXPECT_EQ(hit.Header("x-cache"), "HIT");
  EXPECT_EQ(hit.Header("cache-control"), "no-store");
  EXPECT_EQ(hit.Header("cdn-cache-control"), "max-age=600");
  EXPECT_EQ(origin_.Fetches("/cdn"), 1);
  // And the other way round: CDN-Cache-Control: no-store wins over max-age.
  const std::string never = Url("/cdn-no?cc=max-age=600&cdn=no-store");
  Get(never);
  EXPECT_EQ(Get(never).Header("x-cache"), "MISS");
  EXPECT_EQ(origin_.Fetches("/cdn-no"), 2);
}

// The disk tier: a response cached by one gateway process is a hit for the
// next one on the same directory, after a kill -9, without the origin.
TEST(CacheDisk, StoredResponseSurvivesKill9) {
  TempDir dir("gw_cache_disk");
  TempDir first_dir("gw_cache_disk_1"), second_dir("gw_cache_disk_2");
  CacheOrigin origin(dir);
  const std::string disk = dir.path() + "/disk";
  auto start = [&](const TempDir& d, int* admin) {
    std::string config = d.path() + "/gateway.yaml";
    *admin = PickFreePort();
    std::ofstream out(config);
    out << "listeners: [{address: \"127.0.0.1:" << PickFreePort() << "\"}]\n"
        << "admin: 127.0.0.1:" << *admin << "\n"
        << "cache: {memory: 16MiB, disk: {path: " << disk << ", size: 64MiB}}\n"
        << "clusters: [{name: web, endpoints: [\"127.0.0.1:" << origin.port() << "\"]}]\n"
        << "virtual_hosts: [{name: site, routes: [{match: {prefix: /}, cluster: web,"
        << " cache: {enabled: true}}]}]\n";
    out.close();
    return std::make_unique<GatewayProcess>(d, std::vector<std::string>{"--config", config});
  };
  auto metric = [](int admin, const std::string& name) {
    std::string text = Curl({"http://127.0.0.1:" + std::to_string(admin) + "/metrics"}).out;
    std::smatch m;
    if (!std::regex_search(text, m, std::regex("\n" + name + " ([0-9.e+]+)"))) return -1.0;
    return std::stod(m[1]);
  };
  const std::string body_path = "/d?cc=max-age=600&vary=Accept-Language&size=5000";
  // The key holds the authority: the same Host for both processes (each
  // listens on a port of its own).
  const std::string kHost = "Host: cache.example";
  int admin = 0;
  auto gw = start(first_dir, &admin);
  ASSERT_TRUE(Eventually([&] { return metric(admin, "capstan_gateway_cache_disk_ready") == 1; }));
  Answer miss = Get(gw->url(body_path), {"-H", "Accept-Language: en", "-H", kHost});
  EXPECT_EQ(miss.Header("x-cache"), "MISS");
  ASSERT_EQ(miss.body.size(), 5000u);
  // A second object, whose file is damaged while no gateway runs.
  const std::string damaged_path = "/t?cc=max-age=600&size=3000";
  EXPECT_EQ(Get(gw->url(damaged_path), {"-H", kHost}).Header("x-cache"), "MISS");
  // Written off the request path: wait until the records are on disk.
  ASSERT_TRUE(Eventually([&] { return metric(admin, "capstan_gateway_cache_disk_objects") == 2; }));
  gw->process()->Kill();  // SIGKILL: nothing is flushed at exit
  gw.reset();
  bool damaged = false;
  for (const auto& e : std::filesystem::directory_iterator(disk)) {
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (e.path().extension() != ".obj" || bytes.find("/t #1") == std::string::npos) continue;
    f.clear();                   // past the end after the read
    f.seekp(-1, std::ios::end);  // the body's last byte
    f.put(bytes.back() == 'x' ? 'y' : 'x');
    damaged = true;
  }
  ASSERT_TRUE(damaged);

  gw = start(second_dir, &admin);
  ASSERT_TRUE(Eventually([&] { return metric(admin, "capstan_gateway_cache_disk_ready") == 1; }));
  EXPECT_EQ(metric(admin, "capstan_gateway_cache_disk_objects"), 2);
  Answer hit = Get(gw->url(body_path), {"-H", "Accept-Language: en", "-H", kHost});
  EXPECT_EQ(hit.status, 200);
  EXPECT_EQ(hit.Header("x-cache"), "HIT");
  EXPECT_EQ(hit.body, miss.body);
  EXPECT_EQ(hit.Header("vary"), "Accept-Language");
  EXPECT_EQ(hit.Header("content-type"), "text/plain");
  EXPECT_FALSE(hit.Header("age").empty());
  EXPECT_EQ(origin.Fetches("/d"), 1);
  // Another Vary value is another object: not on disk, fetched.
  EXPECT_EQ(Get(gw->url(body_path), {"-H", "Accept-Language: fr", "-H", kHost}).Header("x-cache"),
            "MISS");
  EXPECT_EQ(origin.Fetches("/d"), 2);
  EXPECT_EQ(metric(admin, "capstan_gateway_cache_disk_hits_total"), 1);
  // The damaged record is never served: its checksum fails, it is removed,
  // and the origin answers.
  Answer refetched = Get(gw->url(damaged_path), {"-H", kHost});
  EXPECT_EQ(refetched.Header("x-cache"), "MISS");
  EXPECT_EQ(refetched.body.substr(0, 5), "/t #2");
  EXPECT_EQ(origin.Fetches("/t"), 2);
  EXPECT_EQ(metric(admin, "capstan_gateway_cache_disk_corrupt_total"), 1);
  // A purge removes the disk copies too: after another restart, a miss.
  CommandResult purged =
      Curl({"-X", "POST", "http://127.0.0.1:" + std::to_string(admin) + "/cache/purge?all=1"});
  // In memory: en (read back from disk), fr and /t's new copy.
  EXPECT_TRUE(absl::StrContains(purged.out, "\"purged\": 3")) << purged.out;
  ASSERT_TRUE(Eventually([&] { return metric(admin, "capstan_gateway_cache_disk_objects") == 0; }));
  EXPECT_TRUE(Eventually([&] {
    for (const auto& e : std::filesystem::directory_iterator(disk)) {
      if (e.path().extension() == ".obj") return false;
    }
    return true;
  }));
}

TEST(CacheQuickStart, CacheDiskFlagWritesToTheDirectory) {
  TempDir dir("gw_cache_quick_disk");
  CacheOrigin origin(dir);
  const std::string disk = dir.path() + "/disk";
  GatewayProcess gw(dir, {"--upstream", "http://127.0.0.1:" + std::to_string(origin.port()),
                          "--cache", "32MiB", "--cache-disk", disk + ":16MiB"});
  EXPECT_EQ(Get(gw.url("/qd?cc=max-age=600")).Header("x-cache"), "MISS");
  EXPECT_TRUE(Eventually([&] {
    if (!std::filesystem::exists(disk)) return false;
    for (const auto& e : std::filesystem::directory_iterator(disk)) {
      if (e.path().extension() == ".obj") return true;
    }
    return false;
  }));
  CommandResult bad = RunCommand({CapstanBinary(), "gateway", "--upstream", "http://127.0.0.1:9",
                                  "--cache", "32MiB", "--cache-disk", disk, "--validate"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(bad.err + bad.out, "--cache-disk")) << bad.err << bad.out;
}

TEST(CacheQuickStart, CacheFlagCachesEveryCacheableResponse) {
  TempDir dir("gw_cache_quick");
  CacheOrigin origin(dir);
  GatewayProcess gw(
      dir, {"--upstream", "http://127.0.0.1:" + std::to_string(origin.port()), "--cache", "32MiB"});
  Get(gw.url("/q?cc=max-age=600"));
  Answer hit = Get(gw.url("/q?cc=max-age=600"));
  EXPECT_EQ(hit.Header("x-cache"), "HIT");
  EXPECT_EQ(origin.Fetches("/q"), 1);
}

}  // namespace
}  // namespace capstan::e2e
