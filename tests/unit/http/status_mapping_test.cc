#include "http/status_mapping.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace kadr::http {
namespace {

TEST(StatusMappingTest, MapsEveryCodeAsDocumentedInProtocol) {
  const std::pair<StatusCode, int> table[] = {
      {StatusCode::kOk, 200},
      {StatusCode::kInvalidArgument, 400},
      {StatusCode::kNotFound, 404},
      {StatusCode::kTooLarge, 413},
      {StatusCode::kUnsupported, 415},
      {StatusCode::kResourceExhausted, 429},
      {StatusCode::kFailedPrecondition, 409},
      {StatusCode::kCancelled, 499},
      {StatusCode::kInternal, 500},
      {StatusCode::kUnavailable, 503},
      {StatusCode::kDeadlineExceeded, 504},
  };
  for (const auto& [code, http] : table) {
    EXPECT_EQ(HttpStatusFor(code), http) << StatusCodeName(code);
    EXPECT_EQ(StatusCodeForHttp(http), code) << http;
  }
}

TEST(StatusMappingTest, UnlistedHttpStatusesMapToInvalidArgumentOrInternal) {
  EXPECT_EQ(StatusCodeForHttp(405), StatusCode::kInvalidArgument);
  EXPECT_EQ(StatusCodeForHttp(502), StatusCode::kInternal);
}

TEST(StatusMappingTest, ErrorBodyHasCodeNameAndMessage) {
  EXPECT_EQ(ErrorBody(InvalidArgumentError("truncated JPEG")),
            R"({"error":{"code":"invalid_argument","message":"truncated JPEG"}})");
  EXPECT_EQ(ErrorBody(DeadlineExceededError("late")),
            R"({"error":{"code":"deadline_exceeded","message":"late"}})");
}

TEST(StatusMappingTest, ErrorBodyEscapesMessage) {
  auto body = nlohmann::json::parse(ErrorBody(NotFoundError("no \"job\"\n\\x")));
  EXPECT_EQ(body["error"]["message"], "no \"job\"\n\\x");
}

TEST(StatusMappingTest, ErrorBodyToleratesInvalidUtf8) {
  std::string body = ErrorBody(InvalidArgumentError("bad \xff byte"));
  auto parsed = nlohmann::json::parse(body);
  EXPECT_EQ(parsed["error"]["message"], "bad \xEF\xBF\xBD byte");
}

}  // namespace
}  // namespace kadr::http
