// Socket and Listener: TCP on an EventLoop, for coroutines.
//
// A Socket keeps receiving while its reader wants bytes, queues what is
// written during a turn and sends it in one system call (or one io_uring
// submission) before the loop waits. Readers consume from input() and await
// ReadMore() when a frame is incomplete; writers append with Write() and,
// when they produce faster than the peer reads, await Drained().
//
// Thread-safety: a Socket belongs to its loop; use it only on that thread.
// It is shared-owned (std::shared_ptr) so a reader coroutine and a writer
// can both hold it; the fd closes once Close() was called and no I/O of the
// socket is in flight. Always Close() a socket you are done with: while its
// receive is armed the kernel holds a pointer to it, so the engine keeps it
// alive until then.
//
//   net::Task<void> Echo(std::shared_ptr<net::Socket> s) {
//     while ((co_await s->ReadMore()).ok()) s->Write(s->input().Cut(s->input().size()));
//     s->Close();
//   }
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <coroutine>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "base/status.h"
#include "net/address.h"  // ResolveAddress
#include "net/buffer.h"
#include "net/event_loop.h"
#include "net/task.h"

namespace capstan::net {

class TlsConnection;
class TlsContext;
enum class TlsRole : uint8_t;

// A record the kernel hands back on completion (its address is io_uring's
// user_data; epoll keeps one per registered fd).
struct IoOp {
  enum Kind : uint8_t { kReceive, kSend, kConnect, kAccept, kWake, kPoll, kWritable };
  Kind kind;
  void* owner;
};

// How a new socket starts: set before its first receive is armed, so an
// exact input limit costs no cancelled multishot receive (io_uring) and a
// proxy's connection no extra system call (see set_input_limit,
// set_half_close).
struct SocketSetup {
  // 0: nothing is received until a reader waits in ReadMore.
  size_t input_limit = 4 << 20;
  bool exact_input_limit = false;
  bool half_close = false;
  // TCP_NODELAY (setsockopt). An accepted socket inherits it from its
  // listener, which sets it: Listener's sockets never pay this call.
  bool no_delay = true;
  // The fd is O_NONBLOCK already (accept4/socket with SOCK_NONBLOCK, or a
  // fd Release gave back): Adopt skips its fcntl check.
  bool known_nonblocking = false;
};

class Socket : public std::enable_shared_from_this<Socket> {
 public:
  // Takes ownership of a connected fd.
  static std::shared_ptr<Socket> Adopt(EventLoop* loop, int fd);
  static std::shared_ptr<Socket> Adopt(EventLoop* loop, int fd, const SocketSetup& setup);
  // Connects to host:port; the result is ready for reading and writing.
  // A positive timeout bounds the handshake (DEADLINE_EXCEEDED after it).
  static Task<absl::StatusOr<std::shared_ptr<Socket>>> Connect(
      EventLoop* loop, std::string host, int port,
      EventLoop::Clock::duration timeout = std::chrono::seconds(10), SocketSetup setup = {});
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  EventLoop* loop() const { return loop_; }
  int fd() const { return fd_; }
  bool closed() const { return closed_; }
  // Why the socket stopped (OK while open; UNAVAILABLE for a reset or the
  // peer's close; CANCELLED after a local Close).
  const absl::Status& error() const { return error_; }

  // ---- reading
  // Bytes received and not yet consumed by the reader.
  Buffer& input() { return input_; }
  // Receiving pauses while input() holds this many bytes and nobody awaits
  // ReadMore (a reader waiting for a large frame always gets its bytes).
  // `exact`: the limit holds to within one receive buffer (16 KiB) on every
  // engine. Without it io_uring's multishot receive may deliver what the
  // kernel already had queued before the pause takes effect (up to the
  // socket's receive buffer, megabytes on loopback); with it the socket is
  // received one buffer at a time, and a buffer that comes back full is
  // followed by recv(2) straight into the input up to the limit. Suits
  // sockets whose input is a bounded read-ahead (a proxy's upstream).
  void set_input_limit(size_t bytes, bool exact = false);
  // With half-close on, the peer's end of sending (a FIN) ends the input
  // but not the socket: ReadMore returns UNAVAILABLE ("connection closed by
  // peer") once the bytes before it are consumed, and what is written still
  // leaves — so a client that sends a request and shuts its write side gets
  // its answer (HTTP/1.1, RFC 9112 section 9.6). Off by default: the peer's
  // FIN closes the socket. The owner closes a half-closed socket when done.
  void set_half_close(bool on) { half_close_ = on; }
  // The peer's FIN arrived on a half-close socket.
  bool input_ended() const { return input_ended_; }

  struct ReadAwaiter {
    Socket* socket;
    bool await_ready() const noexcept {
      return socket->closed_ || socket->input_grew_ || socket->input_ended_;
    }
    void await_suspend(std::coroutine_handle<> h);
    absl::Status await_resume();
  };
  // Waits until input() has grown since the previous ReadMore returned, or
  // the socket stops. Returns OK when there are new bytes, else error() —
  // or ABORTED after InterruptRead. One reader at a time.
  ReadAwaiter ReadMore() { return ReadAwaiter{this}; }
  // Resumes a reader waiting in ReadMore without bytes: it returns ABORTED
  // ("read interrupted") and the socket stays open. For an owner with a
  // decision to take on a timer (an idle connection about to be parked).
  // Nothing happens when no reader waits.
  void InterruptRead();

  // ---- parking
  // Hands the connected fd over without closing it, for a server that keeps
  // an idle connection as a bare fd and an FdWaiter (about 160 bytes where a
  // Socket and its coroutine frames take about 2 KB). Only a quiet socket
  // can go: no TLS, nothing received and unconsumed, nothing left to send,
  // no reader waiting. Completes with the fd once the engine holds nothing
  // of the socket (io_uring: its armed receive cancelled); the Socket is
  // then closed without closing the fd. Completes with -1 when the socket
  // could not go — bytes or the peer's FIN came meanwhile, or it was not
  // quiet — and the socket goes on as before (what arrived is in input()).
  struct ReleaseAwaiter {
    Socket* socket;
    bool await_ready();
    void await_suspend(std::coroutine_handle<> h) { socket->releaser_ = h; }
    int await_resume();
  };
  ReleaseAwaiter Release() { return ReleaseAwaiter{this}; }

  // ---- writing
  // Queues bytes; they leave in the socket's flush at the end of the turn.
  // Writes after Close are dropped.
  void Write(Buffer&& data);
  void Write(std::string_view data);
  // The output buffer itself, for serializers that write in place. Call
  // MarkWritten() after appending to it. (With TLS: the plaintext waiting
  // to be encrypted.)
  Buffer& output() { return plain_output_ != nullptr ? *plain_output_ : output_; }
  void MarkWritten();
  // Bytes queued or in flight to the kernel.
  size_t pending_output() const {
    return output_.size() + (plain_output_ != nullptr ? plain_output_->size() : 0);
  }

  struct DrainAwaiter {
    Socket* socket;
    size_t at_most;
    bool await_ready() const noexcept {
      return socket->closed_ || socket->pending_output() <= at_most;
    }
    void await_suspend(std::coroutine_handle<> h);
    absl::Status await_resume() const { return socket->error_; }
  };
  // Waits until no more than `at_most` bytes are pending (or the socket
  // stops); returns error() (OK while open).
  DrainAwaiter Drained(size_t at_most = 0) { return DrainAwaiter{this, at_most}; }

  // Stops all I/O: pending output is dropped, a waiting reader and drainer
  // resume with CANCELLED. For a graceful end, co_await Drained() first.
  void Close();

  // ---- TLS
  // Turns TLS on, before any byte has been exchanged: from now on input()
  // holds decrypted bytes and what is written is encrypted at the end of
  // the turn. A client sends `server_name` as SNI and checks the peer's
  // certificate against it. A failed handshake closes the socket with an
  // error that says why (readers see it from ReadMore).
  absl::Status StartTls(std::shared_ptr<const TlsContext> context, TlsRole role,
                        std::string_view server_name = {});
  // The connection's TLS state (ALPN, SNI, peer), or null without TLS.
  const TlsConnection* tls() const { return tls_.get(); }
  struct HandshakeAwaiter {
    Socket* socket;
    bool await_ready() const noexcept;
    void await_suspend(std::coroutine_handle<> h);
    absl::Status await_resume() const { return socket->error_; }
  };
  // Waits until the TLS handshake is done (OK) or the socket stopped (the
  // error that stopped it: a failed handshake says why). OK at once without
  // TLS. For a client that wants a handshake failure as a connect failure
  // rather than as a lost connection. One waiter at a time. (TLS 1.3: a
  // server refusing the client's certificate says so after the client's
  // handshake is done, at the client's next read.)
  HandshakeAwaiter TlsHandshake() { return HandshakeAwaiter{this}; }

  // Counters (loop thread).
  uint64_t sends() const { return sends_; }
  uint64_t receives() const { return receives_; }

 private:
  friend class UringBackend;
  friend class EpollBackend;
  friend class EventLoop;
  Socket(EventLoop* loop, int fd);

  // ---- called by the backends
  bool WantsInput() const {
    return !closed_ && !input_ended_ && !releasing_ &&
           (reader_ != nullptr || input_.size() < input_limit_);
  }
  // Whether nothing stands in the way of Release (see there).
  bool Quiet() const {
    return !closed_ && !input_ended_ && tls_ == nullptr && input_.empty() &&
           pending_output() == 0 && reader_ == nullptr && drainer_ == nullptr;
  }
  void OnReceived(size_t n);   // n bytes were appended to input_ (n > 0)
  void OnReceiveEnd(int err);  // 0: the peer closed; else -errno
  void OnSent(size_t n);
  void OnSendError(int err);
  void OnConnected(int err);
  void OnDetached();      // the backend holds nothing of ours any more
  void OnReleaseReady();  // Release: the engine holds nothing of ours any more
  void ApplySetup(const SocketSetup& setup);
  void Fail(absl::Status status);
  void Flush();  // from the loop, before it waits
  // Called by the engines' sends first. Without TLS, output that holds a
  // mapped slice (Buffer::MappedCopy, SpliceSender::Wants) leaves through the
  // loop's SpliceSender, its pages by reference, for as long as the socket
  // takes it. kSocketFull: the socket takes no more now; the engine waits
  // until it is writable and sends again, so the rest of the body goes the
  // same way. kRestByCopy: what is left (if anything) goes by the engine's
  // send: there was nothing more for this path, or it refused. The socket
  // may be closed on return (the send failed).
  enum class SpliceResult { kRestByCopy, kSocketFull };
  SpliceResult SendSpliced();
  // Where the backends put received bytes: input_, or with TLS the
  // ciphertext buffer that OnReceived decrypts into input_.
  Buffer& receive_buffer();
  // With TLS: encrypts what was written into output_; false if TLS failed
  // (the socket is closed then).
  bool EncryptPending();

  EventLoop* loop_;
  int fd_;
  bool closed_ = false;
  bool detached_ = false;
  absl::Status error_;
  Buffer input_;
  size_t input_limit_ = 4 << 20;
  bool exact_input_limit_ = false;
  bool input_grew_ = false;
  bool half_close_ = false;
  bool input_ended_ = false;
  Buffer output_;
  bool flush_marked_ = false;
  std::coroutine_handle<> reader_;
  std::coroutine_handle<> drainer_;
  std::coroutine_handle<> handshaker_;  // waits in TlsHandshake
  size_t drain_at_most_ = 0;
  std::coroutine_handle<> connector_;
  std::coroutine_handle<> releaser_;  // waits in Release for the engine
  bool releasing_ = false;
  bool read_interrupted_ = false;
  int connect_result_ = 0;
  uint64_t sends_ = 0;
  uint64_t receives_ = 0;
  std::unique_ptr<TlsConnection> tls_;
  Buffer* plain_output_ = nullptr;  // tls_'s plaintext, when TLS is on

  // Backend state (owned by whichever backend the loop runs).
  bool receiving_ = false;         // a receive is armed
  bool sending_ = false;           // a send is in flight
  bool readable_ = false;          // epoll: the kernel may have bytes for us
  bool writable_ = true;           // epoll: the kernel may take bytes
  bool peer_done_ = false;         // epoll: the peer's close (or an error) was reported
  bool connecting_ = false;        // a connect is in flight
  bool cancel_requested_ = false;  // io_uring: a cancel of the receive is in flight
  int ops_in_flight_ = 0;          // io_uring: submitted and not yet completed
  // Keeps the socket alive while the kernel still holds pointers into it.
  std::shared_ptr<Socket> self_while_busy_;
  static constexpr int kMaxIov = 64;
  // What the kernel reads while a send or a connect is in flight (io_uring:
  // the iovecs and msghdr of the sendmsg, the connect's address). Held only
  // then — from a per-loop free list for sends — so an idle socket is small
  // (an idle keep-alive connection is mostly this object).
  struct SendState {
    struct iovec iov[kMaxIov];
    struct msghdr msg;
  };
  struct ConnectState {
    sockaddr_storage addr;
    socklen_t len;
  };
  std::unique_ptr<SendState> send_state_;
  std::unique_ptr<ConnectState> connect_state_;
  std::unique_ptr<char[]> recv_scratch_;  // io_uring without provided buffers
  IoOp recv_op_{IoOp::kReceive, this};
  IoOp send_op_{IoOp::kSend, this};
  IoOp connect_op_{IoOp::kConnect, this};
  IoOp writable_op_{IoOp::kWritable, this};  // io_uring: waits to splice more
};

// Waits, without a Socket, for a connected fd to have something to read
// (bytes, the peer's FIN, an error): what a server keeps of an idle
// connection after Socket::Release. Embed it in the owner's record (the
// callback gets this pointer back). One wait per Start.
//
// Thread-safety: loop thread only.
class FdWaiter {
 public:
  // Runs on the loop thread, never inside Start or Cancel: `result` > 0
  // (poll's revents) when the fd has something to read or hung up,
  // -ECANCELED after Cancel, another -errno on an error. The wait is over
  // when it runs; the callback may destroy the waiter.
  using Callback = void (*)(FdWaiter* waiter, int result);
  FdWaiter(EventLoop* loop, int fd, Callback callback)
      : loop_(loop), fd_(fd), callback_(callback) {}
  // REQUIRES: not waiting (the engine holds a pointer to it until the
  // callback has run).
  ~FdWaiter() = default;
  FdWaiter(const FdWaiter&) = delete;
  FdWaiter& operator=(const FdWaiter&) = delete;

  void Start();
  // Ends the wait early: the callback runs with -ECANCELED (in a later
  // turn on io_uring, at the end of this turn on epoll) — or with the
  // readiness that beat the cancel. Nothing happens when not waiting.
  void Cancel();
  bool waiting() const { return waiting_; }
  int fd() const { return fd_; }
  EventLoop* loop() const { return loop_; }

 private:
  friend class UringBackend;
  friend class EpollBackend;
  // From the engines, once per wait: the callback runs at the end of the
  // turn (so a callback that starts a coroutine never runs inside the
  // engine's completion loop).
  void Finish(int result);

  IoOp op_{IoOp::kPoll, this};
  EventLoop* loop_;
  int fd_;
  bool waiting_ = false;     // from Start until the callback has run
  bool cancelling_ = false;  // Cancel asked the engine
  bool finished_ = false;    // the engine is done; the callback is scheduled
  Callback callback_;
};

class Listener {
 public:
  // Binds host:port (port 0 picks one) with SO_REUSEPORT when reuse_port is
  // set, so every loop of a group can listen on the same port.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(EventLoop* loop, const std::string& host,
                                                        int port, bool reuse_port = false);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  int port() const { return port_; }
  EventLoop* loop() const { return loop_; }

  struct AcceptAwaiter {
    Listener* listener;
    bool await_ready() const noexcept { return !listener->accepted_.empty() || listener->closed_; }
    void await_suspend(std::coroutine_handle<> h);
    absl::StatusOr<std::shared_ptr<Socket>> await_resume();
  };
  // The next connection; CANCELLED after Close.
  AcceptAwaiter Accept() { return AcceptAwaiter{this}; }
  // How accepted sockets start (input limit, half-close) before their
  // first receive; TCP_NODELAY comes from the listener (inherited).
  void set_accepted_setup(const SocketSetup& setup) { accepted_setup_ = setup; }
  void Close();

 private:
  friend class UringBackend;
  friend class EpollBackend;
  Listener(EventLoop* loop, int fd, int port) : loop_(loop), fd_(fd), port_(port) {}
  void OnAccepted(int fd);
  void OnAcceptError(int err);

  EventLoop* loop_;
  int fd_;
  int port_;
  bool closed_ = false;
  std::deque<int> accepted_;
  SocketSetup accepted_setup_;
  std::coroutine_handle<> acceptor_;
  // The backend's record of the armed accept; it outlives the Listener when
  // the kernel still holds it (io_uring cancels asynchronously).
  IoOp* accept_op_ = nullptr;
};

}  // namespace capstan::net
