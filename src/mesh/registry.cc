#include "mesh/registry.h"

#include <condition_variable>
#include <mutex>

#include "absl/container/btree_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/logging.h"
#include "client/client.h"
#include "nlohmann/json.hpp"

namespace capstan::mesh {

namespace {

// The first key after every key that starts with `prefix` (etcd's range_end
// for a prefix).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto last = static_cast<unsigned char>(prefix.back());
    if (last < 0xff) {
      prefix.back() = static_cast<char>(last + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

class StoreSource final : public EndpointSource {
 public:
  StoreSource(std::shared_ptr<client::Client> client, std::string prefix,
              StoreSourceOptions options)
      : client_(std::move(client)), directory_(RegistryDirectory(prefix)), options_(options) {}
  ~StoreSource() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void Start(EndpointsCallback on_update) override {
    on_update_ = std::move(on_update);
    thread_ = std::thread([this] { Run(); });
  }
  std::string Describe() const override {
    return absl::StrCat("store://", absl::StrJoin(client_->options().endpoints, ","), "/",
                        directory_);
  }

 private:
  void Run() {
    bool first = true;
    while (true) {
      if (!first && Sleep(options_.retry)) return;
      first = false;
      etcdserverpb::RangeRequest list;
      list.set_key(directory_);
      list.set_range_end(PrefixEnd(directory_));
      absl::StatusOr<etcdserverpb::RangeResponse> listed = client_->Range(list);
      if (!listed.ok()) {
        CAPSTAN_LOG(warn, "cannot list the registry; keeping the last endpoints", "source",
                    Describe(), "error", std::string(listed.status().message()));
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        endpoints_.clear();
        for (const auto& kv : listed->kvs()) Apply(kv.key(), &kv.value());
        watch_broken_ = false;
        Deliver();
      }
      etcdserverpb::WatchCreateRequest create;
      create.set_key(directory_);
      create.set_range_end(PrefixEnd(directory_));
      create.set_start_revision(listed->header().revision() + 1);
      std::unique_ptr<client::Watch> watch = client_->WatchAsync(
          create, [this](const etcdserverpb::WatchResponse& r) { OnWatch(r); },
          [this](absl::Status st) {
            Broken(st.ok() ? "watch stream ended" : std::string(st.message()));
          });
      bool stopping;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stopping_ || watch_broken_; });
        stopping = stopping_;
      }
      watch.reset();  // cancels and waits until no callback runs
      if (stopping) return;
    }
  }

  // True when stopping.
  bool Sleep(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu_);
    return wake_.wait_for(lock, d, [&] { return stopping_; });
  }

  void OnWatch(const etcdserverpb::WatchResponse& response) {
    if (response.canceled()) {
      Broken(response.compact_revision() > 0 ? "watch revision compacted"
                                             : response.cancel_reason());
      return;
    }
    if (response.events_size() == 0) return;  // created, progress
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& event : response.events()) {
      Apply(event.kv().key(), event.type() == mvccpb::Event::PUT ? &event.kv().value() : nullptr);
    }
    Deliver();
  }

  void Broken(std::string_view why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      CAPSTAN_LOG(info, "registry watch broke; listing again", "source", Describe(), "reason",
                  std::string(why));
    }
    watch_broken_ = true;
    wake_.notify_all();
  }

  // REQUIRES: mu_ held. `value` null: the key was deleted.
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

  // REQUIRES: mu_ held (so deliveries from the lister and the watch keep
  // their order). The callback only hands the set on; it does not block.
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
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool watch_broken_ = false;
  absl::btree_map<std::string, Endpoint> endpoints_;
  std::thread thread_;
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
