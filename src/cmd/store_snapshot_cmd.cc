#include "cmd/store_snapshot_cmd.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "base/config.h"
#include "base/logging.h"
#include "store/snapshot_file.h"

namespace capstan {

StoreSnapshotCommands AddStoreSnapshotCommands(CLI::App* store, StoreSnapshotFlags* f) {
  StoreSnapshotCommands c;
  c.snapshot = store->add_subcommand(
      "snapshot", "Save a store snapshot, inspect one, or restore one into a new cluster.");
  c.snapshot->require_subcommand(1);

  c.save = c.snapshot->add_subcommand(
      "save",
      "Stream a snapshot from a member (Maintenance.Snapshot, as etcdctl snapshot save) "
      "into FILE, verified by its SHA-256, written atomically.");
  c.save->add_option("file", f->file, "Where to write the snapshot.")->required();
  c.save
      ->add_option("--endpoints", f->endpoints,
                   "Members to ask, host:port or http://host:port, comma-separated; the first "
                   "that answers is used.")
      ->delimiter(',')
      ->capture_default_str();
  c.save->add_option("--command-timeout", f->command_timeout, "Limit for the whole transfer.")
      ->capture_default_str();

  c.status = c.snapshot->add_subcommand(
      "status", "Check a snapshot file's hash and print its revision, keys and size.");
  c.status->add_option("file", f->file, "The snapshot file.")->required();
  c.status->add_option("-w,--write-out", f->write_out, "simple, json or table.")
      ->check(CLI::IsMember({"simple", "json", "table"}))
      ->capture_default_str();
  c.status->add_flag("--skip-hash-check", f->skip_hash_check,
                     "Accept a file without a SHA-256 trailer, or a stopped member's "
                     "DATA_DIR/member/kv directory.");

  c.restore = c.snapshot->add_subcommand(
      "restore",
      "Create the data directory of a member of a NEW cluster from a snapshot "
      "(run it for every member, with the same file and cluster flags).");
  c.restore->add_option("file", f->file, "The snapshot file.")->required();
  c.restore->add_option("--data-dir", f->data_dir, "Directory to create (default: ${name}.etcd).");
  c.restore->add_option("--name", f->name, "This member's name in --initial-cluster.")
      ->capture_default_str();
  c.restore->add_option("--initial-cluster", f->initial_cluster,
                        "The new cluster's members, name=peer-url,... (default: this member "
                        "alone at its advertised peer URLs).");
  c.restore
      ->add_option("--initial-advertise-peer-urls", f->initial_advertise_peer_urls,
                   "This member's peer URLs (must match its --initial-cluster entry).")
      ->delimiter(',')
      ->capture_default_str();
  c.restore
      ->add_option("--initial-cluster-token", f->initial_cluster_token,
                   "The new cluster's token (use a new one: IDs derive from it).")
      ->capture_default_str();
  c.restore->add_flag("--skip-hash-check", f->skip_hash_check,
                      "Accept a file without a SHA-256 trailer, or a stopped member's "
                      "DATA_DIR/member/kv directory.");
  return c;
}

int RunStoreSnapshot(const StoreSnapshotCommands& c, const StoreSnapshotFlags& f) {
  InitLogging("warn");  // a tool: only problems on stderr
  if (c.save->parsed()) {
    auto timeout = ParseDurationMillis(f.command_timeout);
    if (!timeout.ok() || *timeout <= 0) {
      std::cerr << "capstan store snapshot save: --command-timeout \"" << f.command_timeout
                << "\" is not a positive duration (e.g. 5m, 30s)\n";
      return 2;
    }
    store::SnapshotSaveOptions options;
    options.endpoints = f.endpoints;
    options.path = f.file;
    options.timeout = std::chrono::milliseconds(*timeout);
    auto saved = store::SaveSnapshot(options);
    if (!saved.ok()) {
      std::cerr << "capstan store snapshot save: " << saved.status().message() << "\n";
      return 1;
    }
    std::cout << "Snapshot saved at " << f.file << " (" << saved->bytes << " bytes, revision "
              << saved->revision << ", from " << saved->endpoint << ")\n";
    return 0;
  }
  if (c.status->parsed()) {
    auto status = store::ReadSnapshotStatus(f.file, f.skip_hash_check);
    if (!status.ok()) {
      std::cerr << "capstan store snapshot status: " << status.status().message() << "\n";
      return 1;
    }
    if (f.write_out == "json") {
      std::cout << store::SnapshotStatusJson(*status) << "\n";
    } else if (f.write_out == "table") {
      std::cout << store::SnapshotStatusTable(*status);
    } else {
      std::cout << absl::StrCat(absl::Hex(status->hash, absl::kZeroPad8), ", ", status->revision,
                                ", ", status->total_keys, ", ", status->total_size, "\n");
    }
    return 0;
  }
  if (c.restore->parsed()) {
    store::SnapshotRestoreOptions options;
    options.path = f.file;
    options.data_dir = f.data_dir.empty() ? f.name + ".etcd" : f.data_dir;
    options.name = f.name;
    options.initial_cluster = f.initial_cluster;
    options.initial_advertise_peer_urls = f.initial_advertise_peer_urls;
    options.initial_cluster_token = f.initial_cluster_token;
    options.skip_hash_check = f.skip_hash_check;
    auto restored = store::RestoreSnapshot(options);
    if (!restored.ok()) {
      std::cerr << "capstan store snapshot restore: " << restored.status().message() << "\n";
      return absl::IsInvalidArgument(restored.status()) ? 2 : 1;
    }
    std::cout << "restored snapshot " << f.file << " into " << options.data_dir << " (member "
              << absl::StrCat(absl::Hex(restored->member_id)) << ", cluster "
              << absl::StrCat(absl::Hex(restored->cluster_id)) << ", revision "
              << restored->revision << ")\n";
    return 0;
  }
  return 2;
}

}  // namespace capstan
