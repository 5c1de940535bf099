#include "net/worker_pool.h"

#include <pthread.h>

#include <algorithm>

namespace capstan::net {

WorkerPool::WorkerPool(WorkerPoolOptions options) {
  int n = std::max(1, options.threads);
  for (int i = 0; i < n; ++i) {
    threads_.emplace_back([this] { WorkerMain(); });
    // Linux caps thread names at 15 characters.
    std::string name = (options.name + "-" + std::to_string(i)).substr(0, 15);
    pthread_setname_np(threads_.back().native_handle(), name.c_str());
  }
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

size_t WorkerPool::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

void WorkerPool::Submit(absl::AnyInvocable<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void WorkerPool::WorkerMain() {
  while (true) {
    absl::AnyInvocable<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace capstan::net
