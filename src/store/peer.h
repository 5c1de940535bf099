// Peer traffic: the Raft transport between store members over gRPC, and the
// peer service that receives it (docs/raft.md, "Transport").
//
// Each peer gets one long-lived client stream (Peer.Raft) on gRPC's callback
// API. The raft loop starts a write itself when none is in flight (no thread
// hand-off on the commit path); while one is in flight, messages queue, and
// its completion writes everything queued as one MessageBatch, so a busy
// leader sends few large writes. A broken stream is reopened with
// exponential backoff (50 ms to 1 s) on the next send after the backoff, and
// the peer is reported to the node as unreachable so the leader probes that
// follower again. Snapshots go on their
// own Peer.Snapshot stream from a thread of their own, in 1 MiB chunks, so a
// large one never delays heartbeats.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "capstan/peer.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "raft/node.h"
#include "store/store.h"

namespace capstan::store {

class PeerTransport final : public raft::Transport {
 public:
  // `tls`: the credentials of channels to https peer URLs (null: clear
  // text everywhere).
  PeerTransport(uint64_t self, uint64_t cluster_id, raft::Node* node,
                std::shared_ptr<grpc::ChannelCredentials> tls = nullptr);
  ~PeerTransport() override;

  // Sets the members to talk to (from the applied member list); peers no
  // longer listed are disconnected.
  void UpdatePeers(const std::vector<etcdserverpb::Member>& members);
  // A stub for unary calls to `id` (lease forwarding); null when unknown.
  std::shared_ptr<capstan::peer::Peer::Stub> StubFor(uint64_t id);

  void Send(std::vector<raft::Message> messages) override;
  void SendSnapshot(raft::Message m, std::string dir) override;
  void Stop();

 private:
  class Stream;
  struct Peer {
    uint64_t id = 0;
    std::string target;  // host:port
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<capstan::peer::Peer::Stub> stub;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<raft::Message> queue;
    bool stopping = false;
    std::shared_ptr<Stream> stream;  // the open Peer.Raft stream, if any
    bool writing = false;            // a write on `stream` has not completed yet
    int open_streams = 0;            // streams gRPC has not called OnDone for
    std::chrono::steady_clock::time_point retry_after;
    std::chrono::milliseconds backoff{50};
  };
  // Writes what is queued for `peer` unless a write is already in flight
  // (its completion writes the rest); opens the stream when there is none.
  void Pump(const std::shared_ptr<Peer>& peer);
  // Moves queued messages into one batch. REQUIRES: peer->mu held.
  void FillBatch(Peer* peer, capstan::peer::MessageBatch* out);
  void OnWriteDone(const std::shared_ptr<Peer>& peer, Stream* stream, bool ok);
  void OnStreamDone(const std::shared_ptr<Peer>& peer, Stream* stream);
  // The stream broke: back off before reopening. REQUIRES: peer->mu held.
  void BreakStream(Peer* peer, Stream* stream);
  void StopPeer(const std::shared_ptr<Peer>& peer);

  const uint64_t self_;
  const uint64_t cluster_id_;
  raft::Node* node_;
  const std::shared_ptr<grpc::ChannelCredentials> tls_;
  std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<Peer>> peers_;
  std::map<std::string, std::string> dial_override_;  // host:port -> host:port
  std::vector<std::thread> snapshot_threads_;
  std::atomic<bool> stopping_{false};
};

// Serves Peer: delivers incoming messages and snapshots to the node, answers
// Members, and serves lease requests forwarded by followers.
std::unique_ptr<grpc::Service> NewPeerService(Store* store, const std::string& snapshot_dir);

// Raft messages to and from their wire form.
void ToProto(const raft::Message& m, capstan::peer::Message* out);
raft::Message FromProto(const capstan::peer::Message& m);

}  // namespace capstan::store
