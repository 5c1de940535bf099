#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace capstan::e2e {

// A test process talks to servers it kills and children that may exit
// before reading their input: a write to them must fail with EPIPE, not
// kill the test (a SIGPIPE once ended a cluster test mid-run).
[[maybe_unused]] const bool kIgnoreSigpipe = [] {
  signal(SIGPIPE, SIG_IGN);
  return true;
}();

namespace fs = std::filesystem;

int PickPortOnce();  // callers hold PickFreePort's lock

int PickFreePort() {
  // A port stays free until its server binds it, so the next pick may
  // find it again: never return a port twice from one process.
  static std::mutex mu;
  static std::set<int> handed_out;
  std::lock_guard<std::mutex> lock(mu);  // also guards PickPortOnce's generator
  for (int attempt = 0; attempt < 100; ++attempt) {
    int port = PickPortOnce();
    if (handed_out.insert(port).second) return port;
  }
  return PickPortOnce();
}

// The kernel's range for outgoing connections' local ports (and for bind
// to port 0); the default when it cannot be read.
std::pair<int, int> EphemeralPortRange() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 32768, high = 60999;
  if (!(in >> low >> high)) return {32768, 60999};
  return {low, high};
}

// A TCP socket that bind or connect took to 127.0.0.1:port, or -1.
int LoopbackSocket(int port, int (*op)(int, const sockaddr*, socklen_t)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (op(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A socket bound to 127.0.0.1:port (0: the kernel chooses), or -1.
int BindLoopback(int port) { return LoopbackSocket(port, &::bind); }

int PickPortOnce() {
  // A port the kernel would hand out as an ephemeral one is also what every
  // outgoing connection of a parallel test (etcdctl, gRPC clients) may take
  // in the moment before our server binds it: under TSan a cluster member
  // once lost its port that way. So pick at random outside that range,
  // among ports that bind right now.
  static std::mt19937 rng(static_cast<uint32_t>(::getpid()) * 2654435761u ^
                          static_cast<uint32_t>(std::random_device{}()));
  static const std::pair<int, int> ephemeral = EphemeralPortRange();
  auto [low, high] = ephemeral;
  int from = 10000, to = 65535;
  if (low - from >= 2000) {
    to = low - 1;  // below the range (its default starts at 32768)
  } else if (to - high >= 2000) {
    from = high + 1;
  }
  std::uniform_int_distribution<int> pick(from, to);
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = pick(rng);
    if (int fd = BindLoopback(port); fd >= 0) {
      ::close(fd);
      return port;
    }
  }
  // Nothing found outside the range: let the kernel choose.
  int fd = BindLoopback(0);
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int ConnectLoopback(int port) { return LoopbackSocket(port, &::connect); }

HttpAnswer HttpCall(int port, const std::string& method, const std::string& target,
                    const std::string& body, const std::vector<std::string>& headers) {
  HttpAnswer answer;
  int fd = ConnectLoopback(port);
  if (fd < 0) return answer;
  timeval bound{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
  std::string request =
      method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  bool typed = false;
  for (const std::string& h : headers) {
    request += h + "\r\n";
    typed |= h.size() >= 13 && strncasecmp(h.c_str(), "content-type:", 13) == 0;
  }
  if (!body.empty() || method == "PUT" || method == "POST") {
    if (!typed) request += "Content-Type: application/json\r\n";
    request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "\r\n" + body;
  std::string_view rest = request;
  while (!rest.empty()) {
    ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  std::string received;
  char buf[16384];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    received.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t end = received.find("\r\n\r\n");
  if (received.size() < 12 || end == std::string::npos) return answer;
  answer.status = std::stoi(received.substr(9, 3));
  answer.head = received.substr(0, end);
  answer.body = received.substr(end + 4);
  return answer;
}

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* p = ::mkdtemp(buf.data());
  path_ = p != nullptr ? p : tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

std::vector<char*> ToArgv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& input,
                         std::chrono::milliseconds timeout,
                         const std::map<std::string, std::string>& env) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 ||
      ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return {};
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    // If the test dies (a failed assertion, a sanitizer abort), so does this.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    auto args = ToArgv(argv);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  size_t written = 0;
  if (input.empty()) {
    ::close(in_pipe[1]);
    in_pipe[1] = -1;
  }
  CommandResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    std::vector<pollfd> fds;
    if (out_open) fds.push_back({out_pipe[0], POLLIN, 0});
    if (err_open) fds.push_back({err_pipe[0], POLLIN, 0});
    if (in_pipe[1] >= 0) fds.push_back({in_pipe[1], POLLOUT, 0});
    if (::poll(fds.data(), fds.size(), static_cast<int>(left)) <= 0) continue;
    for (const auto& p : fds) {
      if (p.revents == 0) continue;
      if (p.fd == in_pipe[1]) {
        ssize_t n = ::write(in_pipe[1], input.data() + written, input.size() - written);
        if (n > 0) written += static_cast<size_t>(n);
        if (n < 0 || written == input.size()) {
          ::close(in_pipe[1]);
          in_pipe[1] = -1;
        }
        continue;
      }
      char buf[8192];
      ssize_t n = ::read(p.fd, buf, sizeof(buf));
      if (n <= 0) {
        (p.fd == out_pipe[0] ? out_open : err_open) = false;
      } else {
        (p.fd == out_pipe[0] ? result.out : result.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  if (in_pipe[1] >= 0) ::close(in_pipe[1]);
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  if (out_open || err_open) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    result.exit_code = -1;
    return result;
  }
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

Process::Process(const std::vector<std::string>& argv, const std::string& log_path,
                 const std::map<std::string, std::string>& env)
    : log_path_(log_path) {
  pid_ = ::fork();
  if (pid_ == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    // Servers die with the test process even when it cannot clean up.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    // Children must not inherit a blocked signal mask (gtest threads) or die with us.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    auto args = ToArgv(argv);
    ::execvp(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() { Kill(); }

bool Process::Running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int Process::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid_ > 0) {
    int status;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return status;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

void Process::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string Process::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string CapstanBinary() {
  if (const char* p = std::getenv("CAPSTAN_BINARY")) return p;
  return CAPSTAN_BINARY_PATH;
}

StoreProcess::StoreProcess(Kind kind, const std::string& data_dir, std::vector<std::string> extra)
    : kind_(kind), data_dir_(data_dir), extra_(std::move(extra)) {
  port_ = PickFreePort();
  peer_port_ = PickFreePort();
  metrics_port_ = PickFreePort();
}

StoreProcess::~StoreProcess() {
  if (process_) process_->Kill();
}

bool StoreProcess::Start(std::chrono::milliseconds timeout) {
  // Another test may have taken one of our ports in the meantime: try fresh
  // ports a few times when the server says so.
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (StartOnce(timeout)) return true;
    std::string log = Log();
    if (log.find("address already in use") == std::string::npos &&
        log.find("cannot listen") == std::string::npos) {
      return false;
    }
    process_->Kill();
    port_ = PickFreePort();
    peer_port_ = PickFreePort();
    metrics_port_ = PickFreePort();
  }
  return false;
}

bool StoreProcess::StartOnce(std::chrono::milliseconds timeout) {
  std::string client = "http://127.0.0.1:" + std::to_string(port_);
  std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  std::string metrics = "http://127.0.0.1:" + std::to_string(metrics_port_);
  std::vector<std::string> argv;
  if (kind_ == Kind::kCapstan) {
    argv = {CapstanBinary(),
            "store",
            "--name",
            "e2e",
            "--data-dir",
            data_dir_,
            "--listen-client-urls",
            client,
            "--listen-metrics-urls",
            metrics,
            "--initial-advertise-peer-urls",
            peer};
  } else {
    argv = {"etcd",        "--name",
            "e2e",         "--data-dir",
            data_dir_,     "--listen-client-urls",
            client,        "--advertise-client-urls",
            client,        "--listen-peer-urls",
            peer,          "--initial-advertise-peer-urls",
            peer,          "--initial-cluster",
            "e2e=" + peer, "--listen-metrics-urls",
            metrics,       "--logger",
            "zap",         "--log-outputs",
            "stderr"};
  }
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  argv.insert(argv.begin(), wrapper_.begin(), wrapper_.end());
  process_ = std::make_unique<Process>(argv, data_dir_ + ".log");
  return Eventually(
             [&] {
               if (!process_->Running()) return true;  // reported below
               // A fresh channel per attempt: a channel that saw "connection refused"
               // waits out its reconnect backoff before trying again.
               auto channel = grpc::CreateChannel(endpoint(), grpc::InsecureChannelCredentials());
               auto stub = etcdserverpb::Maintenance::NewStub(channel);
               grpc::ClientContext ctx;
               ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
               etcdserverpb::StatusResponse resp;
               return stub->Status(&ctx, etcdserverpb::StatusRequest(), &resp).ok();
             },
             timeout) &&
         process_->Running();
}

void StoreProcess::Stop() {
  if (!process_) return;
  process_->Signal(SIGTERM);
  if (process_->Wait(std::chrono::seconds(10)) == -1) process_->Kill();
}

CommandResult Etcdctl(const std::string& endpoint, const std::vector<std::string>& args,
                      const std::string& input, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {"etcdctl", "--endpoints=" + endpoint, "--command-timeout=15s"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, input, timeout, {{"ETCDCTL_API", "3"}});
}

bool Eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

int WaitForPrintedPort(Process& process, const std::string& prefix,
                       std::chrono::milliseconds timeout) {
  int port = 0;
  Eventually(
      [&] {
        std::string log = process.Log();
        size_t at = log.find(prefix);
        if (at != std::string::npos) {
          port = std::atoi(log.c_str() + at + prefix.size());
          return true;
        }
        return !process.Running();
      },
      timeout);
  return port;
}

std::unique_ptr<Process> StartExperimentsService(const std::string& store_endpoint,
                                                 const std::string& dir,
                                                 const std::vector<std::string>& extra, int* port) {
  std::vector<std::string> argv = {CapstanBinary(), "experiments", "serve",      "--store",
                                   store_endpoint,  "--listen",    "127.0.0.1:0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto service = std::make_unique<Process>(argv, dir + "/service.log");
  *port = WaitForPrintedPort(*service, "experiments listening on port ");
  if (*port != 0 && !Eventually([&] { return HttpCall(*port, "GET", "/health").status == 200; },
                                std::chrono::seconds(30))) {
    *port = 0;
  }
  return service;
}

}  // namespace capstan::e2e
