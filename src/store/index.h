// The in-memory MVCC index: for every key, the revisions at which it changed,
// grouped into generations (a generation runs from a create to a delete).
// Values live in the backend under their revision; the index answers "which
// revision of key K is visible at revision R" without touching disk, as
// etcd's treeIndex does.
//
// Thread-safety: none. Mvcc guards the index with its lock.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"

namespace capstan::store {

// A store revision: `main` is the revision of the request, `sub` orders the
// changes inside one txn.
struct Revision {
  int64_t main = 0;
  int64_t sub = 0;
  auto operator<=>(const Revision&) const = default;
};

// The version of a key visible at some revision.
struct IndexHit {
  Revision modified;  // the change that wrote this version (its backend record)
  int64_t create_main = 0;
  int64_t version = 0;  // 1 for the put that created the key
};

// A revision dropped by compaction, and whether its backend record is a tombstone.
struct DroppedRevision {
  Revision rev;
  bool tombstone = false;
};

class KeyIndex {
 public:
  // REQUIRES: rev is greater than every revision already recorded.
  void Put(Revision rev);
  // Put while rebuilding from the backend, with the record's own creation
  // revision and version (earlier history may be compacted away).
  void Restore(Revision rev, int64_t create_main, int64_t version);
  // Records a delete.
  void Tombstone(Revision rev);
  // Undoes the newest Put (tombstone=false) or Tombstone at `rev`, for a txn
  // that could not be written. Returns true when nothing is left.
  bool Undo(Revision rev, bool tombstone);
  // The version visible at revision `at`; false when the key did not exist then.
  bool Get(int64_t at, IndexHit* hit) const;
  // True when the key exists at the newest revision.
  bool live() const { return !generations_.empty() && !generations_.back().revs.empty(); }
  // Forgets every revision not needed to answer reads at revisions >= at.
  // Returns true when nothing is left (the key can leave the index).
  bool Compact(int64_t at, std::vector<DroppedRevision>* dropped);

 private:
  // Inline capacity of one: most keys have one generation holding one
  // revision (after compaction), and the index holds every key in memory, so
  // two heap blocks per key would be most of its size (1M keys: ~50 MB).
  struct Generation {
    int64_t ver = 0;  // puts in this generation, including the tombstone
    int64_t create_main = 0;
    absl::InlinedVector<Revision, 1> revs;  // a closed generation ends with its tombstone
  };
  absl::InlinedVector<Generation, 1> generations_;
};

class TreeIndex {
 public:
  void Put(std::string_view key, Revision rev);
  void Restore(std::string_view key, Revision rev, int64_t create_main, int64_t version);
  void Tombstone(std::string_view key, Revision rev);
  void Undo(std::string_view key, Revision rev, bool tombstone);
  bool Get(std::string_view key, int64_t at, IndexHit* hit) const;
  bool IsLive(std::string_view key) const;

  // Visits keys in [key, end) (end semantics as in etcd's RangeRequest: empty
  // means just `key`, "\0" means no upper bound) that exist at revision `at`,
  // in key order, until fn returns false.
  void Range(std::string_view key, std::string_view end, int64_t at,
             const std::function<bool(const std::string&, const IndexHit&)>& fn) const;

  // Keys live at the newest revision in [key, end), for deletes.
  std::vector<std::string> LiveKeys(std::string_view key, std::string_view end) const;

  void Compact(int64_t at, std::vector<DroppedRevision>* dropped);
  size_t key_count() const { return keys_.size(); }

 private:
  std::map<std::string, KeyIndex, std::less<>> keys_;
};

// Whether `end` (a RangeRequest.range_end) bounds a range, and how.
inline bool IsSingleKey(std::string_view end) { return end.empty(); }
inline bool IsUnbounded(std::string_view end) { return end.size() == 1 && end[0] == '\0'; }
// True when k lies in the range [key, end) with etcd's end semantics.
bool InRange(std::string_view k, std::string_view key, std::string_view end);

}  // namespace capstan::store
