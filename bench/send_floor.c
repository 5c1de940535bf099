// The floor under bench/cache-vs-nginx-varnish.sh: about the least a server
// on this kernel can spend to answer a keep-alive GET for a file it holds in
// memory. Built by the script with `cc -O2`; one thread, level-triggered
// epoll, no parsing beyond finding the request's end and its path, no date,
// no logging, no cache lookup. Per request: one read, the response head with
// one send, the body with one sendfile from a memfd (nginx's path: sendfile
// from tmpfs) or, with `splice`, one vmsplice of a private mapping into a
// pipe and one splice from it (capstan's path, net/splice_sender.h). A body
// under 64 KiB goes with its head in one send, as capstan sends it (below
// that size a copy costs less than the splice's extra system calls).
//
//   send_floor sendfile|splice PORT DIR    serves every regular file of DIR
//                                          as /NAME on 127.0.0.1:PORT
//
// Whatever a cache does on top of this (parsing, lookup, headers, events) is
// what it can save; the sending calls are the same for every server, and
// only receiving the request (here read + epoll_wait) could cost less. Requests
// for unknown paths, bad requests and requests of over 4 KiB get the
// connection closed.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FILES 16
#define MAX_FDS 65536
#define REQUEST_MAX 4096
#define SPLICE_MIN (64 * 1024)  // net::SpliceSender::kMinSliceBytes

struct file {
  char name[64];
  int memfd;
  char* mapped;  // for splice: a private copy, never written after load
  size_t size;
  char* head;  // the response head, and the body too when it is small
  size_t head_size;
  size_t body_size;  // what goes by sendfile or splice after the head
};

struct conn {
  char in[REQUEST_MAX];
  size_t in_size;
  struct file* sending;  // a response in progress, or NULL
  size_t head_sent, body_sent;
};

static struct file files[MAX_FILES];
static int file_count;
static struct conn* conns[MAX_FDS];
static int use_splice;
static int pipe_fds[2];
static int null_fd;

static void die(const char* what) {
  perror(what);
  exit(1);
}

static void load_files(const char* dir) {
  DIR* d = opendir(dir);
  if (!d) die(dir);
  struct dirent* e;
  while ((e = readdir(d)) && file_count < MAX_FILES) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || strlen(e->d_name) >= 64) continue;
    struct file* f = &files[file_count++];
    snprintf(f->name, sizeof f->name, "%s", e->d_name);
    f->size = (size_t)st.st_size;
    f->memfd = memfd_create(e->d_name, MFD_CLOEXEC);
    f->mapped = mmap(NULL, f->size ? f->size : 1, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f->memfd < 0 || f->mapped == MAP_FAILED) die("memfd/mmap");
    int in = open(path, O_RDONLY);
    if (in < 0 || read(in, f->mapped, f->size) != (ssize_t)f->size) die(path);
    close(in);
    if (write(f->memfd, f->mapped, f->size) != (ssize_t)f->size) die("write memfd");
    // About the head nginx sends for a cached file (server, date, type,
    // length, validators, Cache-Control, the cache's status).
    f->body_size = f->size >= SPLICE_MIN ? f->size : 0;
    f->head = malloc(512 + f->size - f->body_size);
    if (!f->head) die("malloc");
    f->head_size = (size_t)snprintf(
        f->head, 512,
        "HTTP/1.1 200 OK\r\nServer: send_floor\r\nDate: Tue, 08 Dec 2026 00:00:00 GMT\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n"
        "Last-Modified: Tue, 08 Dec 2026 00:00:00 GMT\r\nETag: \"floor-%zu\"\r\n"
        "Cache-Control: max-age=3600\r\nX-Served-By: send_floor\r\nAccept-Ranges: bytes\r\n\r\n",
        f->size, f->size);
    memcpy(f->head + f->head_size, f->mapped, f->size - f->body_size);
    f->head_size += f->size - f->body_size;
  }
  closedir(d);
}

static void close_conn(int epfd, int fd) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  free(conns[fd]);
  conns[fd] = NULL;
}

// Sends what is left of the response; 1 when done, 0 when the socket is
// full, -1 on error.
static int send_response(int fd, struct conn* c) {
  struct file* f = c->sending;
  while (c->head_sent < f->head_size) {
    ssize_t n =
        send(fd, f->head + c->head_sent, f->head_size - c->head_sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->head_sent += (size_t)n;
  }
  while (c->body_sent < f->body_size) {
    ssize_t n;
    if (use_splice) {
      struct iovec iov = {f->mapped + c->body_sent, f->body_size - c->body_sent};
      ssize_t in_pipe = vmsplice(pipe_fds[1], &iov, 1, SPLICE_F_NONBLOCK);
      if (in_pipe <= 0) return -1;
      n = splice(pipe_fds[0], NULL, fd, NULL, (size_t)in_pipe, SPLICE_F_NONBLOCK);
      ssize_t left = in_pipe - (n > 0 ? n : 0);
      while (left > 0) {  // the socket took less: empty the pipe
        ssize_t d = splice(pipe_fds[0], NULL, null_fd, NULL, (size_t)left, 0);
        if (d <= 0) die("splice to /dev/null");
        left -= d;
      }
    } else {
      off_t offset = (off_t)c->body_sent;
      n = sendfile(fd, f->memfd, &offset, f->body_size - c->body_sent);
    }
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->body_sent += (size_t)n;
  }
  c->sending = NULL;
  return 1;
}

// Answers the requests read so far; -1 to close the connection.
static int serve(int epfd, int fd, struct conn* c) {
  for (;;) {
    if (c->sending) {
      int r = send_response(fd, c);
      if (r < 0) return -1;
      if (r == 0) {
        struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
        return 0;
      }
    }
    char* end = memmem(c->in, c->in_size, "\r\n\r\n", 4);
    if (!end) return c->in_size == REQUEST_MAX ? -1 : 0;
    if (c->in_size < 5 || memcmp(c->in, "GET /", 5) != 0) return -1;
    char* name = c->in + 5;
    char* space = memchr(name, ' ', (size_t)(end - name));
    if (!space) return -1;
    for (int i = 0; i < file_count && !c->sending; ++i) {
      if (strlen(files[i].name) == (size_t)(space - name) &&
          memcmp(files[i].name, name, (size_t)(space - name)) == 0) {
        c->sending = &files[i];
      }
    }
    if (!c->sending) return -1;
    c->head_sent = c->body_sent = 0;
    size_t used = (size_t)(end + 4 - c->in);
    memmove(c->in, c->in + used, c->in_size - used);
    c->in_size -= used;
  }
}

int main(int argc, char** argv) {
  if (argc != 4 || (strcmp(argv[1], "sendfile") != 0 && strcmp(argv[1], "splice") != 0)) {
    fprintf(stderr, "usage: send_floor sendfile|splice PORT DIR\n");
    return 2;
  }
  use_splice = strcmp(argv[1], "splice") == 0;
  signal(SIGPIPE, SIG_IGN);
  load_files(argv[3]);
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) die("pipe2");
  fcntl(pipe_fds[1], F_SETPIPE_SZ, 1 << 20);
  null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(listener, 1024) != 0)
    die("listen");
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
  epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);

  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(epfd, events, 256, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int cfd;
        while ((cfd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          if (cfd >= MAX_FDS) {
            close(cfd);
            continue;
          }
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[cfd] = calloc(1, sizeof(struct conn));
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
          epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev);
        }
        continue;
      }
      struct conn* c = conns[fd];
      if (!c) continue;
      if (events[i].events & EPOLLOUT) {
        struct epoll_event cev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &cev);
      } else {
        ssize_t got = read(fd, c->in + c->in_size, REQUEST_MAX - c->in_size);
        if (got <= 0) {
          if (got < 0 && errno == EAGAIN) continue;
          close_conn(epfd, fd);
          continue;
        }
        c->in_size += (size_t)got;
      }
      if (serve(epfd, fd, c) < 0) close_conn(epfd, fd);
    }
  }
}
