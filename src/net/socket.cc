#include "net/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/io_backend.h"
#include "net/splice_sender.h"
#include "net/tls.h"

namespace capstan::net {

namespace {

absl::Status ErrnoStatus(std::string_view what, int err) {
  return absl::UnavailableError(absl::StrCat(std::string(what), ": ", std::strerror(err)));
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

Socket::Socket(EventLoop* loop, int fd) : loop_(loop), fd_(fd) {}

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

std::shared_ptr<Socket> Socket::Adopt(EventLoop* loop, int fd) {
  return Adopt(loop, fd, SocketSetup{});
}

std::shared_ptr<Socket> Socket::Adopt(EventLoop* loop, int fd, const SocketSetup& setup) {
  if (!setup.known_nonblocking) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  }
  if (setup.no_delay) SetNoDelay(fd);
  std::shared_ptr<Socket> s(new Socket(loop, fd));
  s->ApplySetup(setup);
  loop->io()->Attach(s.get());
  // An input limit of 0 starts the socket paused (a reader resumes it).
  if (s->WantsInput()) loop->io()->StartReceive(s.get());
  return s;
}

void Socket::ApplySetup(const SocketSetup& setup) {
  input_limit_ = setup.input_limit;
  exact_input_limit_ = setup.exact_input_limit;
  half_close_ = setup.half_close;
}

Task<absl::StatusOr<std::shared_ptr<Socket>>> Socket::Connect(EventLoop* loop, std::string host,
                                                              int port,
                                                              EventLoop::Clock::duration timeout,
                                                              SocketSetup setup) {
  sockaddr_storage addr;
  socklen_t len;
  if (absl::Status st = ResolveAddress(host, port, &addr, &len); !st.ok()) co_return st;
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) co_return ErrnoStatus("socket", errno);
  std::shared_ptr<Socket> s(new Socket(loop, fd));
  s->ApplySetup(setup);
  loop->io()->Attach(s.get());
  struct Awaiter {
    Socket* s;
    const sockaddr_storage& addr;
    socklen_t len;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      s->connector_ = h;
      s->loop_->io()->StartConnect(s, addr, len);
    }
    void await_resume() const noexcept {}
  };
  Timer give_up([&s, &host, port, timeout] {
    s->Fail(absl::DeadlineExceededError(absl::StrCat(
        "connect to ", host, ":", port, " took longer than ",
        std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count(), " ms")));
  });
  if (timeout > EventLoop::Clock::duration::zero()) give_up.ArmAfter(loop, timeout);
  co_await Awaiter{s.get(), addr, len};
  give_up.Cancel();
  if (s->closed_) co_return s->error_;
  if (s->connect_result_ != 0) {
    absl::Status st =
        ErrnoStatus(absl::StrCat("connect to ", host, ":", port), -s->connect_result_);
    s->Fail(st);
    co_return st;
  }
  if (setup.no_delay) SetNoDelay(fd);
  loop->io()->StartReceive(s.get());
  co_return s;
}

void Socket::set_input_limit(size_t bytes, bool exact) {
  input_limit_ = bytes;
  bool was_exact = std::exchange(exact_input_limit_, exact);
  if (exact && !was_exact && receiving_ && !closed_) loop_->io()->InputLimitBecameExact(this);
}

void Socket::ReadAwaiter::await_suspend(std::coroutine_handle<> h) {
  socket->reader_ = h;
  // Receiving may have paused at the input limit; a waiting reader resumes it.
  if (!socket->receiving_) socket->loop_->io()->StartReceive(socket);
}

absl::Status Socket::ReadAwaiter::await_resume() {
  bool interrupted = std::exchange(socket->read_interrupted_, false);
  if (socket->input_grew_) {
    socket->input_grew_ = false;
    return absl::OkStatus();
  }
  if (!socket->closed_ && socket->input_ended_) {
    return absl::UnavailableError("connection closed by peer");
  }
  if (interrupted && !socket->closed_) return absl::AbortedError("read interrupted");
  return socket->error_;
}

void Socket::InterruptRead() {
  if (!reader_) return;
  read_interrupted_ = true;
  loop_->Schedule(std::exchange(reader_, nullptr));
}

bool Socket::ReleaseAwaiter::await_ready() {
  if (!socket->Quiet()) return true;  // await_resume says -1
  socket->releasing_ = true;
  return socket->loop_->io()->BeginRelease(socket);
}

int Socket::ReleaseAwaiter::await_resume() {
  Socket* s = socket;
  if (!s->releasing_ || !s->Quiet()) {
    // Bytes, the peer's FIN or an error came while the receive was being
    // cancelled: the socket goes on.
    s->releasing_ = false;
    if (s->WantsInput() && !s->receiving_) s->loop_->io()->StartReceive(s);
    return -1;
  }
  s->releasing_ = false;
  int fd = std::exchange(s->fd_, -1);
  s->closed_ = true;
  s->detached_ = true;
  s->error_ = absl::CancelledError("socket released (parked)");
  return fd;
}

void Socket::OnReleaseReady() {
  if (releaser_) loop_->Schedule(std::exchange(releaser_, nullptr));
}

void FdWaiter::Start() {
  waiting_ = true;
  cancelling_ = false;
  finished_ = false;
  loop_->io()->StartPoll(this);
}

void FdWaiter::Cancel() {
  if (!waiting_ || cancelling_ || finished_) return;
  cancelling_ = true;
  loop_->io()->CancelPoll(this);
}

void FdWaiter::Finish(int result) {
  if (finished_) return;
  finished_ = true;
  loop_->AtTurnEnd([this, result] {
    waiting_ = false;
    callback_(this, result);
  });
}

void Socket::DrainAwaiter::await_suspend(std::coroutine_handle<> h) {
  socket->drainer_ = h;
  socket->drain_at_most_ = at_most;
}

void Socket::Write(Buffer&& data) {
  if (closed_ || data.empty()) return;
  output().Append(std::move(data));
  MarkWritten();
}

void Socket::Write(std::string_view data) {
  if (closed_ || data.empty()) return;
  output().Append(data);
  MarkWritten();
}

void Socket::MarkWritten() {
  if (closed_) {
    output().Clear();
    return;
  }
  if (!flush_marked_ && !sending_) {
    flush_marked_ = true;
    loop_->MarkForFlush(this);
  }
}

void Socket::Flush() {
  flush_marked_ = false;
  if (closed_ || sending_) return;
  if (tls_ != nullptr && !EncryptPending()) return;
  if (output_.empty()) return;
  loop_->io()->StartSend(this);
}

Socket::SpliceResult Socket::SendSpliced() {
  SpliceSender* sender = nullptr;
  while (tls_ == nullptr && SpliceSender::Wants(output_)) {
    if (sender == nullptr && (sender = loop_->splice_sender()) == nullptr) break;
    bool socket_full = false;
    ssize_t n = sender->Send(fd_, output_, &socket_full);
    if (n < 0) {
      OnSendError(static_cast<int>(n));
      break;
    }
    if (n > 0) OnSent(static_cast<size_t>(n));
    if (socket_full) return SpliceResult::kSocketFull;
    if (n == 0) break;  // refused
  }
  return SpliceResult::kRestByCopy;
}

absl::Status Socket::StartTls(std::shared_ptr<const TlsContext> context, TlsRole role,
                              std::string_view server_name) {
  if (tls_ != nullptr) return absl::FailedPreconditionError("tls: already started");
  if (closed_) return error_;
  ASSIGN_OR_RETURN(tls_, TlsConnection::Create(std::move(context), role, server_name));
  plain_output_ = &tls_->plain_output();
  // Bytes already received (a client may have sent its hello at once) are
  // ciphertext.
  if (!input_.empty()) {
    tls_->wire_input().Append(std::move(input_));
    OnReceived(0);
  }
  // A client's hello leaves at the end of this turn.
  if (!flush_marked_ && !sending_ && !closed_) {
    flush_marked_ = true;
    loop_->MarkForFlush(this);
  }
  return absl::OkStatus();
}

bool Socket::HandshakeAwaiter::await_ready() const noexcept {
  return socket->closed_ || socket->tls_ == nullptr || socket->tls_->handshake_done();
}

void Socket::HandshakeAwaiter::await_suspend(std::coroutine_handle<> h) {
  socket->handshaker_ = h;
  if (!socket->receiving_) socket->loop_->io()->StartReceive(socket);
}

Buffer& Socket::receive_buffer() { return tls_ != nullptr ? tls_->wire_input() : input_; }

bool Socket::EncryptPending() {
  absl::Status st = tls_->Flush(&output_);
  if (!st.ok()) {
    // An alert may be queued: it goes out only with a graceful end, and
    // this end is not; the error says why.
    Fail(std::move(st));
    return false;
  }
  return true;
}

void Socket::OnReceived(size_t n) {
  ++receives_;
  (void)n;
  if (tls_ != nullptr) {
    absl::StatusOr<size_t> plain = tls_->OnWireInput(&input_, &output_);
    if (!plain.ok()) {
      // Send the alert that says why, then stop.
      if (!output_.empty() && !sending_) loop_->io()->StartSend(this);
      Fail(plain.status());
      return;
    }
    // Handshake replies, or writes that waited for the handshake.
    if (!output_.empty() || (tls_->handshake_done() && !plain_output_->empty())) {
      if (!flush_marked_ && !sending_) {
        flush_marked_ = true;
        loop_->MarkForFlush(this);
      }
    }
    if (*plain > 0) input_grew_ = true;
    if (handshaker_ && tls_->handshake_done()) loop_->Schedule(std::exchange(handshaker_, nullptr));
    if (tls_->peer_closed()) {
      if (reader_) loop_->Schedule(std::exchange(reader_, nullptr));
      if (half_close_) {
        input_ended_ = true;
        return;
      }
      Fail(absl::UnavailableError("connection closed by peer (TLS close_notify)"));
      return;
    }
    if (*plain == 0) return;
  } else {
    input_grew_ = true;
  }
  if (reader_) loop_->Schedule(std::exchange(reader_, nullptr));
}

void Socket::OnReceiveEnd(int err) {
  if (err == 0 && half_close_) {
    input_ended_ = true;
    if (reader_) loop_->Schedule(std::exchange(reader_, nullptr));
    return;
  }
  if (err == 0) {
    Fail(absl::UnavailableError("connection closed by peer"));
  } else {
    Fail(ErrnoStatus("receive", -err));
  }
}

void Socket::OnSent(size_t n) {
  ++sends_;
  output_.Consume(n);
  // Plaintext written while the send was in flight: encrypted now, so the
  // backend's next send takes it.
  if (tls_ != nullptr && !plain_output_->empty() && !EncryptPending()) return;
  if (drainer_ && pending_output() <= drain_at_most_) {
    loop_->Schedule(std::exchange(drainer_, nullptr));
  }
}

void Socket::OnSendError(int err) { Fail(ErrnoStatus("send", -err)); }

void Socket::OnConnected(int err) {
  connect_result_ = err;
  if (connector_) loop_->Schedule(std::exchange(connector_, nullptr));
}

void Socket::Fail(absl::Status status) {
  if (closed_) return;
  closed_ = true;
  error_ = std::move(status);
  // A send in flight (io_uring) points into output_: its bytes stay until
  // the engine gives them back (OnDetached). Freed under the kernel, they
  // went out as garbage in place of the TLS alert saying why.
  if (!sending_) output_.Clear();
  if (plain_output_ != nullptr) plain_output_->Clear();
  if (reader_) loop_->Schedule(std::exchange(reader_, nullptr));
  if (drainer_) loop_->Schedule(std::exchange(drainer_, nullptr));
  if (handshaker_) loop_->Schedule(std::exchange(handshaker_, nullptr));
  if (connector_) loop_->Schedule(std::exchange(connector_, nullptr));
  if (releaser_) loop_->Schedule(std::exchange(releaser_, nullptr));
  loop_->io()->Detach(this);
}

void Socket::Close() { Fail(absl::CancelledError("socket closed")); }

void Socket::OnDetached() {
  detached_ = true;
  output_.Clear();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(EventLoop* loop, const std::string& host,
                                                         int port, bool reuse_port) {
  sockaddr_storage addr;
  socklen_t len;
  RETURN_IF_ERROR(ResolveAddress(host, port, &addr, &len));
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Accepted sockets inherit it (Linux copies the listener's TCP state):
  // one setsockopt per listener instead of one per connection.
  SetNoDelay(fd);
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus("SO_REUSEPORT", err);
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    int err = errno;
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("bind ", host, ":", port, ": ", std::strerror(err),
                     err == EADDRINUSE ? " (is another server on it?)" : ""));
  }
  if (::listen(fd, 4096) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus("listen", err);
  }
  sockaddr_storage bound;
  socklen_t bound_len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  int bound_port = bound.ss_family == AF_INET6
                       ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                       : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  std::unique_ptr<Listener> l(new Listener(loop, fd, bound_port));
  loop->io()->StartAccept(l.get());
  return l;
}

Listener::~Listener() { Close(); }

void Listener::Close() {
  if (closed_) return;
  closed_ = true;
  loop_->io()->StopAccept(this);
  for (int fd : accepted_) ::close(fd);
  accepted_.clear();
  ::close(fd_);
  fd_ = -1;
  if (acceptor_) loop_->Schedule(std::exchange(acceptor_, nullptr));
}

void Listener::OnAccepted(int fd) {
  if (closed_) {
    ::close(fd);
    return;
  }
  accepted_.push_back(fd);
  if (acceptor_) loop_->Schedule(std::exchange(acceptor_, nullptr));
}

void Listener::OnAcceptError(int err) {
  // Out of descriptors or memory: the connection stays in the backlog and is
  // retried; say so once per burst rather than per attempt.
  CAPSTAN_LOG(warn, "accept failed", "port", port_, "error", std::strerror(-err));
}

void Listener::AcceptAwaiter::await_suspend(std::coroutine_handle<> h) { listener->acceptor_ = h; }

absl::StatusOr<std::shared_ptr<Socket>> Listener::AcceptAwaiter::await_resume() {
  if (listener->accepted_.empty()) return absl::CancelledError("listener closed");
  int fd = listener->accepted_.front();
  listener->accepted_.pop_front();
  // Both engines accept with SOCK_NONBLOCK; TCP_NODELAY came from the
  // listener.
  SocketSetup setup = listener->accepted_setup_;
  setup.known_nonblocking = true;
  setup.no_delay = false;
  return Socket::Adopt(listener->loop_, fd, setup);
}

}  // namespace capstan::net
