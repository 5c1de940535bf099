// etcd's strict reconfiguration check (--strict-reconfig-check, on by
// default): the leader refuses a membership change that would leave the
// cluster without a quorum of started, reachable voters.
//
//  - adding a voter, or promoting a learner: the started voters (members
//    that published their name, i.e. ran at least once) must be a quorum of
//    the new voter count (a lone voter may add a second);
//  - removing a voter: the started voters left must be a quorum of the
//    voters left; and unless the member removed is unreachable, the voters
//    this leader heard from in the last 5 s, minus the one removed, must
//    still be a quorum.
//
// Same messages as etcd: "etcdserver: re-configuration failed due to not
// enough started members" (FAILED_PRECONDITION) and "etcdserver: unhealthy
// cluster" (UNAVAILABLE).
#pragma once

#include <cstdint>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "etcd/etcdserverpb/rpc.pb.h"

namespace capstan::store {

absl::Status ErrNotEnoughStartedMembers();
absl::Status ErrUnhealthyCluster();

absl::Status CheckAddVoter(const std::vector<etcdserverpb::Member>& members);
absl::Status CheckPromote(const std::vector<etcdserverpb::Member>& members);
// `active`: the members heard from recently, this one (`self`) included.
absl::Status CheckRemove(const std::vector<etcdserverpb::Member>& members, uint64_t id,
                         uint64_t self, const std::set<uint64_t>& active);

}  // namespace capstan::store
