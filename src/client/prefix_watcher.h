// PrefixWatcher: follows every key under a prefix of the store — the one
// list-then-watch loop that discovery (the service registry), the mesh's
// policies and the gateway's live configuration stand on.
//
// It lists the prefix, then watches from the listed revision + 1 and hands
// each batch of changes to `on_change`; when the watch breaks (the store
// restarted, the revision was compacted, the connection dropped) it lists
// again after `retry` and reports the keys that vanished meanwhile as
// deletions, so the consumer's view converges without gaps. While the store
// is unreachable nothing is delivered: consumers keep what they have.
//
//   auto watcher = client::PrefixWatcher::Start(client, {.prefix = "/capstan/gateway/"},
//       [](const std::vector<client::PrefixChange>& batch) { ... });
//   ...
//   watcher.reset();   // stops; no callback runs after the destructor returns
//
// Thread-safety: `on_change` runs on the watcher's thread (listings) or the
// client's watch thread (events), one batch at a time and in revision
// order, under the watcher's lock: it must not block for long, call the
// watcher, or destroy it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"

namespace capstan::client {

struct PrefixChange {
  std::string key;
  std::optional<std::string> value;  // nullopt: the key was deleted
  // The store revision of this change: the key's mod_revision for a put, the
  // delete's revision (or, for a key found gone by a new listing, that
  // listing's revision) for a deletion.
  int64_t mod_revision = 0;
  // A put's lease (0: none, or a deletion): a registry entry without one is
  // not an instance's (mesh/registry.h), which the DNS discovery zone skips.
  int64_t lease = 0;
};

struct PrefixWatcherOptions {
  std::string prefix;
  // Pause before listing again after a failure or a broken watch.
  std::chrono::milliseconds retry{1000};
  // Names what is watched in logs ("gateway configuration").
  std::string what = "keys";
};

class PrefixWatcher {
 public:
  using OnChange = std::function<void(const std::vector<PrefixChange>& batch)>;

  static std::unique_ptr<PrefixWatcher> Start(std::shared_ptr<Client> client,
                                              PrefixWatcherOptions options, OnChange on_change);
  ~PrefixWatcher();
  PrefixWatcher(const PrefixWatcher&) = delete;
  PrefixWatcher& operator=(const PrefixWatcher&) = delete;

  // Listings completed (for tests and /status).
  uint64_t listings() const;

 private:
  PrefixWatcher(std::shared_ptr<Client> client, PrefixWatcherOptions options, OnChange on_change)
      : client_(std::move(client)),
        options_(std::move(options)),
        on_change_(std::move(on_change)) {}
  void Run();
  bool SleepUnlessStopping(std::chrono::milliseconds d);
  void Broken(const std::string& why);

  std::shared_ptr<Client> client_;
  PrefixWatcherOptions options_;
  OnChange on_change_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool watch_broken_ = false;
  uint64_t listings_ = 0;
  std::set<std::string> keys_;  // as last delivered (watcher thread; mu_ for the watch callback)
  std::thread thread_;
};

// The range end that covers every key starting with `prefix`.
std::string PrefixRangeEnd(std::string prefix);

}  // namespace capstan::client
