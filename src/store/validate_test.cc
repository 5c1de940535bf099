#include "store/validate.h"

#include "gtest/gtest.h"
#include "store/errors.h"

namespace capstan::store {
namespace {

using etcdserverpb::TxnRequest;

void AddPut(google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>* ops, const char* k) {
  ops->Add()->mutable_request_put()->set_key(k);
}

TEST(Validate, TxnDuplicateKeysFollowEtcd) {
  TxnRequest t;
  AddPut(t.mutable_success(), "a");
  AddPut(t.mutable_success(), "a");
  EXPECT_EQ(CheckTxn(t, 128), ErrDuplicateKey());

  TxnRequest del_then_put;
  auto* d = del_then_put.add_success()->mutable_request_delete_range();
  d->set_key("a");
  d->set_range_end("c");
  AddPut(del_then_put.mutable_success(), "b");
  EXPECT_EQ(CheckTxn(del_then_put, 128), ErrDuplicateKey());

  TxnRequest branches;  // the same key in success and failure is fine
  AddPut(branches.mutable_success(), "a");
  AddPut(branches.mutable_failure(), "a");
  EXPECT_TRUE(CheckTxn(branches, 128).ok());

  TxnRequest nested;  // then/else of a nested txn exclude each other
  auto* inner = nested.add_success()->mutable_request_txn();
  AddPut(inner->mutable_success(), "x");
  AddPut(inner->mutable_failure(), "x");
  EXPECT_TRUE(CheckTxn(nested, 128).ok());
  AddPut(nested.mutable_success(), "x");
  EXPECT_EQ(CheckTxn(nested, 128), ErrDuplicateKey());

  TxnRequest from_key;  // etcd's quirk: a from-key delete never collides
  auto* fd = from_key.add_success()->mutable_request_delete_range();
  fd->set_key("a");
  fd->set_range_end(std::string(1, '\0'));
  AddPut(from_key.mutable_success(), "b");
  EXPECT_TRUE(CheckTxn(from_key, 128).ok());
}

TEST(Validate, LimitsAndEmptyKeys) {
  TxnRequest t;
  for (int i = 0; i < 3; ++i) AddPut(t.mutable_success(), ("k" + std::to_string(i)).c_str());
  EXPECT_EQ(CheckTxn(t, 2), ErrTooManyOps());
  EXPECT_TRUE(CheckTxn(t, 3).ok());
  t.add_compare();
  EXPECT_EQ(CheckTxn(t, 3), ErrEmptyKey());
  etcdserverpb::PutRequest p;
  p.set_key("k");
  p.set_ignore_value(true);
  p.set_value("v");
  EXPECT_EQ(CheckPutRequest(p), ErrValueProvided());
  p.clear_value();
  p.set_ignore_lease(true);
  p.set_lease(5);
  EXPECT_EQ(CheckPutRequest(p), ErrLeaseProvided());
}

}  // namespace
}  // namespace capstan::store
