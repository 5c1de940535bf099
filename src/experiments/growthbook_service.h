// GrowthBook's documents and SDK endpoints, served from the watched
// configuration (config_store.h), so an unmodified GrowthBook SDK in any
// language can point its `apiHost` at Capstan.
//
// Documents (kinds registered with RegisterGrowthBookKinds):
//   features/<key>            a GrowthBook FeatureDefinition ({"defaultValue", "rules": [...]})
//                             plus Capstan's fields: "project", "archived",
//                             "environments": {"<env>": {"enabled", "rules"}} (when present,
//                             the connection's environment picks the rules; absent or
//                             disabled there, the feature is left out), "description", "tags".
//                             A rule with "enabled": false is left out.
//   saved-groups/<id>         {"values": [...], "attributeKey"?, "name"?}: GrowthBook's list
//                             saved groups, for $inGroup / $notInGroup
//   sdk-connections/<clientKey>  {"name"?, "environment" (default "production"),
//                             "projects"? (empty: all), "encryptPayload"?, "encryptionKey"?
//                             (base64 AES key; required when encrypting),
//                             "remoteEvalEnabled"? (default true)}
//
// Endpoints (GrowthBook's back-end and proxy):
//   GET  /api/features/{clientKey}  {"status":200,"features","experiments":[],"dateUpdated",
//                                    "savedGroups"} (encrypted: "encryptedFeatures",
//                                    "encryptedSavedGroups", "features": {}); an ETag,
//                                    and 304 to an If-None-Match that still holds
//   POST /api/eval/{clientKey}      body {attributes, forcedVariations, forcedFeatures, url};
//                                    the payload with each feature reduced to its value for
//                                    this user ({"defaultValue"}, plus a force rule with
//                                    "tracks" when an experiment assigned it), as
//                                    GrowthBook's evaluateFeatures does
//   unknown clientKey: 400 {"status":400,"error":"Invalid API Key"} (as GrowthBook)
//   GET  /sub/{clientKey}           server-sent events (growthbook_stream.h); with streaming
//                                    on, GET /api/features says so in `x-sse-support: enabled`,
//                                    the header the SDK looks for before it subscribes
//
// dateUpdated: the newest updatedAt of the connection and of what its payload
// holds; when the payload changed but that would not move it forward (a
// feature deleted, two writes in one millisecond) it moves 1 ms past the
// previous one. The SDK drops a payload whose dateUpdated it already has,
// so a change must always move it.
//
// Thread-safety: validators are pure. GrowthBookEndpoints' handlers may run
// on any number of threads while OnSnapshot swaps the per-connection
// payloads atomically.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "experiments/config_store.h"
#include "experiments/sdk.h"
#include "net/http_server.h"

namespace capstan::experiments {

inline constexpr char kFeaturesKind[] = "features";
inline constexpr char kSavedGroupsKind[] = "saved-groups";
inline constexpr char kSdkConnectionsKind[] = "sdk-connections";

// Validators (KindValidator): INVALID_ARGUMENT naming the field.
absl::Status ValidateFeature(const std::string& key, const Json& spec);
absl::Status ValidateSavedGroup(const std::string& id, const Json& spec);
absl::Status ValidateSdkConnection(const std::string& client_key, const Json& spec);
void RegisterGrowthBookKinds(ConfigStore* store);

// The SDK payload of one connection in `snapshot`, unencrypted:
// {"status","features","experiments","dateUpdated","savedGroups"}.
Json BuildSdkPayload(const DocumentSnapshot& snapshot, const ConfigDocument& connection);

class GrowthBookEndpoints {
 public:
  GrowthBookEndpoints();
  // Builds every connection's payload from `snapshot` and swaps them in.
  void OnSnapshot(const std::shared_ptr<const DocumentSnapshot>& snapshot);

  // `if_none_match`: the request's If-None-Match; the current ETag gives 304.
  net::HttpResponse Features(const std::string& client_key,
                             std::string_view if_none_match = "") const;
  net::HttpResponse RemoteEval(const std::string& client_key, const std::string& body) const;

  // Advertise streaming (x-sse-support) in GET /api/features' answers.
  // REQUIRES: before serving.
  void set_streaming(bool on) { streaming_ = on; }

  // What GET /api/features/{clientKey} serves now (the body, encrypted if
  // the connection asks, and its ETag); nullopt for an unknown key.
  struct ServedPayload {
    std::string body;
    std::string etag;
  };
  std::optional<ServedPayload> Served(const std::string& client_key) const;

  // The snapshot generation the served payloads come from.
  uint64_t generation() const;
  // The evaluator for a connection (tests and in-process users): nullptr if unknown.
  std::shared_ptr<const GrowthBookClient> ClientFor(const std::string& client_key) const;

 private:
  struct Connection {
    Json document;     // the sdk-connection spec
    std::string body;  // GET /api/features answer (encrypted if asked)
    std::string etag;
    Json payload;  // unencrypted, for remote evaluation
    std::shared_ptr<const GrowthBookClient> client;
    bool remote_eval = true;
  };
  struct State {
    uint64_t generation = 0;
    std::map<std::string, std::shared_ptr<const Connection>, std::less<>> connections;
  };
  std::shared_ptr<const Connection> Find(const std::string& client_key) const;

  std::atomic<std::shared_ptr<const State>> state_;
  bool streaming_ = false;
};

}  // namespace capstan::experiments
