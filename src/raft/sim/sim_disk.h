// The simulator's disk for one node: the Raft log, hard state and the state
// machine's snapshot, with a crash model (unsynced writes lost, or partly kept
// as a torn write). Either an in-memory model or the real Wal on tmpfs
// (SimOptions::wal_dir). Used by simulator.cc only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/raft.h"
#include "raft/wal.h"

namespace capstan::raft::sim {

// The replicated state machine of the simulation: key -> value.
using Kv = std::map<std::string, std::string>;

// What a node has on disk. `synced` survives a crash; `pending` does not.
struct Disk {
  PersistentState synced;
  Kv snapshot_kv;  // the state machine as of synced.snapshot.index
  std::optional<std::pair<SnapshotMeta, Kv>> pending_snapshot;
  // Writes since the last sync, in order. Within one, the entries precede the
  // hard state, as in the WAL.
  struct PendingWrite {
    std::optional<HardState> hard_state;
    std::vector<Entry> entries;
  };
  std::vector<PendingWrite> pending;

  // Real-WAL mode (SimOptions::wal_dir): the log lives in a Wal; the state
  // machine snapshot stays in memory and counts as durable, as the store's
  // flushed RocksDB does.
  std::string wal_dir;
  std::unique_ptr<Wal> wal;
  std::string error;  // a WAL call failed; the run fails with it
  bool real() const { return !wal_dir.empty(); }
  void Check(const absl::Status& st) {
    if (!st.ok() && error.empty()) error = st.ToString();
  }
  static Wal::Options WalOptions() {
    Wal::Options o;
    o.segment_bytes = 2048;  // small, so segments roll and get released often
    return o;
  }
  // A founding member's first start: the bootstrap entries, durable.
  void Bootstrap(const PersistentState& founding) {
    WalState ws;
    auto w = Wal::Open(wal_dir, WalOptions(), &ws);
    if (!w.ok()) return Check(w.status());
    Check((*w)->Append(founding.entries));
    Check((*w)->SaveHardState(founding.hard_state));
    Check((*w)->Sync());
  }
  // Reads the WAL back into `synced`, as raft::Node::Init does.
  void Load() {
    WalState ws;
    auto w = Wal::Open(wal_dir, WalOptions(), &ws);
    if (!w.ok()) return Check(w.status());
    wal = std::move(*w);
    uint64_t snap = synced.snapshot.index;
    synced.hard_state = ws.hard_state;
    synced.entries.clear();
    for (Entry& e : ws.entries) {
      if (e.index > snap) synced.entries.push_back(std::move(e));
    }
    if (!synced.entries.empty() && synced.entries.front().index != snap + 1) {
      error =
          absl::StrCat("wal starts at ", synced.entries.front().index, " after snapshot ", snap);
      return;
    }
    if (wal->last_index() < snap) {
      Check(wal->SaveSnapshot(snap, synced.snapshot.term));
      Check(wal->Sync());
    }
    uint64_t last = synced.entries.empty() ? snap : synced.entries.back().index;
    if (synced.hard_state.commit > last) {
      error = absl::StrCat("recovered hard state commits ", synced.hard_state.commit,
                           " but the log ends at ", last);
      return;
    }
    synced.hard_state.commit = std::max(synced.hard_state.commit, snap);
  }

  void Write(const Ready& rd) {
    if (real()) {
      if (pending_snapshot) {
        // The state machine takes the snapshot first, then the WAL records it.
        synced.snapshot = pending_snapshot->first;
        snapshot_kv = std::move(pending_snapshot->second);
        pending_snapshot.reset();
        Check(wal->SaveSnapshot(synced.snapshot.index, synced.snapshot.term));
      }
      Check(wal->Append(rd.entries));
      if (rd.hard_state) Check(wal->SaveHardState(*rd.hard_state));
      return;
    }
    if (rd.hard_state || !rd.entries.empty()) pending.push_back({rd.hard_state, rd.entries});
  }
  void Persist(const PendingWrite& w, size_t entries, bool hard_state) {
    if (entries > 0) {
      // A later write of the same indexes replaces what was there.
      uint64_t from = w.entries.front().index;
      auto& e = synced.entries;
      while (!e.empty() && e.back().index >= from) e.pop_back();
      e.insert(e.end(), w.entries.begin(), w.entries.begin() + static_cast<ptrdiff_t>(entries));
    }
    if (hard_state && w.hard_state) synced.hard_state = *w.hard_state;
  }
  void Sync() {
    if (real()) return Check(wal->Sync());
    if (pending_snapshot) {
      synced.snapshot = pending_snapshot->first;
      snapshot_kv = std::move(pending_snapshot->second);
      synced.entries.clear();
      pending_snapshot.reset();
    }
    for (const auto& w : pending) Persist(w, w.entries.size(), true);
    pending.clear();
  }
  // Takes a snapshot of the applied state and forgets the entries it covers.
  void Snapshot(const SnapshotMeta& meta, const Kv& kv) {
    synced.snapshot = meta;
    snapshot_kv = kv;
    if (real()) return Check(wal->ReleaseTo(meta.index, meta.term));
    std::erase_if(synced.entries, [&](const Entry& e) { return e.index <= meta.index; });
  }
  // Unsynced writes are lost, except that the page cache may already have
  // written some of them: a torn write keeps a prefix of the byte stream,
  // i.e. whole earlier writes plus a prefix of one write's entries.
  void Crash(std::mt19937_64& rng, double torn) {
    if (real()) {
      // Each segment keeps what was fsynced; a torn write keeps part of the
      // rest, possibly cutting a record, which recovery must repair.
      auto sizes = wal ? wal->DurableSizes() : decltype(wal->DurableSizes()){};
      wal.reset();
      for (const auto& [path, durable] : sizes) {
        std::error_code ec;
        uint64_t actual = std::filesystem::file_size(path, ec);
        if (ec || durable == UINT64_MAX || actual <= durable) continue;
        uint64_t keep = durable;
        if (std::uniform_real_distribution<double>(0, 1)(rng) < torn) {
          keep += rng() % (actual - durable + 1);
        }
        std::filesystem::resize_file(path, keep, ec);
      }
      pending_snapshot.reset();
      return;
    }
    bool keep_some = !pending_snapshot &&
                     std::uniform_real_distribution<double>(0, 1)(rng) < torn && !pending.empty();
    if (keep_some) {
      size_t whole = rng() % pending.size();
      for (size_t i = 0; i < whole; ++i) Persist(pending[i], pending[i].entries.size(), true);
      const PendingWrite& w = pending[whole];
      Persist(w, w.entries.empty() ? 0 : rng() % (w.entries.size() + 1), false);
    }
    pending_snapshot.reset();
    pending.clear();
  }
};

}  // namespace capstan::raft::sim
