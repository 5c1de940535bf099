// Snapshot files: what `capstan store snapshot save|status|restore` (and
// `etcdctl snapshot save`) read and write.
//
// A snapshot file is exactly the byte stream Maintenance.Snapshot sends: a
// tar archive (ustar, regular files with flat names, two zero blocks at the
// end) of a RocksDB checkpoint of the member's database, followed by the
// 32-byte SHA-256 of the archive. So its size is a multiple of 512 plus 32,
// which is also how etcdctl recognises a hashed snapshot.
//
// Restore turns one into the data directory of a member of a NEW cluster:
// the key-value history, leases, the compaction point and the alarms-free
// meta keys are kept; the identity (member and cluster IDs from the cluster
// token and --initial-cluster, as a founding member computes them), the
// membership (the initial cluster, all voters) and the applied index (the
// point the new log starts from) are written fresh. Each member of the new
// cluster restores the same file with its own --name and starts with an
// empty log whose first state is the snapshot, so they agree from the start.
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace capstan::store {

inline constexpr size_t kSnapshotHashBytes = 32;
// Largest file inside a snapshot archive restore accepts (a RocksDB SST or
// MANIFEST; the database itself is limited by --quota-backend-bytes).
inline constexpr uint64_t kMaxSnapshotMemberFileBytes = uint64_t{64} << 30;
// Most files in one archive (a checkpoint of a 8 GiB database has a few
// hundred).
inline constexpr size_t kMaxSnapshotArchiveFiles = 100000;

// Walks the tar archive in the first `archive_bytes` of `in`: for every
// regular file, `on_file(name, size)` returns the sink its content goes to
// (in chunks, in order). Names must be flat (a "./" prefix is accepted);
// directory entries and the end-of-archive blocks are skipped. Errors name
// the offset of the bad header.
using TarSink = std::function<absl::Status(std::string_view chunk)>;
absl::Status WalkSnapshotArchive(
    std::istream& in, uint64_t archive_bytes,
    const std::function<absl::StatusOr<TarSink>(const std::string& name, uint64_t size)>& on_file);

struct SnapshotHashCheck {
  uint64_t file_bytes = 0;
  uint64_t archive_bytes = 0;  // the tar part (file_bytes minus the hash when there is one)
  bool has_hash = false;
  bool hash_ok = false;
};
// Reads the whole file and checks its SHA-256 trailer. A file whose size is
// not a multiple of 512 plus 32 has no trailer (has_hash false).
absl::StatusOr<SnapshotHashCheck> CheckSnapshotHash(const std::string& path);

struct SnapshotSaveOptions {
  std::vector<std::string> endpoints;  // host:port or http://host:port; tried in order
  std::string path;
  std::chrono::milliseconds timeout{5 * 60 * 1000};  // the whole transfer
};
struct SnapshotSaveResult {
  std::string endpoint;
  uint64_t bytes = 0;
  int64_t revision = 0;
};
// Streams Maintenance.Snapshot into `path`.part, checks the trailing
// SHA-256, fsyncs, renames to `path` and fsyncs the directory: `path` is
// either absent or a complete, verified snapshot.
absl::StatusOr<SnapshotSaveResult> SaveSnapshot(const SnapshotSaveOptions& options);

struct SnapshotStatus {
  bool has_hash = false;
  bool hash_ok = false;
  uint32_t hash = 0;  // CRC-32C of every record, as Maintenance.Hash computes it
  int64_t revision = 0;
  int64_t compact_revision = 0;
  int64_t total_keys = 0;  // every record in the database (history, leases, meta)
  int64_t live_keys = 0;   // keys visible at `revision`
  int64_t leases = 0;
  uint64_t total_size = 0;  // bytes of the file (of the files, for a directory)
};
// `path` is a snapshot file, or (skip_hash_check) the kv directory of a
// stopped member.
absl::StatusOr<SnapshotStatus> ReadSnapshotStatus(const std::string& path, bool skip_hash_check);
std::string SnapshotStatusJson(const SnapshotStatus& s);
std::string SnapshotStatusTable(const SnapshotStatus& s);

struct SnapshotRestoreOptions {
  std::string path;  // snapshot file (or, with skip_hash_check, a stopped member's kv directory)
  std::string data_dir;
  std::string name = "default";
  std::string initial_cluster;  // name=peer-url,...; empty: this member alone
  std::vector<std::string> initial_advertise_peer_urls{"http://localhost:2380"};
  std::string initial_cluster_token = "etcd-cluster";
  bool skip_hash_check = false;
};
struct SnapshotRestoreResult {
  uint64_t member_id = 0;
  uint64_t cluster_id = 0;
  int64_t revision = 0;
  uint64_t applied_index = 0;
};
absl::StatusOr<SnapshotRestoreResult> RestoreSnapshot(const SnapshotRestoreOptions& options);

}  // namespace capstan::store
