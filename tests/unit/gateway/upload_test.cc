#include "gateway/detail/upload.h"

#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kadr::gateway::detail {
namespace {

using namespace std::chrono_literals;

http::HttpRequest Raw(std::string content_type, std::string body,
                      std::multimap<std::string, std::string> query = {}) {
  http::HttpRequest req;
  req.method = "POST";
  req.headers.emplace("Content-Type", std::move(content_type));
  req.body = std::move(body);
  req.query_params = std::move(query);
  return req;
}

TEST(ParseUploadTest, RawBodyWithQueryParameters) {
  // Upload::image views the request's body: the request must outlive it.
  const http::HttpRequest req = Raw("image/png; charset=binary", "PNGDATA",
                                    {{"model", " m "},
                                     {"conf", "0.25"},
                                     {"iou", "1"},
                                     {"classes", " car, ,2 ,"},
                                     {"draw", "false"},
                                     {"timeout_ms", "1500"}});
  auto up = ParseUpload(req, 300000ms);
  ASSERT_TRUE(up.has_value()) << up.error().ToString();
  EXPECT_EQ(up->image, "PNGDATA");
  EXPECT_EQ(up->model, "m");
  EXPECT_FLOAT_EQ(*up->confidence, 0.25f);
  EXPECT_FLOAT_EQ(*up->iou, 1.0f);
  EXPECT_EQ(up->classes, (std::vector<std::string>{"car", "2"}));
  EXPECT_FALSE(up->draw);
  EXPECT_EQ(up->timeout, 1500ms);
}

TEST(ParseUploadTest, DefaultsWhenNothingIsGiven) {
  const http::HttpRequest req = Raw("application/octet-stream", "x");
  auto up = ParseUpload(req, 300000ms);
  ASSERT_TRUE(up.has_value());
  EXPECT_FALSE(up->model);
  EXPECT_FALSE(up->confidence);
  EXPECT_FALSE(up->iou);
  EXPECT_TRUE(up->classes.empty());
  EXPECT_TRUE(up->draw);
  EXPECT_FALSE(up->timeout);
  EXPECT_EQ(up->filename, "");
}

TEST(ParseUploadTest, MultipartImageOrFilePartAndFormFields) {
  http::HttpRequest req;
  req.headers.emplace("content-type", "multipart/form-data; boundary=abc");
  req.files = {{"conf", "", "", "0.7"}, {"file", "../../etc/cat.png", "image/png", "BYTES"}};
  req.query_params = {{"conf", "0.3"}};  // the query string wins
  auto up = ParseUpload(req, 300000ms);
  ASSERT_TRUE(up.has_value()) << up.error().ToString();
  EXPECT_EQ(up->image, "BYTES");
  EXPECT_EQ(up->filename, "cat.png");
  EXPECT_FLOAT_EQ(*up->confidence, 0.3f);

  req.query_params.clear();
  req.files.push_back({"image", "a.jpg", "", "IMAGE"});
  up = ParseUpload(req, 300000ms);
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(up->image, "IMAGE");  // "image" before "file"
  EXPECT_FLOAT_EQ(*up->confidence, 0.7f);
}

TEST(ParseUploadTest, RejectsWrongContentTypesAndBadParameters) {
  EXPECT_EQ(ParseUpload(Raw("text/plain", "x"), 300000ms).error().code(), StatusCode::kUnsupported);
  EXPECT_EQ(ParseUpload(Raw("application/json", "{}"), 300000ms).error().code(),
            StatusCode::kUnsupported);
  EXPECT_EQ(ParseUpload(Raw("image/jpeg", ""), 300000ms).error().code(),
            StatusCode::kInvalidArgument);
  http::HttpRequest multipart;
  multipart.headers.emplace("Content-Type", "multipart/form-data; boundary=b");
  multipart.files = {{"model", "", "", "m"}};
  EXPECT_EQ(ParseUpload(multipart, 300000ms).error().code(), StatusCode::kInvalidArgument);
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"conf", "1.01"},
           {"conf", "nan"},
           {"conf", ""},
           {"conf", "0.5x"},
           {"iou", "-1"},
           {"draw", "2"},
           {"timeout_ms", "0"},
           {"timeout_ms", "1001"},
           {"timeout_ms", "1.5"},
           {"model", ""},
       }) {
    auto up = ParseUpload(Raw("image/jpeg", "x", {{key, value}}), 1000ms);
    ASSERT_FALSE(up.has_value()) << key << "=" << value;
    EXPECT_EQ(up.error().code(), StatusCode::kInvalidArgument) << key << "=" << value;
  }
}

TEST(ParseUploadTest, RawUploadFileNameFromContentDisposition) {
  auto req = Raw("image/jpeg", "x");
  req.headers.emplace("Content-Disposition", "attachment; filename=\"dir/bus.jpg\"");
  auto up = ParseUpload(req, 300000ms);
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(up->filename, "bus.jpg");
}

TEST(ResolveClassesTest, NamesAndIdsAgainstLabels) {
  const std::vector<std::string> labels = {"person", "car", "bus"};
  auto ids = ResolveClasses({"bus", "0", "car", "bus"}, labels, "m");
  ASSERT_TRUE(ids.has_value());
  EXPECT_EQ(*ids, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(ResolveClasses({"zebra"}, labels, "m").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveClasses({"3"}, labels, "m").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveClasses({"-1"}, labels, "m").error().code(), StatusCode::kInvalidArgument);
  // Without labels only ids can be checked.
  EXPECT_EQ(*ResolveClasses({"17"}, {}, "m"), std::vector<int>{17});
  EXPECT_FALSE(ResolveClasses({"car"}, {}, "m").has_value());
  EXPECT_TRUE(ResolveClasses({}, labels, "m")->empty());
}

TEST(SanitizeFileNameTest, KeepsTheLastComponentAsSafeText) {
  EXPECT_EQ(SanitizeFileName("C:\\Users\\me\\bus.jpg"), "bus.jpg");
  EXPECT_EQ(SanitizeFileName("../../x.png"), "x.png");
  EXPECT_EQ(SanitizeFileName("a\nb\x01.jpg"), "a_b_.jpg");
  EXPECT_EQ(SanitizeFileName("caf\xC3\xA9.jpg"), "caf\xC3\xA9.jpg");  // UTF-8 kept
  EXPECT_EQ(SanitizeFileName("bad\xC3.jpg"), "bad_.jpg");             // invalid UTF-8 replaced
  EXPECT_EQ(SanitizeFileName(std::string(300, 'a')).size(), 128u);
  // Truncation never splits a character.
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xC3\xA9";
  EXPECT_EQ(SanitizeFileName(accents).size(), 128u);
  EXPECT_EQ(SanitizeFileName("x" + accents).size(), 127u);
}

}  // namespace
}  // namespace kadr::gateway::detail
