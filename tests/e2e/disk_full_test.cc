// Fills the disk under a running store: writes must fail with a clear error,
// the process must stay up and keep serving reads, and after space is freed
// and the member restarts, every acknowledged write is there.
//
// The "disk" is a small tmpfs mounted in a private mount namespace that a
// holder process keeps alive; the server and the helper commands enter it
// with nsenter. Where namespaces or mounts are not allowed the test is skipped.
#include <sys/stat.h>

#include "diff_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::e2e {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

TEST(DiskFull, WritesFailClearlyAndNoAcknowledgedWriteIsLost) {
  TempDir dir("capstan-diskfull");
  std::string mnt = dir.path() + "/mnt";
  ::mkdir(mnt.c_str(), 0700);
  Process holder({"unshare", "-m", "--propagation", "private", "sh", "-c",
                  "mount -t tmpfs -o size=24m tmpfs " + mnt + " && echo mounted && exec sleep 600"},
                 dir.path() + "/holder.log");
  if (!Eventually(
          [&] { return holder.Log().find("mounted") != std::string::npos || !holder.Running(); }) ||
      !holder.Running()) {
    GTEST_SKIP() << "cannot mount a tmpfs in a private mount namespace here: " << holder.Log();
  }
  std::vector<std::string> ns = {"nsenter", "-t", std::to_string(holder.pid()), "-m", "--"};
  auto in_ns = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), ns.begin(), ns.end());
    return RunCommand(argv);
  };
  ASSERT_EQ(in_ns({"fallocate", "-l", "16m", mnt + "/filler"}).exit_code, 0);

  std::vector<std::pair<std::string, std::string>> acked;
  std::string failure;
  {
    StoreProcess server(StoreProcess::Kind::kCapstan, mnt + "/data");
    server.set_wrapper(ns);
    ASSERT_TRUE(server.Start()) << server.Log();
    Stubs stubs(server.endpoint());
    std::string value(64 << 10, 'v');
    for (int i = 0; i < 400 && failure.empty(); ++i) {
      etcdserverpb::PutRequest put;
      put.set_key("k" + std::to_string(i));
      put.set_value(value);
      etcdserverpb::PutResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
      grpc::Status st = stubs.kv->Put(&ctx, put, &resp);
      if (st.ok()) {
        acked.emplace_back(put.key(), put.value());
      } else {
        failure = st.error_message();
      }
    }
    ASSERT_FALSE(failure.empty()) << "8 MiB of space cannot hold 25 MiB of values";
    EXPECT_THAT(failure, HasSubstr("No space left on device"));
    EXPECT_THAT(failure, AnyOf(HasSubstr("write-ahead log failed"), HasSubstr("storage failure")));
    EXPECT_THAT(failure, HasSubstr("restarts"));
    ASSERT_TRUE(server.process()->Running()) << "a full disk must not crash the server";

    // Serializable reads still work; linearizable ones cannot be confirmed
    // through a failed log and say so; further writes fail fast with the same
    // story; health says why.
    auto get =
        Etcdctl(server.endpoint(), {"get", acked.front().first, "--keys-only", "--consistency=s"});
    EXPECT_EQ(get.out, acked.front().first + "\n\n");
    auto linearizable = Etcdctl(server.endpoint(), {"get", acked.front().first});
    EXPECT_NE(linearizable.exit_code, 0);
    EXPECT_THAT(linearizable.err, HasSubstr("No space left on device"));
    auto put = Etcdctl(server.endpoint(), {"put", "more", "x"});
    EXPECT_NE(put.exit_code, 0);
    EXPECT_THAT(put.err, HasSubstr("No space left on device"));
    auto health = RunCommand(
        {"curl", "-s", "http://127.0.0.1:" + std::to_string(server.metrics_port()) + "/health"});
    EXPECT_THAT(health.out, HasSubstr("\"health\":\"false\""));

    ASSERT_EQ(in_ns({"rm", mnt + "/filler"}).exit_code, 0);
    server.Kill();
  }
  StoreProcess server(StoreProcess::Kind::kCapstan, mnt + "/data");
  server.set_wrapper(ns);
  ASSERT_TRUE(server.Start()) << server.Log();
  Stubs stubs(server.endpoint());
  for (const auto& [key, value] : acked) {
    etcdserverpb::RangeRequest r;
    r.set_key(key);
    etcdserverpb::RangeResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stubs.kv->Range(&ctx, r, &resp).ok());
    ASSERT_EQ(resp.kvs_size(), 1) << "lost acknowledged write " << key;
    EXPECT_EQ(resp.kvs(0).value(), value);
  }
  EXPECT_EQ(Etcdctl(server.endpoint(), {"put", "after", "restart"}).exit_code, 0) << server.Log();
  std::cerr << "acknowledged before the disk filled: " << acked.size() << "\n";
}

}  // namespace
}  // namespace capstan::e2e
