// The state one side keeps for a streaming call: messages received and not
// yet read, the flow-control ledger, and the coroutines waiting to read or
// to write. Shared by the server's ServerCall and the client's ClientStream;
// it sends no frames itself (the owner knows its socket).
//
// One reader and one writer may wait at once (a bidirectional handler reads
// in one coroutine and writes in another); a waiter re-checks its condition
// after every wake-up, so a wake-up with nothing for it is harmless.
#pragma once

#include <coroutine>
#include <deque>
#include <string>
#include <utility>

#include "absl/functional/function_ref.h"
#include "net/buffer.h"
#include "net/event_loop.h"
#include "net/socket.h"
#include "rpc/protocol.h"

namespace capstan::rpc::internal {

class StreamState {
 public:
  explicit StreamState(net::EventLoop* loop) : loop_(loop) {}
  StreamState(const StreamState&) = delete;
  StreamState& operator=(const StreamState&) = delete;

  StreamWindow& window() { return window_; }
  // The peer sends no more messages (it half-closed, or its side ended).
  bool inbound_closed() const { return inbound_closed_; }
  // The call is over for this side: reads drain what is queued, writes fail.
  bool ended() const { return ended_; }

  // A MESSAGE payload from the peer; false (with *error) when it overran
  // the window, which is a protocol error.
  bool Deliver(net::Buffer payload, std::string* error) {
    if (!window_.Received(payload.size(), error)) return false;
    inbound_.push_back(std::move(payload));
    Wake(reader_);
    return true;
  }
  // A message from a transport with flow control of its own (gRPC over
  // HTTP/2): queued outside the window. Returns the bytes now queued.
  size_t DeliverUnmetered(net::Buffer payload) {
    queued_unmetered_ += payload.size();
    inbound_.push_back(std::move(payload));
    Wake(reader_);
    return queued_unmetered_;
  }
  void TakeUnmetered(net::Buffer* message) {
    *message = std::move(inbound_.front());
    inbound_.pop_front();
    queued_unmetered_ -= message->size();
  }
  // Such a transport's writes wait while it says its output is full.
  void SetWriteBlocked(bool blocked) {
    write_blocked_ = blocked;
    if (!blocked) Wake(writer_);
  }
  bool write_blocked() const { return write_blocked_; }
  void CloseInbound() {
    inbound_closed_ = true;
    Wake(reader_);
  }
  // Credit from a WINDOW frame; false (with *error) when it returns more
  // than was sent.
  bool Credit(uint64_t increment, std::string* error) {
    if (!window_.Credit(increment, error)) return false;
    Wake(writer_);
    return true;
  }
  void End() {
    ended_ = true;
    Wake(reader_);
    Wake(writer_);
  }

  // Waits until a message is queued or none can come.
  struct ReadableAwaiter {
    StreamState* state;
    bool await_ready() const noexcept {
      return !state->inbound_.empty() || state->inbound_closed_ || state->ended_;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept { state->reader_ = h; }
    void await_resume() const noexcept {}
  };
  ReadableAwaiter Readable() { return {this}; }

  // Waits until a message of `size` bytes fits the window or the call ends.
  struct WritableAwaiter {
    StreamState* state;
    size_t size;
    bool await_ready() const noexcept {
      return state->ended_ || (!state->write_blocked_ && state->window_.CanSend(size));
    }
    void await_suspend(std::coroutine_handle<> h) noexcept { state->writer_ = h; }
    void await_resume() const noexcept {}
  };
  WritableAwaiter Writable(size_t size) { return {this, size}; }

  // Takes the next queued message (REQUIRES: one is queued). Returns the
  // credit to send the peer now (0: none yet).
  uint64_t Take(net::Buffer* message) {
    *message = std::move(inbound_.front());
    inbound_.pop_front();
    return window_.Consumed(message->size(), inbound_.empty());
  }
  bool has_message() const { return !inbound_.empty(); }
  // Drops every queued message; returns the credit to send for them.
  uint64_t DropQueued() {
    uint64_t credit = 0;
    net::Buffer message;
    while (!inbound_.empty()) credit += Take(&message);
    return credit;
  }

 private:
  void Wake(std::coroutine_handle<>& waiter) {
    if (waiter) loop_->Schedule(std::exchange(waiter, nullptr));
  }

  net::EventLoop* loop_;
  std::deque<net::Buffer> inbound_;
  StreamWindow window_;
  std::coroutine_handle<> reader_;
  std::coroutine_handle<> writer_;
  bool inbound_closed_ = false;
  bool ended_ = false;
  bool write_blocked_ = false;
  size_t queued_unmetered_ = 0;
};

// Returns `credit` bytes to the peer on stream `id` (nothing when there is
// none or the connection is gone).
inline void SendCredit(net::Socket& socket, uint32_t id, uint64_t credit) {
  if (credit == 0 || socket.closed()) return;
  AppendWindow(&socket.output(), id, credit);
  socket.MarkWritten();
}

// Sends a MESSAGE of `size` bytes, written in place by `write` or moved
// from `*payload` when given. REQUIRES: the window allows it (CanSend).
inline void SendMessage(StreamState& stream, net::Socket& socket, uint32_t id, size_t size,
                        absl::FunctionRef<void(char*)> write, net::Buffer* payload = nullptr) {
  stream.window().Sent(size);
  if (payload != nullptr) {
    AppendFrame(&socket.output(), FrameType::kMessage, frame_flags::kHasMessage, id, Meta{},
                std::move(*payload));
  } else {
    AppendFrameWith(&socket.output(), FrameType::kMessage, frame_flags::kHasMessage, id, Meta{},
                    size, write);
  }
  socket.MarkWritten();
}

// Applies a MESSAGE or WINDOW frame of this stream; false (with *error) on a
// protocol error, which closes the connection.
inline bool ApplyStreamFrame(StreamState& stream, Frame& frame, std::string* error) {
  if (frame.type == FrameType::kWindow) {
    uint64_t increment = 0;
    return ParseWindowIncrement(frame.payload, &increment, error) &&
           stream.Credit(increment, error);
  }
  if (stream.inbound_closed()) {
    *error = "MESSAGE after the stream's END_STREAM";
    return false;
  }
  if (frame.has_message() && !stream.Deliver(std::move(frame.payload), error)) return false;
  if (frame.end_stream()) stream.CloseInbound();
  return true;
}

}  // namespace capstan::rpc::internal
