// Waiting for the signals that ask a server to stop.
#pragma once

#include <signal.h>

namespace capstan {

// Blocks SIGINT and SIGTERM in the calling thread and every thread it
// starts afterwards (call first thing in main), so WaitForTerminationSignal
// takes them; ignores SIGPIPE (a peer that went away is an error code).
inline void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

// Blocks until SIGINT or SIGTERM arrives and returns which. The caller must
// have blocked both signals in every thread (main does, before any thread
// starts), so they are taken here rather than by a default handler.
inline int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace capstan
