#include "store/lease.h"

#include <algorithm>

#include "store/errors.h"

namespace capstan::store {

Lessor::Lessor(const Clock* clock, int64_t min_ttl_seconds)
    : clock_(clock), min_ttl_(min_ttl_seconds) {}

absl::StatusOr<int64_t> Lessor::CheckGrant(int64_t id, int64_t ttl) const {
  if (ttl > kMaxLeaseTTL) return ErrLeaseTTLTooLarge();
  MutexLock lock(&mu_);
  if (leases_.contains(id)) return ErrLeaseExist();
  return std::max(ttl, min_ttl_);
}

void Lessor::Grant(int64_t id, int64_t ttl) {
  MutexLock lock(&mu_);
  Lease& l = leases_[id];
  l.ttl = ttl;
  l.deadline = clock_->Now() + std::chrono::seconds(ttl);
}

absl::StatusOr<std::vector<std::string>> Lessor::Keys(int64_t id) const {
  MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return ErrLeaseNotFound();
  return std::vector<std::string>(it->second.keys.begin(), it->second.keys.end());
}

void Lessor::Remove(int64_t id) {
  MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  for (const auto& k : it->second.keys) owner_.erase(k);
  leases_.erase(it);
}

void Lessor::Attach(int64_t id, const std::string& key) {
  MutexLock lock(&mu_);
  auto prev = owner_.find(key);
  if (prev != owner_.end()) {
    if (prev->second == id) return;
    auto old = leases_.find(prev->second);
    if (old != leases_.end()) old->second.keys.erase(key);
    owner_.erase(prev);
  }
  if (id == 0) return;
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  it->second.keys.insert(key);
  owner_[key] = id;
}

void Lessor::DetachKey(const std::string& key) {
  MutexLock lock(&mu_);
  auto prev = owner_.find(key);
  if (prev == owner_.end()) return;
  auto old = leases_.find(prev->second);
  if (old != leases_.end()) old->second.keys.erase(key);
  owner_.erase(prev);
}

bool Lessor::Exists(int64_t id) const {
  MutexLock lock(&mu_);
  return leases_.contains(id);
}

void Lessor::Restore(int64_t id, int64_t ttl) {
  MutexLock lock(&mu_);
  Lease& l = leases_[id];
  l.ttl = ttl;
  l.deadline = clock_->Now() + std::chrono::seconds(ttl);
}

absl::StatusOr<int64_t> Lessor::Renew(int64_t id) {
  MutexLock lock(&mu_);
  auto it = leases_.find(id);
  auto now = clock_->Now();
  if (it == leases_.end() || it->second.deadline <= now) return ErrLeaseNotFound();
  it->second.deadline = now + std::chrono::seconds(it->second.ttl);
  return it->second.ttl;
}

void Lessor::Promote(std::chrono::milliseconds extend) {
  MutexLock lock(&mu_);
  auto now = clock_->Now();
  for (auto& [id, l] : leases_) {
    l.deadline = now + std::chrono::seconds(l.ttl) + extend;
    l.revoke_requested = {};
  }
}

void Lessor::Clear() {
  MutexLock lock(&mu_);
  leases_.clear();
  owner_.clear();
}

absl::StatusOr<Lessor::Info> Lessor::TimeToLive(int64_t id) const {
  MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return ErrLeaseNotFound();
  Info info;
  auto left = it->second.deadline - clock_->Now();
  info.ttl_remaining =
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::seconds>(left).count());
  info.granted_ttl = it->second.ttl;
  info.keys.assign(it->second.keys.begin(), it->second.keys.end());
  return info;
}

std::vector<int64_t> Lessor::Leases() const {
  MutexLock lock(&mu_);
  std::vector<std::pair<std::chrono::steady_clock::time_point, int64_t>> v;
  for (const auto& [id, l] : leases_) v.emplace_back(l.deadline, id);
  std::sort(v.begin(), v.end());
  std::vector<int64_t> out;
  for (const auto& [d, id] : v) out.push_back(id);
  return out;
}

std::vector<int64_t> Lessor::TakeExpired(std::chrono::milliseconds retry) {
  MutexLock lock(&mu_);
  std::vector<int64_t> out;
  auto now = clock_->Now();
  for (auto& [id, l] : leases_) {
    if (l.deadline > now) continue;
    if (l.revoke_requested.time_since_epoch().count() != 0 && now - l.revoke_requested < retry) {
      continue;
    }
    l.revoke_requested = now;
    out.push_back(id);
  }
  return out;
}

size_t Lessor::size() const {
  MutexLock lock(&mu_);
  return leases_.size();
}

}  // namespace capstan::store
