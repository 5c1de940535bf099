#include "store/kv_ops.h"

#include <algorithm>

#include "store/errors.h"

namespace capstan::store {

using etcdserverpb::Compare;
using etcdserverpb::RangeRequest;

absl::StatusOr<RangeResult> SnapshotView::Range(std::string_view key, std::string_view end,
                                                const RangeOptions& opts) {
  RangeOptions o = opts;
  if (o.rev <= 0) o.rev = rev_;
  if (o.rev > rev_) return ErrFutureRev();
  ASSIGN_OR_RETURN(RangeResult r, mvcc_->Range(key, end, o));
  r.rev = rev_;
  return r;
}

namespace {

int64_t SortKeyInt(const mvccpb::KeyValue& kv, RangeRequest::SortTarget t) {
  switch (t) {
    case RangeRequest::VERSION:
      return kv.version();
    case RangeRequest::CREATE:
      return kv.create_revision();
    case RangeRequest::MOD:
      return kv.mod_revision();
    default:
      return 0;
  }
}

template <typename T>
int Cmp(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

bool CompareKv(const Compare& c, const mvccpb::KeyValue& kv) {
  int result = 0;
  // A target value set under another oneof case reads as zero, as in etcd.
  switch (c.target()) {
    case Compare::VALUE: {
      std::string_view want =
          c.target_union_case() == Compare::kValue ? std::string_view(c.value()) : "";
      result = Cmp(std::string_view(kv.value()), want);
      break;
    }
    case Compare::CREATE:
      result = Cmp(kv.create_revision(),
                   c.target_union_case() == Compare::kCreateRevision ? c.create_revision() : 0);
      break;
    case Compare::MOD:
      result = Cmp(kv.mod_revision(),
                   c.target_union_case() == Compare::kModRevision ? c.mod_revision() : 0);
      break;
    case Compare::VERSION:
      result = Cmp(kv.version(), c.target_union_case() == Compare::kVersion ? c.version() : 0);
      break;
    case Compare::LEASE:
      result = Cmp(kv.lease(), c.target_union_case() == Compare::kLease ? c.lease() : 0);
      break;
    default:
      break;
  }
  switch (c.result()) {
    case Compare::EQUAL:
      return result == 0;
    case Compare::NOT_EQUAL:
      return result != 0;
    case Compare::GREATER:
      return result > 0;
    case Compare::LESS:
      return result < 0;
    default:
      return true;
  }
}

bool ApplyCompare(KvView& view, const Compare& c) {
  auto rr = view.Range(c.key(), c.range_end(), {});
  if (!rr.ok()) return false;
  if (rr->kvs.empty()) {
    // A missing key has no value to compare: VALUE compares fail, the others
    // compare against zero (so "create_revision == 0" means "absent").
    if (c.target() == Compare::VALUE) return false;
    return CompareKv(c, mvccpb::KeyValue());
  }
  for (const auto& kv : rr->kvs) {
    if (!CompareKv(c, kv)) return false;
  }
  return true;
}

void CompareToPathInto(KvView& view, const etcdserverpb::TxnRequest& req, std::vector<bool>* path) {
  bool ok = EvaluateCompares(view, req);
  path->push_back(ok);
  for (const auto& op : ok ? req.success() : req.failure()) {
    if (op.has_request_txn()) CompareToPathInto(view, op.request_txn(), path);
  }
}

}  // namespace

absl::Status ExecuteRange(KvView& view, const RangeRequest& req,
                          etcdserverpb::RangeResponse* resp) {
  bool filtered = req.min_mod_revision() != 0 || req.max_mod_revision() != 0 ||
                  req.min_create_revision() != 0 || req.max_create_revision() != 0;
  // Sorting and filtering need every key; otherwise fetch one more than the
  // limit to learn whether there are more. Note etcd decides this on the
  // requested sort_order, before a non-key target implies ascending order.
  int64_t limit = req.limit();
  if (req.sort_order() != RangeRequest::NONE || filtered) limit = 0;
  if (limit > 0) ++limit;

  RangeOptions opts;
  opts.limit = limit;
  opts.rev = req.revision();
  opts.count_only = req.count_only();
  ASSIGN_OR_RETURN(RangeResult rr, view.Range(req.key(), req.range_end(), opts));

  auto& kvs = rr.kvs;
  if (filtered) {
    kvs.erase(std::remove_if(kvs.begin(), kvs.end(),
                             [&](const mvccpb::KeyValue& kv) {
                               return (req.max_mod_revision() != 0 &&
                                       kv.mod_revision() > req.max_mod_revision()) ||
                                      (req.min_mod_revision() != 0 &&
                                       kv.mod_revision() < req.min_mod_revision()) ||
                                      (req.max_create_revision() != 0 &&
                                       kv.create_revision() > req.max_create_revision()) ||
                                      (req.min_create_revision() != 0 &&
                                       kv.create_revision() < req.min_create_revision());
                             }),
              kvs.end());
  }

  RangeRequest::SortOrder order = req.sort_order();
  if (req.sort_target() != RangeRequest::KEY && order == RangeRequest::NONE) {
    order = RangeRequest::ASCEND;  // results come key-ordered; other targets need a sort
  }
  if (order != RangeRequest::NONE) {
    auto target = req.sort_target();
    auto less = [target](const mvccpb::KeyValue& a, const mvccpb::KeyValue& b) {
      if (target == RangeRequest::KEY) return a.key() < b.key();
      if (target == RangeRequest::VALUE) return a.value() < b.value();
      return SortKeyInt(a, target) < SortKeyInt(b, target);
    };
    if (order == RangeRequest::ASCEND) {
      std::stable_sort(kvs.begin(), kvs.end(), less);
    } else {
      std::stable_sort(
          kvs.begin(), kvs.end(),
          [&](const mvccpb::KeyValue& a, const mvccpb::KeyValue& b) { return less(b, a); });
    }
  }

  if (req.limit() > 0 && static_cast<int64_t>(kvs.size()) > req.limit()) {
    kvs.resize(static_cast<size_t>(req.limit()));
    resp->set_more(true);
  }
  resp->mutable_header()->set_revision(rr.rev);
  resp->set_count(rr.count);
  for (auto& kv : kvs) {
    if (req.keys_only()) kv.clear_value();
    *resp->add_kvs() = std::move(kv);
  }
  return absl::OkStatus();
}

bool EvaluateCompares(KvView& view, const etcdserverpb::TxnRequest& req) {
  for (const auto& c : req.compare()) {
    if (!ApplyCompare(view, c)) return false;
  }
  return true;
}

std::vector<bool> CompareToPath(KvView& view, const etcdserverpb::TxnRequest& req) {
  std::vector<bool> path;
  CompareToPathInto(view, req, &path);
  return path;
}

bool IsTxnReadOnly(const etcdserverpb::TxnRequest& req) {
  for (const auto* ops : {&req.success(), &req.failure()}) {
    for (const auto& op : *ops) {
      if (op.has_request_put() || op.has_request_delete_range()) return false;
      if (op.has_request_txn() && !IsTxnReadOnly(op.request_txn())) return false;
    }
  }
  return true;
}

bool TxnHasPut(const etcdserverpb::TxnRequest& req) {
  for (const auto* ops : {&req.success(), &req.failure()}) {
    for (const auto& op : *ops) {
      if (op.has_request_put()) return true;
      if (op.has_request_txn() && TxnHasPut(op.request_txn())) return true;
    }
  }
  return false;
}

}  // namespace capstan::store
