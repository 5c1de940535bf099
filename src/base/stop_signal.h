// StopSignal: lets a background thread sleep between rounds of work and wake
// at once when it is told to stop.
//
//   while (!stop.WaitFor(interval)) { ...one round... }   // thread
//   stop.Stop(); thread.join();                            // owner
//
// Thread-safety: every method from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace capstan {

class StopSignal {
 public:
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    cv_.notify_all();
  }
  bool stopped() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stopped_;
  }
  // Waits up to `timeout`; true when stopped (now or before).
  template <typename Rep, typename Period>
  bool WaitFor(std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return stopped_; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
};

}  // namespace capstan
