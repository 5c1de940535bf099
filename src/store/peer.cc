#include "store/peer.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "net/address.h"
#include "store/errors.h"
#include "store/services.h"
#include "store/transport_security.h"

namespace capstan::store {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxQueuedPerPeer = 8192;
constexpr size_t kMaxBatchBytes = 16 << 20;
constexpr size_t kSnapshotChunkBytes = 1 << 20;

std::shared_ptr<grpc::Channel> PeerChannel(const std::string& target,
                                           std::shared_ptr<grpc::ChannelCredentials> credentials) {
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
  return grpc::CreateCustomChannel(target, credentials, args);
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

PeerTransport::PeerTransport(uint64_t self, uint64_t cluster_id, raft::Node* node,
                             std::shared_ptr<grpc::ChannelCredentials> tls)
    : self_(self), cluster_id_(cluster_id), node_(node), tls_(std::move(tls)) {
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

// One open Peer.Raft stream. gRPC owns it until OnDone; the peer holds a
// reference while it is the peer's current stream.
class PeerTransport::Stream final : public grpc::ClientWriteReactor<capstan::peer::MessageBatch> {
 public:
  Stream(PeerTransport* transport, std::shared_ptr<Peer> peer)
      : transport_(transport), peer_(std::move(peer)) {}

  void Open(std::shared_ptr<Stream> self) {
    self_ = std::move(self);
    peer_->stub->async()->Raft(&ctx_, &ack_, this);
  }
  void Write() { StartWrite(&out_); }
  void Call() { StartCall(); }
  void Cancel() { ctx_.TryCancel(); }
  capstan::peer::MessageBatch* out() { return &out_; }

  void OnWriteDone(bool ok) override { transport_->OnWriteDone(peer_, this, ok); }
  void OnDone(const grpc::Status&) override {
    transport_->OnStreamDone(peer_, this);
    self_.reset();  // may delete this
  }

 private:
  PeerTransport* transport_;
  std::shared_ptr<Peer> peer_;
  std::shared_ptr<Stream> self_;
  grpc::ClientContext ctx_;
  capstan::peer::PeerAck ack_;
  capstan::peer::MessageBatch out_;  // the batch being written
};

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
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    peer->stopping = true;
    peer->queue.clear();
    stream = peer->stream;
  }
  if (stream) stream->Cancel();
  std::unique_lock<std::mutex> lock(peer->mu);
  peer->cv.wait(lock, [&] { return peer->open_streams == 0; });
}

void PeerTransport::UpdatePeers(const std::vector<etcdserverpb::Member>& members) {
  if (stopping_) return;
  std::vector<std::shared_ptr<Peer>> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<uint64_t, std::string> want;
    std::map<uint64_t, std::string> urls;
    for (const auto& m : members) {
      if (m.id() == self_ || m.peerurls().empty()) continue;
      std::string target = net::GrpcTarget(m.peerurls(0));
      if (auto o = dial_override_.find(target); o != dial_override_.end()) target = o->second;
      want[m.id()] = target;
      urls[m.id()] = m.peerurls(0);
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
      p->channel = PeerChannel(target, ChannelCredentialsFor(urls[id], tls_));
      p->stub = capstan::peer::Peer::NewStub(p->channel);
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
  std::vector<std::shared_ptr<Peer>> touched;
  for (raft::Message& m : messages) {
    auto it = peers.find(m.to);
    if (it == peers.end()) continue;  // not (yet) a known member: Raft retries
    Peer& p = *it->second;
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.stopping) continue;
    if (p.queue.size() >= kMaxQueuedPerPeer) {
      unreachable.push_back(m.to);
      continue;
    }
    p.queue.push_back(std::move(m));
    if (std::find(touched.begin(), touched.end(), it->second) == touched.end()) {
      touched.push_back(it->second);
    }
  }
  for (const auto& p : touched) Pump(p);
  for (uint64_t id : unreachable) node_->ReportUnreachable(id);
}

void PeerTransport::FillBatch(Peer* peer, capstan::peer::MessageBatch* out) {
  out->Clear();
  out->set_cluster_id(cluster_id_);
  size_t bytes = 0;
  while (!peer->queue.empty() && (bytes < kMaxBatchBytes || out->messages_size() == 0)) {
    ToProto(peer->queue.front(), out->add_messages());
    for (const auto& e : peer->queue.front().entries) bytes += e.data.size();
    peer->queue.pop_front();
  }
}

void PeerTransport::Pump(const std::shared_ptr<Peer>& peer) {
  std::shared_ptr<Stream> stream;
  bool opened = false;
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    if (peer->stopping || peer->writing || peer->queue.empty()) return;
    if (!peer->stream) {
      // Messages wait for the backoff to pass; heartbeats keep calling Send.
      if (std::chrono::steady_clock::now() < peer->retry_after) return;
      peer->stream = std::make_shared<Stream>(this, peer);
      ++peer->open_streams;
      opened = true;
    }
    stream = peer->stream;
    FillBatch(peer.get(), stream->out());
    peer->writing = true;
  }
  // Outside the lock: gRPC may run reactions inline.
  if (opened) stream->Open(stream);
  stream->Write();
  if (opened) stream->Call();
}

void PeerTransport::BreakStream(Peer* peer, Stream* stream) {
  if (peer->stream.get() != stream) return;
  peer->stream.reset();
  peer->writing = false;
  peer->queue.clear();  // stale by the time we reconnect; Raft resends what matters
  peer->retry_after = std::chrono::steady_clock::now() + peer->backoff;
  peer->backoff = std::min(peer->backoff * 2, std::chrono::milliseconds(1000));
}

void PeerTransport::OnWriteDone(const std::shared_ptr<Peer>& peer, Stream* stream, bool ok) {
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    if (peer->stream.get() != stream) return;
    if (ok) {
      peer->backoff = std::chrono::milliseconds(50);
      if (peer->queue.empty() || peer->stopping) {
        peer->writing = false;
        return;
      }
      FillBatch(peer.get(), stream->out());
    } else {
      // The stream broke: the peer is down, restarting or cut off.
      BreakStream(peer.get(), stream);
    }
  }
  if (ok) {
    stream->Write();
    return;
  }
  stream->Cancel();
  node_->ReportUnreachable(peer->id);
}

void PeerTransport::OnStreamDone(const std::shared_ptr<Peer>& peer, Stream* stream) {
  bool broke = false;
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    broke = peer->stream.get() == stream && !peer->stopping;
    BreakStream(peer.get(), stream);  // the server ended it (e.g. a cluster ID mismatch)
    --peer->open_streams;
  }
  peer->cv.notify_all();
  if (broke) node_->ReportUnreachable(peer->id);
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

// Peer.Raft on the receiving side: every batch read is stepped into the node
// on gRPC's thread, and the next read started (no thread of our own).
class RaftStreamReader final : public grpc::ServerReadReactor<capstan::peer::MessageBatch> {
 public:
  explicit RaftStreamReader(Store* store) : store_(store) { StartRead(&batch_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    if (batch_.cluster_id() != store_->cluster_id()) {
      Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("cluster ID mismatch: this member belongs to ",
                                       absl::Hex(store_->cluster_id()), ", the sender to ",
                                       absl::Hex(batch_.cluster_id()))));
      return;
    }
    for (const auto& m : batch_.messages()) {
      auto type = static_cast<raft::MsgType>(m.type());
      bool network = m.type() >= static_cast<uint32_t>(raft::MsgType::kAppend) &&
                     m.type() <= static_cast<uint32_t>(raft::MsgType::kReadIndexResp) &&
                     type != raft::MsgType::kSnapshot;  // snapshots come on their own stream
      bool forwarded = type == raft::MsgType::kPropose || type == raft::MsgType::kReadIndex ||
                       type == raft::MsgType::kTransferLeader;
      if (!network && !forwarded) continue;  // local-only types never travel
      store_->node()->Step(FromProto(m));
    }
    StartRead(&batch_);
  }
  void OnDone() override { delete this; }

 private:
  Store* store_;
  capstan::peer::MessageBatch batch_;
};

// Peer.Snapshot on the receiving side: chunks are written to files in a
// fresh directory as they arrive; the node gets the directory at the end.
class SnapshotReader final : public grpc::ServerReadReactor<capstan::peer::SnapshotChunk> {
 public:
  SnapshotReader(Store* store, const std::string& snapshot_dir)
      : store_(store), snapshot_dir_(snapshot_dir) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!header_) {
      if (!ok || !chunk_.has_message() || !chunk_.message().has_snapshot()) {
        return Fail(grpc::StatusCode::INVALID_ARGUMENT, "snapshot stream without a header");
      }
      if (chunk_.cluster_id() != store_->cluster_id()) {
        return Fail(grpc::StatusCode::FAILED_PRECONDITION, "cluster ID mismatch");
      }
      header_ = FromProto(chunk_.message());
      dir_ = absl::StrCat(snapshot_dir_, "/in-", header_->from, "-", header_->snapshot->index, "-",
                          std::random_device()());
      std::error_code ec;
      fs::create_directories(dir_, ec);
      if (ec) return Fail(grpc::StatusCode::INTERNAL, "cannot create " + dir_);
      StartRead(&chunk_);
      return;
    }
    if (!ok) {  // the sender is done
      out_.close();
      CAPSTAN_LOG(info, "snapshot received", "from", absl::StrCat(absl::Hex(header_->from)),
                  "index", header_->snapshot->index);
      store_->node()->StepSnapshot(std::move(*header_), dir_);
      dir_.clear();
      Finish(grpc::Status::OK);
      return;
    }
    const std::string& name = chunk_.file();
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
      return Fail(grpc::StatusCode::INVALID_ARGUMENT, "bad snapshot chunk: file name " + name);
    }
    if (name != current_) {
      out_.close();
      out_.open(dir_ + "/" + name, std::ios::binary | std::ios::trunc);
      current_ = name;
    }
    out_.write(chunk_.data().data(), static_cast<std::streamsize>(chunk_.data().size()));
    if (!out_) return Fail(grpc::StatusCode::INTERNAL, "cannot write " + dir_ + "/" + name);
    StartRead(&chunk_);
  }
  void OnDone() override {
    if (!dir_.empty()) {  // never completed: leave nothing behind
      out_.close();
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
    delete this;
  }

 private:
  void Fail(grpc::StatusCode code, const std::string& why) { Finish(grpc::Status(code, why)); }

  Store* store_;
  const std::string& snapshot_dir_;
  capstan::peer::SnapshotChunk chunk_;
  std::optional<raft::Message> header_;
  std::string dir_;
  std::string current_;
  std::ofstream out_;
};

class PeerService final : public capstan::peer::Peer::CallbackService {
 public:
  PeerService(Store* store, std::string snapshot_dir)
      : store_(store), snapshot_dir_(std::move(snapshot_dir)) {}

  grpc::ServerReadReactor<capstan::peer::MessageBatch>* Raft(grpc::CallbackServerContext*,
                                                             capstan::peer::PeerAck*) override {
    return new RaftStreamReader(store_);
  }

  grpc::ServerReadReactor<capstan::peer::SnapshotChunk>* Snapshot(
      grpc::CallbackServerContext*, capstan::peer::PeerAck*) override {
    return new SnapshotReader(store_, snapshot_dir_);
  }

  grpc::ServerUnaryReactor* Members(grpc::CallbackServerContext* ctx,
                                    const capstan::peer::MembersRequest*,
                                    etcdserverpb::MemberListResponse* resp) override {
    store_->FillHeader(resp->mutable_header(), 0);
    for (const auto& m : store_->Members()) *resp->add_members() = m;
    return FinishNow(ctx, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* LeaseKeepAlive(grpc::CallbackServerContext* ctx,
                                           const etcdserverpb::LeaseKeepAliveRequest* req,
                                           etcdserverpb::LeaseKeepAliveResponse* resp) override {
    if (!store_->node()->IsLeader()) return FinishNow(ctx, ErrNotLeader());
    resp->set_id(req->id());
    auto ttl = store_->lessor()->Renew(req->id());
    resp->set_ttl(ttl.ok() ? *ttl : 0);
    store_->FillHeader(resp->mutable_header(), 0);
    return FinishNow(ctx, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* LeaseTimeToLive(grpc::CallbackServerContext* ctx,
                                            const etcdserverpb::LeaseTimeToLiveRequest* req,
                                            etcdserverpb::LeaseTimeToLiveResponse* resp) override {
    if (!store_->node()->IsLeader()) return FinishNow(ctx, ErrNotLeader());
    return FinishNow(ctx, FillTimeToLive(store_, *req, resp));
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
