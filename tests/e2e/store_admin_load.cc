// A small load loop for the store's non-KV methods, to measure the server's
// CPU per call: runs N LeaseGrant calls, N renewals on one LeaseKeepAlive
// stream and N Lock/Unlock pairs against a running store, one call at a
// time, and reads the server's CPU time (utime + stime from /proc/<pid>/stat)
// around each workload.
//
//   store_admin_load 127.0.0.1:2379 <server pid> 2000
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/v3lockpb/v3lock.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace {

// The process's CPU time so far, in microseconds.
long long CpuMicros(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  // Fields after the command name (which may hold spaces) start after ')'.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return (utime + stime) * 1000000 / sysconf(_SC_CLK_TCK);
}

template <typename Fn>
void Measure(const char* what, int pid, int n, Fn fn) {
  long long before = CpuMicros(pid);
  auto start = std::chrono::steady_clock::now();
  int ok = fn();
  auto wall = std::chrono::steady_clock::now() - start;
  long long cpu = CpuMicros(pid) - before;
  std::printf("%-22s %6d calls (%d ok)  server CPU %7.1f us/call  wall %7.1f us/call\n", what, n,
              ok, static_cast<double>(cpu) / n,
              std::chrono::duration<double, std::micro>(wall).count() / n);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s host:port server-pid calls\n", argv[0]);
    return 2;
  }
  std::string endpoint = argv[1];
  int pid = std::atoi(argv[2]);
  int n = std::atoi(argv[3]);
  auto channel = grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
  auto lease = etcdserverpb::Lease::NewStub(channel);
  auto lock = v3lockpb::Lock::NewStub(channel);

  // Warm the connection up.
  {
    grpc::ClientContext ctx;
    etcdserverpb::LeaseLeasesResponse resp;
    if (!lease->LeaseLeases(&ctx, {}, &resp).ok()) {
      std::fprintf(stderr, "cannot reach %s\n", endpoint.c_str());
      return 1;
    }
  }
  int64_t held = 0;
  Measure("LeaseGrant", pid, n, [&] {
    int ok = 0;
    for (int i = 0; i < n; ++i) {
      grpc::ClientContext ctx;
      etcdserverpb::LeaseGrantRequest req;
      req.set_ttl(600);
      etcdserverpb::LeaseGrantResponse resp;
      if (lease->LeaseGrant(&ctx, req, &resp).ok()) {
        ++ok;
        held = resp.id();
      }
    }
    return ok;
  });
  Measure("LeaseKeepAlive (msg)", pid, n, [&] {
    grpc::ClientContext ctx;
    auto stream = lease->LeaseKeepAlive(&ctx);
    int ok = 0;
    for (int i = 0; i < n; ++i) {
      etcdserverpb::LeaseKeepAliveRequest req;
      req.set_id(held);
      etcdserverpb::LeaseKeepAliveResponse resp;
      if (!stream->Write(req) || !stream->Read(&resp)) break;
      ok += resp.ttl() > 0;
    }
    stream->WritesDone();
    (void)stream->Finish();
    return ok;
  });
  Measure("Lock+Unlock (pair)", pid, n, [&] {
    int ok = 0;
    for (int i = 0; i < n; ++i) {
      grpc::ClientContext lctx;
      v3lockpb::LockRequest req;
      req.set_name("load-lock");
      req.set_lease(held);
      v3lockpb::LockResponse resp;
      if (!lock->Lock(&lctx, req, &resp).ok()) continue;
      grpc::ClientContext uctx;
      v3lockpb::UnlockRequest unlock;
      unlock.set_key(resp.key());
      v3lockpb::UnlockResponse uresp;
      ok += lock->Unlock(&uctx, unlock, &uresp).ok();
    }
    return ok;
  });
  return 0;
}
