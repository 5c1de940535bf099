#include "raft/sim/linearizability.h"

#include <climits>

#include "gtest/gtest.h"

namespace capstan::raft::sim {
namespace {

Op Write(const std::string& v, int64_t invoke, int64_t complete) {
  Op op;
  op.kind = Op::Kind::kWrite;
  op.key = "k";
  op.value = v;
  op.invoke = invoke;
  op.complete = complete;
  op.ok = complete != INT64_MAX;
  return op;
}

Op Read(const std::string& out, int64_t invoke, int64_t complete) {
  Op op;
  op.kind = Op::Kind::kRead;
  op.key = "k";
  op.output = out;
  op.invoke = invoke;
  op.complete = complete;
  op.ok = true;
  return op;
}

TEST(Linearizability, AcceptsConcurrentOverlaps) {
  // The read overlaps the write, so it may see either value.
  EXPECT_TRUE(CheckLinearizable({Write("a", 0, 10), Read("", 5, 6)}).linearizable);
  EXPECT_TRUE(CheckLinearizable({Write("a", 0, 10), Read("a", 5, 6)}).linearizable);
}

TEST(Linearizability, RejectsStaleReads) {
  // The write finished before the read began: reading the old value is a violation.
  CheckResult r = CheckLinearizable({Write("a", 0, 1), Read("", 2, 3)});
  EXPECT_FALSE(r.linearizable);
  EXPECT_EQ(r.key, "k");
  EXPECT_FALSE(
      CheckLinearizable({Write("a", 0, 1), Write("b", 2, 3), Read("a", 4, 5)}).linearizable);
}

TEST(Linearizability, UnknownOutcomesMayOrMayNotHaveHappened) {
  EXPECT_TRUE(CheckLinearizable({Write("a", 0, INT64_MAX), Read("", 5, 6)}).linearizable);
  EXPECT_TRUE(CheckLinearizable({Write("a", 0, INT64_MAX), Read("a", 5, 6)}).linearizable);
  // But not before it was invoked.
  EXPECT_FALSE(CheckLinearizable({Read("a", 0, 1), Write("a", 2, INT64_MAX)}).linearizable);
}

TEST(Linearizability, CompareAndSet) {
  Op cas;
  cas.kind = Op::Kind::kCas;
  cas.key = "k";
  cas.expected = "a";
  cas.value = "b";
  cas.invoke = 2;
  cas.complete = 3;
  cas.ok = true;
  EXPECT_TRUE(CheckLinearizable({Write("a", 0, 1), cas, Read("b", 4, 5)}).linearizable);
  cas.ok = false;  // it cannot have failed: the value was "a"
  EXPECT_FALSE(CheckLinearizable({Write("a", 0, 1), cas}).linearizable);
}

}  // namespace
}  // namespace capstan::raft::sim
