// For tests only: a scratch directory per test.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace capstan {

// An empty directory path under the system's temp dir named after `prefix`,
// this process and the running test, so that tests and parallel runs never
// share one. The caller creates it if it needs it, and removes it.
inline std::filesystem::path FreshTestDir(std::string_view prefix) {
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              (std::string(prefix) + "_" + std::to_string(::getpid()) + "_" +
                               ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace capstan
