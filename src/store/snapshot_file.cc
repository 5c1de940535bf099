#include "store/snapshot_file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "base/status.h"
#include "capstan/store/internal.pb.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "net/address.h"
#include "rocksdb/db.h"
#include "store/backend.h"
#include "store/store.h"

namespace capstan::store {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Parses a NUL- or space-terminated octal field of a tar header.
bool ParseOctal(std::string_view field, uint64_t* out) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < field.size() && field[i] == ' ') ++i;
  size_t digits = 0;
  for (; i < field.size() && field[i] >= '0' && field[i] <= '7'; ++i, ++digits) {
    if (v > (UINT64_MAX >> 3)) return false;
    v = (v << 3) | static_cast<uint64_t>(field[i] - '0');
  }
  for (; i < field.size(); ++i) {
    if (field[i] != '\0' && field[i] != ' ') return false;
  }
  if (digits == 0) return false;
  *out = v;
  return true;
}

class Sha256 {
 public:
  Sha256() : md_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(md_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(md_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data) { EVP_DigestUpdate(md_, data.data(), data.size()); }
  std::string Final() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(md_, digest, &len);
    return std::string(reinterpret_cast<char*>(digest), len);
  }

 private:
  EVP_MD_CTX* md_;
};

absl::Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("cannot fsync", path);
  return absl::OkStatus();
}

std::string ParentDir(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// Removes a directory tree when it goes out of scope (unless released).
struct DirCleanup {
  std::string dir;
  ~DirCleanup() {
    if (dir.empty()) return;
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// Extracts the archive part of the snapshot file `path` into `dir`.
absl::Status ExtractArchive(const std::string& path, uint64_t archive_bytes,
                            const std::string& dir) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError("cannot open snapshot", path);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  std::shared_ptr<std::ofstream> out;
  absl::Status st = WalkSnapshotArchive(
      in, archive_bytes, [&](const std::string& name, uint64_t) -> absl::StatusOr<TarSink> {
        std::string target = dir + "/" + name;
        if (fs::exists(target)) {
          return absl::DataLossError(
              absl::StrCat("snapshot ", path, ": the archive holds ", name, " twice"));
        }
        out = std::make_shared<std::ofstream>(target, std::ios::binary | std::ios::trunc);
        if (!*out) return ErrnoError("cannot create", target);
        return TarSink([out, target](std::string_view chunk) -> absl::Status {
          out->write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
          if (!*out) return ErrnoError("cannot write", target);
          return absl::OkStatus();
        });
      });
  if (out) out->close();
  if (!st.ok()) return absl::DataLossError(absl::StrCat("snapshot ", path, ": ", st.message()));
  return absl::OkStatus();
}

// Opens the database of a snapshot read-only: the file is checked and
// extracted into `scratch`, or `path` is used as it is when it is a
// directory (a stopped member's member/kv, with skip_hash_check).
absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenSnapshotDb(const std::string& path,
                                                            bool skip_hash_check,
                                                            const std::string& scratch,
                                                            SnapshotHashCheck* check) {
  std::string db_dir = path;
  if (fs::is_directory(path)) {
    if (!skip_hash_check) {
      return absl::InvalidArgumentError(
          absl::StrCat(path,
                       " is a directory, not a snapshot file; to restore from a stopped member's "
                       "database directory (DATA_DIR/member/kv), add --skip-hash-check"));
    }
  } else {
    ASSIGN_OR_RETURN(*check, CheckSnapshotHash(path));
    if (!check->has_hash && !skip_hash_check) {
      return absl::DataLossError(absl::StrCat(
          "snapshot ", path, " has no SHA-256 trailer (", check->file_bytes,
          " bytes is not a multiple of 512 plus 32): it is truncated or not a snapshot; "
          "use --skip-hash-check only for an archive made without a hash"));
    }
    if (check->has_hash && !check->hash_ok && !skip_hash_check) {
      return absl::DataLossError(
          absl::StrCat("snapshot ", path,
                       ": SHA-256 mismatch, the file is corrupt (or truncated at a block "
                       "boundary); refusing to use it"));
    }
    db_dir = scratch + "/checkpoint";
    RETURN_IF_ERROR(ExtractArchive(path, check->archive_bytes, db_dir));
  }
  rocksdb::Options opts;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(opts, db_dir, &raw);
  if (!s.ok()) {
    return absl::DataLossError(
        absl::StrCat("snapshot ", path, ": its database does not open: ", s.ToString()));
  }
  return std::unique_ptr<rocksdb::DB>(raw);
}

bool IsMemberSpecificMeta(std::string_view key) {
  for (const char* name :
       {kMetaIdentity, kMetaRaftConf, kMetaJoinMembers, kMetaAppliedIndex, kMetaAlarms}) {
    if (key == MetaKey(name)) return true;
  }
  return key.starts_with(MetaKey(kMetaMemberPrefix));
}

}  // namespace

absl::Status WalkSnapshotArchive(
    std::istream& in, uint64_t archive_bytes,
    const std::function<absl::StatusOr<TarSink>(const std::string& name, uint64_t size)>& on_file) {
  uint64_t offset = 0;
  size_t files = 0;
  std::string block(512, '\0');
  std::string chunk;
  bool ended = false;
  while (offset < archive_bytes && !ended) {
    if (archive_bytes - offset < 512) {
      return absl::DataLossError(absl::StrCat("archive ends inside a header at offset ", offset));
    }
    in.read(block.data(), 512);
    if (in.gcount() != 512) {
      return absl::DataLossError(absl::StrCat("short read of the header at offset ", offset));
    }
    uint64_t header_at = offset;
    offset += 512;
    if (block.find_first_not_of('\0') == std::string::npos) {
      ended = true;  // the first of the two end-of-archive blocks
      break;
    }
    uint64_t checksum = 0, size = 0;
    std::string_view b(block);
    if (!ParseOctal(b.substr(148, 8), &checksum) || !ParseOctal(b.substr(124, 12), &size)) {
      return absl::DataLossError(absl::StrCat("bad tar header at offset ", header_at));
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < 512; ++i) {
      sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(block[i]);
    }
    if (sum != checksum) {
      return absl::DataLossError(
          absl::StrCat("tar header checksum mismatch at offset ", header_at));
    }
    uint64_t padded = (size + 511) / 512 * 512;
    if (padded > archive_bytes - offset) {
      return absl::DataLossError(absl::StrCat("the entry at offset ", header_at, " claims ", size,
                                              " bytes, past the end of the archive"));
    }
    std::string name(b.substr(0, 100).substr(0, b.substr(0, 100).find('\0')));
    if (name.starts_with("./")) name = name.substr(2);
    char type = block[156];
    bool is_dir = type == '5' || (!name.empty() && name.back() == '/');
    if (is_dir || name.empty()) {
      if (size != 0 && is_dir) {
        return absl::DataLossError(absl::StrCat("directory entry with data at offset ", header_at));
      }
      if (name.empty() && !is_dir) {
        return absl::DataLossError(absl::StrCat("tar entry without a name at offset ", header_at));
      }
    } else {
      if (type != '0' && type != '\0') {
        return absl::DataLossError(absl::StrCat("tar entry ", absl::CEscape(name), " at offset ",
                                                header_at, " is not a regular file (type '",
                                                absl::CEscape(std::string(1, type)), "')"));
      }
      if (name.find('/') != std::string::npos || name == "." || name == "..") {
        return absl::DataLossError(absl::StrCat("tar entry ", absl::CEscape(name), " at offset ",
                                                header_at, " is not a plain file name"));
      }
      if (size > kMaxSnapshotMemberFileBytes) {
        return absl::DataLossError(absl::StrCat("tar entry ", name, " is ", size,
                                                " bytes, more than the limit of ",
                                                kMaxSnapshotMemberFileBytes));
      }
      if (++files > kMaxSnapshotArchiveFiles) {
        return absl::DataLossError(
            absl::StrCat("more than ", kMaxSnapshotArchiveFiles, " files in the archive"));
      }
      ASSIGN_OR_RETURN(TarSink sink, on_file(name, size));
      uint64_t left = size;
      while (left > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(left, 1 << 20));
        chunk.resize(n);
        in.read(chunk.data(), static_cast<std::streamsize>(n));
        if (static_cast<size_t>(in.gcount()) != n) {
          return absl::DataLossError(absl::StrCat("short read inside ", name));
        }
        RETURN_IF_ERROR(sink(chunk));
        left -= n;
      }
    }
    if (padded > 0) {
      in.ignore(static_cast<std::streamsize>(padded - size));
      in.seekg(0, std::ios::cur);
    }
    offset += padded;
  }
  if (!ended) return absl::DataLossError("the archive has no end-of-archive block");
  return absl::OkStatus();
}

absl::StatusOr<SnapshotHashCheck> CheckSnapshotHash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError("cannot open snapshot", path);
  SnapshotHashCheck check;
  std::error_code ec;
  check.file_bytes = fs::file_size(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", ec.message()));
  check.has_hash =
      check.file_bytes >= 1024 + kSnapshotHashBytes && check.file_bytes % 512 == kSnapshotHashBytes;
  check.archive_bytes = check.has_hash ? check.file_bytes - kSnapshotHashBytes : check.file_bytes;
  if (!check.has_hash) return check;
  Sha256 sha;
  std::string buf(1 << 20, '\0');
  uint64_t left = check.archive_bytes;
  while (left > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
    in.read(buf.data(), static_cast<std::streamsize>(n));
    if (static_cast<size_t>(in.gcount()) != n) return ErrnoError("short read of", path);
    sha.Update(std::string_view(buf.data(), n));
    left -= n;
  }
  std::string trailer(kSnapshotHashBytes, '\0');
  in.read(trailer.data(), kSnapshotHashBytes);
  check.hash_ok = in.gcount() == kSnapshotHashBytes && sha.Final() == trailer;
  return check;
}

absl::StatusOr<SnapshotSaveResult> SaveSnapshot(const SnapshotSaveOptions& options) {
  if (options.endpoints.empty())
    return absl::InvalidArgumentError("--endpoints: give at least one");
  if (options.path.empty()) return absl::InvalidArgumentError("snapshot save: give a file name");
  std::string part = options.path + ".part";
  std::string errors;
  for (const std::string& endpoint : options.endpoints) {
    auto stub = etcdserverpb::Maintenance::NewStub(
        grpc::CreateChannel(net::GrpcTarget(endpoint), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + options.timeout);
    auto reader = stub->Snapshot(&ctx, etcdserverpb::SnapshotRequest());
    int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoError("cannot create", part);
    SnapshotSaveResult result;
    result.endpoint = endpoint;
    Sha256 sha;
    std::string tail;  // the last 32 bytes seen: the hash, once the stream ends
    absl::Status failed;
    etcdserverpb::SnapshotResponse resp;
    while (failed.ok() && reader->Read(&resp)) {
      if (resp.has_header() && result.revision == 0) result.revision = resp.header().revision();
      const std::string& blob = resp.blob();
      result.bytes += blob.size();
      tail += blob;
      if (tail.size() > kSnapshotHashBytes) {
        size_t hashable = tail.size() - kSnapshotHashBytes;
        sha.Update(std::string_view(tail.data(), hashable));
        tail.erase(0, hashable);
      }
      size_t written = 0;
      while (written < blob.size()) {
        ssize_t n = ::write(fd, blob.data() + written, blob.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          failed = ErrnoError("cannot write", part);
          break;
        }
        written += static_cast<size_t>(n);
      }
    }
    if (!failed.ok()) ctx.TryCancel();
    grpc::Status rpc = reader->Finish();
    if (failed.ok() && !rpc.ok()) {
      failed = absl::UnavailableError(absl::StrCat(endpoint, ": ", rpc.error_message()));
    }
    if (failed.ok() &&
        (result.bytes < 1024 + kSnapshotHashBytes || result.bytes % 512 != kSnapshotHashBytes)) {
      failed = absl::DataLossError(absl::StrCat(endpoint, ": the snapshot stream (", result.bytes,
                                                " bytes) has no SHA-256 trailer"));
    }
    if (failed.ok() && sha.Final() != tail) {
      failed = absl::DataLossError(
          absl::StrCat(endpoint, ": the snapshot's SHA-256 does not match its content"));
    }
    if (failed.ok() && ::fsync(fd) != 0) failed = ErrnoError("cannot fsync", part);
    ::close(fd);
    if (failed.ok()) {
      if (::rename(part.c_str(), options.path.c_str()) != 0) {
        failed = ErrnoError("cannot rename " + part + " to", options.path);
      } else {
        RETURN_IF_ERROR(FsyncPath(ParentDir(options.path), O_RDONLY | O_DIRECTORY));
        return result;
      }
    }
    ::unlink(part.c_str());
    if (absl::IsDataLoss(failed) || absl::IsInternal(failed)) return failed;
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", failed.message());
  }
  return absl::UnavailableError(absl::StrCat("snapshot save failed: ", errors));
}

absl::StatusOr<SnapshotStatus> ReadSnapshotStatus(const std::string& path, bool skip_hash_check) {
  SnapshotStatus status;
  DirCleanup scratch{absl::StrCat(path, ".status-", ::getpid())};
  SnapshotHashCheck check;
  ASSIGN_OR_RETURN(auto db, OpenSnapshotDb(path, skip_hash_check, scratch.dir, &check));
  status.has_hash = check.has_hash;
  status.hash_ok = check.hash_ok;
  status.total_size = check.file_bytes;
  if (fs::is_directory(path)) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(path, ec)) {
      if (e.is_regular_file()) status.total_size += e.file_size();
    }
  }
  int64_t live = 0;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k = it->key().ToStringView();
    status.hash = crc32c::Extend(status.hash, k.data(), k.size());
    status.hash = crc32c::Extend(status.hash, it->value().data(), it->value().size());
    ++status.total_keys;
    Revision rev;
    bool tomb = false;
    if (ParseRevisionKey(k, &rev, &tomb)) {
      status.revision = std::max(status.revision, rev.main);
    } else if (k.starts_with("l")) {
      ++status.leases;
    } else if (k == MetaKey(kMetaCompactRev) && it->value().size() == 8) {
      status.compact_revision = static_cast<int64_t>(DecodeFixed64BE(it->value().data()));
    }
  }
  if (!it->status().ok()) return absl::DataLossError(it->status().ToString());
  // Live keys: the newest record of each key, not a tombstone.
  {
    std::map<std::string, bool> latest;
    for (it->Seek("r"); it->Valid() && it->key().starts_with("r"); it->Next()) {
      Revision rev;
      bool tomb = false;
      if (!ParseRevisionKey(it->key().ToStringView(), &rev, &tomb)) continue;
      mvccpb::KeyValue kv;
      if (!kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError(absl::StrCat(
            "snapshot ", path, ": undecodable revision record at revision ", rev.main));
      }
      latest[kv.key()] = !tomb;
    }
    for (const auto& [key, alive] : latest) live += alive ? 1 : 0;
  }
  status.live_keys = live;
  return status;
}

std::string SnapshotStatusJson(const SnapshotStatus& s) {
  return absl::StrFormat(
      "{\"hash\":%u,\"revision\":%d,\"totalKey\":%d,\"totalSize\":%u,\"hashChecked\":%s,"
      "\"hashOk\":%s,\"compactRevision\":%d,\"liveKeys\":%d,\"leases\":%d}",
      s.hash, s.revision, s.total_keys, s.total_size, s.has_hash ? "true" : "false",
      s.hash_ok ? "true" : "false", s.compact_revision, s.live_keys, s.leases);
}

std::string SnapshotStatusTable(const SnapshotStatus& s) {
  std::string hash_state = !s.has_hash ? "none" : (s.hash_ok ? "ok" : "MISMATCH");
  std::string header = "|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE | SHA-256 |\n";
  std::string row = absl::StrFormat("| %08x | %8d | %10d | %10u | %7s |\n", s.hash, s.revision,
                                    s.total_keys, s.total_size, hash_state);
  std::string rule = "+" + std::string(10, '-') + "+" + std::string(10, '-') + "+" +
                     std::string(12, '-') + "+" + std::string(12, '-') + "+" + std::string(9, '-') +
                     "+\n";
  return rule + header + rule + row + rule;
}

absl::StatusOr<SnapshotRestoreResult> RestoreSnapshot(const SnapshotRestoreOptions& o) {
  if (o.data_dir.empty()) return absl::InvalidArgumentError("--data-dir: give a directory");
  std::error_code ec;
  if (fs::exists(o.data_dir, ec) && !fs::is_empty(o.data_dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "--data-dir ", o.data_dir, " exists and is not empty; restore creates a new one"));
  }
  // The same checks and IDs as a founding member of a new cluster.
  std::string spec = o.initial_cluster;
  if (spec.empty()) {
    for (const auto& url : o.initial_advertise_peer_urls) {
      absl::StrAppend(&spec, spec.empty() ? "" : ",", o.name, "=", url);
    }
  }
  ASSIGN_OR_RETURN(std::vector<InitialMember> members,
                   ParseInitialCluster(spec, o.initial_cluster_token));
  auto self = std::find_if(members.begin(), members.end(),
                           [&](const InitialMember& m) { return m.name == o.name; });
  if (self == members.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--initial-cluster has no member named \"", o.name, "\" (--name)"));
  }
  std::vector<std::string> mine = o.initial_advertise_peer_urls, listed = self->peer_urls;
  std::sort(mine.begin(), mine.end());
  std::sort(listed.begin(), listed.end());
  if (mine != listed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--initial-cluster gives ", o.name, "=", absl::StrJoin(listed, ","),
        " but --initial-advertise-peer-urls is ", absl::StrJoin(mine, ","), "; they must match"));
  }

  std::string data_dir = fs::path(o.data_dir).lexically_normal().string();
  while (data_dir.size() > 1 && data_dir.back() == '/') data_dir.pop_back();
  std::string tmp = absl::StrCat(data_dir, ".restore-", ::getpid());
  fs::remove_all(tmp, ec);
  DirCleanup cleanup{tmp};
  fs::create_directories(tmp + "/member", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  SnapshotHashCheck check;
  ASSIGN_OR_RETURN(auto src, OpenSnapshotDb(o.path, o.skip_hash_check, tmp, &check));

  SnapshotRestoreResult result;
  {
    ASSIGN_OR_RETURN(auto backend, Backend::Open(tmp + "/member/kv", {}));
    rocksdb::WriteBatch batch;
    std::unique_ptr<rocksdb::Iterator> it(src->NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view k = it->key().ToStringView();
      if (IsMemberSpecificMeta(k)) continue;
      Revision rev;
      bool tomb = false;
      if (ParseRevisionKey(k, &rev, &tomb)) result.revision = std::max(result.revision, rev.main);
      batch.Put(it->key(), it->value());
      if (batch.GetDataSize() >= (4 << 20)) {
        RETURN_IF_ERROR(backend->Write(&batch));
        batch.Clear();
      }
    }
    if (!it->status().ok()) {
      return absl::DataLossError(
          absl::StrCat("snapshot ", o.path, ": reading it failed: ", it->status().ToString()));
    }
    it.reset();
    src.reset();

    // The new cluster's identity and membership, as a founding member of a
    // cluster started with the same flags would compute them.
    MemberIdentity id;
    id.set_member_id(self->id);
    id.set_cluster_id(ComputeClusterId(members, o.initial_cluster_token));
    id.set_name(o.name);
    batch.Put(MetaKey(kMetaIdentity), id.SerializeAsString());
    RaftConf conf;
    for (const auto& m : members) {
      etcdserverpb::Member member;
      member.set_id(m.id);
      member.set_name(m.name);
      for (const auto& u : m.peer_urls) member.add_peerurls(u);
      batch.Put(MetaKey(absl::StrCat(kMetaMemberPrefix, absl::Hex(m.id, absl::kZeroPad16))),
                member.SerializeAsString());
      conf.add_voters(m.id);
    }
    batch.Put(MetaKey(kMetaRaftConf), conf.SerializeAsString());
    // The log of the new cluster starts right after this state (index = the
    // number of members, term 1, as etcd's restore), the same on every
    // member: their logs agree from the first entry a leader appends.
    result.applied_index = members.size();
    std::string applied;
    PutFixed64BE(&applied, result.applied_index);
    PutFixed64BE(&applied, 1);
    batch.Put(MetaKey(kMetaAppliedIndex), applied);
    RETURN_IF_ERROR(backend->Write(&batch));
    RETURN_IF_ERROR(backend->Flush());
    result.member_id = id.member_id();
    result.cluster_id = id.cluster_id();
  }
  fs::remove_all(tmp + "/checkpoint", ec);
  if (fs::exists(data_dir)) fs::remove(data_dir, ec);  // empty (checked above)
  if (::rename(tmp.c_str(), data_dir.c_str()) != 0) {
    return ErrnoError("cannot rename " + tmp + " to", data_dir);
  }
  cleanup.dir.clear();
  RETURN_IF_ERROR(FsyncPath(ParentDir(data_dir), O_RDONLY | O_DIRECTORY));
  return result;
}

}  // namespace capstan::store
