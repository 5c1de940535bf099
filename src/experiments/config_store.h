// Configuration documents in the store: the experiments service's
// repository (ConfigStore) and the watched, immutable view every evaluator
// reads (ConfigWatcher / DocumentSnapshot).
//
// Layout under the prefix (default /capstan/experiments/):
//   config/<kind>/<id>              the document: an envelope (ConfigDocument::ToStored)
//                                   {"kind","id","version","createdBy","createdAt",
//                                    "updatedBy","updatedAt","spec": {...}}
//   history/<kind>/<id>/<seq>       one record per change: {"op","user","at","version",
//                                   "previousRevision","document" (envelope, or null
//                                   for a delete)}; <seq> is 20 digits, in change order
// Kinds are registered with a validator (RegisterKind): the GrowthBook kinds
// (features, saved-groups, sdk-connections: growthbook_service.h) today, the
// layered model's later. A document written by hand (etcdctl) without the
// envelope is read as a bare spec of version 0.
//
// Concurrency: every write is one Txn that compares the document's
// mod_revision with the one the writer last read (0: must not exist), so
// two edits from the same starting point cannot both succeed; the loser gets
// ABORTED with the current revision (CurrentRevisionOf), which the HTTP API
// answers as 409 Conflict. The history record is put in the same Txn.
//
// Error codes (gRPC's; the HTTP API maps them):
//   INVALID_ARGUMENT  bad kind/id or a validator's message naming the field   400, fix the input
//   NOT_FOUND         no such document                                        404
//   ABORTED           the revision compare failed (a concurrent edit)         409, re-read and
//   retry ALREADY_EXISTS    create of an existing document                          409, re-read
//   and retry UNAVAILABLE / DEADLINE_EXCEEDED  the store did not answer                 503, retry
//   (outcome
//                                    of a timed-out write unknown: read the history)
//
// Thread-safety: RegisterKind before use; every other method of ConfigStore
// and ConfigWatcher may be called from any thread. DocumentSnapshot is
// immutable.
//
//   ConfigStore repo(client, "/capstan/experiments/");
//   repo.RegisterKind("features", ValidateFeature);
//   auto doc = repo.Put("features", "checkout", spec, /*expected_revision=*/0, "alice");
//   auto watcher = ConfigWatcher::Start(client, "/capstan/experiments/");
//   watcher->Subscribe([](const std::shared_ptr<const DocumentSnapshot>& s) { ... });
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/prefix_watcher.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

inline constexpr char kDefaultConfigPrefix[] = "/capstan/experiments/";

// Checks a document's spec before it is written. Returns OK, or
// INVALID_ARGUMENT whose message starts with the field's path
// ("rules[1].coverage: must be a number").
using KindValidator = std::function<absl::Status(const std::string& id, const Json& spec)>;

// Checks a write against what it replaces, after the write's linearizable
// read of the document (so inside its revision compare): `before` is the
// current spec (nullptr: absent), `after` the new one (nullptr: a delete).
// For rules that depend on the current document (a running experiment's
// frozen fields) or on other documents (references). Same error contract as
// KindValidator.
using WriteCheck =
    std::function<absl::Status(const std::string& id, const Json* before, const Json* after)>;

struct ConfigDocument {
  std::string kind;
  std::string id;
  Json spec;
  int64_t version = 0;   // 1 when created, +1 per update
  int64_t revision = 0;  // the store's mod_revision; 0 where unknown (a hand-built snapshot)
  std::string created_by, created_at, updated_by, updated_at;  // RFC 3339 UTC

  // The envelope kept in the store (no revision: the store keeps it).
  Json ToStored() const;
  // The API's form: the envelope plus "revision".
  Json ToApi() const;
  // Reads an envelope (or a bare spec, version 0) at kind/id.
  static ConfigDocument FromStored(std::string kind, std::string id, Json stored, int64_t revision);
};

struct HistoryRecord {
  int64_t sequence = 0;
  Json record;  // {"op","user","at","version","previousRevision","document"}
};

class ConfigStore {
 public:
  // `now` gives the timestamps of changes (tests pass a fixed one).
  ConfigStore(std::shared_ptr<client::Client> client, std::string prefix = kDefaultConfigPrefix,
              std::function<absl::Time()> now = &absl::Now);

  // REQUIRES: before any other call.
  void RegisterKind(const std::string& kind, KindValidator validator);
  // REQUIRES: `kind` registered, before any other call. Runs after the
  // validator on Put, and on Delete.
  void SetWriteCheck(const std::string& kind, WriteCheck check);
  bool HasKind(std::string_view kind) const;
  std::vector<std::string> Kinds() const;

  absl::StatusOr<ConfigDocument> Get(const std::string& kind, const std::string& id) const;
  // Every document of `kind`, by id.
  absl::StatusOr<std::vector<ConfigDocument>> List(const std::string& kind) const;
  // Creates (expected_revision == 0: ALREADY_EXISTS if it exists) or
  // replaces (expected_revision > 0: ABORTED unless the document is at that
  // revision) the document; returns it as written, with its new revision.
  absl::StatusOr<ConfigDocument> Put(const std::string& kind, const std::string& id, Json spec,
                                     int64_t expected_revision, const std::string& user);
  // Deletes the document, if `expected_revision` is given only at that
  // revision. NOT_FOUND when absent.
  absl::Status Delete(const std::string& kind, const std::string& id,
                      std::optional<int64_t> expected_revision, const std::string& user);
  // The document's changes, oldest first (its earlier lives included).
  absl::StatusOr<std::vector<HistoryRecord>> History(const std::string& kind,
                                                     const std::string& id) const;

  const std::string& prefix() const { return prefix_; }
  std::string DocumentKey(std::string_view kind, std::string_view id) const;

 private:
  absl::Status CheckName(const std::string& kind, const std::string& id) const;
  std::string Timestamp() const;

  std::shared_ptr<client::Client> client_;
  std::string prefix_;
  std::function<absl::Time()> now_;
  std::map<std::string, KindValidator, std::less<>> kinds_;
  std::map<std::string, WriteCheck, std::less<>> write_checks_;
};

// For an ABORTED / ALREADY_EXISTS from ConfigStore: the document's revision
// at the time (0: it no longer exists); nullopt for other errors.
std::optional<int64_t> CurrentRevisionOf(const absl::Status& status);

// Is `id` a valid document id: 1-256 of [A-Za-z0-9_.:-], not starting with
// '.' (no '/', so a key names exactly one document).
bool IsValidDocumentId(std::string_view id);

// Every configuration document at one moment: what evaluators read.
struct DocumentSnapshot {
  using Documents = std::map<std::string, std::shared_ptr<const ConfigDocument>, std::less<>>;
  std::map<std::string, Documents, std::less<>> kinds;
  // Counts the snapshots a watcher has built (1: the first listing).
  uint64_t generation = 0;
  // The newest store revision among the changes applied so far (0: none):
  // the snapshot holds every configuration change up to it.
  int64_t revision = 0;

  const ConfigDocument* Find(std::string_view kind, std::string_view id) const;
  // The documents of `kind` (empty if none).
  const Documents& Of(std::string_view kind) const;
};

// Follows <prefix>config/ with a client::PrefixWatcher and keeps the
// current DocumentSnapshot; subscribers get each new one. A value that is not
// a JSON object is skipped (logged): one bad document never hides the rest.
class ConfigWatcher {
 public:
  using Subscriber = std::function<void(const std::shared_ptr<const DocumentSnapshot>&)>;

  static std::unique_ptr<ConfigWatcher> Start(std::shared_ptr<client::Client> client,
                                              std::string prefix = kDefaultConfigPrefix);
  // Stops watching; no subscriber runs after it returns.
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // The current snapshot (an empty one, generation 0, before the first listing).
  std::shared_ptr<const DocumentSnapshot> snapshot() const { return snapshot_.load(); }
  // Calls `subscriber` with the current snapshot now (if listed) and with every
  // new one, on the watcher's thread, one at a time: it must not block for
  // long or call the watcher. Returns an id for Unsubscribe.
  uint64_t Subscribe(Subscriber subscriber);
  void Unsubscribe(uint64_t id);
  // Waits until the first listing is in; false on timeout.
  bool WaitUntilListed(std::chrono::milliseconds timeout) const;

 private:
  explicit ConfigWatcher(std::string prefix) : prefix_(std::move(prefix)) {}
  void Apply(const std::vector<client::PrefixChange>& batch);

  std::string prefix_;  // <prefix>config/
  std::atomic<std::shared_ptr<const DocumentSnapshot>> snapshot_;
  mutable std::mutex mu_;  // subscribers_, listed_; held while subscribers run
  mutable std::condition_variable listed_cv_;
  bool listed_ = false;
  uint64_t next_subscriber_ = 1;
  std::map<uint64_t, Subscriber> subscribers_;
  std::unique_ptr<client::PrefixWatcher> watcher_;  // last: stopped first
};

}  // namespace capstan::experiments
