#include "cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace capstan::e2e {

int TimeScale() {
  const char* env = std::getenv("CAPSTAN_TEST_TIME_SCALE");
  int scale = env != nullptr ? std::atoi(env) : 1;
  return scale > 0 ? scale : 1;
}

// ----- FaultProxy ---------------------------------------------------------

FaultProxy::FaultProxy(int target_port) : target_port_(target_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // From PickFreePort, which never hands out a port twice in this process,
  // so a proxy cannot take a port already promised to a member.
  for (int attempt = 0; attempt < 20; ++attempt) {
    port_ = PickFreePort();
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) break;
  }
  ::listen(listen_fd_, 64);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

FaultProxy::~FaultProxy() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  CutAll();
  std::vector<std::thread> pumps;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pumps.swap(pumps_);
  }
  for (auto& t : pumps) t.join();
}

void FaultProxy::SetBlocked(bool blocked) {
  blocked_ = blocked;
  if (blocked) CutAll();
}

void FaultProxy::CutAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
}

void FaultProxy::AcceptLoop() {
  while (!stopping_) {
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (stopping_) return;
      continue;
    }
    if (blocked_) {
      ::close(client);
      continue;
    }
    int upstream = ConnectLoopback(target_port_);
    if (upstream < 0) {
      ::close(client);
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    open_fds_.push_back(client);
    open_fds_.push_back(upstream);
    pumps_.emplace_back([this, client, upstream] { Pump(client, upstream); });
  }
}

void FaultProxy::Pump(int client, int upstream) {
  char buf[64 << 10];
  pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  bool done = false;
  while (!done && !stopping_) {
    if (::poll(fds, 2, 200) < 0) break;
    for (int k = 0; k < 2 && !done; ++k) {
      if (fds[k].revents == 0) continue;
      ssize_t n = ::read(fds[k].fd, buf, sizeof(buf));
      if (n <= 0 || blocked_) {
        done = true;
        break;
      }
      int out = fds[1 - k].fd;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(out, buf + off, static_cast<size_t>(n - off));
        if (w <= 0) {
          done = true;
          break;
        }
        off += w;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  ::shutdown(client, SHUT_RDWR);
  ::shutdown(upstream, SHUT_RDWR);
  std::erase(open_fds_, client);
  std::erase(open_fds_, upstream);
  ::close(client);
  ::close(upstream);
}

// ----- Cluster ------------------------------------------------------------

Cluster::Cluster(const std::string& dir, ClusterOptions options)
    : dir_(dir), options_(std::move(options)) {
  for (int i = 0; i < options_.members; ++i) {
    Member m;
    m.client_port = PickFreePort();
    m.peer_port = PickFreePort();
    m.metrics_port = PickFreePort();
    members_.push_back(std::move(m));
  }
  links_.resize(members_.size());
  for (size_t i = 0; i < members_.size(); ++i) {
    links_[i].resize(members_.size());
    for (size_t j = 0; j < members_.size(); ++j) {
      if (i != j) links_[i][j] = std::make_unique<FaultProxy>(members_[j].peer_port);
    }
  }
}

Cluster::~Cluster() {
  for (auto& m : members_) {
    if (m.process) m.process->Kill();
  }
}

size_t Cluster::AddSlot() {
  Member m;
  m.client_port = PickFreePort();
  m.peer_port = PickFreePort();
  m.metrics_port = PickFreePort();
  m.founding = false;
  members_.push_back(std::move(m));
  return members_.size() - 1;
}

std::string Cluster::endpoint(size_t i) const {
  return "127.0.0.1:" + std::to_string(members_[i].client_port);
}

std::string Cluster::peer_url(size_t i) const {
  return "http://127.0.0.1:" + std::to_string(members_[i].peer_port);
}

std::string Cluster::endpoints() const {
  std::string out;
  for (size_t i = 0; i < members_.size(); ++i) out += (i ? "," : "") + endpoint(i);
  return out;
}

std::string Cluster::InitialCluster(bool include_non_founding) const {
  std::string out;
  for (size_t i = 0; i < members_.size(); ++i) {
    if (!members_[i].founding && !include_non_founding) continue;
    out += (out.empty() ? "" : ",") + name(i) + "=" + peer_url(i);
  }
  return out;
}

std::string Cluster::Log(size_t i) const {
  return members_[i].process ? members_[i].process->Log() : "";
}

std::string Cluster::Logs() const {
  std::string out;
  for (size_t i = 0; i < members_.size(); ++i) out += "----- " + name(i) + "\n" + Log(i);
  return out;
}

bool Cluster::StartMember(size_t i, bool existing) {
  Member& m = members_[i];
  std::string data = dir_ + "/" + name(i);
  std::vector<std::string> argv = {CapstanBinary(),
                                   "store",
                                   "--name",
                                   name(i),
                                   "--data-dir",
                                   data,
                                   "--listen-client-urls",
                                   "http://" + endpoint(i),
                                   "--listen-peer-urls",
                                   peer_url(i),
                                   "--initial-advertise-peer-urls",
                                   peer_url(i),
                                   "--listen-metrics-urls",
                                   "http://127.0.0.1:" + std::to_string(m.metrics_port),
                                   "--initial-cluster",
                                   InitialCluster(existing),
                                   "--initial-cluster-state",
                                   existing ? "existing" : "new",
                                   "--heartbeat-interval",
                                   std::to_string(options_.heartbeat_ms),
                                   "--election-timeout",
                                   std::to_string(options_.election_ms)};
  argv.insert(argv.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  // Every founding peer is reached through this member's own proxy for that link.
  std::string dial;
  if (i < links_.size()) {
    for (size_t j = 0; j < links_[i].size(); ++j) {
      if (!links_[i][j]) continue;
      dial += (dial.empty() ? "" : ",") + peer_url(j) +
              "=127.0.0.1:" + std::to_string(links_[i][j]->port());
    }
  }
  std::map<std::string, std::string> env;
  if (!dial.empty()) env["CAPSTAN_TEST_PEER_DIAL"] = dial;
  if (m.process) m.process->Kill();
  m.process = std::make_unique<Process>(argv, data + ".log", env);
  return Eventually(
             [&] {
               if (!m.process->Running()) return true;
               auto channel = grpc::CreateChannel(endpoint(i), grpc::InsecureChannelCredentials());
               auto stub = etcdserverpb::Maintenance::NewStub(channel);
               grpc::ClientContext ctx;
               ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
               etcdserverpb::StatusResponse resp;
               grpc::Status st = stub->Status(&ctx, etcdserverpb::StatusRequest(), &resp);
               // With auth enabled Status needs a user: refusing it is answering.
               if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
                   st.error_message() == "etcdserver: user name is empty") {
                 return true;
               }
               if (!st.ok()) return false;
               m.id = resp.header().member_id();
               return true;
             },
             std::chrono::seconds(30)) &&
         m.process->Running();
}

bool Cluster::Start(std::chrono::milliseconds timeout) {
  for (size_t i = 0; i < members_.size(); ++i) {
    if (!StartMember(i)) return false;
  }
  return WaitForLeader(timeout) >= 0;
}

void Cluster::Kill(size_t i) {
  if (members_[i].process) members_[i].process->Kill();
}

void Cluster::Stop(size_t i) {
  Process* p = members_[i].process.get();
  if (p == nullptr) return;
  p->Signal(SIGTERM);
  if (p->Wait(std::chrono::seconds(10)) == -1) p->Kill();
}

bool Cluster::Running(size_t i) { return members_[i].process && members_[i].process->Running(); }

uint64_t Cluster::LeaderSeenBy(size_t i) {
  auto channel = grpc::CreateChannel(endpoint(i), grpc::InsecureChannelCredentials());
  auto stub = etcdserverpb::Maintenance::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  etcdserverpb::StatusResponse resp;
  if (!stub->Status(&ctx, etcdserverpb::StatusRequest(), &resp).ok()) return 0;
  members_[i].id = resp.header().member_id();
  return resp.leader();
}

uint64_t Cluster::MemberId(size_t i) {
  if (members_[i].id == 0) LeaderSeenBy(i);
  return members_[i].id;
}

int Cluster::IndexOfId(uint64_t id) {
  for (size_t i = 0; i < members_.size(); ++i) {
    if (members_[i].id == id && id != 0) return static_cast<int>(i);
  }
  return -1;
}

int Cluster::WaitForLeader(std::chrono::milliseconds timeout, const std::set<size_t>& ignore) {
  int found = -1;
  Eventually(
      [&] {
        uint64_t agreed = 0;
        for (size_t i = 0; i < members_.size(); ++i) {
          if (ignore.contains(i) || !Running(i)) continue;
          uint64_t l = LeaderSeenBy(i);
          if (l == 0 || (agreed != 0 && l != agreed)) return false;
          agreed = l;
        }
        int idx = IndexOfId(agreed);
        if (idx < 0 || ignore.contains(static_cast<size_t>(idx)) ||
            !Running(static_cast<size_t>(idx))) {
          return false;
        }
        found = idx;
        return true;
      },
      timeout);
  return found;
}

void Cluster::Isolate(const std::set<size_t>& group) {
  for (size_t i = 0; i < links_.size(); ++i) {
    for (size_t j = 0; j < links_[i].size(); ++j) {
      if (links_[i][j] && group.contains(i) != group.contains(j)) links_[i][j]->SetBlocked(true);
    }
  }
}

void Cluster::Heal() {
  for (auto& row : links_) {
    for (auto& link : row) {
      if (link) link->SetBlocked(false);
    }
  }
}

}  // namespace capstan::e2e
