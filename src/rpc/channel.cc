#include "rpc/channel.h"

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/socket.h"
#include "net/tls.h"
#include "rpc/stream_state.h"

namespace capstan::rpc {

namespace {

int64_t Millis(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

absl::Status StatusFromWire(uint32_t code, std::string_view message) {
  if (code == 0) return absl::OkStatus();
  // Codes from a later version map to UNKNOWN, as gRPC does.
  auto c = code <= 16 ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown;
  return absl::Status(c, std::string(message));
}

}  // namespace

// A call waiting for its answer; lives in the calling coroutine's frame
// (unary) or in its ClientStream (streams).
struct Channel::PendingCall {
  PendingCall(net::EventLoop* loop, Connection* connection, uint32_t stream_id,
              std::string_view method, Clock::time_point started);
  // A call whose frame is destroyed while waiting (its loop went away)
  // leaves its connection's table.
  ~PendingCall();
  // Enters the connection's table; arms the deadline and the canceller.
  void Track(Clock::time_point deadline, CallCanceller* canceller);
  // Ends the call before its answer: leaves the table, tells the server.
  void Abandon(absl::Status status);
  net::EventLoop* loop;
  Connection* connection;
  uint32_t stream_id;
  // Owned by the caller (unary) or the ClientStream.
  std::string_view method;
  Clock::time_point started;
  CallCanceller* canceller = nullptr;
  // Streams only: where MESSAGE and WINDOW frames go, and whether messages
  // are now dropped as they arrive (the caller is waiting in Finish).
  internal::StreamState* stream = nullptr;
  bool drop_messages = false;
  std::coroutine_handle<> waiter;
  CallResult result;
  bool done = false;
  net::Timer deadline_timer;

  void Complete() {
    done = true;
    deadline_timer.Cancel();
    if (canceller != nullptr) canceller->hook_ = nullptr;
    if (stream != nullptr) stream->End();
    if (waiter) loop->Schedule(std::exchange(waiter, nullptr));
  }
  struct Awaiter {
    PendingCall* call;
    bool await_ready() const noexcept { return call->done; }
    void await_suspend(std::coroutine_handle<> h) { call->waiter = h; }
    void await_resume() const noexcept {}
  };
};

// One connection of the channel; calls in flight keep it alive after the
// channel has moved on to a new one (GOAWAY, failure).
struct Channel::Connection {
  net::EventLoop* loop = nullptr;
  std::string endpoint;
  size_t max_frame_size = kDefaultMaxFrameSize;
  std::shared_ptr<net::Socket> socket;
  // No frame came from the server yet (a connection it refused after the
  // handshake ran none of the calls sent on it).
  bool heard_from_server = false;
  absl::flat_hash_map<uint32_t, PendingCall*> pending;
  uint32_t next_stream_id = 1;
  bool going_away = false;
};

struct Channel::Opened {
  std::shared_ptr<Connection> connection;
  uint32_t stream_id = 0;
  Clock::time_point started;
  Clock::time_point deadline;
};

// The timer may fire after the channel is gone (a call on a connection it
// left after GOAWAY): it touches only the call and its connection.
Channel::PendingCall::PendingCall(net::EventLoop* loop, Connection* connection, uint32_t stream_id,
                                  std::string_view method, Clock::time_point started)
    : loop(loop),
      connection(connection),
      stream_id(stream_id),
      method(method),
      started(started),
      deadline_timer([this] {
        Abandon(absl::DeadlineExceededError(absl::StrCat(
            std::string(this->method), " to ", this->connection->endpoint,
            ": deadline exceeded after ", Millis(Clock::now() - this->started), " ms")));
      }) {}

Channel::PendingCall::~PendingCall() {
  if (canceller != nullptr) canceller->hook_ = nullptr;
  auto it = connection->pending.find(stream_id);
  if (it != connection->pending.end() && it->second == this) connection->pending.erase(it);
}

void Channel::PendingCall::Track(Clock::time_point deadline, CallCanceller* call_canceller) {
  connection->pending[stream_id] = this;
  if (call_canceller != nullptr) {
    canceller = call_canceller;
    canceller->hook_ = [this] {
      Abandon(absl::CancelledError(absl::StrCat(std::string(method), " to ", connection->endpoint,
                                                " cancelled by the caller")));
    };
  }
  if (deadline != Clock::time_point::max()) deadline_timer.Arm(loop, deadline);
}

void Channel::PendingCall::Abandon(absl::Status status) {
  connection->pending.erase(stream_id);
  if (!connection->socket->closed()) {
    AppendFrame(&connection->socket->output(), FrameType::kCancel, 0, stream_id, Meta{},
                net::Buffer());
    connection->socket->MarkWritten();
  }
  result.status = std::move(status);
  Complete();
}

std::shared_ptr<Channel> Channel::Create(net::EventLoop* loop, std::string host, int port,
                                         ChannelOptions options) {
  return std::shared_ptr<Channel>(new Channel(loop, std::move(host), port, std::move(options)));
}

Channel::Channel(net::EventLoop* loop, std::string host, int port, ChannelOptions options)
    : loop_(loop),
      host_(std::move(host)),
      port_(port),
      endpoint_(absl::StrCat(host_, ":", port_)),
      options_(std::move(options)) {}

Channel::~Channel() { Close(); }

size_t Channel::in_flight() const { return current_ ? current_->pending.size() : 0; }

bool Channel::connected() const {
  return current_ && !current_->socket->closed() && !current_->going_away;
}

void Channel::Close() {
  if (closed_) return;
  closed_ = true;
  if (current_) {
    FailAll(*current_, absl::CancelledError("channel closed"), false);
    current_->socket->Close();
    current_.reset();
  }
  for (auto h : connect_waiters_) loop_->Schedule(h);
  connect_waiters_.clear();
}

void Channel::FailAll(Connection& conn, const absl::Status& status, bool not_processed) {
  auto pending = std::move(conn.pending);
  conn.pending.clear();
  for (auto& [id, call] : pending) {
    call->result.status = status;
    call->result.not_processed = not_processed;
    call->Complete();
  }
}

void Channel::ConnectionEnded(Connection* conn) {
  if (current_.get() == conn) current_.reset();
}

net::Task<absl::Status> Channel::EnsureConnected(Clock::time_point deadline) {
  while (true) {
    if (closed_) co_return absl::CancelledError("channel closed");
    if (connected()) co_return absl::OkStatus();
    if (!connecting_) break;
    struct Wait {
      Channel* channel;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { channel->connect_waiters_.push_back(h); }
      void await_resume() const noexcept {}
    };
    // Whoever was connecting has finished: look again (connected, backing
    // off after a failure, or free to try ourselves).
    co_await Wait{this};
  }
  Clock::time_point now = Clock::now();
  if (now < retry_after_) {
    co_return absl::UnavailableError(absl::StrCat(
        last_connect_error_.message(), " (next attempt in ", Millis(retry_after_ - now), " ms)"));
  }
  Clock::duration timeout = options_.connect_timeout;
  bool deadline_bound = false;
  if (deadline != Clock::time_point::max() && deadline - now < timeout) {
    if (deadline <= now) {
      co_return absl::DeadlineExceededError(
          absl::StrCat("deadline passed while connecting to ", endpoint_));
    }
    timeout = deadline - now;
    deadline_bound = true;
  }
  if (options_.tls.enabled && tls_context_ == nullptr) {
    absl::StatusOr<std::shared_ptr<const net::TlsContext>> context =
        options_.tls.context != nullptr ? options_.tls.context : NewChannelTlsContext(options_.tls);
    // Bad options stay bad: no back-off, every call says why.
    if (!context.ok()) co_return context.status();
    tls_context_ = *std::move(context);
  }
  connecting_ = true;
  auto socket = co_await net::Socket::Connect(loop_, host_, port_, timeout);
  if (socket.ok() && tls_context_ != nullptr) {
    absl::Status handshake = co_await HandshakeTls(**socket, now + timeout);
    if (!handshake.ok()) {
      (*socket)->Close();
      socket = std::move(handshake);
    }
  }
  connecting_ = false;
  absl::Status result;
  if (closed_) {
    if (socket.ok()) (*socket)->Close();
    result = absl::CancelledError("channel closed");
  } else if (socket.ok()) {
    auto conn = std::make_shared<Connection>();
    conn->loop = loop_;
    conn->endpoint = endpoint_;
    conn->max_frame_size = options_.max_frame_size;
    conn->socket = std::move(socket).value();
    current_ = conn;
    backoff_ = Clock::duration::zero();
    retry_after_ = {};
    loop_->Spawn(ReadLoop(weak_from_this(), std::move(conn)));
  } else if (deadline_bound && socket.status().code() == absl::StatusCode::kDeadlineExceeded) {
    // The call ran out of time, not the endpoint: no back-off.
    result = socket.status();
  } else {
    last_connect_error_ = absl::UnavailableError(
        absl::StrCat("cannot connect to ", endpoint_, ": ", socket.status().message()));
    backoff_ = backoff_ == Clock::duration::zero() ? options_.initial_backoff
                                                   : std::min(backoff_ * 2, options_.max_backoff);
    retry_after_ = Clock::now() + backoff_;
    result = last_connect_error_;
  }
  for (auto h : connect_waiters_) loop_->Schedule(h);
  connect_waiters_.clear();
  co_return result;
}

net::Task<absl::Status> Channel::HandshakeTls(net::Socket& socket, Clock::time_point give_up_at) {
  const std::string& name = options_.tls.server_name.empty() ? host_ : options_.tls.server_name;
  absl::Status st = socket.StartTls(tls_context_, net::TlsRole::kClient, name);
  if (!st.ok()) {
    co_return absl::UnavailableError(absl::StrCat("TLS did not start: ", st.message()));
  }
  bool timed_out = false;
  net::Timer give_up([&socket, &timed_out] {
    timed_out = true;
    socket.Close();
  });
  give_up.Arm(loop_, give_up_at);
  auto handshake = socket.TlsHandshake();
  st = co_await handshake;
  give_up.Cancel();
  if (timed_out) {
    co_return absl::DeadlineExceededError("TLS handshake did not finish in time");
  }
  if (!st.ok()) {
    co_return absl::UnavailableError(absl::StrCat("TLS handshake failed: ", st.message()));
  }
  co_return absl::OkStatus();
}

net::Task<CallResult> Channel::CallBytes(std::string_view method, net::Buffer request,
                                         const CallOptions& options) {
  size_t size = request.size();
  co_return co_await Send(
      method, options, size, [](char*) {}, &request);
}

net::Task<absl::StatusOr<Channel::Opened>> Channel::Open(
    std::string_view method, const CallOptions& options, uint8_t flags, size_t size,
    absl::FunctionRef<void(char*)> write_payload, net::Buffer* payload) {
  Clock::time_point now = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();
  if (options.timeout > Clock::duration::zero()) deadline = now + options.timeout;
  // Everything taken from the parent is taken now, before the first wait:
  // a call may outlive the served call that started it (a hedged copy).
  MetadataList inherited;
  if (options.parent != nullptr) {
    if (options.parent->cancelled()) {
      co_return absl::CancelledError("the call being served was cancelled");
    }
    deadline = std::min(deadline, options.parent->deadline());
    for (std::string_view key : {"traceparent", "tracestate"}) {
      std::string_view value = options.parent->Metadata(key);
      bool overridden = false;
      for (const auto& [k, v] : options.metadata) overridden |= k == key;
      if (!value.empty() && !overridden) inherited.emplace_back(key, value);
    }
  }
  if (deadline <= now) {
    co_return absl::DeadlineExceededError(
        absl::StrCat("deadline passed before ", std::string(method), " was sent"));
  }
  if (size > options_.max_frame_size) {
    co_return absl::ResourceExhaustedError(absl::StrCat(
        "request of ", size, " bytes exceeds max_frame_size ", options_.max_frame_size));
  }
  absl::Status connected = co_await EnsureConnected(deadline);
  if (!connected.ok()) co_return connected;
  if (options.canceller != nullptr && options.canceller->cancelled()) {
    co_return absl::CancelledError(
        absl::StrCat(std::string(method), " cancelled before it was sent"));
  }
  Opened opened{current_, current_->next_stream_id++, now, deadline};
  Connection& conn = *opened.connection;
  if (conn.next_stream_id == 0) conn.next_stream_id = 1;

  Meta meta;
  meta.method = method;
  if (deadline != Clock::time_point::max()) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    meta.timeout_us = std::max<int64_t>(1, left.count());
  }
  for (const auto& [k, v] : options.metadata) meta.entries.emplace_back(k, v);
  if (!options_.caller.empty()) meta.entries.emplace_back("caller", options_.caller);
  for (const auto& [k, v] : inherited) meta.entries.emplace_back(k, v);
  if (payload != nullptr) {
    AppendFrame(&conn.socket->output(), FrameType::kRequest, flags, opened.stream_id, meta,
                std::move(*payload));
  } else {
    AppendFrameWith(&conn.socket->output(), FrameType::kRequest, flags, opened.stream_id, meta,
                    size, write_payload);
  }
  conn.socket->MarkWritten();
  co_return opened;
}

net::Task<CallResult> Channel::Send(std::string_view method, const CallOptions& options,
                                    size_t size, absl::FunctionRef<void(char*)> write_payload,
                                    net::Buffer* payload) {
  constexpr uint8_t kFlags = frame_flags::kEndStream | frame_flags::kHasMessage;
  absl::StatusOr<Opened> opened =
      co_await Open(method, options, kFlags, size, write_payload, payload);
  if (!opened.ok()) {
    CallResult early;
    early.status = std::move(opened).status();
    early.not_processed = true;
    co_return early;
  }
  PendingCall call(loop_, opened->connection.get(), opened->stream_id, method, opened->started);
  call.Track(opened->deadline, options.canceller);
  co_await PendingCall::Awaiter{&call};
  co_return std::move(call.result);
}

// A stream's state; its PendingCall is absent when the call was never sent.
struct ClientStream::State {
  State(net::EventLoop* loop, std::string method) : method(std::move(method)), stream(loop) {}
  // Sends credit for messages taken, unless the call is over.
  void ReturnCredit(uint64_t credit) {
    if (!call->done) internal::SendCredit(*connection->socket, call->stream_id, credit);
  }
  std::string method;
  internal::StreamState stream;
  std::shared_ptr<Channel::Connection> connection;
  std::optional<Channel::PendingCall> call;
  CallResult unsent;
  bool send_closed = false;
};

ClientStream::ClientStream(std::unique_ptr<State> state) : state_(std::move(state)) {}

std::unique_ptr<ClientStream> ClientStream::Unsent(CallResult result) {
  auto state = std::make_unique<State>(nullptr, std::string());
  state->unsent = std::move(result);
  return std::unique_ptr<ClientStream>(new ClientStream(std::move(state)));
}

ClientStream::~ClientStream() {
  if (state_->call && !state_->call->done) Cancel();
}

bool ClientStream::done() const { return !state_->call || state_->call->done; }

void ClientStream::Fail(absl::Status status) {
  if (!done()) state_->call->Abandon(std::move(status));
}

void ClientStream::Cancel() {
  if (done()) return;
  Fail(absl::CancelledError(absl::StrCat(state_->method, " to ", state_->connection->endpoint,
                                         " cancelled by the caller")));
}

net::Task<bool> ClientStream::WriteMessage(size_t size, absl::FunctionRef<void(char*)> write,
                                           net::Buffer* payload) {
  State& st = *state_;
  if (!done() && size > st.connection->max_frame_size) {
    Fail(absl::ResourceExhaustedError(absl::StrCat("stream message of ", size,
                                                   " bytes exceeds max_frame_size ",
                                                   st.connection->max_frame_size)));
  }
  while (true) {
    if (done() || st.send_closed || st.connection->socket->closed()) co_return false;
    if (st.stream.window().CanSend(size)) break;
    co_await st.stream.Writable(size);
  }
  internal::SendMessage(st.stream, *st.connection->socket, st.call->stream_id, size, write,
                        payload);
  co_return true;
}

net::Task<bool> ClientStream::WriteWith(size_t size, absl::FunctionRef<void(char*)> write) {
  co_return co_await WriteMessage(size, write);
}

net::Task<bool> ClientStream::WriteBytes(net::Buffer message) {
  size_t size = message.size();
  co_return co_await WriteMessage(
      size, [](char*) {}, &message);
}

void ClientStream::CloseSend() {
  State& st = *state_;
  if (done() || st.send_closed) return;
  st.send_closed = true;
  if (st.connection->socket->closed()) return;
  AppendFrame(&st.connection->socket->output(), FrameType::kMessage, frame_flags::kEndStream,
              st.call->stream_id, Meta{}, net::Buffer());
  st.connection->socket->MarkWritten();
}

net::Task<bool> ClientStream::ReadBytes(net::Buffer* message) {
  State& st = *state_;
  if (!st.call) co_return false;
  while (!st.stream.has_message()) {
    if (st.call->done) co_return false;
    co_await st.stream.Readable();
  }
  st.ReturnCredit(st.stream.Take(message));
  co_return true;
}

net::Task<CallResult> ClientStream::Finish() {
  State& st = *state_;
  if (!st.call) co_return std::move(st.unsent);
  CloseSend();
  // A server still writing must not wait for credit nobody will return.
  st.call->drop_messages = true;
  st.ReturnCredit(st.stream.DropQueued());
  co_await Channel::PendingCall::Awaiter{&*st.call};
  co_return std::move(st.call->result);
}

net::Task<std::unique_ptr<ClientStream>> Channel::OpenStream(std::string_view method,
                                                             const CallOptions& options,
                                                             net::Buffer* request) {
  auto state = std::make_unique<ClientStream::State>(loop_, std::string(method));
  ClientStream::State& st = *state;
  uint8_t flags = request != nullptr ? frame_flags::kEndStream | frame_flags::kHasMessage : 0;
  net::Buffer nothing;
  absl::StatusOr<Opened> opened = co_await Open(
      st.method, options, flags, request != nullptr ? request->size() : 0, [](char*) {},
      request != nullptr ? request : &nothing);
  if (!opened.ok()) {
    CallResult unsent;
    unsent.status = std::move(opened).status();
    unsent.not_processed = true;
    co_return ClientStream::Unsent(std::move(unsent));
  }
  st.connection = opened->connection;
  st.send_closed = request != nullptr;
  st.call.emplace(loop_, st.connection.get(), opened->stream_id, st.method, opened->started);
  st.call->stream = &st.stream;
  st.call->Track(opened->deadline, options.canceller);
  co_return std::unique_ptr<ClientStream>(new ClientStream(std::move(state)));
}

net::Task<void> Channel::ReadLoop(std::weak_ptr<Channel> channel,
                                  std::shared_ptr<Connection> conn) {
  net::Socket& socket = *conn->socket;
  DecodeLimits limits{.max_frame_size = conn->max_frame_size};
  Frame frame;
  std::string error;
  absl::Status ended;
  bool tls_failed = false;  // the socket ended on a TLS error
  while (ended.ok()) {
    while (true) {
      DecodeStatus st = DecodeFrame(socket.input(), limits, &frame, &error);
      if (st == DecodeStatus::kNeedMore) break;
      if (st == DecodeStatus::kError) {
        CAPSTAN_LOG(warn, "rpc protocol error from server, closing connection", "endpoint",
                    conn->endpoint, "reason", error);
        ended = absl::UnavailableError(
            absl::StrCat("protocol error from ", conn->endpoint, ": ", error));
        break;
      }
      conn->heard_from_server = true;
      if (frame.type == FrameType::kResponse) {
        auto it = conn->pending.find(frame.stream_id);
        if (it == conn->pending.end()) continue;  // its deadline passed first
        PendingCall* call = it->second;
        conn->pending.erase(it);
        call->result.status = StatusFromWire(frame.meta.status_code, frame.meta.status_message);
        if (call->result.status.ok()) call->result.payload = std::move(frame.payload);
        call->Complete();
      } else if (frame.type == FrameType::kMessage || frame.type == FrameType::kWindow) {
        auto it = conn->pending.find(frame.stream_id);
        if (it == conn->pending.end() || it->second->stream == nullptr) continue;
        PendingCall* call = it->second;
        if (!internal::ApplyStreamFrame(*call->stream, frame, &error)) {
          CAPSTAN_LOG(warn, "rpc protocol error from server, closing connection", "endpoint",
                      conn->endpoint, "reason", error);
          ended = absl::UnavailableError(
              absl::StrCat("protocol error from ", conn->endpoint, ": ", error));
          break;
        }
        if (call->drop_messages) {
          internal::SendCredit(socket, call->stream_id, call->stream->DropQueued());
        }
      } else if (frame.type == FrameType::kGoAway) {
        conn->going_away = true;
        if (auto ch = channel.lock()) ch->ConnectionEnded(conn.get());
        // Streams past last_stream_id were not processed: safe to retry.
        std::vector<uint32_t> unprocessed;
        for (auto& [id, call] : conn->pending) {
          if (id > frame.meta.last_stream_id) unprocessed.push_back(id);
        }
        for (uint32_t id : unprocessed) {
          PendingCall* call = conn->pending[id];
          conn->pending.erase(id);
          call->result.status = absl::UnavailableError(
              absl::StrCat(conn->endpoint, " is shutting down (GOAWAY); call not processed"));
          call->result.not_processed = true;
          call->Complete();
        }
      } else if (frame.type == FrameType::kPing && frame.payload.size() <= kMaxPingPayload) {
        AppendFrame(&socket.output(), FrameType::kPong, 0, 0, Meta{}, std::move(frame.payload));
        socket.MarkWritten();
      }
    }
    if (!ended.ok()) break;
    if (conn->going_away && conn->pending.empty()) {
      ended = absl::UnavailableError("connection drained after GOAWAY");
      break;
    }
    absl::Status st = co_await socket.ReadMore();
    if (!st.ok()) {
      tls_failed = socket.tls() != nullptr && absl::StartsWith(st.message(), "tls ");
      ended = absl::UnavailableError(
          absl::StrCat("connection to ", conn->endpoint, " lost: ", st.message()));
    }
  }
  // TLS 1.3: a server refusing this client's certificate says so after the
  // client's side of the handshake is done, so the refusal ends the
  // connection rather than the connect: with its alert (a TLS error here;
  // nothing sent on the connection ran), or, when the alert could not be
  // sent, by closing it. Either way the error names TLS.
  bool tls_refused = tls_failed && !conn->heard_from_server;
  if (socket.tls() != nullptr && !conn->heard_from_server && !conn->pending.empty()) {
    ended = absl::UnavailableError(
        absl::StrCat("TLS to ", conn->endpoint,
                     " ended by the server after the handshake, before any answer (a client "
                     "certificate it does not accept, or none?): ",
                     ended.message()));
  }
  if (auto ch = channel.lock()) ch->ConnectionEnded(conn.get());
  FailAll(*conn, ended, tls_refused);
  socket.Close();
}

absl::StatusOr<std::shared_ptr<const net::TlsContext>> NewChannelTlsContext(
    const ChannelTlsOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "channel tls.cert_file and tls.key_file must be given together");
  }
  for (auto [field, path] :
       {std::pair<const char*, const std::string*>{"ca_file", &options.ca_file},
        {"cert_file", &options.cert_file},
        {"key_file", &options.key_file}}) {
    if (!path->empty() && !std::ifstream(*path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("channel tls.", field, ": cannot read \"", *path, "\""));
    }
  }
  net::TlsClientOptions client;
  client.ca_file = options.ca_file;
  client.verify = options.verify;
  client.cert_file = options.cert_file;
  client.key_file = options.key_file;
  client.alpn = {"capstan-rpc"};
  absl::StatusOr<std::shared_ptr<net::TlsContext>> context = net::TlsContext::NewClient(client);
  if (!context.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("channel tls: ", context.status().message()));
  }
  return std::shared_ptr<const net::TlsContext>(*std::move(context));
}

}  // namespace capstan::rpc
