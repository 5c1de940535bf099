#include "mesh/registry.h"

#include "absl/container/btree_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/logging.h"
#include "client/client.h"
#include "client/prefix_watcher.h"
#include "nlohmann/json.hpp"

namespace capstan::mesh {

namespace {

class StoreSource final : public EndpointSource {
 public:
  StoreSource(std::shared_ptr<client::Client> client, std::string prefix,
              StoreSourceOptions options)
      : client_(std::move(client)), directory_(RegistryDirectory(prefix)), options_(options) {}
  // Stops the watcher: no delivery runs after this returns.
  ~StoreSource() override { watcher_.reset(); }
  void Start(EndpointsCallback on_update) override {
    on_update_ = std::move(on_update);
    watcher_ = client::PrefixWatcher::Start(
        client_, {.prefix = directory_, .retry = options_.retry, .what = "service registry"},
        [this](const std::vector<client::PrefixChange>& batch) { OnChange(batch); });
  }
  std::string Describe() const override {
    return absl::StrCat("store://", absl::StrJoin(client_->options().endpoints, ","), "/",
                        directory_);
  }

 private:
  // Runs on the watcher's threads, one batch at a time (the watcher
  // serializes them), so endpoints_ needs no lock of its own. A listing's
  // batch carries every key plus the deletions of those gone meanwhile, so
  // the set after it is exactly the listing's. Every batch (an empty
  // listing too) delivers the whole set.
  void OnChange(const std::vector<client::PrefixChange>& batch) {
    for (const client::PrefixChange& change : batch) {
      Apply(change.key, change.value ? &*change.value : nullptr);
    }
    Deliver();
  }

  // `value` null: the key was deleted.
  void Apply(const std::string& key, const std::string* value) {
    std::string id = key.substr(directory_.size());
    if (value == nullptr) {
      endpoints_.erase(id);
      return;
    }
    absl::StatusOr<Endpoint> e = DecodeRegistryValue(id, *value);
    if (!e.ok()) {
      CAPSTAN_LOG(warn, "skipping a registry entry that does not decode", "key", key, "error",
                  std::string(e.status().message()));
      endpoints_.erase(id);
      return;
    }
    endpoints_[id] = *std::move(e);
  }

  // The callback only hands the set on; it does not block.
  void Deliver() {
    std::vector<Endpoint> set;
    set.reserve(endpoints_.size());
    for (const auto& [id, e] : endpoints_) set.push_back(e);
    on_update_(std::move(set));
  }

  std::shared_ptr<client::Client> client_;
  std::string directory_;
  StoreSourceOptions options_;
  EndpointsCallback on_update_;
  absl::btree_map<std::string, Endpoint> endpoints_;  // by id; the watcher's batches only
  std::unique_ptr<client::PrefixWatcher> watcher_;    // last: stops before the rest goes
};

}  // namespace

std::string RegistryDirectory(std::string_view prefix) {
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  return absl::StrCat(std::string(prefix), "/");
}

std::string EncodeRegistryValue(const Endpoint& endpoint) {
  nlohmann::json value = {{"Addr", FormatHostPort(endpoint.host, endpoint.port)},
                          {"Metadata", {{"weight", endpoint.weight}}}};
  return value.dump();
}

absl::StatusOr<Endpoint> DecodeRegistryValue(std::string_view id, std::string_view value) {
  std::string_view addr = value;
  uint32_t weight = 1;
  nlohmann::json parsed;
  if (!value.empty() && value.front() == '{') {
    parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !parsed.is_object()) {
      return absl::InvalidArgumentError("value is not a JSON object");
    }
    auto a = parsed.find("Addr");
    if (a == parsed.end() || !a->is_string()) {
      return absl::InvalidArgumentError("value has no \"Addr\" string");
    }
    addr = a->get_ref<const std::string&>();
    auto meta = parsed.find("Metadata");
    if (meta != parsed.end() && meta->is_object()) {
      auto w = meta->find("weight");
      if (w != meta->end()) {
        if (!w->is_number_unsigned() || w->get<uint64_t>() < 1 || w->get<uint64_t>() > 1'000'000) {
          return absl::InvalidArgumentError("Metadata.weight must be an integer in 1..1000000");
        }
        weight = w->get<uint32_t>();
      }
    }
  }
  absl::StatusOr<Endpoint> e = ParseEndpoint(addr);
  if (!e.ok()) return e.status();
  e->weight = weight;
  e->id = std::string(id);
  return e;
}

std::unique_ptr<EndpointSource> StoreEndpoints(std::shared_ptr<client::Client> client,
                                               std::string prefix, StoreSourceOptions options) {
  return std::make_unique<StoreSource>(std::move(client), std::move(prefix), options);
}

Registration::Registration(std::shared_ptr<client::Client> client, RegistrationOptions options)
    : client_(std::move(client)), options_(std::move(options)) {
  if (options_.id.empty())
    options_.id = FormatHostPort(options_.endpoint.host, options_.endpoint.port);
  key_ = RegistryDirectory(options_.prefix) + options_.id;
  value_ = EncodeRegistryValue(options_.endpoint);
}

absl::StatusOr<std::unique_ptr<Registration>> Registration::Start(
    std::shared_ptr<client::Client> client, RegistrationOptions options) {
  if (options.prefix.empty()) {
    return absl::InvalidArgumentError("registration needs a prefix (e.g. services/echo)");
  }
  if (options.ttl < std::chrono::seconds(1)) {
    return absl::InvalidArgumentError("registration lease TTL must be at least 1 second");
  }
  std::unique_ptr<Registration> reg(new Registration(std::move(client), std::move(options)));
  absl::Status st = reg->Register();
  if (!st.ok()) return st;
  reg->keepalive_ = std::thread([r = reg.get()] { r->KeepAlive(); });
  return reg;
}

absl::Status Registration::Register() {
  absl::StatusOr<etcdserverpb::LeaseGrantResponse> lease =
      client_->LeaseGrant(options_.ttl.count());
  if (!lease.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot register ", key_, ": lease grant failed: ", lease.status().message()));
  }
  absl::StatusOr<etcdserverpb::PutResponse> put = client_->Put(key_, value_, lease->id());
  if (!put.ok()) {
    (void)client_->LeaseRevoke(lease->id());
    return absl::UnavailableError(
        absl::StrCat("cannot register ", key_, ": put failed: ", put.status().message()));
  }
  lease_id_ = lease->id();
  return absl::OkStatus();
}

void Registration::KeepAlive() {
  // Three chances to renew before the lease runs out.
  auto interval = std::chrono::duration_cast<std::chrono::milliseconds>(options_.ttl) / 3;
  while (!stop_.WaitFor(interval)) {
    absl::StatusOr<int64_t> ttl = client_->LeaseKeepAliveOnce(lease_id_);
    bool lost = (ttl.ok() && *ttl <= 0) ||
                (!ttl.ok() && ttl.status().code() == absl::StatusCode::kNotFound);
    if (!lost) {
      if (!ttl.ok()) {
        CAPSTAN_LOG(warn, "registry lease keep-alive failed; retrying", "key", key_, "error",
                    std::string(ttl.status().message()));
      }
      continue;
    }
    CAPSTAN_LOG(warn, "registry lease expired; registering again", "key", key_);
    absl::Status st = Register();
    if (st.ok()) {
      ++reregistrations_;
    } else {
      CAPSTAN_LOG(warn, "registering again failed; retrying", "key", key_, "error",
                  std::string(st.message()));
    }
  }
}

Registration::~Registration() {
  stop_.Stop();
  if (keepalive_.joinable()) keepalive_.join();
  absl::StatusOr<etcdserverpb::LeaseRevokeResponse> revoked = client_->LeaseRevoke(lease_id_);
  if (!revoked.ok()) {
    CAPSTAN_LOG(warn, "deregistering failed; the entry leaves when its lease expires", "key", key_,
                "error", std::string(revoked.status().message()));
  }
}

}  // namespace capstan::mesh
