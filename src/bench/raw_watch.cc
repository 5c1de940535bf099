#include "bench/raw_watch.h"

#include "bench/raw_h2.h"
#include "net/grpc_wire.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "etcd/etcdserverpb/rpc.pb.h"

namespace capstan::bench {
namespace {

// Wire types and the field tags of etcd's messages the scan reads.
constexpr int kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;
constexpr uint64_t kResponseCreatedTag = (3 << 3) | kVarint;           // WatchResponse.created
constexpr uint64_t kResponseEventsTag = (11 << 3) | kLengthDelimited;  // WatchResponse.events
constexpr uint64_t kEventKvTag = (2 << 3) | kLengthDelimited;          // Event.kv
constexpr uint64_t kKeyValueValueTag = (5 << 3) | kLengthDelimited;    // KeyValue.value

// Reads protobuf wire format from [p, end). Every read checks the bounds;
// a false return means the bytes are not a well-formed message.
struct WireReader {
  const char* p;
  const char* end;

  explicit WireReader(std::string_view bytes) : p(bytes.data()), end(bytes.data() + bytes.size()) {}
  bool done() const { return p == end; }

  bool Varint(uint64_t* v) {
    // Tags and short lengths are one byte: the common case first.
    if (p != end && static_cast<uint8_t>(*p) < 0x80) {
      *v = static_cast<uint8_t>(*p++);
      return true;
    }
    uint64_t result = 0;
    for (int shift = 0; shift < 64 && p != end; shift += 7) {
      auto byte = static_cast<uint8_t>(*p++);
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (byte < 0x80) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool Bytes(std::string_view* out) {
    uint64_t n;
    if (!Varint(&n) || n > static_cast<uint64_t>(end - p)) return false;
    *out = std::string_view(p, n);
    p += n;
    return true;
  }
  // Skips the value of a field whose tag was just read.
  bool Skip(uint64_t tag) {
    uint64_t ignored;
    std::string_view bytes;
    switch (static_cast<int>(tag & 7)) {
      case kVarint:
        return Varint(&ignored);
      case kFixed64:
      case kFixed32: {
        long n = (tag & 7) == kFixed64 ? 8 : 4;
        if (end - p < n) return false;
        p += n;
        return true;
      }
      case kLengthDelimited:
        return Bytes(&bytes);
      default:
        return false;  // groups (deprecated) and invalid wire types
    }
  }
};

int64_t ParseMicros(std::string_view digits) {
  int64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return digits.empty() ? -1 : v;
}

}  // namespace

void WatchTally::FlushLatencies(RawWatchCounters* counters) {
  if (run_length > 0 && counters->latency != nullptr) {
    counters->latency->Add(run_latency_us, run_length);
  }
  run_length = 0;
}

void WatchTally::FlushTo(RawWatchCounters* counters) {
  FlushLatencies(counters);
  if (created > 0) counters->created.fetch_add(std::exchange(created, 0));
  if (events > 0) counters->events.fetch_add(std::exchange(events, 0));
}

namespace {

// The microseconds in an event's value, parsed once per distinct value.
void AddEventLatency(std::string_view value, int64_t now_us, WatchTally* tally,
                     RawWatchCounters* counters) {
  if (value != tally->last_value) {
    tally->last_value.assign(value);
    tally->last_sent_us = ParseMicros(value);
  }
  if (tally->last_sent_us >= 0) tally->AddLatency(now_us - tally->last_sent_us, counters);
}

// Calls on_bytes(bytes) for each length-delimited field `tag` of `msg`,
// skipping every other field. False when the bytes are malformed or on_bytes
// returns false.
template <typename OnBytes>
bool ForEachBytesField(std::string_view msg, uint64_t tag, OnBytes&& on_bytes) {
  WireReader in(msg);
  while (!in.done()) {
    uint64_t t;
    if (!in.Varint(&t)) return false;
    if (t == tag) {
      std::string_view bytes;
      if (!in.Bytes(&bytes) || !on_bytes(bytes)) return false;
    } else if (!in.Skip(t)) {
      return false;
    }
  }
  return true;
}

bool ScanEvent(std::string_view event, int64_t now_us, WatchTally* tally,
               RawWatchCounters* counters) {
  return ForEachBytesField(event, kEventKvTag, [&](std::string_view kv) {
    return ForEachBytesField(kv, kKeyValueValueTag, [&](std::string_view value) {
      AddEventLatency(value, now_us, tally, counters);
      return true;
    });
  });
}

}  // namespace

bool ScanWatchResponse(std::string_view message, int64_t now_us, WatchTally* tally,
                       RawWatchCounters* counters) {
  WireReader in(message);
  while (!in.done()) {
    uint64_t tag;
    if (!in.Varint(&tag)) return false;
    if (tag == kResponseCreatedTag) {
      uint64_t created;
      if (!in.Varint(&created)) return false;
      if (created != 0) ++tally->created;
    } else if (tag == kResponseEventsTag) {
      std::string_view event;
      if (!in.Bytes(&event) || !ScanEvent(event, now_us, tally, counters)) return false;
      ++tally->events;
    } else if (!in.Skip(tag)) {
      return false;
    }
  }
  return true;
}

bool ScanWatchResponse(std::string_view message, int64_t now_us, RawWatchCounters* counters) {
  WatchTally tally;
  bool ok = ScanWatchResponse(message, now_us, &tally, counters);
  tally.FlushTo(counters);
  return ok;
}

struct RawWatchConnection::Stream {
  std::string body;  // the framed create requests, sent once
  size_t sent = 0;
  std::string pending;  // received bytes of an incomplete message

  // nghttp2's body source for the stream.
  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t*,
                          nghttp2_data_source* source, void*) {
    auto* s = static_cast<Stream*>(source->ptr);
    size_t n = std::min(length, s->body.size() - s->sent);
    // Never EOF: the watchers live as long as the stream is open.
    if (n == 0) return NGHTTP2_ERR_DEFERRED;
    std::memcpy(buf, s->body.data() + s->sent, n);
    s->sent += n;
    return static_cast<ssize_t>(n);
  }
};

struct RawWatchConnection::Session {
  nghttp2_session* h2 = nullptr;
  std::vector<std::unique_ptr<Stream>> streams;
  RawWatchCounters* counters = nullptr;
  mutable std::mutex mu;
  std::string error;  // GUARDED_BY(mu)

  void Fail(std::string why) {
    std::lock_guard<std::mutex> lock(mu);
    if (error.empty()) error = std::move(why);
  }
  ~Session() {
    if (h2 != nullptr) nghttp2_session_del(h2);
  }
};

absl::StatusOr<std::unique_ptr<RawWatchConnection>> RawWatchConnection::Start(
    const std::string& endpoint, const std::vector<int>& watchers_per_stream,
    const std::string& prefix, RawWatchCounters* counters) {
  if (prefix.empty()) return absl::InvalidArgumentError("watch prefix is empty");
  std::string authority;
  ASSIGN_OR_RETURN(int fd, ConnectTcp(endpoint, &authority));
  std::unique_ptr<RawWatchConnection> conn(new RawWatchConnection());
  conn->fd_ = fd;

  auto session = std::make_unique<Session>();
  session->counters = counters;
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
      cb,
      [](nghttp2_session* h2, uint8_t, int32_t id, const uint8_t* data, size_t len,
         void* user) -> int {
        auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, id));
        if (s == nullptr) return 0;
        auto* self = static_cast<Session*>(user);
        int64_t now = NowMicros();
        WatchTally tally;
        std::string_view in(reinterpret_cast<const char*>(data), len);
        auto scan = [&](std::string_view framed) {
          if (framed[0] == 0 && ScanWatchResponse(framed.substr(5), now, &tally, self->counters)) {
            return true;
          }
          self->Fail("undecodable WatchResponse");
          return false;
        };
        // Messages are scanned where they lie in the chunk; only one cut by
        // the chunk's end is copied (and completed from the next chunk).
        if (!s->pending.empty()) {
          if (s->pending.size() < 5) {
            size_t take = std::min(5 - s->pending.size(), in.size());
            s->pending.append(in.substr(0, take));
            in.remove_prefix(take);
            if (s->pending.size() < 5) return 0;
          }
          size_t whole = 5 + GrpcMessageSize(s->pending);
          size_t take = std::min(whole - s->pending.size(), in.size());
          s->pending.append(in.substr(0, take));
          in.remove_prefix(take);
          if (s->pending.size() < whole) return 0;
          if (!scan(s->pending)) return NGHTTP2_ERR_CALLBACK_FAILURE;
          s->pending.clear();
        }
        while (in.size() >= 5) {
          size_t whole = 5 + GrpcMessageSize(in);
          if (in.size() < whole) break;
          if (!scan(in.substr(0, whole))) return NGHTTP2_ERR_CALLBACK_FAILURE;
          in.remove_prefix(whole);
        }
        s->pending.assign(in);
        tally.FlushTo(self->counters);
        return 0;
      });
  nghttp2_session_callbacks_set_on_stream_close_callback(
      cb, [](nghttp2_session*, int32_t id, uint32_t code, void* user) -> int {
        static_cast<Session*>(user)->Fail(
            absl::StrCat("watch stream ", id, " closed by the server (HTTP/2 code ", code, ")"));
        return 0;
      });
  nghttp2_session_client_new(&session->h2, cb, session.get());
  nghttp2_session_callbacks_del(cb);
  // Large windows: the server may send a put's whole fan-out at once.
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 64 << 20}};
  nghttp2_submit_settings(session->h2, NGHTTP2_FLAG_NONE, settings, 1);
  nghttp2_session_set_local_window_size(session->h2, NGHTTP2_FLAG_NONE, 0, 1 << 30);

  etcdserverpb::WatchRequest create;
  create.mutable_create_request()->set_key(prefix);
  std::string end = prefix;
  end.back()++;
  create.mutable_create_request()->set_range_end(end);
  std::string one_request = create.SerializeAsString();
  std::string path = "/etcdserverpb.Watch/Watch", post = "POST", http = "http",
              grpc = "application/grpc", trailers = "trailers";
  for (int watchers : watchers_per_stream) {
    auto s = std::make_unique<Stream>();
    for (int i = 0; i < watchers; ++i) {
      char prefix[5];
      net::EncodeGrpcMessagePrefix(prefix, one_request.size());
      s->body.append(prefix, 5);
      s->body += one_request;
    }
    nghttp2_nv headers[] = {HeaderField(":method", post),      HeaderField(":scheme", http),
                            HeaderField(":path", path),        HeaderField(":authority", authority),
                            HeaderField("content-type", grpc), HeaderField("te", trailers)};
    nghttp2_data_provider body;
    body.source.ptr = s.get();
    body.read_callback = &Stream::ReadBody;
    int32_t id = nghttp2_submit_request(session->h2, nullptr, headers, 6, &body, s.get());
    if (id < 0) return absl::InternalError(nghttp2_strerror(id));
    session->streams.push_back(std::move(s));
  }
  conn->session_ = std::move(session);
  conn->thread_ = std::thread([c = conn.get()] { c->Run(); });
  return conn;
}

void RawWatchConnection::Run() {
  nghttp2_session* h2 = session_->h2;
  std::vector<char> buf(256 << 10);
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint8_t* out;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(h2, &out)) > 0) {
      while (n > 0) {
        ssize_t w = ::send(fd_, out, static_cast<size_t>(n), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          session_->Fail(absl::StrCat("send: ", std::strerror(errno)));
          return;
        }
        out += w;
        n -= w;
      }
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    ssize_t got = ::recv(fd_, buf.data(), buf.size(), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (!stop_) session_->Fail(got == 0 ? "server closed the connection" : std::strerror(errno));
      return;
    }
    if (nghttp2_session_mem_recv(h2, reinterpret_cast<const uint8_t*>(buf.data()),
                                 static_cast<size_t>(got)) < 0) {
      session_->Fail("HTTP/2 error from the server");
      return;
    }
  }
}

std::string RawWatchConnection::error() const {
  std::lock_guard<std::mutex> lock(session_->mu);
  return session_->error;
}

RawWatchConnection::~RawWatchConnection() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace capstan::bench
