// Load generator and origins for bench/l4-vs-haproxy.sh (built by it with
// `cc -O2 -pthread`). Everything on 127.0.0.1.
//
//   l4_load sink PORT_FILE          origin: reads and discards; port written to PORT_FILE
//   l4_load echo PORT_FILE          origin: echoes
//   l4_load stream PORT SECONDS [WRITE_BYTES]
//                                   one connection sending WRITE_BYTES writes (default
//                                   256 KiB, at most 16 MiB) for SECONDS;
//                                   prints "bytes N seconds S"
//   l4_load cps PORT SECONDS CONC   CONC threads, each: connect, send 64 bytes, read
//                                   the 64-byte echo, close (RST: SO_LINGER 0, so the
//                                   generator's ports do not pile up in TIME_WAIT);
//                                   prints "connections N seconds S errors E"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr*)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void* serve(void* arg) {
  long v = (long)arg;
  int fd = (int)(v >> 1);
  int echo = (int)(v & 1);
  static __thread char buf[262144];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    if (!echo) continue;
    ssize_t off = 0;
    while (off < n) {
      ssize_t w = write(fd, buf + off, (size_t)(n - off));
      if (w <= 0) goto done;
      off += w;
    }
  }
done:
  close(fd);
  return NULL;
}

static int origin(const char* port_file, int echo) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(s, 4096) != 0) {
    perror("origin");
    return 1;
  }
  socklen_t len = sizeof(a);
  getsockname(s, (struct sockaddr*)&a, &len);
  FILE* f = fopen(port_file, "w");
  fprintf(f, "%d\n", ntohs(a.sin_port));
  fclose(f);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 1 << 20);
  for (;;) {
    int fd = accept(s, NULL, NULL);
    if (fd < 0) continue;
    pthread_t t;
    if (pthread_create(&t, &attr, serve, (void*)(((long)fd << 1) | echo)) != 0) close(fd);
  }
}

static int stream(int port, double seconds, size_t write_bytes) {
  if (write_bytes < 1 || write_bytes > (16u << 20)) return 2;
  int fd = connect_to(port);
  if (fd < 0) {
    perror("stream: connect");
    return 1;
  }
  char* buf = malloc(write_bytes);
  if (buf == NULL) return 1;
  memset(buf, 'x', write_bytes);
  double start = now_seconds(), end = start + seconds, t = start;
  unsigned long long bytes = 0;
  while (t < end) {
    for (int i = 0; i < 16; ++i) {
      ssize_t w = write(fd, buf, write_bytes);
      if (w <= 0) {
        perror("stream: write");
        return 1;
      }
      bytes += (unsigned long long)w;
    }
    t = now_seconds();
  }
  printf("bytes %llu seconds %.3f\n", bytes, t - start);
  close(fd);
  return 0;
}

struct cps_arg {
  int port;
  double end;
  unsigned long long done, errors;
};

static void* cps_worker(void* p) {
  struct cps_arg* a = p;
  char msg[64], back[64];
  memset(msg, 'p', sizeof(msg));
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  while (now_seconds() < a->end) {
    int fd = connect_to(a->port);
    if (fd < 0) {
      a->errors++;
      continue;
    }
    size_t got = 0;
    if (write(fd, msg, sizeof(msg)) == (ssize_t)sizeof(msg)) {
      ssize_t n;
      while (got < sizeof(back) && (n = read(fd, back + got, sizeof(back) - got)) > 0) {
        got += (size_t)n;
      }
    }
    if (got == sizeof(back)) {
      a->done++;
    } else {
      a->errors++;
    }
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
  }
  return NULL;
}

static int cps(int port, double seconds, int conc) {
  struct cps_arg args[256];
  pthread_t threads[256];
  if (conc < 1 || conc > 256) return 2;
  double start = now_seconds();
  for (int i = 0; i < conc; ++i) {
    args[i] = (struct cps_arg){.port = port, .end = start + seconds};
    pthread_create(&threads[i], NULL, cps_worker, &args[i]);
  }
  unsigned long long done = 0, errors = 0;
  for (int i = 0; i < conc; ++i) {
    pthread_join(threads[i], NULL);
    done += args[i].done;
    errors += args[i].errors;
  }
  printf("connections %llu seconds %.3f errors %llu\n", done, now_seconds() - start, errors);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 3 && strcmp(argv[1], "sink") == 0) return origin(argv[2], 0);
  if (argc >= 3 && strcmp(argv[1], "echo") == 0) return origin(argv[2], 1);
  if (argc >= 4 && strcmp(argv[1], "stream") == 0) {
    size_t write_bytes = argc >= 5 ? (size_t)atol(argv[4]) : 262144;
    return stream(atoi(argv[2]), atof(argv[3]), write_bytes);
  }
  if (argc >= 5 && strcmp(argv[1], "cps") == 0) {
    return cps(atoi(argv[2]), atof(argv[3]), atoi(argv[4]));
  }
  fprintf(stderr, "usage: see the top of l4_load.c\n");
  return 2;
}
