#include "http/multipart.h"

#include <string.h>  // memmem (GNU): linear time, unlike std::string_view::find

#include <cctype>
#include <optional>
#include <string>

namespace kadr::http {
namespace {

constexpr std::size_t kMaxBoundary = 200;  // RFC 2046 allows 70; clients stay well below this
constexpr std::string_view kCrlf = "\r\n";

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::size_t Find(std::string_view haystack, std::string_view needle, std::size_t from) {
  if (from > haystack.size()) return std::string_view::npos;
  const void* hit =
      ::memmem(haystack.data() + from, haystack.size() - from, needle.data(), needle.size());
  if (hit == nullptr) return std::string_view::npos;
  return static_cast<std::size_t>(static_cast<const char*>(hit) - haystack.data());
}

// The parameters of a header value after its first token: `form-data; name="a"; filename=b`.
// Calls `on(name, value)` for each; a quoted value is unescaped. False when malformed.
template <typename On>
bool ForEachParameter(std::string_view params, On on) {
  std::size_t i = 0;
  while (i < params.size()) {
    while (i < params.size() && (params[i] == ' ' || params[i] == '\t' || params[i] == ';')) ++i;
    if (i >= params.size()) break;
    const std::size_t eq = params.find('=', i);
    if (eq == std::string_view::npos) return false;
    const std::string_view name = Trim(params.substr(i, eq - i));
    i = eq + 1;
    while (i < params.size() && (params[i] == ' ' || params[i] == '\t')) ++i;
    std::string value;
    if (i < params.size() && params[i] == '"') {
      ++i;
      bool closed = false;
      while (i < params.size()) {
        const char c = params[i++];
        // A backslash escapes only a quote or a backslash (as Go's mime package reads it):
        // browsers send Windows paths such as C:\photos\a.jpg unescaped.
        if (c == '\\' && i < params.size() && (params[i] == '"' || params[i] == '\\')) {
          value += params[i++];
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          value += c;
        }
      }
      if (!closed) return false;
    } else {
      const std::size_t end = params.find(';', i);
      value = std::string(Trim(params.substr(i, end == std::string_view::npos ? end : end - i)));
      i = end == std::string_view::npos ? params.size() : end;
    }
    if (name.empty()) return false;
    on(name, std::move(value));
  }
  return true;
}

std::optional<std::string> Boundary(std::string_view content_type) {
  const std::size_t semi = content_type.find(';');
  if (semi == std::string_view::npos) return std::nullopt;
  if (!IEquals(Trim(content_type.substr(0, semi)), "multipart/form-data")) return std::nullopt;
  std::optional<std::string> boundary;
  const bool ok = ForEachParameter(content_type.substr(semi + 1),
                                   [&](std::string_view name, std::string value) {
                                     if (IEquals(name, "boundary")) boundary = std::move(value);
                                   });
  if (!ok || !boundary || boundary->empty() || boundary->size() > kMaxBoundary) return std::nullopt;
  return boundary;
}

// Reads one part's header block into `part`.
Status ParseHeaders(std::string_view block, MultipartFile& part) {
  bool has_disposition = false;
  std::size_t pos = 0;
  while (pos < block.size()) {
    std::size_t end = block.find(kCrlf, pos);
    if (end == std::string_view::npos) end = block.size();
    const std::string_view line = block.substr(pos, end - pos);
    pos = end + kCrlf.size();
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return InvalidArgumentError("multipart part header line without a name");
    }
    const std::string_view name = Trim(line.substr(0, colon));
    const std::string_view value = Trim(line.substr(colon + 1));
    if (IEquals(name, "Content-Type")) {
      part.content_type = std::string(value);
    } else if (IEquals(name, "Content-Disposition")) {
      const std::size_t semi = value.find(';');
      if (!IEquals(Trim(value.substr(0, semi)), "form-data")) {
        return InvalidArgumentError("multipart part is not form-data");
      }
      has_disposition = true;
      if (semi == std::string_view::npos) continue;
      const bool ok =
          ForEachParameter(value.substr(semi + 1), [&](std::string_view key, std::string v) {
            if (IEquals(key, "name")) {
              part.name = std::move(v);
            } else if (IEquals(key, "filename")) {
              part.filename = std::move(v);
            }
          });
      if (!ok) return InvalidArgumentError("malformed multipart Content-Disposition");
    }
  }
  if (!has_disposition || part.name.empty()) {
    return InvalidArgumentError("multipart part without a Content-Disposition name");
  }
  return Status::Ok();
}

Result<std::vector<MultipartFile>> Parse(std::string_view content_type, std::string_view body,
                                         const MultipartLimits& limits, bool views) {
  const std::optional<std::string> boundary = Boundary(content_type);
  if (!boundary) {
    return InvalidArgumentError("multipart/form-data without a valid boundary parameter");
  }
  const std::string delimiter = "--" + *boundary;
  const std::string next_delimiter = "\r\n" + delimiter;
  // The first delimiter opens the body or follows a CRLF that ends the preamble.
  std::size_t pos = 0;
  if (body.substr(0, delimiter.size()) != delimiter) {
    pos = Find(body, next_delimiter, 0);
    if (pos == std::string_view::npos) {
      return InvalidArgumentError("multipart body has no boundary line");
    }
    pos += kCrlf.size();
  }
  pos += delimiter.size();
  std::vector<MultipartFile> parts;
  while (true) {
    if (body.substr(pos, 2) == "--") return parts;  // the closing delimiter
    // Transport padding, then the CRLF that ends the delimiter line.
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
    if (body.substr(pos, 2) != kCrlf) {
      return InvalidArgumentError("multipart boundary line not followed by CRLF");
    }
    pos += kCrlf.size();
    if (parts.size() == limits.max_parts) {
      return TooLargeError("multipart body has more than " + std::to_string(limits.max_parts) +
                           " parts");
    }
    MultipartFile part;
    std::string_view headers;
    if (body.substr(pos, 2) == kCrlf) {
      pos += kCrlf.size();  // a part without headers: refused below for lack of a name
    } else {
      // Look for the blank line only within the limit, so a huge header costs nothing.
      const std::string_view window = body.substr(pos, limits.max_header_bytes + 4);
      const std::size_t end = Find(window, "\r\n\r\n", 0);
      if (end == std::string_view::npos) {
        if (window.size() < limits.max_header_bytes + 4) {
          return InvalidArgumentError("multipart body ends inside a part's headers");
        }
        return TooLargeError("a multipart part's headers exceed " +
                             std::to_string(limits.max_header_bytes) + " bytes");
      }
      headers = body.substr(pos, end);
      pos += end + 4;
    }
    RETURN_IF_ERROR(ParseHeaders(headers, part));
    const std::size_t end = Find(body, next_delimiter, pos);
    if (end == std::string_view::npos) {
      return InvalidArgumentError("multipart body ends before its closing boundary");
    }
    if (views) {
      part.view = body.substr(pos, end - pos);
    } else {
      part.content = std::string(body.substr(pos, end - pos));
    }
    parts.push_back(std::move(part));
    pos = end + next_delimiter.size();
  }
}

}  // namespace

Result<std::vector<MultipartFile>> ParseMultipart(std::string_view content_type,
                                                  std::string_view body,
                                                  const MultipartLimits& limits) {
  return Parse(content_type, body, limits, false);
}

Result<std::vector<MultipartFile>> ParseMultipartViews(std::string_view content_type,
                                                       std::string_view body,
                                                       const MultipartLimits& limits) {
  return Parse(content_type, body, limits, true);
}

}  // namespace kadr::http
