// Building blocks shared by the applier and the read path: executing a
// RangeRequest against a view of the store, evaluating Txn compares, and
// classifying txns. Semantics follow etcd v3.4/3.5 exactly, quirks included
// (each is noted where it is implemented).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "etcd/etcdserverpb/rpc.pb.h"
#include "store/mvcc.h"

namespace capstan::store {

// A consistent view of the store that ranges and compares read from.
class KvView {
 public:
  virtual ~KvView() = default;
  virtual absl::StatusOr<RangeResult> Range(std::string_view key, std::string_view end,
                                            const RangeOptions& opts) = 0;
  // The store revision as seen by this view.
  virtual int64_t rev() const = 0;
};

// Reads the store at a fixed revision (read-only txns, plain ranges).
class SnapshotView final : public KvView {
 public:
  explicit SnapshotView(const Mvcc* mvcc) : mvcc_(mvcc), rev_(mvcc->current_rev()) {}
  absl::StatusOr<RangeResult> Range(std::string_view key, std::string_view end,
                                    const RangeOptions& opts) override;
  int64_t rev() const override { return rev_; }

 private:
  const Mvcc* mvcc_;
  int64_t rev_;
};

// Reads through a write txn, seeing its own writes.
class TxnView final : public KvView {
 public:
  explicit TxnView(Mvcc::WriteTxn* txn) : txn_(txn) {}
  absl::StatusOr<RangeResult> Range(std::string_view key, std::string_view end,
                                    const RangeOptions& opts) override {
    return txn_->Range(key, end, opts);
  }
  int64_t rev() const override { return txn_->rev(); }

 private:
  Mvcc::WriteTxn* txn_;
};

absl::Status ExecuteRange(KvView& view, const etcdserverpb::RangeRequest& req,
                          etcdserverpb::RangeResponse* resp);

// True when every comparison holds (etcd's applyCompare for each).
bool EvaluateCompares(KvView& view, const etcdserverpb::TxnRequest& req);

// Evaluates the compares of the txn and of every nested txn on the path taken,
// all against the state before the txn (etcd's compareToPath).
std::vector<bool> CompareToPath(KvView& view, const etcdserverpb::TxnRequest& req);

bool IsTxnReadOnly(const etcdserverpb::TxnRequest& req);
bool TxnHasPut(const etcdserverpb::TxnRequest& req);

}  // namespace capstan::store
