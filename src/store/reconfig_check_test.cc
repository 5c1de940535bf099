#include "store/reconfig_check.h"

#include "gtest/gtest.h"
#include "store/learner_gate.h"

namespace capstan::store {
namespace {

etcdserverpb::Member M(uint64_t id, bool started, bool learner = false) {
  etcdserverpb::Member m;
  m.set_id(id);
  if (started) m.set_name("m" + std::to_string(id));
  m.set_islearner(learner);
  return m;
}

TEST(ReconfigCheckTest, AddVoterNeedsAQuorumOfTheNewSizeStarted) {
  EXPECT_TRUE(CheckAddVoter({M(1, true)}).ok());  // a lone voter may add a second
  // Four voters after the add need three started; two are.
  EXPECT_FALSE(CheckAddVoter({M(1, true), M(2, true), M(3, false)}).ok());
  EXPECT_TRUE(CheckAddVoter({M(1, true), M(2, true), M(3, true)}).ok());
  absl::Status st = CheckAddVoter({M(1, true), M(2, false)});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "etcdserver: re-configuration failed due to not enough started members");
  // Learners do not count.
  EXPECT_FALSE(CheckAddVoter({M(1, true), M(2, false), M(3, true, true)}).ok());
}

TEST(ReconfigCheckTest, PromoteCountsTheLearnerAsStarted) {
  EXPECT_TRUE(CheckPromote({M(1, true), M(2, true), M(3, true), M(4, true, true)}).ok());
  EXPECT_TRUE(CheckPromote({M(1, true), M(2, true), M(3, false), M(4, true, true)}).ok());
  EXPECT_FALSE(CheckPromote({M(1, true), M(2, false), M(3, false), M(4, true, true)}).ok());
}

TEST(ReconfigCheckTest, RemoveKeepsAQuorumOfStartedAndReachableVoters) {
  std::vector<etcdserverpb::Member> three = {M(1, true), M(2, true), M(3, true)};
  EXPECT_TRUE(CheckRemove(three, 3, 1, {1, 2, 3}).ok());
  // 3 is down: removing it is safe; removing a live one leaves one live voter of two.
  EXPECT_TRUE(CheckRemove(three, 3, 1, {1, 2}).ok());
  absl::Status st = CheckRemove(three, 2, 1, {1, 2});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(), "etcdserver: unhealthy cluster");
  // Removing the leader itself counts it as live.
  EXPECT_TRUE(CheckRemove(three, 1, 1, {1, 2, 3}).ok());
  EXPECT_FALSE(CheckRemove(three, 1, 1, {1, 2}).ok());
  // Started members left must be a quorum of the members left.
  EXPECT_EQ(CheckRemove({M(1, true), M(2, false), M(3, true)}, 3, 1, {1, 3}).message(),
            "etcdserver: re-configuration failed due to not enough started members");
  // Learners leave without a check.
  EXPECT_TRUE(CheckRemove({M(1, true), M(2, false), M(4, true, true)}, 4, 1, {1}).ok());
}

TEST(LearnerGateTest, OnlyStatusAndSerializableRangePass) {
  EXPECT_TRUE(LearnerMayServe("/etcdserverpb.Maintenance/Status", nullptr));
  etcdserverpb::RangeRequest range;
  range.set_key("k");
  net::Buffer linearizable(range.SerializeAsString());
  EXPECT_FALSE(LearnerMayServe("/etcdserverpb.KV/Range", &linearizable));
  range.set_serializable(true);
  net::Buffer serializable(range.SerializeAsString());
  EXPECT_TRUE(LearnerMayServe("/etcdserverpb.KV/Range", &serializable));
  net::Buffer empty;
  for (const char* path :
       {"/etcdserverpb.KV/Put", "/etcdserverpb.KV/Txn", "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Maintenance/HashKV"}) {
    EXPECT_FALSE(LearnerMayServe(path, &empty)) << path;
  }
  EXPECT_FALSE(LearnerMayServe("/etcdserverpb.Watch/Watch", nullptr));
  EXPECT_FALSE(LearnerMayServe("/etcdserverpb.KV/Range", nullptr));
  EXPECT_EQ(ErrRpcNotSupportedForLearner().message(), "etcdserver: rpc not supported for learner");
}

}  // namespace
}  // namespace capstan::store
