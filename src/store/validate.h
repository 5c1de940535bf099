// Request checks made before a request reaches the log, with etcd's errors
// (etcd's v3rpc/key.go): empty keys, flags that contradict each other, txns
// with too many operations or with two writes to the same key.
#pragma once

#include "base/status.h"
#include "etcd/etcdserverpb/rpc.pb.h"

namespace capstan::store {

absl::Status CheckRangeRequest(const etcdserverpb::RangeRequest& r);
absl::Status CheckPutRequest(const etcdserverpb::PutRequest& r);
absl::Status CheckDeleteRequest(const etcdserverpb::DeleteRangeRequest& r);
// Op counts and empty keys, recursively (etcd's checkTxnRequest).
absl::Status CheckTxnRequest(const etcdserverpb::TxnRequest& r, int max_txn_ops);
// CheckTxnRequest, then puts that collide with another put or a delete on the
// same branch (etcd's checkIntervals on success and failure).
absl::Status CheckTxn(const etcdserverpb::TxnRequest& r, int max_txn_ops);

// Bytes a request adds to the database, for the space quota.
size_t PutCost(const etcdserverpb::PutRequest& r);
size_t TxnCost(const etcdserverpb::TxnRequest& r);

}  // namespace capstan::store
