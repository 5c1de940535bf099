#include "store/reconfig_check.h"

namespace capstan::store {
namespace {

bool Started(const etcdserverpb::Member& m) { return !m.name().empty(); }

}  // namespace

absl::Status ErrNotEnoughStartedMembers() {
  return absl::FailedPreconditionError(
      "etcdserver: re-configuration failed due to not enough started members");
}

absl::Status ErrUnhealthyCluster() {
  return absl::UnavailableError("etcdserver: unhealthy cluster");
}

absl::Status CheckAddVoter(const std::vector<etcdserverpb::Member>& members) {
  int voters = 1, started = 0;  // the new member counts in the new size
  for (const auto& m : members) {
    if (m.islearner()) continue;
    ++voters;
    started += Started(m);
  }
  if (started == 1 && voters == 2) return absl::OkStatus();  // a lone voter adds a second
  return started >= voters / 2 + 1 ? absl::OkStatus() : ErrNotEnoughStartedMembers();
}

absl::Status CheckPromote(const std::vector<etcdserverpb::Member>& members) {
  int voters = 1, started = 1;  // the learner counts in the new size, as started
  for (const auto& m : members) {
    if (m.islearner()) continue;
    ++voters;
    started += Started(m);
  }
  return started >= voters / 2 + 1 ? absl::OkStatus() : ErrNotEnoughStartedMembers();
}

absl::Status CheckRemove(const std::vector<etcdserverpb::Member>& members, uint64_t id,
                         uint64_t self, const std::set<uint64_t>& active) {
  bool removing_learner = false;
  int voters_left = 0, started_left = 0, voters = 0, active_voters = 0;
  for (const auto& m : members) {
    if (m.id() == id && m.islearner()) removing_learner = true;
    if (m.islearner()) continue;
    ++voters;
    active_voters += active.contains(m.id()) ? 1 : 0;
    if (m.id() == id) continue;
    ++voters_left;
    started_left += Started(m);
  }
  if (removing_learner) return absl::OkStatus();  // no quorum changes
  if (started_left < voters_left / 2 + 1) return ErrNotEnoughStartedMembers();
  // A member that is down is safe to remove: it is not part of the quorum
  // that is working now.
  if (id != self && !active.contains(id)) return absl::OkStatus();
  if (active_voters - 1 < 1 + (voters - 1) / 2) return ErrUnhealthyCluster();
  return absl::OkStatus();
}

}  // namespace capstan::store
