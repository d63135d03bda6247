// Reading an upload request (docs/api.md "Submitting an image"): where the image is, the
// parameters from the query string or form fields, and their validation. Pure functions,
// thread-safe.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "http/server.h"

namespace kadr::gateway::detail {

struct Upload {
  std::string_view image;  // the image bytes: a view into the request's body or one of its parts
  std::string filename;    // sanitised (SanitizeFileName); may be empty
  std::optional<std::string> model;
  std::optional<float> confidence;
  std::optional<float> iou;
  std::vector<std::string> classes;  // trimmed, non-empty items: class names or ids
  bool draw = true;
  std::optional<std::chrono::milliseconds> timeout;
};

// Errors: kUnsupported (a Content-Type that is neither image/*, application/octet-stream nor
// multipart/form-data), kInvalidArgument (no image part, empty image, bad parameter: conf or
// iou not a number in 0..1, draw not 0/1/true/false, timeout_ms not an integer in
// 1..max_timeout, empty model).
Result<Upload> ParseUpload(const http::HttpRequest& request, std::chrono::milliseconds max_timeout);

// Class names or ids to ids, against the model's labels (ids are checked against them when
// known). kInvalidArgument naming an unknown class. The result is sorted, without repeats.
Result<std::vector<int>> ResolveClasses(const std::vector<std::string>& items,
                                        const std::vector<std::string>& labels,
                                        std::string_view model);

// A client's file name made safe for display and a header: the last path component, control
// characters and invalid UTF-8 replaced, at most 128 bytes.
std::string SanitizeFileName(std::string_view name);

}  // namespace kadr::gateway::detail
