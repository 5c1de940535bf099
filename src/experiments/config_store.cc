#include "experiments/config_store.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace capstan::experiments {
namespace {

// Where ABORTED / ALREADY_EXISTS carry the document's current revision.
constexpr char kRevisionPayload[] = "capstan.io/experiments/current-revision";

constexpr size_t kMaxIdBytes = 256;

absl::Status Conflict(absl::StatusCode code, std::string message, int64_t current) {
  absl::Status status(code, message);
  status.SetPayload(kRevisionPayload, absl::Cord(std::to_string(current)));
  return status;
}

std::string Sequence(int64_t n) {
  char digits[32];
  std::snprintf(digits, sizeof(digits), "%020lld", static_cast<long long>(n));
  return digits;
}

std::optional<Json> ParseObject(const std::string& text) {
  Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) return std::nullopt;
  return value;
}

std::string StringField(const Json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

Json ConfigDocument::ToStored() const {
  Json out = Json::object();
  out["kind"] = kind;
  out["id"] = id;
  out["version"] = version;
  out["createdBy"] = created_by;
  out["createdAt"] = created_at;
  out["updatedBy"] = updated_by;
  out["updatedAt"] = updated_at;
  out["spec"] = spec;
  return out;
}

Json ConfigDocument::ToApi() const {
  Json out = ToStored();
  out["revision"] = revision;
  return out;
}

ConfigDocument ConfigDocument::FromStored(std::string kind, std::string id, Json stored,
                                          int64_t revision) {
  ConfigDocument doc;
  doc.kind = std::move(kind);
  doc.id = std::move(id);
  doc.revision = revision;
  auto spec = stored.find("spec");
  if (!stored.is_object() || spec == stored.end() || !stored.contains("kind")) {
    doc.spec = std::move(stored);  // written by hand: a bare spec
    return doc;
  }
  auto version = stored.find("version");
  if (version != stored.end() && version->is_number_integer())
    doc.version = version->get<int64_t>();
  doc.created_by = StringField(stored, "createdBy");
  doc.created_at = StringField(stored, "createdAt");
  doc.updated_by = StringField(stored, "updatedBy");
  doc.updated_at = StringField(stored, "updatedAt");
  doc.spec = std::move(*spec);
  return doc;
}

std::optional<int64_t> CurrentRevisionOf(const absl::Status& status) {
  auto payload = status.GetPayload(kRevisionPayload);  // absl::optional in Debian's abseil
  if (!payload.has_value()) return std::nullopt;
  int64_t revision = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &revision)) return std::nullopt;
  return revision;
}

bool IsValidDocumentId(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes || id.front() == '.') return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

ConfigStore::ConfigStore(std::shared_ptr<client::Client> client, std::string prefix,
                         std::function<absl::Time()> now)
    : client_(std::move(client)), prefix_(std::move(prefix)), now_(std::move(now)) {}

void ConfigStore::RegisterKind(const std::string& kind, KindValidator validator) {
  kinds_[kind] = std::move(validator);
}

void ConfigStore::SetWriteCheck(const std::string& kind, WriteCheck check) {
  write_checks_[kind] = std::move(check);
}

bool ConfigStore::HasKind(std::string_view kind) const { return kinds_.find(kind) != kinds_.end(); }

std::vector<std::string> ConfigStore::Kinds() const {
  std::vector<std::string> out;
  for (const auto& [kind, validator] : kinds_) out.push_back(kind);
  return out;
}

std::string ConfigStore::DocumentKey(std::string_view kind, std::string_view id) const {
  return prefix_ + "config/" + std::string(kind) + "/" + std::string(id);
}

std::string ConfigStore::Timestamp() const {
  // JavaScript's Date.prototype.toISOString, as GrowthBook's dateUpdated.
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", now_(), absl::UTCTimeZone());
}

absl::Status ConfigStore::CheckName(const std::string& kind, const std::string& id) const {
  if (!HasKind(kind))
    return absl::InvalidArgumentError(absl::StrCat("unknown kind \"", kind, "\""));
  if (!IsValidDocumentId(id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "id: \"", id,
        "\" is not 1-256 of the characters A-Z a-z 0-9 _ - . : (not starting with .)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfigDocument> ConfigStore::Get(const std::string& kind,
                                                const std::string& id) const {
  if (absl::Status st = CheckName(kind, id); !st.ok()) return st;
  ASSIGN_OR_RETURN(etcdserverpb::RangeResponse got, client_->Get(DocumentKey(kind, id)));
  if (got.kvs_size() == 0) {
    return absl::NotFoundError(absl::StrCat(kind, "/", id, " does not exist"));
  }
  const mvccpb::KeyValue& kv = got.kvs(0);
  std::optional<Json> stored = ParseObject(kv.value());
  if (!stored.has_value()) {
    return absl::DataLossError(absl::StrCat(kind, "/", id, " in the store is not a JSON object"));
  }
  return ConfigDocument::FromStored(kind, id, std::move(*stored), kv.mod_revision());
}

absl::StatusOr<std::vector<ConfigDocument>> ConfigStore::List(const std::string& kind) const {
  if (!HasKind(kind))
    return absl::InvalidArgumentError(absl::StrCat("unknown kind \"", kind, "\""));
  etcdserverpb::RangeRequest req;
  std::string start = absl::StrCat(prefix_, "config/", kind, "/");
  req.set_key(start);
  req.set_range_end(client::PrefixRangeEnd(start));
  ASSIGN_OR_RETURN(etcdserverpb::RangeResponse got, client_->Range(req));
  std::vector<ConfigDocument> out;
  for (const mvccpb::KeyValue& kv : got.kvs()) {
    std::string id = kv.key().substr(start.size());
    std::optional<Json> stored = ParseObject(kv.value());
    if (!stored.has_value() || !IsValidDocumentId(id)) continue;  // not ours to show
    out.push_back(
        ConfigDocument::FromStored(kind, std::move(id), std::move(*stored), kv.mod_revision()));
  }
  return out;
}

absl::StatusOr<ConfigDocument> ConfigStore::Put(const std::string& kind, const std::string& id,
                                                Json spec, int64_t expected_revision,
                                                const std::string& user) {
  if (absl::Status st = CheckName(kind, id); !st.ok()) return st;
  if (absl::Status st = kinds_.find(kind)->second(id, spec); !st.ok()) return st;
  const std::string key = DocumentKey(kind, id);
  // A linearizable read: the current document (for its version and
  // creation) and a revision past every earlier change of it, which numbers
  // this change's history record (see the header).
  ASSIGN_OR_RETURN(etcdserverpb::RangeResponse got, client_->Get(key));
  int64_t current = got.kvs_size() > 0 ? got.kvs(0).mod_revision() : 0;
  if (expected_revision == 0 && current != 0) {
    return Conflict(absl::StatusCode::kAlreadyExists,
                    absl::StrCat(kind, "/", id, " already exists (revision ", current,
                                 "); to replace it, give its revision"),
                    current);
  }
  if (expected_revision != 0 && expected_revision != current) {
    return Conflict(absl::StatusCode::kAborted,
                    absl::StrCat(kind, "/", id, " is at revision ", current, ", not ",
                                 expected_revision, ": it changed since it was read"),
                    current);
  }
  ConfigDocument doc;
  std::string now = Timestamp();
  bool had_document = false;
  if (current != 0) {
    std::optional<Json> stored = ParseObject(got.kvs(0).value());
    if (stored.has_value()) {
      doc = ConfigDocument::FromStored(kind, id, std::move(*stored), 0);
      had_document = true;
    }
  }
  if (auto check = write_checks_.find(kind); check != write_checks_.end()) {
    if (absl::Status st = check->second(id, had_document ? &doc.spec : nullptr, &spec); !st.ok())
      return st;
  }
  if (current == 0) {
    doc.created_by = user;
    doc.created_at = now;
  }
  doc.kind = kind;
  doc.id = id;
  doc.spec = std::move(spec);
  doc.version += 1;
  doc.updated_by = user;
  doc.updated_at = now;
  if (doc.created_at.empty()) {  // a bare document written by hand
    doc.created_by = user;
    doc.created_at = now;
  }
  Json record = {{"op", current == 0 ? "create" : "update"},
                 {"user", user},
                 {"at", now},
                 {"version", doc.version},
                 {"previousRevision", current},
                 {"document", doc.ToStored()}};

  etcdserverpb::TxnRequest txn;
  etcdserverpb::Compare* compare = txn.add_compare();
  compare->set_key(key);
  compare->set_result(etcdserverpb::Compare::EQUAL);
  compare->set_target(etcdserverpb::Compare::MOD);
  compare->set_mod_revision(current);  // 0 also means "absent"
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(doc.ToStored().dump());
  etcdserverpb::PutRequest* history = txn.add_success()->mutable_request_put();
  history->set_key(
      absl::StrCat(prefix_, "history/", kind, "/", id, "/", Sequence(got.header().revision() + 1)));
  history->set_value(record.dump());
  etcdserverpb::RangeRequest* reread = txn.add_failure()->mutable_request_range();
  reread->set_key(key);
  ASSIGN_OR_RETURN(etcdserverpb::TxnResponse done, client_->Txn(txn));
  if (!done.succeeded()) {
    int64_t now_at = 0;
    if (done.responses_size() > 0 && done.responses(0).response_range().kvs_size() > 0) {
      now_at = done.responses(0).response_range().kvs(0).mod_revision();
    }
    return Conflict(
        absl::StatusCode::kAborted,
        absl::StrCat(kind, "/", id, " changed concurrently (now at revision ", now_at, ")"),
        now_at);
  }
  doc.revision = done.header().revision();
  return doc;
}

absl::Status ConfigStore::Delete(const std::string& kind, const std::string& id,
                                 std::optional<int64_t> expected_revision,
                                 const std::string& user) {
  if (absl::Status st = CheckName(kind, id); !st.ok()) return st;
  const std::string key = DocumentKey(kind, id);
  ASSIGN_OR_RETURN(etcdserverpb::RangeResponse got, client_->Get(key));
  if (got.kvs_size() == 0)
    return absl::NotFoundError(absl::StrCat(kind, "/", id, " does not exist"));
  int64_t current = got.kvs(0).mod_revision();
  if (expected_revision.has_value() && *expected_revision != current) {
    return Conflict(absl::StatusCode::kAborted,
                    absl::StrCat(kind, "/", id, " is at revision ", current, ", not ",
                                 *expected_revision, ": it changed since it was read"),
                    current);
  }
  int64_t version = 0;
  if (std::optional<Json> stored = ParseObject(got.kvs(0).value()); stored.has_value()) {
    ConfigDocument before = ConfigDocument::FromStored(kind, id, std::move(*stored), 0);
    version = before.version;
    if (auto check = write_checks_.find(kind); check != write_checks_.end()) {
      if (absl::Status st = check->second(id, &before.spec, nullptr); !st.ok()) return st;
    }
  }
  Json record = {{"op", "delete"},
                 {"user", user},
                 {"at", Timestamp()},
                 {"version", version + 1},
                 {"previousRevision", current},
                 {"document", nullptr}};
  etcdserverpb::TxnRequest txn;
  etcdserverpb::Compare* compare = txn.add_compare();
  compare->set_key(key);
  compare->set_result(etcdserverpb::Compare::EQUAL);
  compare->set_target(etcdserverpb::Compare::MOD);
  compare->set_mod_revision(current);
  txn.add_success()->mutable_request_delete_range()->set_key(key);
  etcdserverpb::PutRequest* history = txn.add_success()->mutable_request_put();
  history->set_key(
      absl::StrCat(prefix_, "history/", kind, "/", id, "/", Sequence(got.header().revision() + 1)));
  history->set_value(record.dump());
  ASSIGN_OR_RETURN(etcdserverpb::TxnResponse done, client_->Txn(txn));
  if (!done.succeeded()) {
    return Conflict(absl::StatusCode::kAborted,
                    absl::StrCat(kind, "/", id, " changed concurrently; read it again"), 0);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<HistoryRecord>> ConfigStore::History(const std::string& kind,
                                                                const std::string& id) const {
  if (absl::Status st = CheckName(kind, id); !st.ok()) return st;
  std::string start = absl::StrCat(prefix_, "history/", kind, "/", id, "/");
  etcdserverpb::RangeRequest req;
  req.set_key(start);
  req.set_range_end(client::PrefixRangeEnd(start));
  ASSIGN_OR_RETURN(etcdserverpb::RangeResponse got, client_->Range(req));
  std::vector<HistoryRecord> out;
  for (const mvccpb::KeyValue& kv : got.kvs()) {
    HistoryRecord entry;
    if (!absl::SimpleAtoi(kv.key().substr(start.size()), &entry.sequence)) continue;
    std::optional<Json> record = ParseObject(kv.value());
    if (!record.has_value()) continue;
    entry.record = std::move(*record);
    out.push_back(std::move(entry));
  }
  return out;
}

// --- DocumentSnapshot / ConfigWatcher ---

const ConfigDocument* DocumentSnapshot::Find(std::string_view kind, std::string_view id) const {
  const Documents& docs = Of(kind);
  auto it = docs.find(id);
  return it == docs.end() ? nullptr : it->second.get();
}

const DocumentSnapshot::Documents& DocumentSnapshot::Of(std::string_view kind) const {
  static const Documents kNone;
  auto it = kinds.find(kind);
  return it == kinds.end() ? kNone : it->second;
}

std::unique_ptr<ConfigWatcher> ConfigWatcher::Start(std::shared_ptr<client::Client> client,
                                                    std::string prefix) {
  std::unique_ptr<ConfigWatcher> w(new ConfigWatcher(prefix + "config/"));
  w->snapshot_.store(std::make_shared<const DocumentSnapshot>());
  w->watcher_ = client::PrefixWatcher::Start(
      std::move(client), {.prefix = w->prefix_, .what = "experiments configuration"},
      [raw = w.get()](const std::vector<client::PrefixChange>& batch) { raw->Apply(batch); });
  return w;
}

ConfigWatcher::~ConfigWatcher() { watcher_.reset(); }

void ConfigWatcher::Apply(const std::vector<client::PrefixChange>& batch) {
  // Copy on write: the maps are copied, the documents shared.
  auto next = std::make_shared<DocumentSnapshot>(*snapshot_.load());
  for (const client::PrefixChange& change : batch) {
    next->revision = std::max(next->revision, change.mod_revision);
    std::string_view rest(change.key);
    rest.remove_prefix(prefix_.size());
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos) continue;
    std::string kind(rest.substr(0, slash));
    std::string id(rest.substr(slash + 1));
    if (!IsValidDocumentId(id)) continue;
    if (!change.value.has_value()) {
      auto it = next->kinds.find(kind);
      if (it != next->kinds.end()) {
        it->second.erase(id);
        if (it->second.empty()) next->kinds.erase(it);
      }
      continue;
    }
    std::optional<Json> stored = ParseObject(*change.value);
    if (!stored.has_value()) {
      CAPSTAN_LOG(warn, "experiments: skipping a configuration document that is not a JSON object",
                  "key", change.key);
      continue;
    }
    next->kinds[kind][id] = std::make_shared<const ConfigDocument>(
        ConfigDocument::FromStored(kind, id, std::move(*stored), change.mod_revision));
  }
  next->generation += 1;
  std::shared_ptr<const DocumentSnapshot> published = std::move(next);
  std::lock_guard lock(mu_);
  snapshot_.store(published);
  listed_ = true;
  listed_cv_.notify_all();
  for (auto& [id, subscriber] : subscribers_) subscriber(published);
}

uint64_t ConfigWatcher::Subscribe(Subscriber subscriber) {
  std::lock_guard lock(mu_);
  if (listed_) subscriber(snapshot_.load());
  uint64_t id = next_subscriber_++;
  subscribers_.emplace(id, std::move(subscriber));
  return id;
}

void ConfigWatcher::Unsubscribe(uint64_t id) {
  std::lock_guard lock(mu_);
  subscribers_.erase(id);
}

bool ConfigWatcher::WaitUntilListed(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return listed_cv_.wait_for(lock, timeout, [this] { return listed_; });
}

}  // namespace capstan::experiments
