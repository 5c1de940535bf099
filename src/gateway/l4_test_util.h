// Loopback TCP helpers shared by the L4 relay and splice unit tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <random>
#include <string>

namespace capstan::gateway::l4_test {

// Two connected loopback TCP sockets: {the test's end (blocking, every
// call bounded by 10 s), the proxy's end (nonblocking)}.
struct TcpPair {
  int app = -1;
  int proxy = -1;
};

inline TcpPair MakePair() {
  TcpPair p;
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(listener, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(listener);
    return p;
  }
  p.app = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(p.app, reinterpret_cast<sockaddr*>(&a), len) != 0) {
    close(listener);
    return p;
  }
  p.proxy = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  close(listener);
  timeval tv{10, 0};
  setsockopt(p.app, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(p.app, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return p;
}

inline std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

inline bool SendAll(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace capstan::gateway::l4_test
