// TLS on `capstan store`'s client, metrics and peer ports, driven with the
// real etcdctl, curl, openssl and Capstan's own client. Every certificate is
// made at test time with the openssl command line: a CA, a server
// certificate for 127.0.0.1/localhost, a client certificate with CN=alice,
// member certificates, and certificates from a second CA nobody trusts.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

using ::testing::HasSubstr;

// Runs a command that must succeed (certificate making).
void MustRun(const std::vector<std::string>& argv) {
  CommandResult r = RunCommand(argv, "", std::chrono::seconds(30));
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << argv[1] << ": " << r.err;
}

struct Cert {
  std::string cert, key;
};

// A CA in `dir`/<name>.pem, able to issue certificates.
class Ca {
 public:
  Ca(std::string dir, std::string name) : dir_(std::move(dir)), name_(std::move(name)) {
    MustRun({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", Path(name_ + ".key"), "-out", Path(name_ + ".pem"), "-days", "2",
             "-subj", "/CN=" + name_});
  }
  std::string file() const { return Path(name_ + ".pem"); }
  // A certificate for CN=`cn`; `san` like "IP:127.0.0.1,DNS:localhost".
  Cert Issue(const std::string& base, const std::string& cn, const std::string& san) const {
    Cert c{Path(base + ".pem"), Path(base + ".key")};
    std::ofstream(Path(base + ".ext")) << "subjectAltName=" << san << "\n";
    MustRun({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", c.key, "-out", Path(base + ".csr"), "-subj", "/CN=" + cn});
    MustRun({"openssl", "x509", "-req", "-in", Path(base + ".csr"), "-CA", file(), "-CAkey",
             Path(name_ + ".key"), "-CAcreateserial", "-days", "2", "-extfile", Path(base + ".ext"),
             "-out", c.cert});
    return c;
  }

 private:
  std::string Path(const std::string& f) const { return dir_ + "/" + f; }
  std::string dir_, name_;
};

constexpr char kLocalSan[] = "IP:127.0.0.1,DNS:localhost";

class StoreTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = std::make_unique<Ca>(dir_.path(), "ca");
    other_ca_ = std::make_unique<Ca>(dir_.path(), "other-ca");
    server_ = ca_->Issue("server", "server", kLocalSan);
    alice_ = ca_->Issue("alice", "alice", "DNS:alice");
    mallory_ = other_ca_->Issue("mallory", "mallory", "DNS:mallory");
  }
  void TearDown() override {
    if (!HasFailure()) return;
    for (auto& p : processes_) std::cerr << "member log:\n" << p->Log() << "\n";
  }

  // Starts `capstan store` with `flags` (plus a name and data directory).
  Process* StartStore(const std::string& name, std::vector<std::string> flags) {
    std::vector<std::string> argv = {CapstanBinary(),         "store", "--name", name, "--data-dir",
                                     dir_.path() + "/" + name};
    argv.insert(argv.end(), flags.begin(), flags.end());
    processes_.push_back(std::make_unique<Process>(argv, dir_.path() + "/" + name + ".log"));
    return processes_.back().get();
  }

  // etcdctl against `endpoint` with TLS flags (`cert` null: no client
  // certificate).
  // `refused`: the call is expected to fail, so it need not wait long.
  CommandResult Ctl(const std::string& endpoint, const std::string& ca, const Cert* cert,
                    std::vector<std::string> args, bool refused = false) {
    std::vector<std::string> argv = {"etcdctl", "--endpoints=" + endpoint,
                                     refused ? "--dial-timeout=1s" : "--dial-timeout=3s",
                                     refused ? "--command-timeout=2s" : "--command-timeout=5s"};
    if (!ca.empty()) argv.push_back("--cacert=" + ca);
    if (cert != nullptr) {
      argv.push_back("--cert=" + cert->cert);
      argv.push_back("--key=" + cert->key);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, "", std::chrono::seconds(20), {{"ETCDCTL_API", "3"}});
  }

  // Waits until alice can read through `endpoint` (the member is up).
  bool WaitReady(Process* p, const std::string& endpoint, const std::string& ca, const Cert* cert,
                 std::vector<std::string> extra = {}) {
    std::vector<std::string> args = extra;
    args.insert(args.end(), {"get", "ready-probe"});
    return Eventually([&] { return !p->Running() || Ctl(endpoint, ca, cert, args).exit_code == 0; },
                      std::chrono::seconds(30)) &&
           p->Running();
  }

  // The serial of the certificate served on 127.0.0.1:port (openssl
  // s_client), "" when none.
  std::string ServedSerial(int port) {
    CommandResult r = RunCommand({"sh", "-c",
                                  "openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                                      " -alpn h2 -cert '" + alice_.cert + "' -key '" + alice_.key +
                                      "' </dev/null 2>/dev/null | openssl x509 -noout -serial"},
                                 "", std::chrono::seconds(10));
    return r.exit_code == 0 ? r.out : "";
  }

  TempDir dir_{"capstan-store-tls"};
  std::unique_ptr<Ca> ca_, other_ca_;
  Cert server_, alice_, mallory_;
  std::vector<std::unique_ptr<Process>> processes_;
};

std::string Url(const char* scheme, int port) {
  return std::string(scheme) + "://127.0.0.1:" + std::to_string(port);
}

TEST_F(StoreTlsTest, ClientCertAuthAdmitsAliceAndRefusesEveryoneElse) {
  int client = PickFreePort(), metrics = PickFreePort(), peer = PickFreePort();
  std::string endpoint = Url("https", client);
  Process* p = StartStore(
      "m", {"--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-metrics-urls", Url("https", metrics), "--initial-advertise-peer-urls",
            Url("http", peer), "--cert-file", server_.cert, "--key-file", server_.key,
            "--trusted-ca-file", ca_->file(), "--client-cert-auth"});
  ASSERT_TRUE(WaitReady(p, endpoint, ca_->file(), &alice_));

  // etcdctl with --cacert/--cert/--key: put, get, watch.
  std::string watch_log = dir_.path() + "/watch.log";
  Process watcher({"etcdctl", "--endpoints=" + endpoint, "--cacert=" + ca_->file(),
                   "--cert=" + alice_.cert, "--key=" + alice_.key, "watch", "k", "--rev=1"},
                  watch_log, {{"ETCDCTL_API", "3"}});
  CommandResult put = Ctl(endpoint, ca_->file(), &alice_, {"put", "k", "v1"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  CommandResult get = Ctl(endpoint, ca_->file(), &alice_, {"get", "k"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "k\nv1\n");
  EXPECT_TRUE(Eventually([&] { return watcher.Log().find("PUT\nk\nv1\n") != std::string::npos; }))
      << watcher.Log();

  // No client certificate, one from another CA, a client that does not
  // trust the server's CA, and clear text: all refused.
  CommandResult no_cert = Ctl(endpoint, ca_->file(), nullptr, {"get", "k"}, true);
  EXPECT_NE(no_cert.exit_code, 0) << no_cert.out;
  CommandResult other = Ctl(endpoint, ca_->file(), &mallory_, {"get", "k"}, true);
  EXPECT_NE(other.exit_code, 0) << other.out;
  CommandResult wrong_ca = Ctl(endpoint, other_ca_->file(), &alice_, {"get", "k"}, true);
  EXPECT_NE(wrong_ca.exit_code, 0) << wrong_ca.out;
  // (Debian's etcdctl 3.4 reports only "context deadline exceeded" then.)
  CommandResult plain = Ctl(Url("http", client), "", nullptr, {"get", "k"}, true);
  EXPECT_NE(plain.exit_code, 0) << plain.out;
  EXPECT_EQ(plain.out, "");
  // The member is unharmed by them.
  EXPECT_EQ(Ctl(endpoint, ca_->file(), &alice_, {"get", "k", "--print-value-only"}).out, "v1\n");

  // /health and /metrics over https with the same certificates (etcd's
  // --listen-metrics-urls); a client without a certificate is refused.
  CommandResult health =
      RunCommand({"curl", "-sS", "--max-time", "10", "--cacert", ca_->file(), "--cert", alice_.cert,
                  "--key", alice_.key, Url("https", metrics) + "/health"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_THAT(health.out, HasSubstr("\"health\":\"true\""));
  CommandResult anonymous = RunCommand({"curl", "-sS", "--max-time", "10", "--cacert", ca_->file(),
                                        Url("https", metrics) + "/health"});
  EXPECT_NE(anonymous.exit_code, 0) << anonymous.out;
  EXPECT_THAT(RunCommand({"curl", "-sS", "--max-time", "10", Url("http", metrics) + "/health"}).out,
              ::testing::Not(HasSubstr("health")));

  // Capstan's own client over https.
  client::ClientOptions options;
  options.endpoints = {endpoint};
  options.ca_file = ca_->file();
  options.cert_file = alice_.cert;
  options.key_file = alice_.key;
  auto c = client::Client::Connect(options);
  ASSERT_TRUE(c.ok()) << c.status();
  auto resp = (*c)->Get("k");
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(resp->kvs_size(), 1);
  EXPECT_EQ(resp->kvs(0).value(), "v1");
  options.cert_file = options.key_file = "";
  auto anonymous_client = client::Client::Connect(options);
  ASSERT_TRUE(anonymous_client.ok());
  EXPECT_FALSE((*anonymous_client)->Get("k").ok());

  p->Signal(SIGTERM);
  EXPECT_NE(p->Wait(std::chrono::seconds(15)), -1);
}

// With --client-cert-auth and auth enabled, a call without a token is the
// user its verified certificate names (its Common Name), as etcd's: alice,
// who may only read "a", reads "a" and is refused "b" and every write, all
// without --user.
TEST_F(StoreTlsTest, TheClientCertificatesCommonNameIsTheUserWithoutAToken) {
  int client = PickFreePort(), peer = PickFreePort();
  std::string endpoint = Url("https", client);
  Process* p = StartStore(
      "m", {"--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--initial-advertise-peer-urls", Url("http", peer), "--cert-file", server_.cert,
            "--key-file", server_.key, "--trusted-ca-file", ca_->file(), "--client-cert-auth"});
  ASSERT_TRUE(WaitReady(p, endpoint, ca_->file(), &alice_));
  Cert root = ca_->Issue("root", "root", "DNS:root");
  for (std::vector<std::string> args : {std::vector<std::string>{"role", "add", "root"},
                                        {"user", "add", "root:rootpw"},
                                        {"user", "grant-role", "root", "root"},
                                        {"role", "add", "reader"},
                                        {"role", "grant-permission", "reader", "read", "a"},
                                        {"user", "add", "alice:alicepw"},
                                        {"user", "grant-role", "alice", "reader"},
                                        {"put", "a", "1"},
                                        {"put", "b", "2"},
                                        {"auth", "enable"}}) {
    CommandResult r = Ctl(endpoint, ca_->file(), &root, args);
    ASSERT_EQ(r.exit_code, 0) << args[0] << " " << args[1] << ": " << r.out << r.err;
  }
  CommandResult read_a = Ctl(endpoint, ca_->file(), &alice_, {"get", "a", "--print-value-only"});
  EXPECT_EQ(read_a.exit_code, 0) << read_a.err;
  EXPECT_EQ(read_a.out, "1\n");
  CommandResult read_b = Ctl(endpoint, ca_->file(), &alice_, {"get", "b"}, true);
  EXPECT_NE(read_b.exit_code, 0);
  EXPECT_THAT(read_b.err, HasSubstr("permission denied"));
  CommandResult write_a = Ctl(endpoint, ca_->file(), &alice_, {"put", "a", "x"}, true);
  EXPECT_NE(write_a.exit_code, 0);
  EXPECT_THAT(write_a.err, HasSubstr("permission denied"));
  // root's certificate: root, who reads everything.
  CommandResult root_b = Ctl(endpoint, ca_->file(), &root, {"get", "b", "--print-value-only"});
  EXPECT_EQ(root_b.out, "2\n") << root_b.err;
  p->Signal(SIGTERM);
  EXPECT_NE(p->Wait(std::chrono::seconds(15)), -1);
}

TEST_F(StoreTlsTest, HttpsWithoutACertificateIsAnErrorNamingTheFlag) {
  int client = PickFreePort(), peer = PickFreePort();
  CommandResult r = RunCommand({CapstanBinary(), "store", "--data-dir", dir_.path() + "/x",
                                "--listen-client-urls", Url("https", client),
                                "--initial-advertise-peer-urls", Url("http", peer)});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--cert-file"));
  EXPECT_THAT(r.err, HasSubstr(Url("https", client)));
  r = RunCommand({CapstanBinary(), "store", "--data-dir", dir_.path() + "/y",
                  "--listen-client-urls", Url("http", client), "--initial-advertise-peer-urls",
                  Url("https", peer)});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--peer-cert-file"));
  r = RunCommand({CapstanBinary(), "store", "--data-dir", dir_.path() + "/z",
                  "--listen-client-urls", Url("https", client), "--initial-advertise-peer-urls",
                  Url("http", peer), "--cert-file", server_.cert, "--key-file", server_.key,
                  "--client-cert-auth"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--trusted-ca-file"));
}

TEST_F(StoreTlsTest, AutoTlsServesASelfSignedCertificate) {
  int client = PickFreePort(), peer = PickFreePort();
  std::string endpoint = Url("https", client);
  Process* p =
      StartStore("auto", {"--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                          "--initial-advertise-peer-urls", Url("http", peer), "--auto-tls"});
  // etcdctl without --cacert speaks clear text unless told otherwise.
  const std::vector<std::string> skip_verify = {"--insecure-transport=false",
                                                "--insecure-skip-tls-verify"};
  ASSERT_TRUE(WaitReady(p, endpoint, "", nullptr, skip_verify));
  std::vector<std::string> put = skip_verify;
  put.insert(put.end(), {"put", "a", "1"});
  CommandResult put_result = Ctl(endpoint, "", nullptr, put);
  EXPECT_EQ(put_result.exit_code, 0) << put_result.err;
  // The certificate is where etcd keeps its own, and verifies as itself.
  std::string made = dir_.path() + "/auto/fixtures/client/cert.pem";
  ASSERT_TRUE(std::filesystem::exists(made));
  CommandResult get = Ctl(endpoint, made, nullptr, {"get", "a", "--print-value-only"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "1\n");
  // Without trusting it, a client refuses the server.
  EXPECT_NE(Ctl(endpoint, ca_->file(), nullptr, {"get", "a"}, true).exit_code, 0);
}

TEST_F(StoreTlsTest, ReplacedCertificateFilesServeTheNextConnections) {
  Cert second = ca_->Issue("server2", "server", kLocalSan);
  std::string cert = dir_.path() + "/live.pem", key = dir_.path() + "/live.key";
  std::filesystem::copy_file(server_.cert, cert);
  std::filesystem::copy_file(server_.key, key);
  int client = PickFreePort(), peer = PickFreePort();
  std::string endpoint = Url("https", client);
  Process* p = StartStore(
      "reload", {"--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                 "--initial-advertise-peer-urls", Url("http", peer), "--cert-file", cert,
                 "--key-file", key, "--trusted-ca-file", ca_->file(), "--client-cert-auth"});
  ASSERT_TRUE(WaitReady(p, endpoint, ca_->file(), &alice_));
  std::string before = ServedSerial(client);
  ASSERT_THAT(before, HasSubstr("serial="));
  std::string wanted = RunCommand({"openssl", "x509", "-noout", "-serial", "-in", second.cert}).out;
  ASSERT_NE(before, wanted);

  // Replaced the way an operator (or cert-manager) does: each file renamed
  // into place.
  std::filesystem::copy_file(second.key, key + ".new");
  std::filesystem::copy_file(second.cert, cert + ".new");
  std::filesystem::rename(key + ".new", key);
  std::filesystem::rename(cert + ".new", cert);
  EXPECT_TRUE(Eventually([&] { return ServedSerial(client) == wanted; }, std::chrono::seconds(20)))
      << "still serving " << ServedSerial(client);
  CommandResult get = Ctl(endpoint, ca_->file(), &alice_, {"get", "x"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
}

// The peer port (libgrpc++) reloads its certificate files too.
TEST_F(StoreTlsTest, ReplacedPeerCertificateFilesServeTheNextConnections) {
  Cert first = ca_->Issue("peer-a", "m", kLocalSan);
  Cert second = ca_->Issue("peer-b", "m", kLocalSan);
  std::string cert = dir_.path() + "/peer-live.pem", key = dir_.path() + "/peer-live.key";
  std::filesystem::copy_file(first.cert, cert);
  std::filesystem::copy_file(first.key, key);
  int client = PickFreePort(), peer = PickFreePort();
  Process* p = StartStore(
      "peer-reload", {"--listen-client-urls", Url("http", client), "--initial-advertise-peer-urls",
                      Url("https", peer), "--peer-cert-file", cert, "--peer-key-file", key,
                      "--peer-trusted-ca-file", ca_->file(), "--peer-client-cert-auth"});
  ASSERT_TRUE(WaitReady(p, Url("http", client), "", nullptr));
  std::string wanted = RunCommand({"openssl", "x509", "-noout", "-serial", "-in", second.cert}).out;
  ASSERT_TRUE(Eventually([&] { return ServedSerial(peer).find("serial=") == 0; }))
      << "no certificate on the peer port";
  ASSERT_NE(ServedSerial(peer), wanted);
  std::filesystem::copy_file(second.key, key + ".new");
  std::filesystem::copy_file(second.cert, cert + ".new");
  std::filesystem::rename(key + ".new", key);
  std::filesystem::rename(cert + ".new", cert);
  EXPECT_TRUE(Eventually([&] { return ServedSerial(peer) == wanted; }, std::chrono::seconds(20)))
      << "still serving " << ServedSerial(peer);
}

// Three members with TLS on the peer port and --peer-client-cert-auth: they
// elect a leader and replicate; a fourth whose certificate another CA
// signed cannot join.
TEST_F(StoreTlsTest, PeerTlsClusterReplicatesAndRefusesAMemberFromAnotherCa) {
  constexpr int kMembers = 3;
  std::vector<int> client(kMembers + 1), peer(kMembers + 1);
  std::string initial;
  for (int i = 0; i <= kMembers; ++i) {
    client[i] = PickFreePort();
    peer[i] = PickFreePort();
    if (i < kMembers) {
      if (!initial.empty()) initial += ",";
      initial += "m" + std::to_string(i) + "=" + Url("https", peer[i]);
    }
  }
  auto flags = [&](int i, const Cert& cert) {
    return std::vector<std::string>{"--listen-client-urls",
                                    Url("https", client[i]),
                                    "--advertise-client-urls",
                                    Url("https", client[i]),
                                    "--cert-file",
                                    server_.cert,
                                    "--key-file",
                                    server_.key,
                                    "--trusted-ca-file",
                                    ca_->file(),
                                    "--client-cert-auth",
                                    "--initial-advertise-peer-urls",
                                    Url("https", peer[i]),
                                    "--listen-peer-urls",
                                    Url("https", peer[i]),
                                    "--peer-cert-file",
                                    cert.cert,
                                    "--peer-key-file",
                                    cert.key,
                                    "--peer-trusted-ca-file",
                                    ca_->file(),
                                    "--peer-client-cert-auth",
                                    "--heartbeat-interval",
                                    "50",
                                    "--election-timeout",
                                    "500"};
  };
  std::vector<Process*> members;
  for (int i = 0; i < kMembers; ++i) {
    Cert cert = ca_->Issue("peer" + std::to_string(i), "m" + std::to_string(i), kLocalSan);
    std::vector<std::string> f = flags(i, cert);
    f.insert(f.end(), {"--initial-cluster", initial, "--initial-cluster-state", "new"});
    members.push_back(StartStore("m" + std::to_string(i), f));
  }
  // A write through member 0 needs a leader and a quorum over TLS.
  ASSERT_TRUE(Eventually(
      [&] {
        return Ctl(Url("https", client[0]), ca_->file(), &alice_, {"put", "k", "v"}).exit_code == 0;
      },
      std::chrono::seconds(30)));
  for (int i = 1; i < kMembers; ++i) {
    EXPECT_TRUE(Eventually(
        [&] {
          return Ctl(Url("https", client[i]), ca_->file(), &alice_,
                     {"get", "k", "--print-value-only", "--consistency=s"})
                     .out == "v\n";
        },
        std::chrono::seconds(20)))
        << "member " << i;
  }
  for (int i = 0; i < kMembers; ++i) EXPECT_TRUE(members[i]->Running()) << i;

  // The rogue: added to the membership, started with a certificate from
  // another CA (it trusts ours, so only the others' check can stop it).
  // Sent to a follower, which forwards it to the leader's https client URL
  // with its own certificate.
  int follower = -1;
  for (int i = 0; i < kMembers && follower < 0; ++i) {
    std::string status =
        Ctl(Url("https", client[i]), ca_->file(), &alice_, {"endpoint", "status", "-w", "json"})
            .out;
    std::smatch id, leader;
    if (std::regex_search(status, id, std::regex("\"member_id\":([0-9]+)")) &&
        std::regex_search(status, leader, std::regex("\"leader\":([0-9]+)")) &&
        id[1] != leader[1]) {
      follower = i;
    }
  }
  ASSERT_GE(follower, 0) << "no member says it follows";
  CommandResult add = Ctl(Url("https", client[follower]), ca_->file(), &alice_,
                          {"member", "add", "m3", "--peer-urls=" + Url("https", peer[3])});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  Cert rogue = other_ca_->Issue("rogue", "m3", kLocalSan);
  std::vector<std::string> f = flags(3, rogue);
  f.insert(f.end(), {"--initial-cluster", initial + ",m3=" + Url("https", peer[3]),
                     "--initial-cluster-state", "existing"});
  Process* m3 = StartStore("m3", f);
  // It cannot learn the membership from anyone and gives up; it never
  // serves the cluster's data.
  EXPECT_NE(m3->Wait(std::chrono::seconds(90)), -1) << "the rogue member is still running";
  EXPECT_THAT(m3->Log(), HasSubstr("could not reach any other member"));
  EXPECT_NE(
      Ctl(Url("https", client[3]), ca_->file(), &alice_, {"get", "k", "--consistency=s"}, true).out,
      "k\nv\n");
  // The cluster goes on.
  EXPECT_EQ(Ctl(Url("https", client[1]), ca_->file(), &alice_, {"put", "k2", "v2"}).exit_code, 0);
  for (Process* m : members) m->Signal(SIGTERM);
  for (Process* m : members) EXPECT_NE(m->Wait(std::chrono::seconds(15)), -1);
}

// --peer-auto-tls: members encrypt with self-signed certificates and do
// not verify each other (etcd's meaning), and still form a cluster.
TEST_F(StoreTlsTest, PeerAutoTlsClusterReplicates) {
  constexpr int kMembers = 3;
  std::vector<int> client(kMembers), peer(kMembers);
  std::string initial;
  for (int i = 0; i < kMembers; ++i) {
    client[i] = PickFreePort();
    peer[i] = PickFreePort();
    if (!initial.empty()) initial += ",";
    initial += "a" + std::to_string(i) + "=" + Url("https", peer[i]);
  }
  for (int i = 0; i < kMembers; ++i) {
    StartStore("a" + std::to_string(i),
               {"--listen-client-urls", Url("http", client[i]), "--initial-advertise-peer-urls",
                Url("https", peer[i]), "--peer-auto-tls", "--initial-cluster", initial,
                "--heartbeat-interval", "50", "--election-timeout", "500"});
  }
  ASSERT_TRUE(Eventually(
      [&] {
        return Ctl(Url("http", client[0]), "", nullptr, {"put", "k", "v"}).exit_code == 0;
      },
      std::chrono::seconds(30)));
  EXPECT_TRUE(Eventually(
      [&] {
        return Ctl(Url("http", client[2]), "", nullptr,
                   {"get", "k", "--print-value-only", "--consistency=s"})
                   .out == "v\n";
      },
      std::chrono::seconds(20)));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() + "/a1/fixtures/peer/cert.pem"));
  // The peer port speaks TLS only.
  EXPECT_THAT(ServedSerial(peer[1]), HasSubstr("serial="));
}

}  // namespace
}  // namespace capstan::e2e
