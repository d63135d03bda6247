#include "video/video.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>

#include "support/test_data.h"

namespace kadr::video {
namespace {

using kadr::testing::MakeTempDir;
using kadr::testing::MediaPath;
using kadr::testing::ReadFileBytes;

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

void WriteFile(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// A frame whose content depends on its index: a moving square on a gradient.
cv::Mat SyntheticFrame(int index, cv::Size size) {
  cv::Mat m(size, CV_8UC3);
  for (int y = 0; y < size.height; ++y) {
    m.row(y).setTo(cv::Scalar(y % 256, 64, 255 - y % 256));
  }
  const int x = (index * 7) % std::max(1, size.width - 20);
  cv::rectangle(m, cv::Rect(x, size.height / 3, 20, 20), cv::Scalar(255, 255, 255), cv::FILLED);
  // Noise, so that every frame costs bytes in the file (a cut lands between frames).
  cv::Mat noise = m(cv::Rect(0, 0, size.width / 2, size.height / 2));
  cv::RNG rng(static_cast<std::uint64_t>(index) + 1);
  rng.fill(noise, cv::RNG::UNIFORM, 0, 256);
  return m;
}

Status WriteSynthetic(const std::filesystem::path& path, int frames, double fps, cv::Size size) {
  ASSIGN_OR_RETURN(auto writer, Mp4Writer::Open(path.string(), fps, size));
  for (int i = 0; i < frames; ++i) RETURN_IF_ERROR(writer.Write(SyntheticFrame(i, size)));
  return writer.Close();
}

// The top-level boxes of an ISO BMFF file: type and offset, in file order.
std::vector<std::pair<std::string, std::size_t>> TopLevelBoxes(const std::vector<std::uint8_t>& b) {
  std::vector<std::pair<std::string, std::size_t>> boxes;
  std::size_t at = 0;
  while (at + 8 <= b.size()) {
    std::uint64_t size = (std::uint64_t{b[at]} << 24) | (std::uint64_t{b[at + 1]} << 16) |
                         (std::uint64_t{b[at + 2]} << 8) | b[at + 3];
    if (size == 1 && at + 16 <= b.size()) {  // 64-bit size follows the type
      size = 0;
      for (int i = 0; i < 8; ++i) size = (size << 8) | b[at + 8 + static_cast<std::size_t>(i)];
    } else if (size == 0) {
      size = b.size() - at;  // to the end of the file
    }
    boxes.emplace_back(std::string(reinterpret_cast<const char*>(&b[at + 4]), 4), at);
    if (size < 8) break;
    at += size;
  }
  return boxes;
}

std::size_t BoxAt(const std::vector<std::pair<std::string, std::size_t>>& boxes,
                  const std::string& type) {
  for (const auto& [t, at] : boxes) {
    if (t == type) return at;
  }
  return std::string::npos;
}

int CountFrames(VideoFileReader& reader) {
  int n = 0;
  cv::Mat frame;
  while (true) {
    auto more = reader.Read(frame);
    EXPECT_TRUE(more.has_value()) << more.error().ToString();
    if (!more || !*more) break;
    EXPECT_EQ(frame.type(), CV_8UC3);
    ++n;
  }
  return n;
}

TEST(SniffVideoTest, RecognisesContainersByMagic) {
  EXPECT_EQ(SniffVideo(Bytes(std::string("\0\0\0\x20"
                                         "ftypisom\0\0\2\0",
                                         16))),
            "mp4");
  EXPECT_EQ(SniffVideo(Bytes(std::string("\0\0\0\x14"
                                         "ftypqt  \0\0\0\0",
                                         16))),
            "mov");
  EXPECT_EQ(SniffVideo(Bytes(std::string("\x1A\x45\xDF\xA3\x01\0\0\0", 8))), "mkv");
  EXPECT_EQ(SniffVideo(Bytes(std::string("RIFF\x10\0\0\0"
                                         "AVI LIST",
                                         16))),
            "avi");
}

TEST(SniffVideoTest, RejectsImagesTextAndShortInput) {
  EXPECT_EQ(SniffVideo(Bytes(std::string("RIFF\x10\0\0\0"
                                         "WEBPVP8 ",
                                         16))),
            std::nullopt);
  EXPECT_EQ(SniffVideo(Bytes(std::string("\xFF\xD8\xFF\xE0\0\x10JFIF\0", 11))), std::nullopt);
  EXPECT_EQ(SniffVideo(Bytes(std::string("\0\0\0\x1C"
                                         "ftypheic\0\0\0\0",
                                         16))),
            std::nullopt);
  EXPECT_EQ(SniffVideo(Bytes("hello, this is text")), std::nullopt);
  EXPECT_EQ(SniffVideo(Bytes(std::string("\x1A\x45", 2))), std::nullopt);
  EXPECT_EQ(SniffVideo({}), std::nullopt);
}

TEST(SniffVideoTest, RecognisesTheSharedMedia) {
  KADR_REQUIRE_TEST_DATA();
  EXPECT_EQ(SniffVideo(ReadFileBytes(MediaPath("cars.mp4"))), "mp4");
  EXPECT_EQ(SniffVideo(ReadFileBytes(MediaPath("vtest.avi"))), "avi");
  EXPECT_EQ(SniffVideo(ReadFileBytes(MediaPath("bus.jpg"))), std::nullopt);
}

TEST(VideoFileReaderTest, ReadsEveryFrameOfAnMp4) {
  KADR_REQUIRE_TEST_DATA();
  auto reader = VideoFileReader::Open(MediaPath("cars.mp4").string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_EQ(reader->container(), "mp4");
  EXPECT_GT(reader->width(), 0);
  EXPECT_GT(reader->height(), 0);
  EXPECT_GT(reader->fps(), 0);
  const std::int64_t stated = reader->frame_count();
  EXPECT_GT(stated, 0);
  EXPECT_EQ(CountFrames(*reader), stated);
}

TEST(VideoFileReaderTest, ReadsAnAvi) {
  KADR_REQUIRE_TEST_DATA();
  auto reader = VideoFileReader::Open(MediaPath("vtest.avi").string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_EQ(reader->container(), "avi");
  EXPECT_NEAR(reader->fps(), 10.0, 0.01);
  cv::Mat frame;
  auto first = reader->Read(frame);
  ASSERT_TRUE(first.has_value() && *first);
  EXPECT_EQ(frame.cols, reader->width());
  EXPECT_EQ(frame.rows, reader->height());
}

TEST(ProbeVideoTest, ReadsSizeFramesAndDurationFromTheHeadersAlone) {
  const auto dir = kadr::testing::MakeTempDir();
  const auto path = dir / "clip.mp4";
  ASSERT_TRUE(WriteSynthetic(path, 12, 24.0, {160, 96}).ok());
  auto probe = ProbeVideo(path.string());
  ASSERT_TRUE(probe) << probe.error().ToString();
  EXPECT_EQ(probe->container, "mp4");
  EXPECT_EQ(probe->width, 160);
  EXPECT_EQ(probe->height, 96);
  EXPECT_EQ(probe->frames, 12);
  EXPECT_NEAR(probe->fps, 24.0, 0.01);
  EXPECT_NEAR(probe->duration_s, 0.5, 0.05);
  // Not a video, a truncated one, none at all.
  std::ofstream(dir / "notes.txt") << "just text, rendered as video by FFmpeg's tty demuxer";
  EXPECT_EQ(ProbeVideo((dir / "notes.txt").string()).error().code(), StatusCode::kUnsupported);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(dir / "cut.mp4", std::ios::binary) << bytes.substr(0, 40);
  EXPECT_EQ(ProbeVideo((dir / "cut.mp4").string()).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ProbeVideo((dir / "missing.mp4").string()).error().code(), StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(Mp4WriterTest, WrittenVideoReadsBackWithSameCountFpsAndSize) {
  const auto dir = MakeTempDir();
  const auto path = dir / "out.mp4";
  ASSERT_TRUE(WriteSynthetic(path, 37, 12.0, {160, 120}).ok());
  EXPECT_EQ(SniffVideo(ReadFileBytes(path)), "mp4");
  auto reader = VideoFileReader::Open(path.string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_NEAR(reader->fps(), 12.0, 0.01);
  EXPECT_EQ(reader->width(), 160);
  EXPECT_EQ(reader->height(), 120);
  EXPECT_EQ(reader->frame_count(), 37);
  EXPECT_EQ(CountFrames(*reader), 37);
}

// The index (moov) comes before the data (mdat), so a browser plays from the first bytes; the
// track is H.264 (an avc1 sample entry with its avcC configuration).
TEST(Mp4WriterTest, WritesAnH264TrackWithTheIndexBeforeTheData) {
  const auto dir = MakeTempDir();
  const auto path = dir / "fast.mp4";
  ASSERT_TRUE(WriteSynthetic(path, 10, 25.0, {96, 64}).ok());
  const auto bytes = ReadFileBytes(path);
  const auto boxes = TopLevelBoxes(bytes);
  ASSERT_FALSE(boxes.empty());
  EXPECT_EQ(boxes.front().first, "ftyp");
  const std::size_t moov = BoxAt(boxes, "moov");
  const std::size_t mdat = BoxAt(boxes, "mdat");
  ASSERT_NE(moov, std::string::npos);
  ASSERT_NE(mdat, std::string::npos);
  EXPECT_LT(moov, mdat);
  const std::string index(bytes.begin() + static_cast<std::ptrdiff_t>(moov),
                          bytes.begin() + static_cast<std::ptrdiff_t>(mdat));
  EXPECT_NE(index.find("avc1"), std::string::npos);
  EXPECT_NE(index.find("avcC"), std::string::npos);
}

// A non-integer rate is kept as a fraction: 29.97 reads back as 29.97, not 30.
TEST(Mp4WriterTest, KeepsANonIntegerFrameRate) {
  const auto dir = MakeTempDir();
  const auto path = dir / "ntsc.mp4";
  ASSERT_TRUE(WriteSynthetic(path, 31, 29.97, {64, 48}).ok());
  auto reader = VideoFileReader::Open(path.string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_NEAR(reader->fps(), 29.97, 0.001);
  EXPECT_EQ(reader->frame_count(), 31);
  EXPECT_EQ(CountFrames(*reader), 31);
}

// A writer that is destroyed, or replaced by move assignment, without Close() still finishes
// its file with every frame written (the encoder's delayed frames included).
TEST(Mp4WriterTest, DestructionAndMoveAssignmentCloseTheFile) {
  const auto dir = MakeTempDir();
  const auto first = dir / "first.mp4";
  const auto second = dir / "second.mp4";
  {
    auto a = Mp4Writer::Open(first.string(), 10.0, {64, 48});
    ASSERT_TRUE(a.has_value()) << a.error().ToString();
    for (int i = 0; i < 12; ++i) ASSERT_TRUE(a->Write(SyntheticFrame(i, {64, 48})).ok());
    auto b = Mp4Writer::Open(second.string(), 10.0, {64, 48});
    ASSERT_TRUE(b.has_value()) << b.error().ToString();
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(b->Write(SyntheticFrame(i, {64, 48})).ok());
    *a = std::move(*b);  // closes first.mp4; `a` now writes second.mp4
    EXPECT_EQ(a->frames_written(), 7);
    ASSERT_TRUE(a->Write(SyntheticFrame(7, {64, 48})).ok());
  }  // closes second.mp4
  for (const auto& [path, frames] : {std::pair{first, 12}, std::pair{second, 8}}) {
    auto reader = VideoFileReader::Open(path.string());
    ASSERT_TRUE(reader.has_value()) << path << ": " << reader.error().ToString();
    EXPECT_EQ(reader->frame_count(), frames) << path;
    EXPECT_EQ(CountFrames(*reader), frames) << path;
  }
}

TEST(Mp4WriterTest, ResizesFramesOfAnotherSizeAndRoundsOddSidesDown) {
  const auto dir = MakeTempDir();
  const auto path = dir / "odd.mp4";
  auto writer = Mp4Writer::Open(path.string(), 25.0, {161, 121});
  ASSERT_TRUE(writer.has_value()) << writer.error().ToString();
  EXPECT_EQ(writer->size(), cv::Size(160, 120));
  ASSERT_TRUE(writer->Write(SyntheticFrame(0, {320, 240})).ok());
  cv::Mat gray(121, 161, CV_8UC1, cv::Scalar(90));
  ASSERT_TRUE(writer->Write(gray).ok());
  EXPECT_EQ(writer->frames_written(), 2);
  ASSERT_TRUE(writer->Close().ok());
  EXPECT_EQ(writer->Close().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer->Write(gray).code(), StatusCode::kFailedPrecondition);
  auto reader = VideoFileReader::Open(path.string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_EQ(reader->width(), 160);
  EXPECT_EQ(CountFrames(*reader), 2);
}

TEST(Mp4WriterTest, RejectsBadParametersAndFrames) {
  const auto dir = MakeTempDir();
  EXPECT_EQ(Mp4Writer::Open((dir / "a.mp4").string(), 0, {64, 64}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Mp4Writer::Open((dir / "a.mp4").string(), 25, {1, 64}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Mp4Writer::Open((dir / "no/such/dir/a.mp4").string(), 25, {64, 64}).error().code(),
            StatusCode::kUnavailable);
  auto writer = Mp4Writer::Open((dir / "b.mp4").string(), 25, {64, 64});
  ASSERT_TRUE(writer.has_value());
  EXPECT_EQ(writer->Write(cv::Mat()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(writer->Write(cv::Mat(64, 64, CV_32FC3)).code(), StatusCode::kInvalidArgument);
}

TEST(VideoFileReaderTest, TextFileIsNotAVideo) {
  const auto dir = MakeTempDir();
  const auto path = dir / "notes.txt";
  WriteFile(path, Bytes("this is not a video, just some text\n"));
  auto reader = VideoFileReader::Open(path.string());
  ASSERT_FALSE(reader.has_value());
  EXPECT_EQ(reader.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(reader.error().message().find("not a video"), std::string::npos);
}

TEST(VideoFileReaderTest, MissingFileIsNotFound) {
  EXPECT_EQ(VideoFileReader::Open("/nonexistent/x.mp4").error().code(), StatusCode::kNotFound);
}

// cars.mp4 keeps its index (moov) at the end: any cut loses it and FFmpeg cannot open it.
TEST(VideoFileReaderTest, Mp4TruncatedBeforeItsIndexIsInvalid) {
  KADR_REQUIRE_TEST_DATA();
  const auto dir = MakeTempDir();
  auto bytes = ReadFileBytes(MediaPath("cars.mp4"));
  bytes.resize(256 * 1024);
  const auto path = dir / "cut.mp4";
  WriteFile(path, bytes);
  auto reader = VideoFileReader::Open(path.string());
  ASSERT_FALSE(reader.has_value());
  EXPECT_EQ(reader.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(reader.error().message().find("truncated"), std::string::npos);
}

// An MP4 with its index first ("faststart", as Mp4Writer writes them) and cut mid-data opens
// and yields the frames before the cut, then ends: fewer frames than the index states.
TEST(VideoFileReaderTest, FaststartMp4TruncatedMidDataYieldsTheFramesBeforeTheCut) {
  const auto dir = MakeTempDir();
  const auto fast = dir / "fast.mp4";
  ASSERT_TRUE(WriteSynthetic(fast, 60, 30.0, {320, 240}).ok());
  auto bytes = ReadFileBytes(fast);
  bytes.resize(bytes.size() / 2);
  const auto cut = dir / "cut.mp4";
  WriteFile(cut, bytes);
  auto reader = VideoFileReader::Open(cut.string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_EQ(reader->frame_count(), 60);
  const int n = CountFrames(*reader);
  EXPECT_GT(n, 0);
  EXPECT_LT(n, 60);
}

TEST(VideoFileReaderTest, HeaderOnlyMp4IsInvalid) {
  const auto dir = MakeTempDir();
  const auto path = dir / "head.mp4";
  WriteFile(path, Bytes(std::string("\0\0\0\x20"
                                    "ftypisom\0\0\2\0isomiso2avc1mp41",
                                    32)));
  auto reader = VideoFileReader::Open(path.string());
  ASSERT_FALSE(reader.has_value());
  EXPECT_EQ(reader.error().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kadr::video
