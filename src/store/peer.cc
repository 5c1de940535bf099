#include "store/peer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "base/thread_name.h"
#include "net/url.h"
#include "store/errors.h"
#include "store/services.h"

namespace capstan::store {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxQueuedPerPeer = 8192;
constexpr size_t kMaxBatchBytes = 16 << 20;
constexpr size_t kSnapshotChunkBytes = 1 << 20;

std::shared_ptr<grpc::Channel> PeerChannel(const std::string& target) {
  grpc::ChannelArguments args;
  // A peer behind a dead link must be noticed even when nothing is being
  // written, so the stream breaks and the leader probes again after healing.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxSendMessageSize(64 << 20);
  // Separate connections per peer channel: the message stream and unary
  // calls must not share fate with another member's channel.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

void ToProto(const raft::Message& m, capstan::peer::Message* out) {
  out->set_type(static_cast<uint32_t>(m.type));
  out->set_from(m.from);
  out->set_to(m.to);
  out->set_term(m.term);
  out->set_log_term(m.log_term);
  out->set_index(m.index);
  for (const raft::Entry& e : m.entries) {
    auto* pe = out->add_entries();
    pe->set_index(e.index);
    pe->set_term(e.term);
    pe->set_type(static_cast<uint32_t>(e.type));
    pe->set_data(e.data);
  }
  out->set_commit(m.commit);
  out->set_reject(m.reject);
  out->set_reject_hint(m.reject_hint);
  out->set_context(m.context);
  if (m.snapshot) {
    auto* s = out->mutable_snapshot();
    s->set_index(m.snapshot->index);
    s->set_term(m.snapshot->term);
    for (uint64_t v : m.snapshot->conf.voters) s->add_voters(v);
    for (uint64_t l : m.snapshot->conf.learners) s->add_learners(l);
  }
}

raft::Message FromProto(const capstan::peer::Message& m) {
  raft::Message out;
  out.type = static_cast<raft::MsgType>(m.type());
  out.from = m.from();
  out.to = m.to();
  out.term = m.term();
  out.log_term = m.log_term();
  out.index = m.index();
  out.entries.reserve(m.entries_size());
  for (const auto& e : m.entries()) {
    out.entries.push_back(raft::Entry{
        e.index(), e.term(),
        e.type() == 1 ? raft::EntryType::kConfChange : raft::EntryType::kNormal, e.data()});
  }
  out.commit = m.commit();
  out.reject = m.reject();
  out.reject_hint = m.reject_hint();
  out.context = m.context();
  if (m.has_snapshot()) {
    raft::SnapshotMeta s;
    s.index = m.snapshot().index();
    s.term = m.snapshot().term();
    s.conf.voters.assign(m.snapshot().voters().begin(), m.snapshot().voters().end());
    s.conf.learners.assign(m.snapshot().learners().begin(), m.snapshot().learners().end());
    out.snapshot = s;
  }
  return out;
}

// ----- transport --------------------------------------------------------

PeerTransport::PeerTransport(uint64_t self, uint64_t cluster_id, raft::Node* node)
    : self_(self), cluster_id_(cluster_id), node_(node) {
  // Test hook: CAPSTAN_TEST_PEER_DIAL="url=host:port,..." makes this member
  // dial those addresses instead of the peers' URLs, so a test can put a
  // fault-injecting proxy on every directed link (tests/e2e/cluster.h).
  if (const char* dial = std::getenv("CAPSTAN_TEST_PEER_DIAL"); dial != nullptr) {
    for (const std::string& pair : std::vector<std::string>(absl::StrSplit(dial, ','))) {
      std::vector<std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
      if (kv.size() == 2) dial_override_[net::GrpcTarget(kv[0])] = kv[1];
    }
  }
}

PeerTransport::~PeerTransport() { Stop(); }

void PeerTransport::Stop() {
  if (stopping_.exchange(true)) return;
  std::map<uint64_t, std::shared_ptr<Peer>> peers;
  std::vector<std::thread> snaps;
  {
    std::lock_guard<std::mutex> lock(mu_);
    peers.swap(peers_);
    snaps.swap(snapshot_threads_);
  }
  for (auto& [id, p] : peers) StopPeer(p);
  for (auto& t : snaps) t.join();
}

void PeerTransport::StopPeer(const std::shared_ptr<Peer>& peer) {
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    peer->stopping = true;
    if (peer->active != nullptr) peer->active->TryCancel();
  }
  peer->cv.notify_all();
  if (peer->thread.joinable()) peer->thread.join();
}

void PeerTransport::UpdatePeers(const std::vector<etcdserverpb::Member>& members) {
  if (stopping_) return;
  std::vector<std::shared_ptr<Peer>> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<uint64_t, std::string> want;
    for (const auto& m : members) {
      if (m.id() == self_ || m.peerurls().empty()) continue;
      std::string target = net::GrpcTarget(m.peerurls(0));
      if (auto o = dial_override_.find(target); o != dial_override_.end()) target = o->second;
      want[m.id()] = target;
    }
    for (auto it = peers_.begin(); it != peers_.end();) {
      auto w = want.find(it->first);
      if (w == want.end() || w->second != it->second->target) {
        removed.push_back(it->second);
        it = peers_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [id, target] : want) {
      if (peers_.contains(id)) continue;
      auto p = std::make_shared<Peer>();
      p->id = id;
      p->target = target;
      p->channel = PeerChannel(target);
      p->stub = capstan::peer::Peer::NewStub(p->channel);
      p->thread = std::thread([this, p] {
        SetThreadName("peer-send");
        SenderLoop(p);
      });
      peers_[id] = p;
      CAPSTAN_LOG(info, "peer added", "peer", absl::StrCat(absl::Hex(id)), "target", target);
    }
  }
  for (auto& p : removed) StopPeer(p);
}

std::shared_ptr<capstan::peer::Peer::Stub> PeerTransport::StubFor(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : it->second->stub;
}

void PeerTransport::Send(std::vector<raft::Message> messages) {
  std::map<uint64_t, std::shared_ptr<Peer>> peers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    peers = peers_;
  }
  std::vector<uint64_t> unreachable;
  for (raft::Message& m : messages) {
    auto it = peers.find(m.to);
    if (it == peers.end()) continue;  // not (yet) a known member: Raft retries
    Peer& p = *it->second;
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.queue.size() >= kMaxQueuedPerPeer) {
      unreachable.push_back(m.to);
      continue;
    }
    p.queue.push_back(std::move(m));
    p.cv.notify_one();
  }
  for (uint64_t id : unreachable) node_->ReportUnreachable(id);
}

void PeerTransport::SenderLoop(std::shared_ptr<Peer> peer) {
  auto backoff = std::chrono::milliseconds(50);
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::ClientWriter<capstan::peer::MessageBatch>> writer;
  capstan::peer::PeerAck ack;
  auto close_stream = [&] {
    if (!writer) return;
    {
      std::lock_guard<std::mutex> lock(peer->mu);
      peer->active = nullptr;
    }
    ctx->TryCancel();
    (void)writer->Finish();
    writer.reset();
    ctx.reset();
  };
  while (true) {
    std::deque<raft::Message> batch;
    {
      std::unique_lock<std::mutex> lock(peer->mu);
      peer->cv.wait(lock, [&] { return peer->stopping || !peer->queue.empty(); });
      if (peer->stopping) break;
      batch.swap(peer->queue);
    }
    if (!writer) {
      ctx = std::make_unique<grpc::ClientContext>();
      {
        std::lock_guard<std::mutex> lock(peer->mu);
        if (peer->stopping) break;
        peer->active = ctx.get();
      }
      writer = peer->stub->Raft(ctx.get(), &ack);
    }
    bool ok = true;
    while (!batch.empty() && ok) {
      capstan::peer::MessageBatch out;
      out.set_cluster_id(cluster_id_);
      size_t bytes = 0;
      while (!batch.empty() && (bytes < kMaxBatchBytes || out.messages_size() == 0)) {
        ToProto(batch.front(), out.add_messages());
        for (const auto& e : batch.front().entries) bytes += e.data.size();
        batch.pop_front();
      }
      ok = writer->Write(out);
    }
    if (ok) {
      backoff = std::chrono::milliseconds(50);
      continue;
    }
    // The stream broke: the peer is down, restarting or cut off.
    close_stream();
    node_->ReportUnreachable(peer->id);
    std::unique_lock<std::mutex> lock(peer->mu);
    peer->queue.clear();  // stale by the time we reconnect; Raft resends what matters
    peer->cv.wait_for(lock, backoff, [&] { return peer->stopping; });
    if (peer->stopping) break;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
  close_stream();
}

void PeerTransport::SendSnapshot(raft::Message m, std::string dir) {
  auto stub = StubFor(m.to);
  if (!stub || stopping_) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    node_->ReportSnapshot(m.to, false);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_threads_.emplace_back([this, stub, m = std::move(m), dir = std::move(dir)] {
    uint64_t to = m.to;
    bool ok = [&] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
      capstan::peer::PeerAck ack;
      auto writer = stub->Snapshot(&ctx, &ack);
      capstan::peer::SnapshotChunk first;
      first.set_cluster_id(cluster_id_);
      ToProto(m, first.mutable_message());
      if (!writer->Write(first)) return false;
      std::string buf(kSnapshotChunkBytes, '\0');
      for (const auto& entry : fs::directory_iterator(dir)) {
        if (!entry.is_regular_file()) continue;
        std::ifstream in(entry.path(), std::ios::binary);
        uint64_t offset = 0;
        bool sent_any = false;
        while (in || !sent_any) {
          in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
          size_t n = static_cast<size_t>(in.gcount());
          capstan::peer::SnapshotChunk chunk;
          chunk.set_file(entry.path().filename().string());
          chunk.set_offset(offset);
          chunk.set_data(buf.data(), n);
          if (!writer->Write(chunk)) return false;
          offset += n;
          sent_any = true;
          if (n < buf.size()) break;
        }
      }
      writer->WritesDone();
      grpc::Status st = writer->Finish();
      if (!st.ok()) {
        CAPSTAN_LOG(warn, "snapshot send failed", "peer", absl::StrCat(absl::Hex(to)), "error",
                    st.error_message());
      }
      return st.ok();
    }();
    std::error_code ec;
    fs::remove_all(dir, ec);
    CAPSTAN_LOG(info, "snapshot sent", "peer", absl::StrCat(absl::Hex(to)), "index",
                m.snapshot ? m.snapshot->index : 0, "ok", ok);
    node_->ReportSnapshot(to, ok);
  });
}

// ----- service ----------------------------------------------------------

namespace {

class PeerService final : public capstan::peer::Peer::Service {
 public:
  PeerService(Store* store, std::string snapshot_dir)
      : store_(store), snapshot_dir_(std::move(snapshot_dir)) {}

  grpc::Status Raft(grpc::ServerContext* ctx,
                    grpc::ServerReader<capstan::peer::MessageBatch>* reader,
                    capstan::peer::PeerAck*) override {
    capstan::peer::MessageBatch batch;
    while (reader->Read(&batch)) {
      if (batch.cluster_id() != store_->cluster_id()) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            absl::StrCat("cluster ID mismatch: this member belongs to ",
                                         absl::Hex(store_->cluster_id()), ", the sender to ",
                                         absl::Hex(batch.cluster_id())));
      }
      for (const auto& m : batch.messages()) {
        auto type = static_cast<raft::MsgType>(m.type());
        bool network = m.type() >= static_cast<uint32_t>(raft::MsgType::kAppend) &&
                       m.type() <= static_cast<uint32_t>(raft::MsgType::kReadIndexResp) &&
                       type != raft::MsgType::kSnapshot;  // snapshots come on their own stream
        bool forwarded = type == raft::MsgType::kPropose || type == raft::MsgType::kReadIndex ||
                         type == raft::MsgType::kTransferLeader;
        if (!network && !forwarded) continue;  // local-only types never travel
        store_->node()->Step(FromProto(m));
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Snapshot(grpc::ServerContext*,
                        grpc::ServerReader<capstan::peer::SnapshotChunk>* reader,
                        capstan::peer::PeerAck*) override {
    capstan::peer::SnapshotChunk chunk;
    if (!reader->Read(&chunk) || !chunk.has_message() || !chunk.message().has_snapshot()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "snapshot stream without a header");
    }
    if (chunk.cluster_id() != store_->cluster_id()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "cluster ID mismatch");
    }
    raft::Message m = FromProto(chunk.message());
    std::string dir = absl::StrCat(snapshot_dir_, "/in-", m.from, "-", m.snapshot->index, "-",
                                   std::random_device()());
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return grpc::Status(grpc::StatusCode::INTERNAL, "cannot create " + dir);
    std::ofstream out;
    std::string current;
    bool ok = true;
    while (ok && reader->Read(&chunk)) {
      const std::string& name = chunk.file();
      if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
        ok = false;
        break;
      }
      if (name != current) {
        out.close();
        out.open(dir + "/" + name, std::ios::binary | std::ios::trunc);
        current = name;
      }
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      ok = static_cast<bool>(out);
    }
    out.close();
    if (!ok) {
      fs::remove_all(dir, ec);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad snapshot chunk");
    }
    CAPSTAN_LOG(info, "snapshot received", "from", absl::StrCat(absl::Hex(m.from)), "index",
                m.snapshot->index);
    store_->node()->StepSnapshot(std::move(m), dir);
    return grpc::Status::OK;
  }

  grpc::Status Members(grpc::ServerContext*, const capstan::peer::MembersRequest*,
                       etcdserverpb::MemberListResponse* resp) override {
    store_->FillHeader(resp->mutable_header(), 0);
    for (const auto& m : store_->Members()) *resp->add_members() = m;
    return grpc::Status::OK;
  }

  grpc::Status LeaseKeepAlive(grpc::ServerContext*, const etcdserverpb::LeaseKeepAliveRequest* req,
                              etcdserverpb::LeaseKeepAliveResponse* resp) override {
    if (!store_->node()->IsLeader()) return ToGrpc(ErrNotLeader());
    resp->set_id(req->id());
    auto ttl = store_->lessor()->Renew(req->id());
    resp->set_ttl(ttl.ok() ? *ttl : 0);
    store_->FillHeader(resp->mutable_header(), 0);
    return grpc::Status::OK;
  }

  grpc::Status LeaseTimeToLive(grpc::ServerContext*,
                               const etcdserverpb::LeaseTimeToLiveRequest* req,
                               etcdserverpb::LeaseTimeToLiveResponse* resp) override {
    if (!store_->node()->IsLeader()) return ToGrpc(ErrNotLeader());
    return ToGrpc(FillTimeToLive(store_, *req, resp));
  }

 private:
  Store* store_;
  std::string snapshot_dir_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewPeerService(Store* store, const std::string& snapshot_dir) {
  return std::make_unique<PeerService>(store, snapshot_dir);
}

}  // namespace capstan::store
