#include "net/pipe_pool.h"

#include <fcntl.h>
#include <unistd.h>

namespace capstan::net {

namespace {

// Refused (EPERM past fs.pipe-max-size or the user's soft limit of pipe
// pages): the pipe keeps the size it has.
void ResizePipe(size_t bytes, SplicePipe* pipe) {
  ::fcntl(pipe->write_fd, F_SETPIPE_SZ, static_cast<int>(bytes));
  int granted = ::fcntl(pipe->write_fd, F_GETPIPE_SZ);
  pipe->capacity = granted > 0 ? static_cast<size_t>(granted) : 4096;
}

}  // namespace

bool OpenPipe(size_t bytes, SplicePipe* pipe) {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return false;
  *pipe = SplicePipe{fds[0], fds[1], 0};
  ResizePipe(bytes, pipe);
  return true;
}

void ClosePipe(const SplicePipe& pipe) {
  if (pipe.read_fd >= 0) ::close(pipe.read_fd);
  if (pipe.write_fd >= 0) ::close(pipe.write_fd);
}

PipePool::~PipePool() {
  for (const SplicePipe& p : spare_) ClosePipe(p);
}

bool PipePool::Get(size_t bytes, SplicePipe* pipe) {
  if (spare_.empty()) return OpenPipe(bytes, pipe);
  *pipe = spare_.back();
  spare_.pop_back();
  if (pipe->capacity != bytes) ResizePipe(bytes, pipe);
  return true;
}

void PipePool::Put(SplicePipe pipe, bool empty) {
  if (pipe.read_fd < 0) return;
  if (empty && spare_.size() < max_spare_) {
    spare_.push_back(pipe);
  } else {
    ClosePipe(pipe);
  }
}

}  // namespace capstan::net
