#include "store/validate.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "store/errors.h"

namespace capstan::store {

using etcdserverpb::RequestOp;

absl::Status CheckRangeRequest(const etcdserverpb::RangeRequest& r) {
  if (r.key().empty()) return ErrEmptyKey();
  return absl::OkStatus();
}

absl::Status CheckPutRequest(const etcdserverpb::PutRequest& r) {
  if (r.key().empty()) return ErrEmptyKey();
  if (r.ignore_value() && !r.value().empty()) return ErrValueProvided();
  if (r.ignore_lease() && r.lease() != 0) return ErrLeaseProvided();
  return absl::OkStatus();
}

absl::Status CheckDeleteRequest(const etcdserverpb::DeleteRangeRequest& r) {
  if (r.key().empty()) return ErrEmptyKey();
  return absl::OkStatus();
}

namespace {

absl::Status CheckOp(const RequestOp& op, int max_txn_ops) {
  switch (op.request_case()) {
    case RequestOp::kRequestRange:
      return CheckRangeRequest(op.request_range());
    case RequestOp::kRequestPut:
      return CheckPutRequest(op.request_put());
    case RequestOp::kRequestDeleteRange:
      return CheckDeleteRequest(op.request_delete_range());
    case RequestOp::kRequestTxn:
      return CheckTxnRequest(op.request_txn(), max_txn_ops);
    default:
      return absl::OkStatus();
  }
}

// Deleted intervals [begin, end) with etcd's affine-interval semantics: an
// empty end is +infinity; a single key k is [k, k+"\0").
struct Interval {
  std::string begin, end;
};

bool Contains(const std::vector<Interval>& dels, const std::string& k) {
  for (const auto& iv : dels) {
    if (k < iv.begin) continue;
    if (iv.end.empty() || k < iv.end) return true;
  }
  return false;
}

// etcd's checkIntervals: returns the keys put by these ops (recursively), and
// the intervals they delete.
absl::Status CheckIntervals(const google::protobuf::RepeatedPtrField<RequestOp>& reqs,
                            std::set<std::string>* puts_out, std::vector<Interval>* dels_out) {
  std::vector<Interval> dels;
  for (const auto& op : reqs) {
    if (!op.has_request_delete_range()) continue;
    const auto& d = op.request_delete_range();
    if (d.range_end().empty()) {
      dels.push_back({d.key(), d.key() + std::string(1, '\0')});
    } else {
      // Note: range_end "\0" makes an empty interval here, as in etcd, so a
      // from-key delete never collides with a put.
      dels.push_back({d.key(), d.range_end()});
    }
  }
  std::set<std::string> puts;
  for (const auto& op : reqs) {
    if (!op.has_request_txn()) continue;
    std::set<std::string> puts_then, puts_else;
    std::vector<Interval> dels_then, dels_else;
    RETURN_IF_ERROR(CheckIntervals(op.request_txn().success(), &puts_then, &dels_then));
    RETURN_IF_ERROR(CheckIntervals(op.request_txn().failure(), &puts_else, &dels_else));
    for (const auto& k : puts_then) {
      if (puts.contains(k) || Contains(dels, k)) return ErrDuplicateKey();
      puts.insert(k);
    }
    for (const auto& k : puts_else) {
      // then and else exclude each other, so the same key in both is fine.
      if (puts.contains(k) && !puts_then.contains(k)) return ErrDuplicateKey();
      if (Contains(dels, k)) return ErrDuplicateKey();
      puts.insert(k);
    }
    dels.insert(dels.end(), dels_then.begin(), dels_then.end());
    dels.insert(dels.end(), dels_else.begin(), dels_else.end());
  }
  for (const auto& op : reqs) {
    if (!op.has_request_put()) continue;
    const std::string& k = op.request_put().key();
    if (puts.contains(k) || Contains(dels, k)) return ErrDuplicateKey();
    puts.insert(k);
  }
  *puts_out = std::move(puts);
  *dels_out = std::move(dels);
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTxnRequest(const etcdserverpb::TxnRequest& r, int max_txn_ops) {
  int opc = std::max({r.compare_size(), r.success_size(), r.failure_size()});
  if (opc > max_txn_ops) return ErrTooManyOps();
  for (const auto& c : r.compare()) {
    if (c.key().empty()) return ErrEmptyKey();
  }
  for (const auto& op : r.success()) RETURN_IF_ERROR(CheckOp(op, max_txn_ops));
  for (const auto& op : r.failure()) RETURN_IF_ERROR(CheckOp(op, max_txn_ops));
  return absl::OkStatus();
}

absl::Status CheckTxn(const etcdserverpb::TxnRequest& r, int max_txn_ops) {
  RETURN_IF_ERROR(CheckTxnRequest(r, max_txn_ops));
  // After the cheap checks, so a huge txn cannot make this quadratic walk run.
  std::set<std::string> puts;
  std::vector<Interval> dels;
  RETURN_IF_ERROR(CheckIntervals(r.success(), &puts, &dels));
  return CheckIntervals(r.failure(), &puts, &dels);
}

size_t PutCost(const etcdserverpb::PutRequest& r) { return r.key().size() + r.value().size() + 64; }

size_t TxnCost(const etcdserverpb::TxnRequest& r) {
  size_t cost = 0;
  for (const auto* ops : {&r.success(), &r.failure()}) {
    for (const auto& op : *ops) {
      if (op.has_request_put()) cost += PutCost(op.request_put());
      if (op.has_request_txn()) cost += TxnCost(op.request_txn());
    }
  }
  return cost;
}

}  // namespace capstan::store
