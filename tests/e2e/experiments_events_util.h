// Shared by the experiments event e2e tests (experiments_events_test.cc,
// experiments_events_retention_test.cc): JSON-lines calls to the service, the
// batch both post, and a fixture holding a real `capstan store`.
#pragma once

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {

// Event batches are JSON lines.
inline HttpAnswer EventsHttp(int port, const std::string& method, const std::string& target,
                             const std::string& body = "") {
  return HttpCall(port, method, target, body, {"Content-Type: application/x-ndjson"});
}

// `units` units named `unit_prefix` + "-u" + i, each with an exposure
// (alternating control and treatment) and one "clicks" value of 1 after it;
// the idempotency keys follow from the unit, so a re-send is all duplicates.
inline std::string EventBatch(const std::string& unit_prefix, int units) {
  std::string body;
  for (int i = 0; i < units; ++i) {
    std::string unit = unit_prefix + "-u" + std::to_string(i);
    std::string variant = i % 2 == 0 ? "control" : "treatment";
    body += R"({"type":"exposure","key":"x-)" + unit + R"(","experiment":"checkout","unit":")" +
            unit + R"(","variant":")" + variant + R"(","ts":1700000000000})" + "\n";
    body += R"({"type":"value","key":"v-)" + unit + R"(","experiment":"checkout","unit":")" + unit +
            R"(","metric":"clicks","value":1,"ts":1700000000001})" + "\n";
  }
  return body;
}

// A temporary directory with a `capstan store` in it (started in SetUp);
// the test starts `service_` and sets `port_`. TearDown kills the service
// and stops the store.
class ExperimentsEventsFixture : public ::testing::Test {
 protected:
  explicit ExperimentsEventsFixture(std::string name) : name_(std::move(name)) {}

  void SetUp() override {
    dir_ = std::make_unique<TempDir>(name_);
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
  }

  void TearDown() override {
    if (service_ != nullptr) service_->Kill();
    if (store_ != nullptr) store_->Stop();
  }

  std::string name_;
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::unique_ptr<Process> service_;
  int port_ = 0;
};

}  // namespace capstan::e2e
