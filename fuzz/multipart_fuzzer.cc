// The multipart/form-data parser (http/multipart.h): every multipart upload's body, as the
// client sent it, under the route's body limit.
//
// Input: the first line is the Content-Type's boundary parameter (quoted or not, as written),
// the rest the body; so a corpus entry reads like the request it stands for. Limits are the
// production defaults or small ones (chosen by the input's length), so the kTooLarge paths
// are reached too.
// Properties: an accepted body has at most max_parts parts; every part lies inside the body
// (its bytes are no more than the body's).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "check.h"
#include "http/multipart.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t eol = input.find('\n');
  const std::string_view boundary = eol == std::string_view::npos ? "" : input.substr(0, eol);
  const std::string_view body = eol == std::string_view::npos ? input : input.substr(eol + 1);

  const std::string content_type = "multipart/form-data; boundary=" + std::string(boundary);
  kadr::http::MultipartLimits limits;
  if (size % 3 == 0) limits = {.max_parts = 2, .max_header_bytes = 64};

  auto parts = kadr::http::ParseMultipart(content_type, body, limits);
  if (parts) {
    KADR_FUZZ_CHECK(parts->size() <= limits.max_parts, "more parts than max_parts");
    std::size_t bytes = 0;
    for (const auto& part : *parts) {
      bytes += part.content.size();
      KADR_FUZZ_CHECK(!part.name.empty(), "a part without a name");
    }
    KADR_FUZZ_CHECK(bytes <= body.size(), "parts hold more bytes than the body");
  }
  // The Content-Type itself is client input as well.
  (void)kadr::http::ParseMultipart(input.substr(0, std::min<std::size_t>(size, 200)), body);
  return 0;
}
