// Pipes for splice(2): the L4 proxy's relays move a connection's bytes
// socket → pipe → socket, and a Socket sends large mapped slices through a
// pipe (net/splice_sender.h). Both take pipes from here.
//
// Thread-safety: a PipePool belongs to one thread (a loop's).
#pragma once

#include <cstddef>
#include <vector>

namespace capstan::net {

// A pipe's two ends (O_NONBLOCK, O_CLOEXEC) and its capacity (what
// F_SETPIPE_SZ granted).
struct SplicePipe {
  int read_fd = -1;
  int write_fd = -1;
  size_t capacity = 0;
};

// A new pipe of (about) `bytes` (see PipePool::Get); false when none could
// be made (fd limit).
bool OpenPipe(size_t bytes, SplicePipe* pipe);
void ClosePipe(const SplicePipe& pipe);

// A loop's spare pipes: a relay takes two and gives them back empty, so a
// connection costs no pipe2/fcntl once the pool is warm. Holds at most
// `max_spare` pipes (each holds no memory while empty, but two fds).
class PipePool {
 public:
  explicit PipePool(size_t max_spare = 64) : max_spare_(max_spare) {}
  ~PipePool();
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // A pipe of (about) `bytes`: the kernel rounds up to pages and may grant
  // less (fs.pipe-max-size, or the user's pipe-user-pages-soft when many
  // pipes are large); `capacity` says what was granted. False when no pipe
  // could be made (fd limit).
  bool Get(size_t bytes, SplicePipe* pipe);
  // Back to the pool when `empty` and there is room; closed otherwise.
  void Put(SplicePipe pipe, bool empty);
  size_t spare() const { return spare_.size(); }

 private:
  size_t max_spare_;
  std::vector<SplicePipe> spare_;
};

}  // namespace capstan::net
