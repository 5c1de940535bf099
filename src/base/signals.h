// Waiting for the signals that ask a server to stop.
#pragma once

#include <signal.h>

namespace capstan {

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
