#include "store/watch.h"

#include <cstring>

#include "absl/container/inlined_vector.h"

#include "base/coding.h"
#include "base/logging.h"
#include "base/thread_name.h"
#include "net/grpc_wire.h"
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
// Block size of a stream's fan-out buffer: many responses per allocation.
constexpr size_t kFanOutBlockBytes = 64 * 1024;

// Appends a length-delimited field.
void AppendField(std::string* out, int field, const std::string& bytes) {
  PutVarint64(out, (static_cast<uint64_t>(field) << 3) | 2);
  PutVarint64(out, bytes.size());
  *out += bytes;
}

// Writes one gRPC-framed WatchResponse of `size` bytes made of its pieces:
// the header field, the watch ID, the events fields. Returns the end.
char* WriteResponse(char* p, size_t size, std::string_view header_field, int64_t id,
                    std::string_view events) {
  net::EncodeGrpcMessagePrefix(p, size);
  p += 5;
  std::memcpy(p, header_field.data(), header_field.size());
  p += header_field.size();
  if (id != 0) {  // proto3 leaves a zero field out
    *p++ = static_cast<char>(kResponseWatchIdTag);
    p += EncodeVarint64(p, static_cast<uint64_t>(id));
  }
  std::memcpy(p, events.data(), events.size());
  return p + events.size();
}

}  // namespace

size_t GroupResponses::IdFieldBytes(int64_t id) {
  return id == 0 ? 0 : 1 + static_cast<size_t>(VarintLength(static_cast<uint64_t>(id)));
}

size_t GroupResponses::FramedBytes(size_t header_and_body, size_t responses,
                                   size_t id_field_bytes) {
  return responses * (5 + header_and_body) + id_field_bytes;
}

size_t GroupResponses::EncodeTo(net::Buffer* out, size_t max_bytes) {
  const std::string& header = *header_field;
  const std::string& events = *body;
  size_t fixed = header.size() + events.size();
  size_t written = 0;
  std::span<char> room;
  size_t used = 0;
  for (; next < ids.size() && (written == 0 || written < max_bytes); ++next) {
    int64_t id = ids[next];
    size_t size = fixed + IdFieldBytes(id);
    if (room.size() - used < 5 + size) {
      if (used > 0) out->Commit(std::exchange(used, 0));
      // Room for what this call will write, up to a block.
      size_t left = std::min(framed_bytes - encoded, max_bytes - written);
      room = out->Reserve(5 + size, std::min(kFanOutBlockBytes, std::max(left, 5 + size)));
    }
    WriteResponse(room.data() + used, size, header, id, events);
    used += 5 + size;
    written += 5 + size;
    encoded += 5 + size;
  }
  if (used > 0) out->Commit(used);
  return written;
}

void WatchSink::SendGroup(GroupResponses group) {
  net::Buffer framed;
  group.EncodeTo(&framed);
  SendFramed(std::move(framed));
}

void WatchSink::SendFramed(net::Buffer framed) {
  net::GrpcMessageReader reader(framed.size());
  for (size_t i = 0; i < framed.slice_count(); ++i) reader.Append(framed.slice(i));
  for (auto next = reader.Next(); next.ok() && next->has_value(); next = reader.Next()) {
    SendEncoded((*next)->ToString());
  }
}

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
  while (!it->second->watchers.empty()) RemoveWatcher(&it->second->watchers.begin()->second);
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
  // An empty key means the smallest key, "\0".
  std::string_view key = req.key().empty() ? std::string_view("\0", 1) : req.key();
  const std::string& end = req.range_end();
  if (!IsSingleKey(end) && !IsUnbounded(end) && key >= end) {
    resp.set_watch_id(-1);
    resp.set_canceled(true);
    resp.set_cancel_reason("mvcc: watcher range is empty");
    s->sink->Send(std::move(resp));
    return;
  }
  int64_t id;
  if (req.watch_id() != 0) {
    if (s->watchers.contains(req.watch_id())) {
      resp.set_watch_id(-1);
      resp.set_canceled(true);
      resp.set_cancel_reason("mvcc: duplicate watch ID provided on the WatchStream");
      s->sink->Send(std::move(resp));
      return;
    }
    id = req.watch_id();
  } else {
    while (s->watchers.contains(s->next_id)) ++s->next_id;
    id = s->next_id++;
  }
  Watcher* w = &s->watchers[id];
  w->id = id;
  w->range = AcquireRange(key, end);
  w->stream = s;
  w->prev_kv = req.prev_kv();
  w->progress_notify = req.progress_notify();
  w->fragment = req.fragment();
  for (int f : req.filters()) {
    if (f == etcdserverpb::WatchCreateRequest::NOPUT) w->no_put = true;
    if (f == etcdserverpb::WatchCreateRequest::NODELETE) w->no_delete = true;
  }
  w->plain = !w->prev_kv && !w->fragment && !w->no_put && !w->no_delete;
  int64_t start = req.start_revision() == 0 ? published_rev_ + 1 : req.start_revision();
  resp.set_watch_id(id);
  s->sink->Send(std::move(resp));
  ++watcher_count_;
  if (watchers_gauge_) watchers_gauge_->Set(static_cast<int64_t>(watcher_count_.load()));
  w->next_rev = start;
  if (start > published_rev_) {
    MakeSynced(w);
  } else {
    MakeUnsynced(w, start);
  }
}

WatchHub::KeyRange* WatchHub::AcquireRange(std::string_view key, std::string_view end) {
  auto it = ranges_.find(std::pair(key, end));
  if (it == ranges_.end()) {
    auto r = std::make_unique<KeyRange>();
    r->key = key;
    r->end = end;
    std::pair<std::string_view, std::string_view> views(r->key, r->end);
    it = ranges_.emplace(views, std::move(r)).first;
  }
  ++it->second->watchers;
  return it->second.get();
}

void WatchHub::ReleaseRange(KeyRange* r) {
  if (--r->watchers > 0) return;
  // The map's key views r's own strings: find first, then erase (destroys r).
  ranges_.erase(ranges_.find(std::pair<std::string_view, std::string_view>(r->key, r->end)));
}

void WatchHub::Cancel(Stream* s, int64_t id) {
  auto it = s->watchers.find(id);
  if (it == s->watchers.end()) return;  // etcd answers nothing for an unknown id
  RemoveWatcher(&it->second);
  etcdserverpb::WatchResponse resp;
  fill_header_(resp.mutable_header(), published_rev_);
  resp.set_watch_id(id);
  resp.set_canceled(true);
  s->sink->Send(std::move(resp));
  MaybeSendProgress(s);
}

// Synced watchers sit in a vector (their stream's for ranges, their key's
// for single keys) and remember their slot: removal swaps the last one in.
void WatchHub::MakeSynced(Watcher* w) {
  if (unsynced_.erase(w) > 0 && unsynced_gauge_) unsynced_gauge_->Add(-1);
  w->synced = true;
  if (Groupable(*w)) {
    JoinGroup(w);
    return;
  }
  std::vector<Watcher*>& list =
      IsSingleKey(w->range->end) ? w->range->synced_key_watchers : w->stream->synced_range_watchers;
  w->synced_slot = static_cast<uint32_t>(list.size());
  list.push_back(w);
}

void WatchHub::Resync() {
  {
    MutexLock lock(&mu_);
    for (auto& [sink, stream] : streams_) {
      for (auto& [id, w] : stream->watchers) {
        if (w.synced) MakeUnsynced(&w, NextRev(w));
      }
    }
    published_rev_ = mvcc_->current_rev();
  }
  Kick();
}

bool WatchHub::Groupable(const Watcher& w) const {
  return w.plain && !IsSingleKey(w.range->end) && w.next_rev == published_rev_ + 1;
}

void WatchHub::JoinGroup(Watcher* w) {
  Stream* s = w->stream;
  PlainGroup*& group = s->plain_group_of[w->range];
  if (group == nullptr) {
    auto owned = std::make_unique<PlainGroup>();
    group = owned.get();
    group->range = w->range;
    group->slot = static_cast<uint32_t>(s->plain_groups.size());
    s->plain_groups.push_back(std::move(owned));
  }
  w->group = group;
  w->joined_seq = publish_seq_;
  w->synced_slot = static_cast<uint32_t>(group->ids.size());
  group->id_field_bytes += GroupResponses::IdFieldBytes(w->id);
  group->ids.push_back(w->id);
  group->watchers.push_back(w);
}

void WatchHub::LeaveGroup(Watcher* w) {
  PlainGroup* group = w->group;
  w->next_rev = published_rev_ + 1;
  w->sent_since_progress = SentSinceProgress(*w);
  w->group = nullptr;
  group->id_field_bytes -= GroupResponses::IdFieldBytes(w->id);
  uint32_t slot = w->synced_slot;
  Watcher* last = group->watchers.back();
  group->watchers[slot] = last;
  group->ids[slot] = last->id;
  last->synced_slot = slot;
  group->watchers.pop_back();
  group->ids.pop_back();
  if (!group->ids.empty()) return;
  // The last one out removes the group (the stream's last group takes its
  // slot, which a fan-out walking the groups backwards has already visited).
  Stream* s = w->stream;
  s->plain_group_of.erase(group->range);
  std::unique_ptr<PlainGroup>& moved = s->plain_groups.back();
  moved->slot = group->slot;
  std::swap(s->plain_groups[group->slot], moved);
  s->plain_groups.pop_back();  // destroys group
}

bool WatchHub::SentSinceProgress(const Watcher& w) const {
  if (w.sent_since_progress) return true;
  return w.group != nullptr && w.group->last_sent_seq > std::max(w.joined_seq, progress_seq_);
}

void WatchHub::DetachSynced(Watcher* w) {
  if (w->group != nullptr) {
    LeaveGroup(w);
  } else if (w->synced) {
    std::vector<Watcher*>& list = IsSingleKey(w->range->end) ? w->range->synced_key_watchers
                                                             : w->stream->synced_range_watchers;
    Watcher* last = list.back();
    list[w->synced_slot] = last;
    last->synced_slot = w->synced_slot;
    list.pop_back();
  }
}

void WatchHub::MakeUnsynced(Watcher* w, int64_t next_rev) {
  DetachSynced(w);
  w->synced = false;
  w->next_rev = next_rev;
  if (unsynced_.insert(w).second && unsynced_gauge_) unsynced_gauge_->Add(1);
  Kick();
}

void WatchHub::RemoveWatcher(Watcher* w) {
  DetachSynced(w);
  if (unsynced_.erase(w) > 0 && unsynced_gauge_) unsynced_gauge_->Add(-1);
  --watcher_count_;
  if (watchers_gauge_) watchers_gauge_->Set(static_cast<int64_t>(watcher_count_.load()));
  ReleaseRange(w->range);
  int64_t id = w->id;
  w->stream->watchers.erase(id);  // destroys w
}

bool WatchHub::Matches(const Watcher& w, const mvccpb::Event& ev) const {
  if (!InRange(ev.kv().key(), w.range->key, w.range->end)) return false;
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

const absl::InlinedVector<uint32_t, 2>& WatchHub::MatchedEvents(
    KeyRange* r, const std::vector<mvccpb::Event>& events) {
  if (r->match_seq != publish_seq_) {
    r->match_seq = publish_seq_;
    r->matched.clear();
    for (size_t i = 0; i < events.size(); ++i) {
      if (InRange(events[i].kv().key(), r->key, r->end)) {
        r->matched.push_back(static_cast<uint32_t>(i));
      }
    }
  }
  return r->matched;
}

void WatchHub::Publish(int64_t rev, const std::vector<mvccpb::Event>& events) {
  MutexLock lock(&mu_);
  published_rev_ = rev;
  ++publish_seq_;
  if (events.empty() || watcher_count_ == 0) return;
  // Every watcher of a revision gets the same header and, mostly, the same
  // events: serialize those once and build each watcher's response from the
  // pieces (a protobuf message is the concatenation of its fields), writing
  // it framed straight into its stream's buffer. A stream gets all its
  // watchers' responses in one hand-over.
  auto shared_header = std::make_shared<std::string>();
  {
    etcdserverpb::ResponseHeader header;
    fill_header_(&header, rev);
    AppendField(shared_header.get(), kResponseHeaderField, header.SerializeAsString());
  }
  const std::string& header_field = *shared_header;
  std::vector<std::string> event_fields(events.size());
  auto event_field = [&](uint32_t i) -> const std::string& {
    if (event_fields[i].empty()) {
      AppendField(&event_fields[i], kResponseEventsField, events[i].SerializeAsString());
    }
    return event_fields[i];
  };
  auto range_blob = [&](KeyRange* r) -> const std::string& {
    const auto& matched = MatchedEvents(r, events);
    if (r->blob_seq != publish_seq_) {
      r->blob_seq = publish_seq_;
      r->blob.clear();
      // A large revision's body is not kept for the small ones that follow.
      if (r->blob.capacity() > kFanOutBlockBytes) r->blob.shrink_to_fit();
      for (uint32_t i : matched) r->blob += event_field(i);
    }
    return r->blob;
  };
  std::vector<Stream*> touched;
  std::vector<KeyRange*> shared_ranges;
  uint64_t delivered = 0;

  auto begin_stream = [&](Stream* s) {
    if (s->publish_seq == publish_seq_) return;
    s->publish_seq = publish_seq_;
    s->behind = s->sink->QueuedBytes() >= options_.max_stream_bytes;
  };
  auto hand_over = [&](Stream* s) {
    if (s->room_used > 0) s->out.Commit(std::exchange(s->room_used, 0));
    s->room = {};
    if (!s->out.empty()) s->sink->SendFramed(std::exchange(s->out, {}));
  };
  // Writes one framed response (header, watch ID, the event fields in
  // `body`) into the stream's buffer. `more` says how many responses the
  // stream may still get in this call (this one included): room is reserved
  // for them, up to a block, so a stream of one watcher does not hold a
  // whole block per revision while its client is slow (its queue limit
  // counts bytes written, not blocks held).
  auto write_response = [&](Stream* s, int64_t id, std::string_view body, size_t more) {
    size_t size = header_field.size() + body.size() + GroupResponses::IdFieldBytes(id);
    if (s->out.empty() && s->room_used == 0) touched.push_back(s);
    if (s->room.size() - s->room_used < 5 + size) {
      if (s->room_used > 0) s->out.Commit(std::exchange(s->room_used, 0));
      s->room = s->out.Reserve(5 + size, std::min(kFanOutBlockBytes, more * (5 + size)));
    }
    WriteResponse(s->room.data() + s->room_used, size, header_field, id, body);
    s->room_used += 5 + size;
  };
  // Sends rev's events to a synced watcher, any kind. When its stream is
  // behind, the watcher becomes unsynced instead (and leaves its synced list,
  // whose last entry takes its slot).
  std::string filtered_body;
  auto deliver = [&](Watcher* w, size_t more) {
    if (rev < w->next_rev) return;  // starts at a later revision
    Stream* s = w->stream;
    const auto& matched = MatchedEvents(w->range, events);
    if (matched.empty()) {
      w->next_rev = rev + 1;
      return;
    }
    if (s->behind) {
      MakeUnsynced(w, rev);  // falls behind; the syncer resends from history
      return;
    }
    w->next_rev = rev + 1;
    const absl::InlinedVector<uint32_t, 2>* idxs = &matched;
    absl::InlinedVector<uint32_t, 2> kept;
    if (w->no_put || w->no_delete) {
      for (uint32_t i : matched) {
        if (Matches(*w, events[i])) kept.push_back(i);
      }
      if (kept.empty()) return;
      idxs = &kept;
    }
    if (w->prev_kv) {  // per-watcher content: the slow path
      std::vector<mvccpb::Event> out;
      for (uint32_t i : *idxs) {
        out.push_back(events[i]);
        FillPrevKv(&out.back());
      }
      SendEvents(w, rev, std::move(out));
      return;
    }
    const std::string* body = &range_blob(w->range);
    if (idxs == &kept) {
      filtered_body.clear();
      for (uint32_t i : kept) filtered_body += event_field(i);
      body = &filtered_body;
    }
    if (w->fragment && idxs->size() > 1 &&
        header_field.size() + body->size() >= options_.max_request_bytes) {
      std::vector<mvccpb::Event> out;
      for (uint32_t i : *idxs) out.push_back(events[i]);
      SendEvents(w, rev, std::move(out));
      return;
    }
    w->sent_since_progress = true;
    delivered += idxs->size();
    write_response(s, w->id, *body, more);
  };

  // Watchers of single keys: found by each event's key.
  for (const mvccpb::Event& ev : events) {
    auto it = ranges_.find(std::pair<std::string_view, std::string_view>(ev.kv().key(), ""));
    if (it == ranges_.end()) continue;
    std::vector<Watcher*>& list = it->second->synced_key_watchers;
    for (size_t i = list.size(); i-- > 0;) {  // backwards: an unsynced one swaps in the last
      Watcher* w = list[i];
      if (w->publish_seq == publish_seq_) continue;  // a txn may change a key twice
      w->publish_seq = publish_seq_;
      begin_stream(w->stream);
      deliver(w, i + 1);
    }
  }
  // Range watchers, stream by stream: each stream gets its part as soon as
  // it is decided, so its loop starts writing while the fan-out goes on.
  for (auto& [sink, stream] : streams_) {
    Stream* s = stream.get();
    if (s->plain_groups.empty() && s->synced_range_watchers.empty()) continue;
    begin_stream(s);
    // The common case: plain watchers level with the hub, a group at a time,
    // handed over as IDs for the stream to write out (after what this call
    // wrote for the stream so far, to keep its order).
    hand_over(s);
    // Backwards: a group that empties takes the last one into its slot.
    for (size_t g = s->plain_groups.size(); g-- > 0;) {
      PlainGroup* group = s->plain_groups[g].get();
      KeyRange* r = group->range;
      const std::string& body = range_blob(r);
      size_t matched = r->matched.size();
      if (matched == 0) continue;
      if (s->behind) {  // they fall behind; the syncer resends from history
        for (size_t k = group->watchers.size(); k-- > 0;) MakeUnsynced(group->watchers[k], rev);
        continue;
      }
      if (r->shared_seq != publish_seq_) {
        r->shared_seq = publish_seq_;
        r->shared_blob = std::make_shared<const std::string>(body);
        shared_ranges.push_back(r);
      }
      group->last_sent_seq = publish_seq_;
      delivered += matched * group->ids.size();
      GroupResponses responses;
      responses.header_field = shared_header;
      responses.body = r->shared_blob;
      responses.ids = group->ids;
      responses.framed_bytes = GroupResponses::FramedBytes(
          header_field.size() + body.size(), group->ids.size(), group->id_field_bytes);
      s->sink->SendGroup(std::move(responses));
    }
    // The rest one by one. A plain one that has caught up with the hub (it
    // started at a later revision) joins its group for the next revision.
    std::vector<Watcher*>& list = s->synced_range_watchers;
    for (size_t i = list.size(); i-- > 0;) {
      Watcher* w = list[i];
      deliver(w, i + 1);
      if (w->synced && Groupable(*w)) {
        DetachSynced(w);  // leaves the list (the last one, already visited, takes its slot)
        JoinGroup(w);
      }
    }
    hand_over(s);
  }
  for (Stream* s : touched) hand_over(s);
  // The streams hold the bodies they still have to write; the hub does not.
  for (KeyRange* r : shared_ranges) r->shared_blob.reset();
  if (events_total_ && delivered > 0) events_total_->Inc(delivered);
}

void WatchHub::MaybeSendProgress(Stream* s) {
  if (!s->progress_pending) return;
  for (const auto& [id, w] : s->watchers) {
    if (!w.synced) return;  // a progress answer promises no earlier events follow
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
      if (w.progress_notify && w.synced && !SentSinceProgress(w)) {
        etcdserverpb::WatchResponse resp;
        fill_header_(resp.mutable_header(), published_rev_);
        resp.set_watch_id(id);
        sink->Send(std::move(resp));
      }
      w.sent_since_progress = false;
    }
  }
  progress_seq_ = publish_seq_;
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
    Watcher* w = &wit->second;
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
