// Time behind a small interface, so tests can drive it: nothing in the state
// machine reads the wall clock directly.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace capstan {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time, for deadlines and TTLs.
  virtual std::chrono::steady_clock::time_point Now() const = 0;
};

class RealClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::now();
  }
  static RealClock* Get() {
    static RealClock clock;
    return &clock;
  }
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(nanos_.load()));
  }
  void Advance(std::chrono::nanoseconds d) { nanos_.fetch_add(d.count()); }

 private:
  std::atomic<int64_t> nanos_{1'000'000'000};
};

}  // namespace capstan
