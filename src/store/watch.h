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

// Responses to one revision for several watchers of a stream that differ
// only in their watch ID: what a fan-out hands a stream for a group of its
// watchers. The applier's thread only decides who gets what; the bytes are
// written where the stream is sent from (EncodeTo), so a revision with 100k
// watchers does not hold up the applier, and streams on different threads
// are written in parallel.
struct GroupResponses {
  std::shared_ptr<const std::string> header_field;  // WatchResponse.header, serialized as a field
  std::shared_ptr<const std::string> body;          // the WatchResponse.events fields
  std::vector<int64_t> ids;
  size_t framed_bytes = 0;  // what EncodeTo appends for all of them
  size_t next = 0;          // the first ID not yet written
  size_t encoded = 0;       // bytes appended so far

  // Appends the responses from `next` on as gRPC messages (each behind its
  // 5-byte length prefix), stopping once `max_bytes` are written (at least
  // one response is). Returns the bytes appended; done() after the last.
  size_t EncodeTo(net::Buffer* out, size_t max_bytes = SIZE_MAX);
  bool done() const { return next == ids.size(); }
  // framed_bytes for these fields and IDs.
  static size_t FramedBytes(size_t header_and_body, size_t responses, size_t id_field_bytes);
  // Bytes of the watch_id field for `id` (none for 0: proto3 leaves it out).
  static size_t IdFieldBytes(int64_t id);
};

// The transport side of one Watch stream (a gRPC bidi stream).
class WatchSink {
 public:
  virtual ~WatchSink() = default;
  // Queues one serialized WatchResponse. Never blocks and never calls into
  // the hub.
  virtual void SendEncoded(std::string response) = 0;
  // Queues responses already framed as gRPC messages (each behind its 5-byte
  // length prefix), many in one buffer: a fan-out hands a stream the
  // responses it wrote for the stream's ungrouped watchers at once. The
  // default splits them and calls SendEncoded for each.
  virtual void SendFramed(net::Buffer framed);
  // Queues a group's responses, in order with everything else sent. The
  // default writes them at once and calls SendFramed.
  virtual void SendGroup(GroupResponses group);
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
  struct PlainGroup;
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
    // The same bytes, for plain groups: shared with the streams that write
    // them later (made at most once per Publish call, number shared_seq).
    uint64_t shared_seq = 0;
    std::shared_ptr<const std::string> shared_blob;
  };
  struct Watcher {
    int64_t id = 0;
    KeyRange* range = nullptr;
    Stream* stream = nullptr;
    // First revision not yet delivered; a grouped watcher's is the hub's
    // published_rev_ + 1 instead (NextRev).
    int64_t next_rev = 0;
    // While synced: the index in its group, the stream's
    // synced_range_watchers or the range's synced_key_watchers, for removal
    // in constant time.
    uint32_t synced_slot = 0;
    bool prev_kv = false, progress_notify = false, fragment = false;
    bool no_put = false, no_delete = false;
    // None of the above: the watcher gets every event of its range in one
    // response, the same bytes as its range's other plain watchers.
    bool plain = false;
    bool synced = false;
    bool sent_since_progress = false;
    uint64_t publish_seq = 0;     // the Publish call that last sent to it
    PlainGroup* group = nullptr;  // set while in a plain group
    uint64_t joined_seq = 0;      // publish_seq_ when it joined the group
  };
  // A stream's synced plain watchers of one range that are level with the
  // hub (each next revision is theirs). A fan-out sends each of them the
  // same response but for the watch ID, so it reads only their IDs, end to
  // end, not the watchers themselves: 100k watchers are 100k cache misses.
  struct PlainGroup {
    KeyRange* range = nullptr;
    uint32_t slot = 0;           // index in the stream's plain_groups
    uint64_t last_sent_seq = 0;  // the Publish call that last sent to the group
    size_t id_field_bytes = 0;   // GroupResponses::IdFieldBytes summed over ids
    std::vector<int64_t> ids;
    std::vector<Watcher*> watchers;  // the same watchers, index for index
  };
  struct Stream {
    WatchSink* sink = nullptr;
    absl::node_hash_map<int64_t, Watcher> watchers;
    // Synced range watchers that are in no plain group.
    std::vector<Watcher*> synced_range_watchers;
    std::vector<std::unique_ptr<PlainGroup>> plain_groups;
    absl::flat_hash_map<KeyRange*, PlainGroup*> plain_group_of;
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
  // Takes a synced watcher out of its group or list (it stays marked synced).
  void DetachSynced(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A synced watcher that can be in a plain group: plain, on a range, and
  // level with the hub.
  bool Groupable(const Watcher& w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void JoinGroup(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Leaves the group with its own next_rev and progress state.
  void LeaveGroup(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t NextRev(const Watcher& w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return w.group != nullptr ? published_rev_ + 1 : w.next_rev;
  }
  bool SentSinceProgress(const Watcher& w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  uint64_t publish_seq_ ABSL_GUARDED_BY(mu_) = 0;   // Publish calls so far
  uint64_t progress_seq_ ABSL_GUARDED_BY(mu_) = 0;  // publish_seq_ at the last ProgressTick
  std::atomic<size_t> watcher_count_{0};            // written under mu_, read without it
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
