#include "engine/video_file.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "fakes.h"
#include "support/test_data.h"
#include "video/video.h"

namespace kadr::engine {
namespace {

using kadr::testing::MakeTempDir;
using nlohmann::json;
using testing::AsyncRun;
using testing::ErrorResult;
using testing::OkResult;

constexpr int kFrames = 6;
constexpr double kFps = 10;
const cv::Size kSize(64, 48);
const cv::Scalar kRed(0, 0, 255);  // BGR
const cv::Scalar kGreen(0, 255, 0);
constexpr char kImageTopic[] = "kadr.replies.g1";

Status WriteVideo(const std::filesystem::path& path, int frames, double fps, cv::Scalar color) {
  ASSIGN_OR_RETURN(auto writer, video::Mp4Writer::Open(path.string(), fps, kSize));
  for (int i = 0; i < frames; ++i) RETURN_IF_ERROR(writer.Write(cv::Mat(kSize, CV_8UC3, color)));
  return writer.Close();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Whether `m` is mostly `color` (a solid frame through H.264 and back).
bool IsMostly(const cv::Mat& m, cv::Scalar color) {
  const cv::Scalar mean = cv::mean(m);
  for (int c = 0; c < 3; ++c) {
    if (std::abs(mean[c] - color[c]) > 40) return false;
  }
  return true;
}

// Answers every frame of a run, two at a time and the later one first (so an ordered run has
// to put them back in order): frame `failing` with an error result, every other one with an
// annotated picture (solid green) and an ok result with one detection, tracked as index + 1.
class AnnotatingDispatcher final : public Dispatcher {
 public:
  AnnotatingDispatcher(std::int64_t last, std::int64_t failing) : last_(last), failing_(failing) {}

  Status Send(const Outgoing& frame, FrameRun& run) override {
    std::vector<std::pair<std::int64_t, std::string>> answer;
    {
      std::lock_guard lock(mu_);
      held_.emplace_back(frame.index, frame.id);
      if (held_.size() < 2 && frame.index != last_) return Status::Ok();
      answer.assign(held_.rbegin(), held_.rend());
      held_.clear();
    }
    for (const auto& [index, id] : answer) {
      if (index == failing_) {
        run.OnResult(ErrorResult(id, InvalidArgumentError("corrupt frame")), 1);
        continue;
      }
      run.OnImage(id, cv::Mat(kSize, CV_8UC3, kGreen));
      protocol::FrameResult r = OkResult(id, kImageTopic);
      r.result.detections[0].track_id = index + 1;
      run.OnResult(std::move(r), 1);
    }
    return Status::Ok();
  }

 private:
  const std::int64_t last_;
  const std::int64_t failing_;
  std::mutex mu_;
  std::vector<std::pair<std::int64_t, std::string>> held_;
};

RunOptions VideoRun() {
  RunOptions o;
  o.id = "job-1";
  o.mode = Mode::kLossless;
  o.window = 2;
  o.ordered = true;
  o.keep_frames = true;
  o.want_image = true;
  o.image_topic = kImageTopic;
  return o;
}

// ---------------------------------------------------------------------------------------------
// VideoFileSource

TEST(VideoFileSourceTest, ReadsEveryFrameOfAVideo) {
  const auto dir = MakeTempDir();
  ASSERT_TRUE(WriteVideo(dir / "in.mp4", kFrames, kFps, kRed).ok());
  auto source = VideoFileSource::Open((dir / "in.mp4").string());
  ASSERT_TRUE(source.has_value()) << source.error().ToString();
  EXPECT_DOUBLE_EQ((*source)->fps(), kFps);
  EXPECT_EQ((*source)->stated_frames(), kFrames);
  EXPECT_EQ((*source)->width(), kSize.width);
  EXPECT_EQ((*source)->height(), kSize.height);
  EXPECT_EQ((*source)->container(), "mp4");
  for (int i = 0; i < kFrames; ++i) {
    auto read = (*source)->Read({});
    ASSERT_TRUE(read.has_value()) << read.error().ToString();
    ASSERT_TRUE(read->has_value()) << "frame " << i;
    const SourceFrame& f = **read;
    EXPECT_EQ(f.image.type(), CV_8UC3);
    EXPECT_EQ(f.image.cols, kSize.width);
    EXPECT_EQ(f.image.rows, kSize.height);
    EXPECT_TRUE(f.encoded.empty());
    EXPECT_TRUE(IsMostly(f.image, kRed));
  }
  auto end = (*source)->Read({});
  ASSERT_TRUE(end.has_value());
  EXPECT_FALSE(end->has_value());
  EXPECT_EQ((*source)->frames_read(), kFrames);
}

TEST(VideoFileSourceTest, OpenReportsAMissingFileOrANonVideo) {
  const auto dir = MakeTempDir();
  auto missing = VideoFileSource::Open((dir / "missing.mp4").string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  std::ofstream(dir / "notes.txt") << "not a video at all, just some words in a file\n";
  auto text = VideoFileSource::Open((dir / "notes.txt").string());
  ASSERT_FALSE(text.has_value());
  EXPECT_EQ(text.error().code(), StatusCode::kUnsupported);
}

// ---------------------------------------------------------------------------------------------
// A video through a run into VideoFileSink

TEST(VideoFileSinkTest, RunWritesTheAnnotatedMp4AndOneLinePerFrameInIndexOrder) {
  const auto dir = MakeTempDir();
  ASSERT_TRUE(WriteVideo(dir / "in.mp4", kFrames, kFps, kRed).ok());
  auto source = VideoFileSource::Open((dir / "in.mp4").string());
  ASSERT_TRUE(source.has_value()) << source.error().ToString();

  std::ostringstream lines;
  std::vector<std::pair<std::int64_t, bool>> progress;
  VideoFileSinkOptions sink_options;
  sink_options.mp4_path = (dir / "out.mp4").string();
  sink_options.fps = (*source)->fps();
  sink_options.width = (*source)->width();
  sink_options.height = (*source)->height();
  sink_options.lines = &lines;
  sink_options.file = "in.mp4";
  sink_options.on_frame = [&](std::int64_t written, bool failed) {
    progress.emplace_back(written, failed);
  };
  auto sink = VideoFileSink::Open(sink_options);
  ASSERT_TRUE(sink.has_value()) << sink.error().ToString();

  AnnotatingDispatcher dispatcher(/*last=*/kFrames - 1, /*failing=*/2);
  FrameRun run(VideoRun(), dispatcher, **sink);
  {
    AsyncRun async(run, **source);
    const auto outcome = async.Wait();
    ASSERT_TRUE(outcome.has_value()) << "the run did not end";
    ASSERT_TRUE(outcome->ok()) << outcome->ToString();
  }
  ASSERT_TRUE((*sink)->Close().ok());

  EXPECT_EQ((*sink)->written(), kFrames);
  EXPECT_EQ((*sink)->failed(), 1);
  EXPECT_EQ((*sink)->detections(), static_cast<std::uint64_t>(kFrames - 1));
  EXPECT_EQ((*sink)->max_track_id(), kFrames);
  const std::vector<std::pair<std::int64_t, bool>> want_progress = {
      {1, false}, {2, false}, {3, true}, {4, false}, {5, false}, {6, false}};
  EXPECT_EQ(progress, want_progress);

  // The MP4: every frame, at the source's rate; the answered ones annotated (green), the failed
  // one the source frame (red, kept by keep_frames).
  auto out = video::VideoFileReader::Open((dir / "out.mp4").string());
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(out->frame_count(), kFrames);
  EXPECT_DOUBLE_EQ(out->fps(), kFps);
  cv::Mat picture;
  for (int i = 0; i < kFrames; ++i) {
    auto more = out->Read(picture);
    ASSERT_TRUE(more.has_value() && *more) << "frame " << i;
    EXPECT_TRUE(IsMostly(picture, i == 2 ? kRed : kGreen))
        << "frame " << i << " mean BGR " << cv::mean(picture)[0] << " " << cv::mean(picture)[1]
        << " " << cv::mean(picture)[2];
  }
  auto more = out->Read(picture);
  ASSERT_TRUE(more.has_value());
  EXPECT_FALSE(*more) << "more frames than the source";

  // The lines: one per frame, in index order.
  const auto text = Lines(lines.str());
  ASSERT_EQ(text.size(), static_cast<std::size_t>(kFrames)) << lines.str();
  for (int i = 0; i < kFrames; ++i) {
    const json line = json::parse(text[i], nullptr, false);
    ASSERT_TRUE(line.is_object()) << text[i];
    EXPECT_EQ(line.value("file", ""), "in.mp4") << text[i];
    EXPECT_EQ(line.value("index", -1), i) << text[i];
    EXPECT_EQ(line.value("pts_ms", -1), i * 100) << text[i];
    ASSERT_TRUE(line.contains("detections") && line["detections"].is_array()) << text[i];
    if (i == 2) {
      EXPECT_EQ(line.value("status", ""), "error") << text[i];
      EXPECT_TRUE(line["detections"].empty());
      ASSERT_TRUE(line.contains("error")) << text[i];
      EXPECT_EQ(line["error"].value("code", ""), "invalid_argument");
      EXPECT_EQ(line["error"].value("message", ""), "corrupt frame");
    } else {
      EXPECT_EQ(line.value("status", ""), "ok") << text[i];
      ASSERT_EQ(line["detections"].size(), 1u) << text[i];
      EXPECT_EQ(line["detections"][0].value("label", ""), "cat");
      EXPECT_FALSE(line.contains("error")) << text[i];
    }
  }
}

TEST(VideoFileSinkTest, FailedResultWithoutKeptFramesFailsTheRun) {
  const auto dir = MakeTempDir();
  ASSERT_TRUE(WriteVideo(dir / "in.mp4", 3, kFps, kRed).ok());
  auto source = VideoFileSource::Open((dir / "in.mp4").string());
  ASSERT_TRUE(source.has_value()) << source.error().ToString();
  VideoFileSinkOptions sink_options;
  sink_options.mp4_path = (dir / "out.mp4").string();
  sink_options.fps = kFps;
  sink_options.width = kSize.width;
  sink_options.height = kSize.height;
  auto sink = VideoFileSink::Open(sink_options);
  ASSERT_TRUE(sink.has_value()) << sink.error().ToString();
  AnnotatingDispatcher dispatcher(/*last=*/2, /*failing=*/0);
  RunOptions options = VideoRun();
  options.keep_frames = false;  // nothing to write for the failed frame 0
  FrameRun run(options, dispatcher, **sink);
  AsyncRun async(run, **source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value()) << "the run did not end";
  EXPECT_EQ(outcome->code(), StatusCode::kInternal) << outcome->ToString();
  EXPECT_EQ((*sink)->written(), 0);
}

TEST(VideoFileSinkTest, WithoutAnMp4WritesOnlyTheLines) {
  std::ostringstream lines;
  VideoFileSinkOptions options;
  options.lines = &lines;
  auto sink = VideoFileSink::Open(options);
  ASSERT_TRUE(sink.has_value()) << sink.error().ToString();
  Released dropped;
  dropped.index = 0;
  dropped.dropped = DropReason::kDeadline;
  ASSERT_TRUE((*sink)->Release(dropped).ok());
  Released answered;
  answered.index = 1;
  answered.result = OkResult("r:1");
  ASSERT_TRUE((*sink)->Release(answered).ok());
  ASSERT_TRUE((*sink)->Close().ok());
  EXPECT_EQ((*sink)->written(), 2);
  EXPECT_EQ((*sink)->failed(), 1);
  EXPECT_EQ((*sink)->detections(), 1u);
  EXPECT_EQ(Lines(lines.str()).size(), 2u);
}

// A frame that went to the worker scaled down is answered in the small frame's pixels; the
// sink reports and draws in the video's, and with `annotate` draws on the source frame.
TEST(VideoFileSinkTest, AnswersOfScaledFramesAreInTheVideosPixelsAndDrawnOnTheSource) {
  const auto dir = MakeTempDir();
  std::ostringstream lines;
  VideoFileSinkOptions options;
  options.mp4_path = (dir / "out.mp4").string();
  options.fps = kFps;
  options.width = kSize.width;
  options.height = kSize.height;
  options.lines = &lines;
  options.annotate = true;
  auto sink = VideoFileSink::Open(options);
  ASSERT_TRUE(sink.has_value()) << sink.error().ToString();
  Released answered;
  answered.index = 0;
  answered.result = OkResult("r:0");
  answered.result->result.image_width = kSize.width / 2;  // seen at half size
  answered.result->result.image_height = kSize.height / 2;
  answered.result->result.detections[0].box = {4, 4, 16, 12};
  answered.frame = std::make_shared<SourceFrame>();
  answered.frame->image = cv::Mat(kSize, CV_8UC3, cv::Scalar::all(0));
  ASSERT_TRUE((*sink)->Release(answered).ok());
  ASSERT_TRUE((*sink)->Close().ok());
  const json line = json::parse(Lines(lines.str()).at(0));
  const json box = line["detections"][0]["box"];
  EXPECT_EQ(box["x"], 8);
  EXPECT_EQ(box["y"], 8);
  EXPECT_EQ(box["width"], 32);
  EXPECT_EQ(box["height"], 24);
  // Drawn on the (black) source frame at the box's place in the video's pixels.
  auto reader = video::VideoFileReader::Open(options.mp4_path);
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  cv::Mat frame;
  ASSERT_TRUE(*reader->Read(frame));
  cv::Mat gray;
  cv::cvtColor(frame, gray, cv::COLOR_BGR2GRAY);
  double edge = 0;
  double outside = 0;
  cv::minMaxLoc(gray(cv::Rect(6, 14, 5, 12)), nullptr, &edge);  // around the left edge x=8
  cv::minMaxLoc(gray(cv::Rect(50, 36, 10, 10)), nullptr, &outside);
  EXPECT_GT(edge, 60);
  EXPECT_LT(outside, 30);
}

TEST(VideoFileSinkTest, OpenRejectsABadFrameRate) {
  const auto dir = MakeTempDir();
  VideoFileSinkOptions options;
  options.mp4_path = (dir / "out.mp4").string();
  options.fps = 0;
  options.width = kSize.width;
  options.height = kSize.height;
  auto sink = VideoFileSink::Open(options);
  ASSERT_FALSE(sink.has_value());
  EXPECT_EQ(sink.error().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// FrameLine

Released Answered(std::int64_t index, protocol::FrameResult result) {
  Released r;
  r.index = index;
  r.id = FrameIdOf("r", index);
  r.result = std::move(result);
  return r;
}

TEST(FrameLineTest, OkResult) {
  const json line = json::parse(FrameLine(Answered(3, OkResult("r:3")), 30));
  EXPECT_EQ(line["index"], 3);
  EXPECT_EQ(line["pts_ms"], 100);
  EXPECT_EQ(line["status"], "ok");
  ASSERT_EQ(line["detections"].size(), 1u);
  EXPECT_EQ(line["detections"][0]["class_id"], 15);
  EXPECT_FALSE(line.contains("error"));
  EXPECT_FALSE(line.contains("file"));
}

TEST(FrameLineTest, ErrorAndSkippedResults) {
  json line = json::parse(
      FrameLine(Answered(0, ErrorResult("r:0", InvalidArgumentError("corrupt frame"))), 25));
  EXPECT_EQ(line["status"], "error");
  EXPECT_TRUE(line["detections"].empty());
  EXPECT_EQ(line["error"]["code"], "invalid_argument");
  EXPECT_EQ(line["error"]["message"], "corrupt frame");

  protocol::FrameResult skipped = ErrorResult("r:1", DeadlineExceededError("past its deadline"));
  skipped.status = protocol::FrameStatus::kSkipped;
  line = json::parse(FrameLine(Answered(1, skipped), 25));
  EXPECT_EQ(line["status"], "skipped");
  EXPECT_EQ(line["error"]["code"], "deadline_exceeded");
}

TEST(FrameLineTest, DroppedFrames) {
  Released deadline;
  deadline.index = 4;
  deadline.dropped = DropReason::kDeadline;
  json line = json::parse(FrameLine(deadline, 0));
  EXPECT_EQ(line["pts_ms"], 0) << "no frame rate: no time";
  EXPECT_EQ(line["status"], "error");
  EXPECT_TRUE(line["detections"].empty());
  EXPECT_EQ(line["error"]["code"], "deadline_exceeded");

  Released send_failed;
  send_failed.index = 5;
  send_failed.dropped = DropReason::kError;
  send_failed.error = TooLargeError("frame over the limit");
  line = json::parse(FrameLine(send_failed, 25));
  EXPECT_EQ(line["pts_ms"], 200);
  EXPECT_EQ(line["status"], "error");
  EXPECT_EQ(line["error"]["code"], "too_large");
  EXPECT_EQ(line["error"]["message"], "frame over the limit");
}

// video_file.h: "A sink given a file name starts every line with "file"".
TEST(FrameLineTest, StartsWithFileWhenSet) {
  const std::string line = FrameLine(Answered(0, OkResult("r:0")), 25, "dock.mp4");
  EXPECT_TRUE(line.starts_with(R"({"file":"dock.mp4",)")) << line;
  EXPECT_EQ(json::parse(line)["file"], "dock.mp4");
}

// video_file.h documents the line as {"index", "pts_ms", "status", "detections"[, "error"]}.
TEST(FrameLineTest, KeysFollowTheDocumentedOrder) {
  const std::string line =
      FrameLine(Answered(0, ErrorResult("r:0", InvalidArgumentError("corrupt"))), 25);
  EXPECT_TRUE(
      line.starts_with(R"({"index":0,"pts_ms":0,"status":"error","detections":[],"error":)"))
      << line;
}

}  // namespace
}  // namespace kadr::engine
