// The watch hub: delivers committed changes to watchers, in revision order,
// each event exactly once, and catches up watchers that start in the past or
// fall behind.
//
// A watcher is either synced (it gets events as the applier publishes each
// revision) or unsynced (it is behind: the syncer thread reads the history
// from the backend and sends it in chunks). A synced watcher whose stream has
// more than `max_stream_bytes` queued becomes unsynced instead of growing the
// queue, so a slow client costs a bounded amount of memory and never stalls
// the applier or other watchers; it catches up from history once its stream
// drains, or is cancelled with compact_revision if compaction passes it.
//
// Thread-safety: everything may be called from any thread. Lock order: hub
// mutex, then a sink's own lock (sinks must not call back into the hub from
// Send).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "base/metrics.h"
#include "base/mutex.h"
#include "etcd/etcdserverpb/rpc.pb.h"
#include "net/buffer.h"
#include "store/mvcc.h"

namespace capstan::store {

// The transport side of one Watch stream (a gRPC bidi stream).
class WatchSink {
 public:
  virtual ~WatchSink() = default;
  // Queues one serialized WatchResponse. Never blocks and never calls into
  // the hub.
  virtual void SendEncoded(std::string response) = 0;
  // Queues responses already framed as gRPC messages (each behind its 5-byte
  // length prefix), many in one buffer: a fan-out hands a stream all its
  // watchers' responses to a revision at once. The default splits them and
  // calls SendEncoded for each.
  virtual void SendFramed(net::Buffer framed);
  // Bytes queued and not yet written to the network.
  virtual size_t QueuedBytes() const = 0;

  void Send(const etcdserverpb::WatchResponse& response) {
    SendEncoded(response.SerializeAsString());
  }
};

class WatchHub {
 public:
  struct Options {
    size_t max_stream_bytes = 8 << 20;       // queued per stream before watchers fall behind
    size_t max_request_bytes = 1536 * 1024;  // fragment threshold
    std::chrono::milliseconds progress_interval{600'000};  // progress_notify period
    std::chrono::milliseconds sync_interval{20};
    metrics::Registry* metrics = nullptr;
  };
  using HeaderFiller = std::function<void(etcdserverpb::ResponseHeader*, int64_t rev)>;

  WatchHub(Mvcc* mvcc, Options options, HeaderFiller fill_header);
  ~WatchHub();

  // Stream lifecycle. A sink must be removed before it is destroyed.
  void AddStream(WatchSink* sink);
  void RemoveStream(WatchSink* sink);

  // Handles one request received on the stream (create, cancel, progress).
  void HandleRequest(WatchSink* sink, const etcdserverpb::WatchRequest& req);

  // Called by the applier after a revision is committed, in revision order.
  void Publish(int64_t rev, const std::vector<mvccpb::Event>& events);

  // Wakes the syncer (a sink that drained may let behind watchers resume).
  void Kick();
  // The store's content was replaced by a snapshot: every watcher catches up
  // from the history again (or is cancelled as compacted).
  void Resync();

  // Without the hub's lock (a fan-out may hold it for milliseconds).
  size_t watcher_count() const { return watcher_count_.load(std::memory_order_relaxed); }

 private:
  struct Stream;
  struct Watcher;
  // A watched range, shared by every watcher of the same key and range_end
  // (a fan-out tests each range once per revision, not each watcher).
  struct KeyRange {
    std::string key, end;  // end empty: the single key `key`
    size_t watchers = 0;   // watchers holding this range
    // Synced watchers of a single key (range watchers are listed per stream
    // instead, so a fan-out writes stream by stream).
    std::vector<Watcher*> synced_key_watchers;
    // Which of the current revision's events fall in the range, computed
    // once per Publish call (number match_seq).
    uint64_t match_seq = 0;
    absl::InlinedVector<uint32_t, 2> matched;
    // The matched events' serialized WatchResponse.events fields, end to
    // end: the body every plain watcher of the range gets (built at most
    // once per Publish call, number blob_seq).
    uint64_t blob_seq = 0;
    std::string blob;
  };
  struct Watcher {
    int64_t id = 0;
    KeyRange* range = nullptr;
    Stream* stream = nullptr;
    int64_t next_rev = 0;  // first revision not yet delivered
    // While synced: the index in the stream's synced_range_watchers or the
    // range's synced_key_watchers, for removal in constant time.
    uint32_t synced_slot = 0;
    bool prev_kv = false, progress_notify = false, fragment = false;
    bool no_put = false, no_delete = false;
    // None of the above: the watcher gets every event of its range in one
    // response, the same bytes as its range's other plain watchers.
    bool plain = false;
    bool synced = false;
    bool sent_since_progress = false;
    uint64_t publish_seq = 0;  // the Publish call that last sent to it
  };
  struct Stream {
    WatchSink* sink = nullptr;
    absl::node_hash_map<int64_t, Watcher> watchers;
    std::vector<Watcher*> synced_range_watchers;
    int64_t next_id = 0;
    bool progress_pending = false;
    // Publish's per-call state: whether the stream had too much queued when
    // call number `publish_seq` began, and the framed responses it collects
    // (written straight into reserved room of `out`).
    uint64_t publish_seq = 0;
    bool behind = false;
    net::Buffer out;
    std::span<char> room;
    size_t room_used = 0;
  };

  void Create(Stream* s, const etcdserverpb::WatchCreateRequest& req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Cancel(Stream* s, int64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveWatcher(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MakeSynced(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MakeUnsynced(Watcher* w, int64_t next_rev) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends events (already filtered for w) as one response, fragmenting if asked.
  void SendEvents(Watcher* w, int64_t header_rev, std::vector<mvccpb::Event> events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Matches(const Watcher& w, const mvccpb::Event& ev) const;
  KeyRange* AcquireRange(std::string_view key, std::string_view end)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseRange(KeyRange* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The indexes of `events` that fall in r (cached for this Publish call).
  const absl::InlinedVector<uint32_t, 2>& MatchedEvents(KeyRange* r,
                                                        const std::vector<mvccpb::Event>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillPrevKv(mvccpb::Event* ev) const;
  void MaybeSendProgress(Stream* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SyncerLoop();
  void SyncOnce();
  void ProgressTick() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Mvcc* mvcc_;
  Options options_;
  HeaderFiller fill_header_;

  mutable Mutex mu_;
  std::unordered_map<WatchSink*, std::unique_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
  // Every watched range, by (key, end); the views point into the KeyRange.
  absl::flat_hash_map<std::pair<std::string_view, std::string_view>, std::unique_ptr<KeyRange>>
      ranges_ ABSL_GUARDED_BY(mu_);
  std::set<Watcher*> unsynced_ ABSL_GUARDED_BY(mu_);
  int64_t published_rev_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t publish_seq_ ABSL_GUARDED_BY(mu_) = 0;  // Publish calls so far
  std::atomic<size_t> watcher_count_{0};           // written under mu_, read without it
  std::chrono::steady_clock::time_point last_progress_ ABSL_GUARDED_BY(mu_);

  std::mutex syncer_mu_;
  std::condition_variable syncer_cv_;
  bool syncer_stop_ = false;
  bool syncer_kicked_ = false;
  std::thread syncer_;

  metrics::Gauge* watchers_gauge_ = nullptr;
  metrics::Gauge* unsynced_gauge_ = nullptr;
  metrics::Counter* events_total_ = nullptr;
};

}  // namespace capstan::store
