// StoreServer on a caller's LoopGroup (StoreServerConfig::client_group): the
// etcd API and the metrics endpoint serve on the group's loops, writes go
// through the raft loop, and Shutdown closes the listeners but leaves the
// group running for the caller to stop.
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "client/client.h"
#include "gtest/gtest.h"
#include "net/loop_group.h"
#include "store/server.h"

namespace capstan::store {
namespace {

using namespace std::chrono_literals;

bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return connected;
}

bool GroupRuns(net::LoopGroup* group) {
  for (int i = 0; i < group->size(); ++i) {
    auto ran = std::make_shared<std::promise<void>>();
    std::future<void> done = ran->get_future();
    group->loop(i)->Post([ran] { ran->set_value(); });
    if (done.wait_for(10s) != std::future_status::ready) return false;
  }
  return true;
}

TEST(StoreServerSharedLoopsTest, ServesOnTheCallersGroupAndLeavesItRunning) {
  char dir_template[] = "/tmp/store_shared_loops.XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  std::string dir = dir_template;
  auto started = net::LoopGroup::Start({.threads = 2, .name = "shared"});
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<net::LoopGroup> group = std::move(started).value();

  StoreServerConfig config;
  config.store.name = "shared";
  config.store.data_dir = dir + "/data";
  config.store.advertise_peer_urls = {"http://127.0.0.1:0"};
  config.store.heartbeat = 10ms;
  config.listen_client_urls = {"http://127.0.0.1:0"};
  config.listen_metrics_urls = {"http://127.0.0.1:0"};
  config.client_group = group.get();
  auto server = StoreServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  int client_port = (*server)->client_ports().front();
  int metrics_port = (*server)->metrics_ports().front();

  auto client =
      client::Client::Connect({.endpoints = {"127.0.0.1:" + std::to_string(client_port)}});
  ASSERT_TRUE(client.ok()) << client.status();
  // The member elects itself within a few heartbeats; until then a write
  // may be refused. Bounded.
  absl::StatusOr<etcdserverpb::PutResponse> put = absl::UnavailableError("not tried");
  auto give_up = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < give_up) {
    put = (*client)->Put("k", "v");
    if (put.ok()) break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(put.ok()) << put.status();
  absl::StatusOr<etcdserverpb::RangeResponse> got = (*client)->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->kvs_size(), 1);
  EXPECT_EQ(got->kvs(0).value(), "v");
  EXPECT_TRUE(Accepts(metrics_port));
  client->reset();

  (*server)->Shutdown();
  // Its listeners closed on loops that still run.
  EXPECT_FALSE(Accepts(client_port));
  EXPECT_FALSE(Accepts(metrics_port));
  EXPECT_TRUE(GroupRuns(group.get()));
  server->reset();
  EXPECT_TRUE(GroupRuns(group.get()));
  group->Stop();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace capstan::store
