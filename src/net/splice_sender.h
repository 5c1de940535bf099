// SpliceSender: a socket's output sent through a pipe so that large slices
// of mapped blocks (Buffer::MappedCopy: the HTTP cache's stored bodies)
// reach the socket without being copied.
//
// A send with sendmsg(2) copies every byte into the socket's buffers; for a
// 100 KiB cached body that copy is the largest single cost of a hit. Here
// the bytes before a mapped slice (the response's head, a few hundred
// bytes) are sent with sendmsg as usual, and the mapped slice is vmspliced
// into a pipe (the pipe references its pages) and spliced from there into
// the socket, whose buffers go on referencing the pages. That is safe only
// because a mapped block's pages are never written again nor reused while
// the kernel holds them (munmap frees them only when the last reference
// goes): it is why only mapped slices go this way. (Writing the head into
// the pipe too, so that one splice sends both, was measured and costs more
// per hit on loopback: docs/benchmarks/cache.md.)
//
// The pipe is empty again before anything else is sent: what the socket
// would not take is discarded from the pipe (splice to /dev/null, no copy)
// and stays in the caller's buffer; the engine sends it again, by this path,
// when the socket is writable (Socket::SendSpliced). So one pipe serves
// every socket of a loop, and a slow reader holds nothing here.
//
// splice(2) cannot be told MSG_NOSIGNAL, so this path is used only in a
// process that ignores SIGPIPE (capstan does: base/signals.h); elsewhere
// Create returns null and sockets send by copy.
//
// Thread-safety: one per loop; loop thread only.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "net/buffer.h"
#include "net/pipe_pool.h"

namespace capstan::net {

class SpliceSender {
 public:
  // Slices smaller than this go by copy: below it one sendmsg costs less
  // than the three system calls (sendmsg, vmsplice, splice) of this path.
  static constexpr size_t kMinSliceBytes = 64 * 1024;
  // The pipe's size asked for: what one round moves (fs.pipe-max-size
  // allows 1 MiB by default; a smaller grant only means more rounds).
  static constexpr size_t kPipeBytes = 1 << 20;

  // Null when the path cannot be used: SIGPIPE is not ignored, or no pipe
  // could be made.
  static std::unique_ptr<SpliceSender> Create();
  ~SpliceSender();
  SpliceSender(const SpliceSender&) = delete;
  SpliceSender& operator=(const SpliceSender&) = delete;

  // Whether `out` holds a slice for this path among the first slices a
  // sendmsg would take: mapped and at least kMinSliceBytes, or mapped and
  // first (the rest of a body the socket took only part of: it goes on as
  // it began, not by copy).
  static bool Wants(const Buffer& out);

  // Sends the bytes of `out` up to the end of its last such slice to the
  // nonblocking TCP socket `fd`, without consuming them from `out`. Returns
  // how many bytes the socket took (0 when it would take none now), or
  // -errno when the socket failed before taking any. The bytes after that
  // count are still the caller's to send. *socket_full says why it stopped
  // short: true when the socket would take no more now (wait until it is
  // writable, then call again), false when this path refused the rest
  // (send it by copy).
  ssize_t Send(int fd, const Buffer& out, bool* socket_full = nullptr);

  // The bytes every sender of the process sent (any thread; a server's
  // metrics page shows it).
  static uint64_t ProcessBytes();

 private:
  SpliceSender(SplicePipe pipe, int null_fd) : pipe_(pipe), null_fd_(null_fd) {}
  // Empties the pipe of `n` bytes that will not be sent; a pipe that cannot
  // be emptied is replaced.
  void Discard(size_t n);

  SplicePipe pipe_;
  int null_fd_;
};

}  // namespace capstan::net
