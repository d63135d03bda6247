#include "gateway/detail/upload.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <mutex>
#include <random>
#include <set>

namespace kadr::gateway::detail {
namespace {

constexpr std::size_t kMaxFileNameBytes = 128;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A parameter from the query string, else from a multipart form field.
std::optional<std::string> Param(const http::HttpRequest& req, std::string_view name) {
  if (auto v = req.Query(name)) return v;
  for (const auto& part : req.files) {
    if (part.name == name && part.filename.empty()) return std::string(part.Content());
  }
  return std::nullopt;
}

Result<float> ParseUnit(std::string_view name, const std::string& v) {
  const std::string_view s = Trim(v);
  float f = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), f);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(f) || f < 0 ||
      f > 1) {
    return InvalidArgumentError(std::string(name) + " must be a number in 0..1, got '" + v + "'");
  }
  return f;
}

Result<std::int64_t> ParseInt(std::string_view s) {
  std::int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) {
    return InvalidArgumentError("not an integer");
  }
  return v;
}

// The file name from a raw upload's `Content-Disposition: attachment; filename="x.jpg"`.
std::string DispositionFileName(std::string_view header) {
  const std::string lower = Lower(header);
  const std::size_t at = lower.find("filename=");
  if (at == std::string::npos) return {};
  std::string_view v = header.substr(at + 9);
  if (!v.empty() && v.front() == '"') {
    v.remove_prefix(1);
    return std::string(v.substr(0, v.find('"')));
  }
  return std::string(Trim(v.substr(0, v.find(';'))));
}

// Length of the valid UTF-8 sequence starting at s[i], or 0.
std::size_t Utf8Length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = 0;
  unsigned min = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  unsigned cp = c & (0x7F >> n);
  for (std::size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

Result<Upload> ParseUpload(const http::HttpRequest& req, std::chrono::milliseconds max_timeout) {
  Upload up;
  const std::string type = http::MediaType(req.Header("Content-Type").value_or(""));
  if (type == "multipart/form-data") {
    const http::MultipartFile* part = req.File("image");
    if (part == nullptr) part = req.File("file");
    if (part == nullptr) part = req.File("video");
    if (part == nullptr) {
      return InvalidArgumentError("multipart body has no 'image' (or 'file', 'video') part");
    }
    up.image = part->Content();
    up.filename = SanitizeFileName(part->filename);
  } else if (type.empty() || type == "application/octet-stream" || type.starts_with("image/") ||
             type.starts_with("video/")) {
    up.image = req.Body();
    if (auto d = req.Header("Content-Disposition"))
      up.filename = SanitizeFileName(DispositionFileName(*d));
  } else {
    return UnsupportedError("unsupported Content-Type '" + type +
                            "'; send the image or video as the raw body (image/*, video/*, "
                            "application/octet-stream) or as multipart/form-data");
  }
  if (up.image.empty()) return InvalidArgumentError("empty image");

  if (auto v = Param(req, "model")) {
    if (Trim(*v).empty()) return InvalidArgumentError("model must not be empty");
    up.model = std::string(Trim(*v));
  }
  if (auto v = Param(req, "conf")) {
    ASSIGN_OR_RETURN(up.confidence, ParseUnit("conf", *v));
  }
  if (auto v = Param(req, "iou")) {
    ASSIGN_OR_RETURN(up.iou, ParseUnit("iou", *v));
  }
  if (auto v = Param(req, "classes")) {
    std::string_view rest = *v;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      const std::string_view item = Trim(rest.substr(0, comma));
      if (!item.empty()) up.classes.emplace_back(item);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  if (auto v = Param(req, "draw")) {
    const std::string d = Lower(Trim(*v));
    if (d == "1" || d == "true") {
      up.draw = true;
    } else if (d == "0" || d == "false") {
      up.draw = false;
    } else {
      return InvalidArgumentError("draw must be 0 or 1, got '" + *v + "'");
    }
  }
  if (auto v = Param(req, "timeout_ms")) {
    auto ms = ParseInt(Trim(*v));
    if (!ms || *ms < 1 || *ms > max_timeout.count()) {
      return InvalidArgumentError("timeout_ms must be an integer in 1.." +
                                  std::to_string(max_timeout.count()) + ", got '" + *v + "'");
    }
    up.timeout = std::chrono::milliseconds(*ms);
  }
  return up;
}

Result<std::vector<int>> ResolveClasses(const std::vector<std::string>& items,
                                        const std::vector<std::string>& labels,
                                        std::string_view model) {
  std::set<int> ids;
  for (const std::string& item : items) {
    const auto label = std::find(labels.begin(), labels.end(), item);
    if (label != labels.end()) {
      ids.insert(static_cast<int>(label - labels.begin()));
      continue;
    }
    auto id = ParseInt(item);
    if (id && *id >= 0 && (labels.empty() ? *id <= 100000 : *id < std::ssize(labels))) {
      ids.insert(static_cast<int>(*id));
      continue;
    }
    std::string message = "unknown class '" + item + "' for model '" + std::string(model) + "'";
    if (!labels.empty()) {
      message += "; classes are names of its labels or ids 0.." + std::to_string(labels.size() - 1);
    }
    return InvalidArgumentError(std::move(message));
  }
  return std::vector<int>(ids.begin(), ids.end());
}

std::string SanitizeFileName(std::string_view name) {
  // Browsers on Windows may send a full path; only the last component is a name.
  if (const std::size_t slash = name.find_last_of("/\\"); slash != std::string_view::npos) {
    name.remove_prefix(slash + 1);
  }
  std::string out;
  for (std::size_t i = 0; i < name.size();) {
    const std::size_t n = Utf8Length(name, i);
    std::string_view piece = n == 0 ? std::string_view("_") : name.substr(i, n);
    if (n == 1 && (static_cast<unsigned char>(name[i]) < 0x20 || name[i] == 0x7F)) piece = "_";
    if (out.size() + piece.size() > kMaxFileNameBytes) break;
    out += piece;
    i += n == 0 ? 1 : n;
  }
  return out;
}

}  // namespace kadr::gateway::detail
