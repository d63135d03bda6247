// The gateway's upload reader (gateway/detail/upload.h): what POST /api/v1/detect and
// /api/v1/jobs make of a request's Content-Type, query string, form fields and file parts.
//
// The request is built from the input with FuzzedDataProvider: a Content-Type (one of the
// kinds the gateway tells apart, or fuzzed bytes), parameters in the query string or as form
// fields (names mostly the ones the gateway reads), file parts and a body.
// Properties: an accepted upload has a non-empty image, conf/iou in 0..1, a timeout in
// 1..max, classes trimmed and non-empty; a sanitised file name (of any bytes) is at most 128
// bytes of valid UTF-8 without control characters or path separators; class ids resolved
// against labels are sorted, unique and in range.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "check.h"
#include "gateway/detail/upload.h"
#include "http/server.h"

namespace {

using kadr::gateway::detail::ParseUpload;
using kadr::gateway::detail::ResolveClasses;
using kadr::gateway::detail::SanitizeFileName;

constexpr std::chrono::milliseconds kMaxTimeout{60'000};

bool IsValidUtf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80             ? 1
                    : (c & 0xE0) == 0xC0 ? 2
                    : (c & 0xF0) == 0xE0 ? 3
                    : (c & 0xF8) == 0xF0 ? 4
                                         : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

void CheckFileName(std::string_view name) {
  KADR_FUZZ_CHECK(name.size() <= 128, "sanitised file name over 128 bytes");
  KADR_FUZZ_CHECK(IsValidUtf8(name), "sanitised file name is not valid UTF-8");
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    KADR_FUZZ_CHECK(u >= 0x20 && u != 0x7F, "control character in a sanitised file name");
    KADR_FUZZ_CHECK(c != '/' && c != '\\', "path separator in a sanitised file name");
  }
}

std::string PickName(FuzzedDataProvider& in) {
  static constexpr const char* kNames[] = {"model",      "conf",  "iou",  "classes", "draw",
                                           "timeout_ms", "image", "file", "video"};
  if (in.ConsumeIntegralInRange(0, 9) < 8) return in.PickValueInArray(kNames);
  return in.ConsumeRandomLengthString(16);
}

std::string PickContentType(FuzzedDataProvider& in) {
  static constexpr const char* kTypes[] = {"image/jpeg",
                                           "IMAGE/PNG ; q=1",
                                           "application/octet-stream",
                                           "video/mp4",
                                           "multipart/form-data; boundary=x",
                                           " Multipart/Form-Data",
                                           "text/plain",
                                           ""};
  if (in.ConsumeBool()) return in.PickValueInArray(kTypes);
  return in.ConsumeRandomLengthString(40);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  kadr::http::HttpRequest req;
  req.method = "POST";
  req.path = "/api/v1/detect";
  if (in.ConsumeBool()) req.headers.emplace("Content-Type", PickContentType(in));
  if (in.ConsumeBool()) {
    req.headers.emplace("Content-Disposition", in.ConsumeRandomLengthString(64));
  }
  const int params = in.ConsumeIntegralInRange(0, 6);
  for (int i = 0; i < params; ++i) {
    std::string name = PickName(in);
    std::string value = in.ConsumeRandomLengthString(32);
    if (in.ConsumeBool()) {
      req.query_params.emplace(std::move(name), std::move(value));
    } else {
      req.files.push_back({std::move(name), "", "", std::move(value)});  // a form field
    }
  }
  const int parts = in.ConsumeIntegralInRange(0, 3);
  for (int i = 0; i < parts; ++i) {
    kadr::http::MultipartFile part;
    part.name = PickName(in);
    part.filename = in.ConsumeRandomLengthString(160);
    part.content_type = in.ConsumeRandomLengthString(24);
    part.content = in.ConsumeRandomLengthString(64);
    req.files.push_back(std::move(part));
  }
  const std::string labels_csv = in.ConsumeRandomLengthString(48);
  req.body = in.ConsumeRemainingBytesAsString();

  auto upload = ParseUpload(req, kMaxTimeout);
  if (upload) {
    KADR_FUZZ_CHECK(!upload->image.empty(), "accepted an upload without an image");
    CheckFileName(upload->filename);
    if (upload->confidence) {
      KADR_FUZZ_CHECK(*upload->confidence >= 0 && *upload->confidence <= 1, "conf out of 0..1");
    }
    if (upload->iou) KADR_FUZZ_CHECK(*upload->iou >= 0 && *upload->iou <= 1, "iou out of 0..1");
    if (upload->timeout) {
      KADR_FUZZ_CHECK(upload->timeout->count() >= 1 && *upload->timeout <= kMaxTimeout,
                      "timeout out of range");
    }
    if (upload->model) KADR_FUZZ_CHECK(!upload->model->empty(), "empty model accepted");
    for (const auto& c : upload->classes) KADR_FUZZ_CHECK(!c.empty(), "empty class item");

    // Against a model without labels (ids only) and one whose labels the input chose.
    std::vector<std::string> labels;
    for (std::size_t at = 0; at <= labels_csv.size();) {
      const std::size_t end = std::min(labels_csv.find(',', at), labels_csv.size());
      labels.push_back(labels_csv.substr(at, end - at));
      at = end + 1;
    }
    for (const std::vector<std::string>& use : {std::vector<std::string>{}, labels}) {
      auto ids = ResolveClasses(upload->classes, use, upload->model.value_or(""));
      if (!ids) continue;
      for (std::size_t i = 0; i < ids->size(); ++i) {
        KADR_FUZZ_CHECK((*ids)[i] >= 0, "negative class id");
        KADR_FUZZ_CHECK(use.empty() || (*ids)[i] < static_cast<int>(use.size()),
                        "class id past the labels");
        KADR_FUZZ_CHECK(i == 0 || (*ids)[i - 1] < (*ids)[i], "class ids not sorted and unique");
      }
    }
  }
  CheckFileName(SanitizeFileName(req.body));
  return 0;
}
