// Names the calling thread (at most 15 characters, the kernel's limit) so
// top -H, perf and /proc/PID/task show which of Capstan's threads does what.
#pragma once

#include <pthread.h>

#include <string>

namespace capstan {

inline void SetThreadName(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace capstan
