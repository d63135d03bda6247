#include "http/multipart.h"

#include <string>

#include <gtest/gtest.h>

namespace kadr::http {
namespace {

constexpr const char* kType = "multipart/form-data; boundary=XyZ";

std::string Part(const std::string& headers, const std::string& content) {
  return "--XyZ\r\n" + headers + "\r\n\r\n" + content + "\r\n";
}

TEST(MultipartTest, ParsesFieldsAndFilesWithTheirNamesAndTypes) {
  const std::string body =
      "preamble to ignore\r\n" +
      Part("Content-Disposition: form-data; name=\"model\"", "yolox_nano") +
      Part(
          "content-disposition: form-data; name=\"image\"; filename=\"a \\\"b\\\".jpg\"\r\n"
          "Content-Type: image/jpeg",
          std::string("\xff\xd8\r\n--Xy\0z", 10)) +
      "--XyZ--\r\nepilogue";
  auto parts = ParseMultipart(kType, body);
  ASSERT_TRUE(parts) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "model");
  EXPECT_EQ((*parts)[0].content, "yolox_nano");
  EXPECT_EQ((*parts)[0].filename, "");
  EXPECT_EQ((*parts)[1].name, "image");
  EXPECT_EQ((*parts)[1].filename, "a \"b\".jpg");
  EXPECT_EQ((*parts)[1].content_type, "image/jpeg");
  EXPECT_EQ((*parts)[1].content, std::string("\xff\xd8\r\n--Xy\0z", 10));
}

TEST(MultipartTest, KeepsTheBackslashesOfAWindowsPath) {
  auto parts = ParseMultipart(
      kType, Part("Content-Disposition: form-data; name=f; filename=\"C:\\photos\\bus.jpg\"", "x") +
                 "--XyZ--");
  ASSERT_TRUE(parts) << parts.status().ToString();
  EXPECT_EQ((*parts)[0].filename, "C:\\photos\\bus.jpg");
}

TEST(MultipartTest, AcceptsAQuotedBoundaryAndAnEmptyBody) {
  auto parts = ParseMultipart("multipart/form-data; charset=utf-8; boundary=\"a b\"",
                              "--a b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n--a b--");
  ASSERT_TRUE(parts) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].name, "x");
  EXPECT_EQ((*parts)[0].content, "");
  auto none = ParseMultipart(kType, "--XyZ--\r\n");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

TEST(MultipartTest, RefusesMalformedBodiesWithInvalidArgument) {
  const std::string named = "Content-Disposition: form-data; name=\"a\"";
  for (const auto& [type, body] : std::initializer_list<std::pair<std::string, std::string>>{
           {"multipart/form-data", Part(named, "x") + "--XyZ--"},  // no boundary
           {"text/plain; boundary=XyZ", Part(named, "x") + "--XyZ--"},
           {kType, "no boundary line at all"},
           {kType, Part(named, "x")},                                   // not closed
           {kType, Part("Content-Type: text/plain", "x") + "--XyZ--"},  // no name
           {kType, Part("Content-Disposition: attachment; name=a", "x") + "--XyZ--"},
           {kType, Part("Content-Disposition: form-data; name=\"a", "x") + "--XyZ--"},
           {kType, Part("no colon here", "x") + "--XyZ--"},
           {kType, "--XyZ\r\nContent-Disposition: form-data; name=a\r\n"},  // ends in headers
           {kType, "--XyZjunk\r\n"},
       }) {
    auto parts = ParseMultipart(type, body);
    ASSERT_FALSE(parts) << type << " | " << body;
    EXPECT_EQ(parts.status().code(), StatusCode::kInvalidArgument) << parts.status().ToString();
  }
}

TEST(MultipartTest, CountsPartsEmptyOnesIncluded) {
  std::string body;
  for (int i = 0; i < 17; ++i) body += Part("Content-Disposition: form-data; name=p", "");
  body += "--XyZ--";
  auto parts = ParseMultipart(kType, body);
  ASSERT_FALSE(parts);
  EXPECT_EQ(parts.status().code(), StatusCode::kTooLarge);
  EXPECT_NE(parts.status().message().find("more than 16 parts"), std::string::npos);
  EXPECT_TRUE(ParseMultipart(kType, body, {.max_parts = 17}));
}

TEST(MultipartTest, BoundsAPartsHeaderBlock) {
  // The line that cost httplib's regex ~0.7 s per 8 KB: refused without a regex.
  const std::string line =
      "Content-Disposition: form-data; name=\"a\"; filename=\"" + std::string(100000, 'x') + "\"";
  auto parts = ParseMultipart(kType, Part(line, "x") + "--XyZ--");
  ASSERT_FALSE(parts);
  EXPECT_EQ(parts.status().code(), StatusCode::kTooLarge);
  EXPECT_TRUE(ParseMultipart(kType, Part(line, "x") + "--XyZ--", {.max_header_bytes = 200000}));
}

}  // namespace
}  // namespace kadr::http
