#include "store/watch.h"

#include <unordered_set>

#include "absl/container/inlined_vector.h"

#include "base/coding.h"
#include "base/logging.h"
#include "base/thread_name.h"
#include "store/errors.h"

namespace capstan::store {
namespace {

constexpr size_t kHistoryChunkBytes = 1 << 20;
constexpr size_t kMaxSyncPerRound = 256;

// WatchResponse's field numbers (etcd's rpc.proto), for responses built from
// serialized pieces.
constexpr int kResponseHeaderField = 1;
constexpr uint64_t kResponseWatchIdTag = 2 << 3;  // field 2, varint
constexpr int kResponseEventsField = 11;
// Responses handed to a stream at once during a fan-out.
constexpr size_t kFanOutSlice = 64;

// Appends a length-delimited field.
void AppendField(std::string* out, int field, const std::string& bytes) {
  PutVarint64(out, (static_cast<uint64_t>(field) << 3) | 2);
  PutVarint64(out, bytes.size());
  *out += bytes;
}

}  // namespace

WatchHub::WatchHub(Mvcc* mvcc, Options options, HeaderFiller fill_header)
    : mvcc_(mvcc), options_(options), fill_header_(std::move(fill_header)) {
  {
    MutexLock lock(&mu_);
    published_rev_ = mvcc_->current_rev();
    last_progress_ = std::chrono::steady_clock::now();
  }
  if (options_.metrics != nullptr) {
    watchers_gauge_ = options_.metrics->AddGauge("capstan_store_watchers", "Active watchers.");
    unsynced_gauge_ = options_.metrics->AddGauge(
        "capstan_store_watchers_unsynced", "Watchers catching up from history (slow or resumed).");
    events_total_ = options_.metrics->AddCounter("capstan_store_watch_events_total",
                                                 "Events delivered to watchers.");
  }
  syncer_ = std::thread([this] {
    SetThreadName("watch-sync");
    SyncerLoop();
  });
}

WatchHub::~WatchHub() {
  {
    std::lock_guard<std::mutex> lock(syncer_mu_);
    syncer_stop_ = true;
    syncer_cv_.notify_all();
  }
  syncer_.join();
}

size_t WatchHub::watcher_count() const {
  MutexLock lock(&mu_);
  return watcher_count_;
}

void WatchHub::AddStream(WatchSink* sink) {
  MutexLock lock(&mu_);
  auto s = std::make_unique<Stream>();
  s->sink = sink;
  streams_[sink] = std::move(s);
}

void WatchHub::RemoveStream(WatchSink* sink) {
  MutexLock lock(&mu_);
  auto it = streams_.find(sink);
  if (it == streams_.end()) return;
  while (!it->second->watchers.empty()) RemoveWatcher(it->second->watchers.begin()->second.get());
  streams_.erase(it);
}

void WatchHub::HandleRequest(WatchSink* sink, const etcdserverpb::WatchRequest& req) {
  MutexLock lock(&mu_);
  auto it = streams_.find(sink);
  if (it == streams_.end()) return;
  Stream* s = it->second.get();
  switch (req.request_union_case()) {
    case etcdserverpb::WatchRequest::kCreateRequest:
      Create(s, req.create_request());
      break;
    case etcdserverpb::WatchRequest::kCancelRequest:
      Cancel(s, req.cancel_request().watch_id());
      break;
    case etcdserverpb::WatchRequest::kProgressRequest:
      s->progress_pending = true;
      MaybeSendProgress(s);
      break;
    default:
      break;
  }
}

void WatchHub::Create(Stream* s, const etcdserverpb::WatchCreateRequest& req) {
  etcdserverpb::WatchResponse resp;
  fill_header_(resp.mutable_header(), published_rev_);
  resp.set_created(true);
  auto w = std::make_unique<Watcher>();
  // An empty key means the smallest key, "\0".
  w->key = req.key().empty() ? std::string(1, '\0') : req.key();
  w->end = req.range_end();
  if (!IsSingleKey(w->end) && !IsUnbounded(w->end) && w->key >= w->end) {
    resp.set_watch_id(-1);
    resp.set_canceled(true);
    resp.set_cancel_reason("mvcc: watcher range is empty");
    s->sink->Send(std::move(resp));
    return;
  }
  if (req.watch_id() != 0) {
    if (s->watchers.contains(req.watch_id())) {
      resp.set_watch_id(-1);
      resp.set_canceled(true);
      resp.set_cancel_reason("mvcc: duplicate watch ID provided on the WatchStream");
      s->sink->Send(std::move(resp));
      return;
    }
    w->id = req.watch_id();
  } else {
    while (s->watchers.contains(s->next_id)) ++s->next_id;
    w->id = s->next_id++;
  }
  w->prev_kv = req.prev_kv();
  w->progress_notify = req.progress_notify();
  w->fragment = req.fragment();
  for (int f : req.filters()) {
    if (f == etcdserverpb::WatchCreateRequest::NOPUT) w->no_put = true;
    if (f == etcdserverpb::WatchCreateRequest::NODELETE) w->no_delete = true;
  }
  int64_t start = req.start_revision() == 0 ? published_rev_ + 1 : req.start_revision();
  w->stream = s;
  resp.set_watch_id(w->id);
  s->sink->Send(std::move(resp));
  Watcher* raw = w.get();
  s->watchers[w->id] = std::move(w);
  ++watcher_count_;
  if (watchers_gauge_) watchers_gauge_->Set(static_cast<int64_t>(watcher_count_));
  raw->next_rev = start;
  if (start > published_rev_) {
    MakeSynced(raw);
  } else {
    MakeUnsynced(raw, start);
  }
}

void WatchHub::Cancel(Stream* s, int64_t id) {
  auto it = s->watchers.find(id);
  if (it == s->watchers.end()) return;  // etcd answers nothing for an unknown id
  RemoveWatcher(it->second.get());
  etcdserverpb::WatchResponse resp;
  fill_header_(resp.mutable_header(), published_rev_);
  resp.set_watch_id(id);
  resp.set_canceled(true);
  s->sink->Send(std::move(resp));
  MaybeSendProgress(s);
}

void WatchHub::MakeSynced(Watcher* w) {
  if (unsynced_.erase(w) > 0 && unsynced_gauge_) unsynced_gauge_->Add(-1);
  w->synced = true;
  if (IsSingleKey(w->end)) {
    key_watchers_.emplace(w->key, w);
  } else {
    range_watchers_.insert(w);
  }
}

void WatchHub::Resync() {
  {
    MutexLock lock(&mu_);
    for (auto& [sink, stream] : streams_) {
      for (auto& [id, w] : stream->watchers) {
        if (w->synced) MakeUnsynced(w.get(), w->next_rev);
      }
    }
    published_rev_ = mvcc_->current_rev();
  }
  Kick();
}

void WatchHub::MakeUnsynced(Watcher* w, int64_t next_rev) {
  if (w->synced) {
    if (IsSingleKey(w->end)) {
      auto range = key_watchers_.equal_range(w->key);
      for (auto it = range.first; it != range.second; ++it) {
        if (it->second == w) {
          key_watchers_.erase(it);
          break;
        }
      }
    } else {
      range_watchers_.erase(w);
    }
  }
  w->synced = false;
  w->next_rev = next_rev;
  if (unsynced_.insert(w).second && unsynced_gauge_) unsynced_gauge_->Add(1);
  Kick();
}

void WatchHub::RemoveWatcher(Watcher* w) {
  if (w->synced) {
    MakeUnsynced(w, w->next_rev);  // detaches from the synced structures
  }
  if (unsynced_.erase(w) > 0 && unsynced_gauge_) unsynced_gauge_->Add(-1);
  --watcher_count_;
  if (watchers_gauge_) watchers_gauge_->Set(static_cast<int64_t>(watcher_count_));
  w->stream->watchers.erase(w->id);  // destroys w
}

bool WatchHub::Matches(const Watcher& w, const mvccpb::Event& ev) const {
  if (!InRange(ev.kv().key(), w.key, w.end)) return false;
  if (ev.type() == mvccpb::Event::PUT && w.no_put) return false;
  if (ev.type() == mvccpb::Event::DELETE && w.no_delete) return false;
  return true;
}

void WatchHub::FillPrevKv(mvccpb::Event* ev) const {
  if (ev->has_prev_kv()) return;
  RangeOptions opts;
  opts.rev = ev->kv().mod_revision() - 1;
  auto r = mvcc_->Range(ev->kv().key(), "", opts);
  if (r.ok() && !r->kvs.empty()) *ev->mutable_prev_kv() = std::move(r->kvs[0]);
}

void WatchHub::SendEvents(Watcher* w, int64_t header_rev, std::vector<mvccpb::Event> events) {
  if (events.empty()) return;
  w->sent_since_progress = true;
  if (events_total_) events_total_->Inc(events.size());
  etcdserverpb::WatchResponse resp;
  fill_header_(resp.mutable_header(), header_rev);
  resp.set_watch_id(w->id);
  for (auto& ev : events) *resp.add_events() = std::move(ev);
  if (!w->fragment || resp.ByteSizeLong() < options_.max_request_bytes || resp.events_size() < 2) {
    w->stream->sink->Send(std::move(resp));
    return;
  }
  // Split into responses under the limit; all but the last carry fragment=true.
  etcdserverpb::WatchResponse base = resp;
  base.clear_events();
  base.set_fragment(true);
  int idx = 0;
  while (idx < resp.events_size()) {
    etcdserverpb::WatchResponse part = base;
    while (idx < resp.events_size()) {
      *part.add_events() = resp.events(idx);
      if (part.events_size() > 1 && part.ByteSizeLong() >= options_.max_request_bytes) {
        part.mutable_events()->RemoveLast();
        break;
      }
      ++idx;
    }
    if (idx == resp.events_size()) part.set_fragment(false);
    w->stream->sink->Send(std::move(part));
  }
}

void WatchHub::Publish(int64_t rev, const std::vector<mvccpb::Event>& events) {
  MutexLock lock(&mu_);
  published_rev_ = rev;
  ++publish_seq_;
  if (events.empty() || watcher_count_ == 0) return;
  // Matching watchers and, when the revision has several events, the events
  // each one gets (most revisions change one key and need no such list).
  std::vector<Watcher*> targets;
  std::vector<std::vector<size_t>> target_events;
  if (events.size() == 1) {
    const std::string& key = events[0].kv().key();
    auto range = key_watchers_.equal_range(key);
    for (auto it = range.first; it != range.second; ++it) {
      if (rev >= it->second->next_rev) targets.push_back(it->second);
    }
    for (Watcher* w : range_watchers_) {
      if (rev >= w->next_rev && InRange(key, w->key, w->end)) targets.push_back(w);
    }
  } else {
    std::unordered_map<Watcher*, size_t> slot;
    auto add = [&](Watcher* w, size_t i) {
      if (rev < w->next_rev) return;
      auto [it, inserted] = slot.emplace(w, targets.size());
      if (inserted) {
        targets.push_back(w);
        target_events.emplace_back();
      }
      target_events[it->second].push_back(i);
    };
    for (size_t i = 0; i < events.size(); ++i) {
      auto range = key_watchers_.equal_range(events[i].kv().key());
      for (auto it = range.first; it != range.second; ++it) add(it->second, i);
      for (Watcher* w : range_watchers_) {
        if (InRange(events[i].kv().key(), w->key, w->end)) add(w, i);
      }
    }
  }
  // Every watcher of a revision gets the same header and, mostly, the same
  // events: serialize those once and build each watcher's response from the
  // pieces (a protobuf message is the concatenation of its fields), instead
  // of copying and serializing the events again per watcher. Responses are
  // handed to each stream in one batch.
  std::string header_field;
  {
    etcdserverpb::ResponseHeader header;
    fill_header_(&header, rev);
    AppendField(&header_field, kResponseHeaderField, header.SerializeAsString());
  }
  std::vector<std::string> event_fields(events.size());
  std::vector<Stream*> touched;
  absl::InlinedVector<size_t, 4> idxs;
  for (size_t t = 0; t < targets.size(); ++t) {
    Watcher* w = targets[t];
    Stream* s = w->stream;
    if (s->publish_seq != publish_seq_) {
      s->publish_seq = publish_seq_;
      s->behind = s->sink->QueuedBytes() >= options_.max_stream_bytes;
    }
    if (s->behind) {
      MakeUnsynced(w, rev);  // falls behind; the syncer resends from history
      continue;
    }
    idxs.clear();
    if (events.size() == 1) {
      if (Matches(*w, events[0])) idxs.push_back(0);
    } else {
      for (size_t i : target_events[t]) {
        if (Matches(*w, events[i])) idxs.push_back(i);
      }
    }
    w->next_rev = rev + 1;
    if (idxs.empty()) continue;
    if (w->prev_kv) {  // per-watcher content: the slow path
      std::vector<mvccpb::Event> out;
      for (size_t i : idxs) {
        out.push_back(events[i]);
        FillPrevKv(&out.back());
      }
      SendEvents(w, rev, std::move(out));
      continue;
    }
    size_t size = header_field.size() + 11;
    for (size_t i : idxs) {
      if (event_fields[i].empty()) {
        AppendField(&event_fields[i], kResponseEventsField, events[i].SerializeAsString());
      }
      size += event_fields[i].size();
    }
    if (w->fragment && idxs.size() > 1 && size >= options_.max_request_bytes) {
      std::vector<mvccpb::Event> out;
      for (size_t i : idxs) out.push_back(events[i]);
      SendEvents(w, rev, std::move(out));
      continue;
    }
    std::string encoded;
    encoded.reserve(size);
    encoded += header_field;
    if (w->id != 0) {  // proto3 leaves a zero field out
      PutVarint64(&encoded, kResponseWatchIdTag);
      PutVarint64(&encoded, static_cast<uint64_t>(w->id));
    }
    for (size_t i : idxs) encoded += event_fields[i];
    w->sent_since_progress = true;
    if (events_total_) events_total_->Inc(idxs.size());
    if (s->outgoing.empty()) touched.push_back(s);
    s->outgoing.push_back(std::move(encoded));
    // Hand over in slices, so the stream starts writing while the fan-out
    // goes on.
    if (s->outgoing.size() >= kFanOutSlice)
      s->sink->SendEncodedBatch(std::exchange(s->outgoing, {}));
  }
  for (Stream* s : touched) {
    if (!s->outgoing.empty()) s->sink->SendEncodedBatch(std::exchange(s->outgoing, {}));
  }
}

void WatchHub::MaybeSendProgress(Stream* s) {
  if (!s->progress_pending) return;
  for (const auto& [id, w] : s->watchers) {
    if (!w->synced) return;  // a progress answer promises no earlier events follow
  }
  s->progress_pending = false;
  etcdserverpb::WatchResponse resp;
  fill_header_(resp.mutable_header(), published_rev_);
  resp.set_watch_id(-1);
  s->sink->Send(std::move(resp));
}

void WatchHub::ProgressTick() {
  for (auto& [sink, s] : streams_) {
    for (auto& [id, w] : s->watchers) {
      if (w->progress_notify && w->synced && !w->sent_since_progress) {
        etcdserverpb::WatchResponse resp;
        fill_header_(resp.mutable_header(), published_rev_);
        resp.set_watch_id(id);
        sink->Send(std::move(resp));
      }
      w->sent_since_progress = false;
    }
  }
}

void WatchHub::Kick() {
  std::lock_guard<std::mutex> lock(syncer_mu_);
  syncer_kicked_ = true;
  syncer_cv_.notify_one();
}

void WatchHub::SyncerLoop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(syncer_mu_);
      syncer_cv_.wait_for(lock, options_.sync_interval,
                          [&] { return syncer_stop_ || syncer_kicked_; });
      if (syncer_stop_) return;
      syncer_kicked_ = false;
    }
    SyncOnce();
    MutexLock lock(&mu_);
    auto now = std::chrono::steady_clock::now();
    if (now - last_progress_ >= options_.progress_interval) {
      last_progress_ = now;
      ProgressTick();
    }
  }
}

void WatchHub::SyncOnce() {
  struct Work {
    WatchSink* sink;
    int64_t id;
    int64_t from;
    int64_t to;
  };
  std::vector<Work> work;
  {
    MutexLock lock(&mu_);
    for (Watcher* w : unsynced_) {
      if (work.size() >= kMaxSyncPerRound) break;
      if (w->stream->sink->QueuedBytes() >= options_.max_stream_bytes) continue;
      work.push_back({w->stream->sink, w->id, w->next_rev, published_rev_});
    }
  }
  bool more = false;
  for (const Work& item : work) {
    std::vector<mvccpb::Event> events;
    int64_t next = item.from;
    absl::Status st = mvcc_->History(item.from, item.to, kHistoryChunkBytes, &events, &next);
    MutexLock lock(&mu_);
    auto sit = streams_.find(item.sink);
    if (sit == streams_.end()) continue;
    Stream* s = sit->second.get();
    auto wit = s->watchers.find(item.id);
    if (wit == s->watchers.end()) continue;
    Watcher* w = wit->second.get();
    if (w->synced || w->next_rev != item.from) continue;  // changed meanwhile
    if (absl::IsOutOfRange(st) || item.from < mvcc_->compact_rev()) {
      etcdserverpb::WatchResponse resp;
      fill_header_(resp.mutable_header(), 0);
      resp.set_watch_id(w->id);
      resp.set_canceled(true);
      resp.set_compact_revision(mvcc_->compact_rev());
      RemoveWatcher(w);
      s->sink->Send(std::move(resp));
      MaybeSendProgress(s);
      continue;
    }
    if (!st.ok()) {
      CAPSTAN_LOG(warn, "watch catch-up read failed", "error", st.ToString());
      more = true;
      continue;
    }
    std::vector<mvccpb::Event> out;
    for (auto& ev : events) {
      if (!Matches(*w, ev)) continue;
      out.push_back(std::move(ev));
      if (w->prev_kv) FillPrevKv(&out.back());
    }
    SendEvents(w, published_rev_, std::move(out));
    w->next_rev = next;
    if (next > published_rev_) {
      MakeSynced(w);
      MaybeSendProgress(s);
    } else {
      more = true;
    }
  }
  if (more) Kick();
}

}  // namespace capstan::store
