// Access to the real models and photos in $KADR_TEST_DATA (../shared in CI), and to
// files the tests generate. Tests that need the shared data call KADR_REQUIRE_TEST_DATA(),
// which skips with a clear message when the folder is absent.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kadr::testing {

// $KADR_TEST_DATA when it is set and exists; empty otherwise.
inline std::filesystem::path TestDataDir() {
  const char* dir = std::getenv("KADR_TEST_DATA");
  if (dir == nullptr || *dir == '\0') return {};
  std::filesystem::path p(dir);
  return std::filesystem::is_directory(p) ? p : std::filesystem::path{};
}

inline std::filesystem::path MediaPath(const std::string& name) {
  return TestDataDir() / "media" / name;
}
inline std::filesystem::path ModelPath(const std::string& name) {
  return TestDataDir() / "models" / name;
}

inline std::vector<std::uint8_t> ReadFileBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A fresh empty directory under the system temp dir, unique per test.
inline std::filesystem::path MakeTempDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = "kadr_";
  if (info != nullptr) name += std::string(info->test_suite_name()) + "_" + info->name();
  name += "_" + std::to_string(::getpid());
  auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace kadr::testing

#define KADR_REQUIRE_TEST_DATA()                                                               \
  do {                                                                                         \
    if (::kadr::testing::TestDataDir().empty()) {                                              \
      GTEST_SKIP() << "KADR_TEST_DATA is not set (point it at the shared folder with models/ " \
                      "and media/, e.g. KADR_TEST_DATA=../shared); skipping real-data test";   \
    }                                                                                          \
  } while (false)
