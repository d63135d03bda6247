#include "common/status.h"

#include <gtest/gtest.h>

namespace kadr {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x));
  return Status::Ok();
}

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "ok");
}

TEST(StatusTest, ToStringNamesCodeAndMessage) {
  EXPECT_EQ(TooLargeError("60000x60000 is over 50000000 pixels").ToString(),
            "too_large: 60000x60000 is over 50000000 pixels");
}

TEST(StatusTest, WithContextKeepsCode) {
  Status s = NotFoundError("no such file").WithContext("model yolox");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "model yolox: no such file");
}

TEST(ResultTest, AssignOrReturnPropagatesFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);  // 6 -> 3 -> odd
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
}

TEST(ResultTest, ReturnIfErrorAcceptsResult) {
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kadr

namespace kadr {
namespace {

TEST(StatusCodeNameTest, FromNameInvertsNameForEveryErrorCode) {
  for (int c = 1; c <= static_cast<int>(StatusCode::kPermissionDenied); ++c) {
    const auto code = static_cast<StatusCode>(c);
    EXPECT_EQ(StatusCodeFromName(StatusCodeName(code)), code);
  }
  EXPECT_EQ(StatusCodeFromName("no_such_code"), StatusCode::kInternal);
}

}  // namespace
}  // namespace kadr
