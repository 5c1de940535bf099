// The errors the store returns, with etcd's gRPC codes and exact messages:
// etcd clients match on them (clientv3 turns these strings back into typed
// errors, e.g. rpctypes.ErrCompacted), so they are part of the wire API.
#pragma once

#include "base/status.h"

namespace capstan::store {

inline absl::Status ErrEmptyKey() {
  return absl::InvalidArgumentError("etcdserver: key is not provided");
}
inline absl::Status ErrKeyNotFound() {
  return absl::InvalidArgumentError("etcdserver: key not found");
}
inline absl::Status ErrValueProvided() {
  return absl::InvalidArgumentError("etcdserver: value is provided");
}
inline absl::Status ErrLeaseProvided() {
  return absl::InvalidArgumentError("etcdserver: lease is provided");
}
inline absl::Status ErrTooManyOps() {
  return absl::InvalidArgumentError("etcdserver: too many operations in txn request");
}
inline absl::Status ErrDuplicateKey() {
  return absl::InvalidArgumentError("etcdserver: duplicate key given in txn request");
}
inline absl::Status ErrCompacted() {
  return absl::OutOfRangeError("etcdserver: mvcc: required revision has been compacted");
}
inline absl::Status ErrFutureRev() {
  return absl::OutOfRangeError("etcdserver: mvcc: required revision is a future revision");
}
inline absl::Status ErrNoSpace() {
  return absl::ResourceExhaustedError("etcdserver: mvcc: database space exceeded");
}
inline absl::Status ErrLeaseNotFound() {
  return absl::NotFoundError("etcdserver: requested lease not found");
}
inline absl::Status ErrLeaseExist() {
  return absl::FailedPreconditionError("etcdserver: lease already exists");
}
inline absl::Status ErrLeaseTTLTooLarge() {
  return absl::OutOfRangeError("etcdserver: too large lease TTL");
}
inline absl::Status ErrRequestTooLarge() {
  return absl::InvalidArgumentError("etcdserver: request is too large");
}
inline absl::Status ErrTooManyRequests() {
  return absl::ResourceExhaustedError("etcdserver: too many requests");
}
inline absl::Status ErrTimeout() { return absl::UnavailableError("etcdserver: request timed out"); }
inline absl::Status ErrStopped() { return absl::UnavailableError("etcdserver: server stopped"); }
inline absl::Status ErrNotCapable() { return absl::UnavailableError("etcdserver: not capable"); }
inline absl::Status ErrMemberNotFound() {
  return absl::NotFoundError("etcdserver: member not found");
}
inline absl::Status ErrMemberExist() {
  return absl::FailedPreconditionError("etcdserver: member ID already exist");
}
inline absl::Status ErrPeerUrlExist() {
  return absl::FailedPreconditionError("etcdserver: Peer URLs already exists");
}
inline absl::Status ErrMemberBadUrls() {
  return absl::InvalidArgumentError("etcdserver: given member URLs are invalid");
}
inline absl::Status ErrMemberNotLearner() {
  return absl::FailedPreconditionError("etcdserver: can only promote a learner member");
}
inline absl::Status ErrLearnerNotReady() {
  return absl::FailedPreconditionError(
      "etcdserver: can only promote a learner member which is in sync with leader");
}
inline absl::Status ErrNoLeader() { return absl::UnavailableError("etcdserver: no leader"); }
inline absl::Status ErrNotLeader() { return absl::UnavailableError("etcdserver: not leader"); }
inline absl::Status ErrLeaderChanged() {
  return absl::UnavailableError("etcdserver: leader changed");
}
inline absl::Status ErrBadLeaderTransferee() {
  return absl::FailedPreconditionError("etcdserver: bad leader transferee");
}
inline absl::Status ErrUnhealthy() {
  return absl::UnavailableError("etcdserver: unhealthy cluster");
}
inline absl::Status ErrElectionNoLeader() { return absl::UnknownError("election: no leader"); }
inline absl::Status ErrElectionNotLeader() { return absl::UnknownError("election: not leader"); }

}  // namespace capstan::store
