#include "net/splice_sender.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

namespace capstan::net {

namespace {

// How far into a buffer Wants and Send look: what one sendmsg would take
// (Socket::kMaxIov).
constexpr size_t kMaxSlices = 64;

std::atomic<uint64_t> process_bytes{0};

bool SigpipeIgnored() {
  struct sigaction current {};
  return ::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_IGN;
}

// The index one past the last slice this path wants, or 0 when none.
size_t EndOfSpliceable(const Buffer& out) {
  size_t end = 0;
  size_t n = std::min(out.slice_count(), kMaxSlices);
  for (size_t i = 0; i < n; ++i) {
    if (out.slice_mapped(i) && (i == 0 || out.slice(i).size() >= SpliceSender::kMinSliceBytes)) {
      end = i + 1;
    }
  }
  return end;
}

}  // namespace

std::unique_ptr<SpliceSender> SpliceSender::Create() {
  if (!SigpipeIgnored()) return nullptr;
  int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null_fd < 0) return nullptr;
  SplicePipe pipe;
  if (!OpenPipe(kPipeBytes, &pipe)) {
    ::close(null_fd);
    return nullptr;
  }
  return std::unique_ptr<SpliceSender>(new SpliceSender(pipe, null_fd));
}

SpliceSender::~SpliceSender() {
  ClosePipe(pipe_);
  ::close(null_fd_);
}

uint64_t SpliceSender::ProcessBytes() { return process_bytes.load(std::memory_order_relaxed); }

bool SpliceSender::Wants(const Buffer& out) { return EndOfSpliceable(out) > 0; }

ssize_t SpliceSender::Send(int fd, const Buffer& out, bool* socket_full) {
  bool full = false;
  if (socket_full != nullptr) *socket_full = false;
  size_t end = EndOfSpliceable(out);
  if (end == 0 || pipe_.read_fd < 0) return 0;
  size_t sent = 0;
  size_t slice = 0;   // the next slice to send
  size_t offset = 0;  // bytes of it already sent
  // Moves past n bytes just sent.
  auto advance = [&](size_t n) {
    while (n > 0) {
      size_t rest = out.slice(slice).size() - offset;
      if (n < rest) {
        offset += n;
        return;
      }
      n -= rest;
      ++slice;
      offset = 0;
    }
  };
  while (slice < end) {
    if (offset == out.slice(slice).size()) {  // an empty slice
      ++slice;
      offset = 0;
      continue;
    }
    size_t wanted = 0;
    ssize_t n;
    int err = 0;
    if (!out.slice_mapped(slice)) {
      // Copied bytes (a response's head) go straight to the socket, as the
      // engine would send them (measured cheaper than joining them to the
      // mapped slice in the pipe: splice_sender.h).
      struct iovec iov[kMaxSlices];
      size_t count = 0;
      for (size_t i = slice; i < end && !out.slice_mapped(i); ++i) {
        std::string_view s = out.slice(i).substr(i == slice ? offset : 0);
        iov[count++] = {const_cast<char*>(s.data()), s.size()};
        wanted += s.size();
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = count;
      do {
        n = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
      if (n < 0) err = errno;
    } else {
      // A mapped slice: its pages into the pipe by reference, then into the
      // socket; the pipe is empty again before anything else is sent.
      std::string_view s = out.slice(slice).substr(offset);
      struct iovec iov {
        const_cast<char*>(s.data()), s.size()
      };
      ssize_t in_pipe;
      do {
        in_pipe = ::vmsplice(pipe_.write_fd, &iov, 1, SPLICE_F_NONBLOCK);
      } while (in_pipe < 0 && errno == EINTR);
      if (in_pipe <= 0) break;  // refused: the rest by copy
      wanted = static_cast<size_t>(in_pipe);
      do {
        n = ::splice(pipe_.read_fd, nullptr, fd, nullptr, wanted, SPLICE_F_NONBLOCK);
      } while (n < 0 && errno == EINTR);
      if (n < 0) err = errno;
      size_t left_in_pipe = wanted - (n > 0 ? static_cast<size_t>(n) : 0);
      if (left_in_pipe > 0) Discard(left_in_pipe);
    }
    if (n < 0) {
      if (err == EAGAIN || err == EWOULDBLOCK) {
        full = true;
        break;
      }
      if (sent > 0) break;  // the error comes back with the next send
      return -err;
    }
    sent += static_cast<size_t>(n);
    advance(static_cast<size_t>(n));
    if (static_cast<size_t>(n) < wanted) {
      full = true;
      break;
    }
  }
  if (socket_full != nullptr) *socket_full = full;
  if (sent > 0) process_bytes.fetch_add(sent, std::memory_order_relaxed);
  return static_cast<ssize_t>(sent);
}

void SpliceSender::Discard(size_t n) {
  while (n > 0) {
    ssize_t d = ::splice(pipe_.read_fd, nullptr, null_fd_, nullptr, n, SPLICE_F_NONBLOCK);
    if (d < 0 && errno == EINTR) continue;
    if (d <= 0) break;
    n -= static_cast<size_t>(d);
  }
  if (n == 0) return;
  // Bytes that cannot be drained would go out with the next send: the pipe
  // is replaced (without a new one, Send sends nothing from now on).
  ClosePipe(pipe_);
  if (!OpenPipe(kPipeBytes, &pipe_)) pipe_ = SplicePipe{};
}

}  // namespace capstan::net
