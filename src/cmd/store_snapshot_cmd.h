// `capstan store snapshot save|status|restore`: backups of a store cluster
// and new clusters made from them (docs/operations.md, "Backup and
// restore"). The file format and the restore are in store/snapshot_file.h.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace capstan {

struct StoreSnapshotFlags {
  // save
  std::vector<std::string> endpoints{"127.0.0.1:2379"};
  std::string command_timeout = "5m";
  // status
  std::string write_out = "simple";
  // restore
  std::string data_dir;
  std::string name = "default";
  std::string initial_cluster;
  std::vector<std::string> initial_advertise_peer_urls{"http://localhost:2380"};
  std::string initial_cluster_token = "etcd-cluster";
  bool skip_hash_check = false;
  // all
  std::string file;
};

struct StoreSnapshotCommands {
  CLI::App* snapshot = nullptr;
  CLI::App* save = nullptr;
  CLI::App* status = nullptr;
  CLI::App* restore = nullptr;
};

// Adds `snapshot` and its subcommands under `store`.
StoreSnapshotCommands AddStoreSnapshotCommands(CLI::App* store, StoreSnapshotFlags* flags);
// Runs whichever subcommand was parsed; returns the exit code (0 ok, 1 the
// operation failed, 2 bad flags).
int RunStoreSnapshot(const StoreSnapshotCommands& cmds, const StoreSnapshotFlags& flags);

}  // namespace capstan
