// The `kadr` binary as a user runs it: exit codes, stdout JSON, annotated files on disk.
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "support/shell.h"
#include "support/test_data.h"

namespace kadr {
namespace {

// Runs kadr with `args`; stdout is captured, and stderr too when `with_stderr`.
testing::ShellResult RunKadr(const std::string& args, bool with_stderr = false) {
  return testing::Shell(std::string(KADR_BINARY) + " --log-level error " + args +
                        (with_stderr ? " 2>&1" : " 2>/dev/null"));
}

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

TEST(CliTest, DetectWritesAnnotatedImageAndJsonAndReportsBadFilesWithoutStopping) {
  const auto dir = testing::MakeTempDir();
  std::filesystem::copy_file(KADR_TINY_ONNX, dir / "tiny.onnx");
  cv::imwrite((dir / "white.png").string(), cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(255)));
  std::ofstream(dir / "corrupt.jpg") << "\xFF\xD8\xFF\xE0 definitely not a jpeg";
  cv::imwrite((dir / "black.png").string(), cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(0)));

  const auto r = RunKadr("--models-dir " + dir.string() + " detect -m tiny --json -o " +
                         (dir / "out").string() + " " + (dir / "white.png").string() + " " +
                         (dir / "corrupt.jpg").string() + " " + (dir / "black.png").string());
  EXPECT_EQ(r.exit_code, 1) << "one input failed";
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0]["result"]["detections"][0]["label"], "bright");
  EXPECT_EQ(lines[0]["result"]["image"]["width"], 64);
  EXPECT_EQ(lines[1]["error"]["code"], "invalid_argument");
  EXPECT_EQ(lines[2]["result"]["detections"][0]["label"], "dark");  // processed after the error

  const std::string annotated = lines[0]["annotated"];
  const cv::Mat img = cv::imread(annotated);
  ASSERT_FALSE(img.empty()) << "annotated image not written: " << annotated;
  EXPECT_EQ(img.cols, 64);
}

TEST(CliTest, UnknownModelExitsTwoAndNamesTheAvailableOnes) {
  const auto dir = testing::MakeTempDir();
  const auto r = RunKadr("--models-dir " + dir.string() + " detect -m nope x.jpg", true);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("unknown model 'nope'; available: faces-haar, null, people-hog"),
            std::string::npos)
      << r.out;
}

TEST(CliTest, ModelsJsonListsLoadStatusAndErrors) {
  const auto dir = testing::MakeTempDir();
  std::filesystem::copy_file(KADR_TINY_ONNX, dir / "tiny.onnx");
  std::ofstream(dir / "broken.onnx") << "nope";
  const auto r = RunKadr("--models-dir " + dir.string() + " models --json");
  ASSERT_EQ(r.exit_code, 0);
  const auto models = nlohmann::json::parse(r.out);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& m : models) by_name[m["name"]] = m;
  ASSERT_EQ(by_name.size(), 5u) << r.out;
  EXPECT_EQ(by_name["tiny"]["status"], "ready");
  EXPECT_EQ(by_name["tiny"]["family"], "yolov8");
  EXPECT_EQ(by_name["tiny"]["input"]["width"], 32);
  EXPECT_EQ(by_name["broken"]["status"], "failed");
  EXPECT_EQ(by_name["broken"]["error"]["code"], "unsupported");
  EXPECT_EQ(by_name["people-hog"]["status"], "ready");
}

TEST(CliTest, DetectOnRealPhotoWithClassFilterByName) {
  KADR_REQUIRE_TEST_DATA();
  const auto dir = testing::MakeTempDir();
  const auto r = RunKadr("--models-dir " + (testing::TestDataDir() / "models").string() +
                         " detect -m yolox_nano --classes person --json -o " + dir.string() + " " +
                         testing::MediaPath("bus.jpg").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  const auto& dets = lines[0]["result"]["detections"];
  ASSERT_GE(dets.size(), 3u);
  for (const auto& d : dets) EXPECT_EQ(d["label"], "person");
  for (const char* stage : {"decode", "inference", "draw", "encode", "total"}) {
    EXPECT_TRUE(lines[0]["result"]["timings_ms"].contains(stage)) << stage;
  }
}

}  // namespace
}  // namespace kadr
