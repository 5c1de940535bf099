// Helpers for black-box tests: start real processes (capstan, etcd) on ports
// they pick, run real clients (etcdctl), and always clean up.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace capstan::e2e {

// A port on 127.0.0.1 that was free a moment ago.
int PickFreePort();
// A TCP connection to 127.0.0.1:port (a blocking socket), or -1.
int ConnectLoopback(int port);

// An HTTP/1.1 answer as HttpCall reads it.
struct HttpAnswer {
  int status = 0;    // 0: no answer (refused, reset, closed)
  std::string head;  // status line and fields, as received
  std::string body;
};

// One request to 127.0.0.1:port on a fresh connection (Connection: close),
// read to the end; a hang fails after 30 s instead of blocking the test. A
// body (and any PUT or POST) is sent with its Content-Length and, unless
// `headers` ("Name: value") names one, Content-Type: application/json.
HttpAnswer HttpCall(int port, const std::string& method, const std::string& target,
                    const std::string& body = "", const std::vector<std::string>& headers = {});

// A temporary directory removed (recursively) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;  // -1 when killed by the timeout
  std::string out;
  std::string err;
};

// Runs argv to completion with `input` on stdin; kills it after `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& input = "",
                         std::chrono::milliseconds timeout = std::chrono::seconds(20),
                         const std::map<std::string, std::string>& env = {});

// A child process running in the background; SIGKILLed on destruction.
class Process {
 public:
  // stdout and stderr go to `log_path`; `env` is added to the environment.
  Process(const std::vector<std::string>& argv, const std::string& log_path,
          const std::map<std::string, std::string>& env = {});
  ~Process();
  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  // Waits for exit; returns the wait status, or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout);
  void Kill();
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

// Waits until `process` prints "<prefix><port>" (e.g. "experiments
// listening on port ") and returns the port; 0 when it exits or `timeout`
// passes first (the caller's assertion then shows the log).
int WaitForPrintedPort(Process& process, const std::string& prefix,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30));

// `capstan experiments serve` against the store at `store_endpoint`, on a
// picked port, its log in `dir`/service.log, `extra` flags last; waits for
// its printed port and for /health to answer 200. Sets *port (0 when it did
// not come up: the caller asserts and shows the log).
std::unique_ptr<Process> StartExperimentsService(const std::string& store_endpoint,
                                                 const std::string& dir,
                                                 const std::vector<std::string>& extra, int* port);

// Path of the capstan binary under test.
std::string CapstanBinary();

// A store server (capstan or etcd) reachable on 127.0.0.1:port.
class StoreProcess {
 public:
  enum class Kind { kCapstan, kEtcd };
  StoreProcess(Kind kind, const std::string& data_dir, std::vector<std::string> extra = {});
  ~StoreProcess();
  // Runs the server under a wrapper command (e.g. nsenter into a namespace).
  void set_wrapper(std::vector<std::string> prefix) { wrapper_ = std::move(prefix); }
  // Starts the process and waits until it answers Maintenance.Status.
  bool Start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  void Kill() { process_->Kill(); }
  void Stop();  // SIGTERM, then wait
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  Process* process() { return process_.get(); }
  std::string Log() const { return process_ ? process_->Log() : ""; }

 private:
  bool StartOnce(std::chrono::milliseconds timeout);
  Kind kind_;
  std::string data_dir_;
  std::vector<std::string> extra_;
  std::vector<std::string> wrapper_;
  int port_ = 0;
  int peer_port_ = 0;
  int metrics_port_ = 0;
  std::unique_ptr<Process> process_;
};

// Runs etcdctl (API v3) against `endpoint`.
CommandResult Etcdctl(const std::string& endpoint, const std::vector<std::string>& args,
                      const std::string& input = "",
                      std::chrono::milliseconds timeout = std::chrono::seconds(20));

// Waits for cond() to become true, polling; false on timeout.
bool Eventually(const std::function<bool()>& cond,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace capstan::e2e
