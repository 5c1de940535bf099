#include "store/index.h"

#include <algorithm>
#include <cstddef>

namespace capstan::store {

void KeyIndex::Put(Revision rev) {
  if (generations_.empty()) generations_.emplace_back();
  Generation& g = generations_.back();
  if (g.revs.empty()) g.create_main = rev.main;
  g.revs.push_back(rev);
  ++g.ver;
}

void KeyIndex::Restore(Revision rev, int64_t create_main, int64_t version) {
  if (generations_.empty()) generations_.emplace_back();
  Generation& g = generations_.back();
  if (g.revs.empty()) {
    // History before `rev` may have been compacted away: take creation and
    // version from the stored record rather than from what is left.
    g.create_main = create_main;
    g.ver = version - 1;
  }
  g.revs.push_back(rev);
  ++g.ver;
}

void KeyIndex::Tombstone(Revision rev) {
  Put(rev);
  generations_.emplace_back();
}

bool KeyIndex::Undo(Revision rev, bool tombstone) {
  if (tombstone && !generations_.empty() && generations_.back().revs.empty()) {
    generations_.pop_back();  // the empty generation the tombstone opened
  }
  if (generations_.empty()) return true;
  Generation& g = generations_.back();
  if (!g.revs.empty() && g.revs.back() == rev) {
    g.revs.pop_back();
    --g.ver;
  }
  return generations_.size() == 1 && generations_[0].revs.empty();
}

bool KeyIndex::Get(int64_t at, IndexHit* hit) const {
  for (size_t i = generations_.size(); i-- > 0;) {
    const Generation& g = generations_[i];
    if (g.revs.empty()) continue;
    bool closed = i + 1 < generations_.size();
    if (closed && g.revs.back().main <= at) return false;  // deleted by then
    if (g.revs.front().main > at) continue;                // created after `at`
    // Last revision with main <= at.
    auto it = std::upper_bound(g.revs.begin(), g.revs.end(), at,
                               [](int64_t v, const Revision& r) { return v < r.main; });
    size_t n = static_cast<size_t>(it - g.revs.begin()) - 1;
    hit->modified = g.revs[n];
    hit->create_main = g.create_main;
    hit->version = g.ver - static_cast<int64_t>(g.revs.size() - n - 1);
    return true;
  }
  return false;
}

bool KeyIndex::Compact(int64_t at, std::vector<DroppedRevision>* dropped) {
  // The first generation that is still open at `at` (its tombstone is later),
  // or the last one.
  // A tombstone at exactly `at` is kept: a watcher may resume from `at` and
  // must still see that delete.
  size_t gi = 0;
  while (gi + 1 < generations_.size() && generations_[gi].revs.back().main < at) {
    for (size_t k = 0; k < generations_[gi].revs.size(); ++k) {
      dropped->push_back({generations_[gi].revs[k], k + 1 == generations_[gi].revs.size()});
    }
    ++gi;
  }
  Generation& g = generations_[gi];
  if (!g.revs.empty()) {
    // Keep the newest revision <= at (the value visible at `at`) and all later ones.
    auto it = std::upper_bound(g.revs.begin(), g.revs.end(), at,
                               [](int64_t v, const Revision& r) { return v < r.main; });
    if (it != g.revs.begin()) {
      auto keep_from = it - 1;
      for (auto d = g.revs.begin(); d != keep_from; ++d) dropped->push_back({*d, false});
      g.revs.erase(g.revs.begin(), keep_from);
    }
  }
  generations_.erase(generations_.begin(), generations_.begin() + static_cast<ptrdiff_t>(gi));
  return generations_.size() == 1 && generations_[0].revs.empty();
}

bool InRange(std::string_view k, std::string_view key, std::string_view end) {
  if (IsSingleKey(end)) return k == key;
  if (k < key) return false;
  return IsUnbounded(end) || k < end;
}

void TreeIndex::Put(std::string_view key, Revision rev) {
  auto it = keys_.find(key);
  if (it == keys_.end()) it = keys_.emplace(std::string(key), KeyIndex()).first;
  it->second.Put(rev);
}

void TreeIndex::Restore(std::string_view key, Revision rev, int64_t create_main, int64_t version) {
  auto it = keys_.find(key);
  if (it == keys_.end()) it = keys_.emplace(std::string(key), KeyIndex()).first;
  it->second.Restore(rev, create_main, version);
}

void TreeIndex::Tombstone(std::string_view key, Revision rev) {
  auto it = keys_.find(key);
  if (it == keys_.end()) it = keys_.emplace(std::string(key), KeyIndex()).first;
  it->second.Tombstone(rev);
}

void TreeIndex::Undo(std::string_view key, Revision rev, bool tombstone) {
  auto it = keys_.find(key);
  if (it != keys_.end() && it->second.Undo(rev, tombstone)) keys_.erase(it);
}

bool TreeIndex::Get(std::string_view key, int64_t at, IndexHit* hit) const {
  auto it = keys_.find(key);
  return it != keys_.end() && it->second.Get(at, hit);
}

bool TreeIndex::IsLive(std::string_view key) const {
  auto it = keys_.find(key);
  return it != keys_.end() && it->second.live();
}

void TreeIndex::Range(std::string_view key, std::string_view end, int64_t at,
                      const std::function<bool(const std::string&, const IndexHit&)>& fn) const {
  IndexHit hit;
  if (IsSingleKey(end)) {
    auto it = keys_.find(key);
    if (it != keys_.end() && it->second.Get(at, &hit)) fn(it->first, hit);
    return;
  }
  if (!IsUnbounded(end) && end <= key) return;
  for (auto it = keys_.lower_bound(key); it != keys_.end(); ++it) {
    if (!IsUnbounded(end) && std::string_view(it->first) >= end) break;
    if (it->second.Get(at, &hit) && !fn(it->first, hit)) break;
  }
}

std::vector<std::string> TreeIndex::LiveKeys(std::string_view key, std::string_view end) const {
  std::vector<std::string> out;
  if (IsSingleKey(end)) {
    if (IsLive(key)) out.emplace_back(key);
    return out;
  }
  if (!IsUnbounded(end) && end <= key) return out;
  for (auto it = keys_.lower_bound(key); it != keys_.end(); ++it) {
    if (!IsUnbounded(end) && std::string_view(it->first) >= end) break;
    if (it->second.live()) out.push_back(it->first);
  }
  return out;
}

void TreeIndex::Compact(int64_t at, std::vector<DroppedRevision>* dropped) {
  for (auto it = keys_.begin(); it != keys_.end();) {
    if (it->second.Compact(at, dropped)) {
      it = keys_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace capstan::store
