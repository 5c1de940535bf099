// `cache_disk_scan_bench DIR OBJECTS BYTES`: writes OBJECTS records of BYTES
// body bytes into DIR (which must not exist) through DiskStore, then times
// reopening it (the start-up scan that rebuilds the index), with the page
// cache warm, then with the files dropped from it (cold). The numbers
// back the scan's cost in docs/gateway.md ("Disk tier").
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "gateway/cache/disk_store.h"

namespace cache = capstan::gateway::cache;

namespace {

double ReopenMs(const std::string& dir, uint64_t* objects) {
  auto start = std::chrono::steady_clock::now();
  auto store = cache::DiskStore::Open({.dir = dir, .max_bytes = uint64_t{1} << 40});
  if (!store.ok() || !(*store)->WaitIdle(std::chrono::minutes(10))) std::exit(1);
  *objects = (*store)->stats().objects;
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: cache_disk_scan_bench DIR OBJECTS BYTES\n");
    return 2;
  }
  std::string dir = argv[1];
  if (std::filesystem::exists(dir)) {
    std::fprintf(stderr, "%s exists; give a new directory\n", dir.c_str());
    return 2;
  }
  long objects = std::atol(argv[2]);
  long bytes = std::atol(argv[3]);
  {
    auto store = cache::DiskStore::Open(
        {.dir = dir, .max_bytes = uint64_t{1} << 40, .max_pending_bytes = size_t{1} << 30});
    if (!store.ok()) return 1;
    std::string body(static_cast<size_t>(bytes), 'x');
    for (long i = 0; i < objects; ++i) {
      auto obj = std::make_shared<cache::StoredResponse>();
      obj->key = "bench.example.com/object/" + std::to_string(i);
      obj->status = 200;
      obj->fields.Add("content-type", "application/octet-stream");
      obj->fields.Add("cache-control", "max-age=3600");
      obj->fields.Add("etag", "\"" + std::to_string(i) + "\"");
      obj->body.Append(body);
      (*store)->Write(std::move(obj));
      if (i % 1000 == 999 && !(*store)->WaitIdle(std::chrono::minutes(10))) return 1;
    }
    if (!(*store)->WaitIdle(std::chrono::minutes(10))) return 1;
  }
  uint64_t found = 0;
  double warm = ReopenMs(dir, &found);
  std::printf("objects=%lu body_bytes=%ld warm_scan_ms=%.1f (%.2f us/file)\n",
              static_cast<unsigned long>(found), bytes, warm, warm * 1000 / found);
  // Cold: these files (only these: the machine is shared) out of the page
  // cache, so each scan read goes to the disk.
  sync();
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  double cold = ReopenMs(dir, &found);
  std::printf("cold_scan_ms=%.1f (%.2f us/file, the files dropped from the page cache)\n", cold,
              cold * 1000 / found);
  std::filesystem::remove_all(dir);
  return 0;
}
