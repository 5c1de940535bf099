#include "mesh/retry_budget.h"

namespace capstan::mesh {

RetryBudget::Bucket& RetryBudget::Current() {
  int64_t second =
      std::chrono::duration_cast<std::chrono::seconds>(clock_->Now().time_since_epoch()).count();
  int64_t oldest = second - options_.window.count();
  while (!buckets_.empty() && buckets_.front().second <= oldest) buckets_.pop_front();
  if (buckets_.empty() || buckets_.back().second != second) buckets_.push_back({second, 0, 0});
  return buckets_.back();
}

void RetryBudget::RecordCall() { Current().calls++; }

bool RetryBudget::TryRetry() {
  Bucket& now = Current();
  int64_t calls = 0, retries = 0;
  for (const Bucket& b : buckets_) {
    calls += b.calls;
    retries += b.retries;
  }
  double allowed = options_.ratio * static_cast<double>(calls) +
                   options_.min_retries_per_second * static_cast<double>(options_.window.count());
  if (static_cast<double>(retries + 1) > allowed) return false;
  now.retries++;
  return true;
}

int64_t RetryBudget::calls_in_window() {
  Current();
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += b.calls;
  return n;
}

int64_t RetryBudget::retries_in_window() {
  Current();
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += b.retries;
  return n;
}

}  // namespace capstan::mesh
