#include "store/etcd_grpc.h"

#include <deque>
#include <mutex>
#include <variant>

#include "etcd/etcdserverpb/rpc.pb.h"
#include "store/errors.h"
#include "store/kv_ops.h"
#include "store/learner_gate.h"
#include "store/native_call.h"
#include "store/validate.h"
#include "store/watch.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;
using net::Buffer;
using net::GrpcCall;
using net::GrpcCallPtr;

void AddKv(Store* store, MethodTable* server) {
  server->AddUnary("/etcdserverpb.KV/Range", [store](const GrpcCallPtr& call, Buffer bytes) {
    RangeRequest parsed;
    if (!ParseRequest(call, bytes, &parsed)) return;
    absl::Status st = CheckRangeRequest(parsed);
    if (!st.ok()) return call->Finish(st);
    if (parsed.serializable()) {
      RangeResponse resp;
      st = store->applier()->Range(parsed, &resp);
      return Answer(store, call, st, &resp);
    }
    // Linearizable: read once this member has applied everything committed
    // before the request arrived (ReadIndex), on any member. A permission
    // change applied meanwhile voids the read (etcd's doSerialize).
    auto req = std::make_shared<RangeRequest>(std::move(parsed));
    uint64_t auth_rev = CheckedAuthRevision();
    store->LinearizableRead([store, call, req, auth_rev](absl::Status st) {
      RangeResponse resp;
      if (st.ok()) st = store->applier()->Range(*req, &resp);
      if (st.ok()) st = RecheckAuthRevision(store, auth_rev);
      Answer(store, call, st, &resp);
    });
  });
  server->AddUnary("/etcdserverpb.KV/Put", [store](const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    PutRequest* req = entry.mutable_put();
    if (!ParseRequest(call, bytes, req)) return;
    absl::Status st = CheckPutRequest(*req);
    if (st.ok()) st = store->CheckQuota(PutCost(*req));
    if (!st.ok()) return call->Finish(st);
    ProposeAndAnswer<PutResponse>(store, call, std::move(entry));
  });
  server->AddUnary("/etcdserverpb.KV/DeleteRange", [store](const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    DeleteRangeRequest* req = entry.mutable_delete_range();
    if (!ParseRequest(call, bytes, req)) return;
    absl::Status st = CheckDeleteRequest(*req);
    if (!st.ok()) return call->Finish(st);
    ProposeAndAnswer<DeleteRangeResponse>(store, call, std::move(entry));
  });
  server->AddUnary("/etcdserverpb.KV/Txn", [store](const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    TxnRequest* req = entry.mutable_txn();
    if (!ParseRequest(call, bytes, req)) return;
    absl::Status st = CheckTxn(*req, store->options().max_txn_ops);
    if (st.ok() && IsTxnReadOnly(*req)) {
      // Read-only txns need no log entry (as in etcd), only a read index.
      auto shared = std::make_shared<TxnRequest>(std::move(*req));
      uint64_t auth_rev = CheckedAuthRevision();
      store->LinearizableRead([store, call, shared, auth_rev](absl::Status st) {
        TxnResponse resp;
        if (st.ok()) st = store->applier()->ReadOnlyTxn(*shared, &resp);
        if (st.ok()) st = RecheckAuthRevision(store, auth_rev);
        Answer(store, call, st, &resp);
      });
      return;
    }
    if (st.ok()) {
      size_t cost = TxnCost(*req);
      if (cost > 0) st = store->CheckQuota(cost);
    }
    if (!st.ok()) return call->Finish(st);
    ProposeAndAnswer<TxnResponse>(store, call, std::move(entry));
  });
  server->AddUnary("/etcdserverpb.KV/Compact", [store](const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    if (!ParseRequest(call, bytes, entry.mutable_compaction())) return;
    ProposeAndAnswer<CompactionResponse>(store, call, std::move(entry));
  });
}

// ---- Watch

// A fan-out hands a loop all its streams' groups at once: for one put with
// 100k watchers, 100k responses, about 9 MB. Written out in one turn, all of
// them would be encoded before the first byte left (sockets flush at the
// turn's end); with a budget per turn, each part is on its way while the
// next is written, and other calls on the loop are served in between.
constexpr size_t kGroupBytesPerTurn = 256 * 1024;

// Group bytes this loop thread has written in its current turn.
struct GroupTurnBudget {
  uint64_t turn = 0;
  size_t bytes = 0;

  bool Spent(uint64_t now) const { return turn == now && bytes >= kGroupBytesPerTurn; }
  size_t Left(uint64_t now) const {
    if (turn != now) return kGroupBytesPerTurn;
    return bytes < kGroupBytesPerTurn ? kGroupBytesPerTurn - bytes : 0;
  }
  void Spend(uint64_t now, size_t n) {
    if (turn != now) {
      turn = now;
      bytes = 0;
    }
    bytes += n;
  }
};
thread_local GroupTurnBudget group_turn_budget;

// One Watch stream's queue between the hub (any thread) and the call (its
// loop). Responses arrive serialized, or as a group's watch IDs that the
// loop writes out when it takes them (the fan-out's bytes are made on the
// stream's loop, not the applier's). They wait here until the loop takes
// them, and the loop hands them to the call only while the call is under
// its high mark, so what the hub sees queued (QueuedBytes, its slow-stream
// limit) is what this client has not taken yet.
class WatchQueue final : public WatchSink, public std::enable_shared_from_this<WatchQueue> {
 public:
  explicit WatchQueue(GrpcCallPtr call) : call_(std::move(call)) {}

  void SendEncoded(std::string response) override { SendFramed(net::FrameGrpcMessage(response)); }
  void SendFramed(Buffer framed) override {
    if (framed.empty()) return;
    size_t bytes = framed.size();
    Queue(Pending(std::move(framed)), bytes);
  }
  // Written out on the loop, when the call takes them.
  void SendGroup(store::GroupResponses group) override {
    if (group.ids.empty()) return;
    size_t bytes = group.framed_bytes;
    Queue(Pending(std::move(group)), bytes);
  }
  size_t QueuedBytes() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_bytes_ + call_buffered_;
  }

  // ---- loop thread
  // Hands queued responses to the call until it is full. True when nothing
  // is left here.
  bool Drain() {
    std::deque<Pending> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      flush_posted_ = false;
      if (closed_) return true;
      if (call_full_) return pending_.empty();
      batch.swap(pending_);
    }
    bool full = false, out_of_budget = false;
    size_t taken = 0;
    uint64_t turn = call_->loop()->stats().turns;
    while (!batch.empty() && !full) {
      Buffer framed;
      if (auto* group = std::get_if<store::GroupResponses>(&batch.front())) {
        if (group_turn_budget.Spent(turn)) {
          out_of_budget = true;
          break;
        }
        // Written a part at a time: a group of large events is never all in
        // memory at once, past what the call buffers.
        size_t n = group->EncodeTo(&framed, group_turn_budget.Left(turn));
        taken += n;
        group_turn_budget.Spend(turn, n);
        full = !call_->WriteFramed(std::move(framed));
        if (group->done()) batch.pop_front();
        continue;
      }
      framed = std::move(std::get<Buffer>(batch.front()));
      taken += framed.size();
      full = !call_->WriteFramed(std::move(framed));
      batch.pop_front();
    }
    std::lock_guard<std::mutex> lock(mu_);
    pending_bytes_ -= taken;
    call_full_ = full;
    call_buffered_ = call_->buffered_bytes();
    // What the call could not take goes back in front of what came since.
    for (auto it = batch.rbegin(); it != batch.rend(); ++it) pending_.push_front(std::move(*it));
    if (out_of_budget && !full && !closed_ && !flush_posted_) {
      flush_posted_ = true;  // the rest in a later turn
      call_->loop()->Post([self = shared_from_this()] { self->Drain(); });
    }
    return pending_.empty();
  }
  // The call drained below its low mark: hand it more. True when nothing
  // is left here.
  bool CallHasRoom() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      call_full_ = false;
    }
    return Drain();
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    pending_.clear();
  }

 private:
  using Pending = std::variant<Buffer, store::GroupResponses>;

  void Queue(Pending item, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    pending_bytes_ += bytes;
    pending_.push_back(std::move(item));
    if (flush_posted_ || call_full_) return;
    flush_posted_ = true;
    // One post per burst: a fan-out queues responses for many streams
    // before the loop runs, and they leave in one turn.
    call_->loop()->Post([self = shared_from_this()] { self->Drain(); });
  }

  GrpcCallPtr call_;
  mutable std::mutex mu_;
  std::deque<Pending> pending_;
  size_t pending_bytes_ = 0;
  size_t call_buffered_ = 0;
  bool flush_posted_ = false;
  bool call_full_ = false;
  bool closed_ = false;
};

class WatchStream final : public net::GrpcStreamHandler {
 public:
  WatchStream(WatchHub* hub, GrpcCallPtr call)
      : hub_(hub), call_(call), queue_(std::make_shared<WatchQueue>(std::move(call))) {
    hub_->AddStream(queue_.get());
  }
  ~WatchStream() override { Stop(); }

  void OnMessage(Buffer bytes) override {
    WatchRequest request;
    if (!ParseFrom(bytes, &request)) {
      Stop();
      call_->Finish(absl::InvalidArgumentError(
          "undecodable WatchRequest: grpc: error unmarshalling request"));
      return;
    }
    hub_->HandleRequest(queue_.get(), request);
  }
  // The client closed its side: the stream is over (as in etcd).
  void OnHalfClose() override {
    Stop();
    call_->Finish(absl::OkStatus());
  }
  void OnWriteRoom() override {
    // Watchers that fell behind while the stream was full may resume.
    if (queue_->CallHasRoom()) hub_->Kick();
  }
  void OnDone(bool) override { Stop(); }

 private:
  void Stop() {
    if (stopped_) return;
    stopped_ = true;
    hub_->RemoveStream(queue_.get());  // no Send* after this returns
    queue_->Close();
  }

  WatchHub* hub_;
  GrpcCallPtr call_;
  std::shared_ptr<WatchQueue> queue_;
  bool stopped_ = false;
};

void AddWatch(Store* store, MethodTable* server) {
  server->AddStream("/etcdserverpb.Watch/Watch", [store](const GrpcCallPtr& call) {
    return std::make_unique<WatchStream>(store->watch_hub(), call);
  });
}

}  // namespace

void AddNativeEtcdMethods(Store* store, net::GrpcServer* server, net::WorkerPool* pool,
                          PeerNameSource peer_name) {
  MethodTable methods;
  AddKv(store, &methods);
  AddWatch(store, &methods);
  AddNativeCluster(store, &methods);
  AddNativeLease(store, &methods);
  AddNativeMaintenance(store, &methods, pool);
  AddNativeConcurrency(store, &methods);
  AddNativeAuth(store, &methods, pool);
  // The one check point: every handler above reaches the server through the gate.
  auto gate = std::make_shared<AuthGate>(store);
  gate->set_peer_name_source(std::move(peer_name));
  methods.InstallGated(std::move(gate), server);
  // After the gate: it wraps every method installed, so a learner refuses
  // a call before auth looks at it.
  InstallLearnerGate(store, server);
}

}  // namespace capstan::store
