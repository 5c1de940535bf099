#include "client/prefix_watcher.h"

#include "base/logging.h"

namespace capstan::client {

std::string PrefixRangeEnd(std::string prefix) {
  // The prefix with its last byte below 0xff incremented; all 0xff (or
  // empty): every key from the prefix on ("\0").
  while (!prefix.empty()) {
    unsigned char last = static_cast<unsigned char>(prefix.back());
    if (last < 0xff) {
      prefix.back() = static_cast<char>(last + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

std::unique_ptr<PrefixWatcher> PrefixWatcher::Start(std::shared_ptr<Client> client,
                                                    PrefixWatcherOptions options,
                                                    OnChange on_change) {
  std::unique_ptr<PrefixWatcher> w(
      new PrefixWatcher(std::move(client), std::move(options), std::move(on_change)));
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

PrefixWatcher::~PrefixWatcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t PrefixWatcher::listings() const {
  std::lock_guard lock(mu_);
  return listings_;
}

bool PrefixWatcher::SleepUnlessStopping(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return wake_.wait_for(lock, d, [&] { return stopping_; });
}

void PrefixWatcher::Broken(const std::string& why) {
  std::lock_guard lock(mu_);
  if (!stopping_ && !watch_broken_) {
    CAPSTAN_LOG(info, "store watch broke; listing again", "what", options_.what, "prefix",
                options_.prefix, "reason", why);
  }
  watch_broken_ = true;
  wake_.notify_all();
}

void PrefixWatcher::Run() {
  const std::string range_end = PrefixRangeEnd(options_.prefix);
  bool first = true;
  while (true) {
    if (!first && SleepUnlessStopping(options_.retry)) return;
    first = false;
    etcdserverpb::RangeRequest list;
    list.set_key(options_.prefix);
    list.set_range_end(range_end);
    absl::StatusOr<etcdserverpb::RangeResponse> listed = client_->Range(list);
    if (!listed.ok()) {
      CAPSTAN_LOG(warn, "cannot list from the store; keeping what was known", "what", options_.what,
                  "prefix", options_.prefix, "error", std::string(listed.status().message()));
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      // Keys gone while the watch was down are reported deleted.
      std::vector<PrefixChange> batch;
      std::set<std::string> now;
      for (const auto& kv : listed->kvs()) now.insert(kv.key());
      for (const std::string& key : keys_) {
        if (!now.contains(key)) batch.push_back({key, std::nullopt, listed->header().revision()});
      }
      for (const auto& kv : listed->kvs()) {
        batch.push_back({kv.key(), kv.value(), kv.mod_revision(), kv.lease()});
      }
      keys_ = std::move(now);
      watch_broken_ = false;
      ++listings_;
      on_change_(batch);
    }
    etcdserverpb::WatchCreateRequest create;
    create.set_key(options_.prefix);
    create.set_range_end(range_end);
    create.set_start_revision(listed->header().revision() + 1);
    std::unique_ptr<Watch> watch = client_->WatchAsync(
        create,
        [this](const etcdserverpb::WatchResponse& response) {
          if (response.canceled()) {
            Broken(response.compact_revision() > 0 ? "watch revision compacted"
                                                   : response.cancel_reason());
            return;
          }
          if (response.events_size() == 0) return;  // created, progress
          std::lock_guard lock(mu_);
          if (stopping_ || watch_broken_) return;
          std::vector<PrefixChange> batch;
          batch.reserve(static_cast<size_t>(response.events_size()));
          for (const auto& event : response.events()) {
            if (event.type() == mvccpb::Event::PUT) {
              keys_.insert(event.kv().key());
              batch.push_back({event.kv().key(), event.kv().value(), event.kv().mod_revision(),
                               event.kv().lease()});
            } else {
              keys_.erase(event.kv().key());
              batch.push_back({event.kv().key(), std::nullopt,
                               event.kv().mod_revision() > 0 ? event.kv().mod_revision()
                                                             : response.header().revision()});
            }
          }
          on_change_(batch);
        },
        [this](absl::Status st) {
          Broken(st.ok() ? "watch stream ended" : std::string(st.message()));
        });
    bool stopping;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || watch_broken_; });
      stopping = stopping_;
    }
    watch.reset();  // cancels and waits until no callback runs
    if (stopping) return;
  }
}

}  // namespace capstan::client
