#include "web/assets.h"

#include <algorithm>
#include <string>
#include <utility>

#include "web/detail/embedded_files.h"

namespace kadr::web {
namespace {

constexpr std::string_view kWebDir = "web/";
constexpr std::string_view kOpenApiFile = "docs/openapi.json";
constexpr std::string_view kOpenApiPath = "/api/v1/openapi.json";
constexpr std::string_view kIndexPath = "/index.html";

struct Entry {
  Asset asset;
  std::string etag;  // quoted strong validator: "\"<sha1 prefix>\""
};

std::string_view ContentTypeFor(std::string_view path) {
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".woff2", "font/woff2"},
      {".txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [extension, type] : kTypes) {
    if (path.ends_with(extension)) return type;
  }
  return "application/octet-stream";
}

// The URL path an embedded file is served at; empty for files that are not served.
// Views into the generated static names, so no storage is needed.
std::string_view UrlPathFor(std::string_view name) {
  if (name == kOpenApiFile) return kOpenApiPath;
  if (name.starts_with(kWebDir)) return name.substr(kWebDir.size() - 1);  // keeps the '/'
  return {};
}

const std::vector<Entry>& Entries() {
  static const std::vector<Entry> kEntries = [] {
    std::vector<Entry> out;
    for (const detail::EmbeddedFile& file : detail::EmbeddedFiles()) {
      std::string_view path = UrlPathFor(file.name);
      if (path.empty()) continue;
      out.push_back({{path, ContentTypeFor(path), file.data},
                     "\"" + std::string(file.sha1.substr(0, 20)) + "\""});
    }
    std::sort(out.begin(), out.end(),
              [](const Entry& a, const Entry& b) { return a.asset.path < b.asset.path; });
    return out;
  }();
  return kEntries;
}

const Entry* FindEntry(std::string_view path) {
  if (path == "/") path = kIndexPath;
  const auto& entries = Entries();
  auto it = std::lower_bound(entries.begin(), entries.end(), path,
                             [](const Entry& e, std::string_view p) { return e.asset.path < p; });
  if (it == entries.end() || it->asset.path != path) return nullptr;
  return &*it;
}

// True when an If-None-Match header value names `etag` (or is "*"); weak comparison, as
// RFC 9110 asks for If-None-Match.
bool MatchesEtag(std::string_view if_none_match, std::string_view etag) {
  if (if_none_match.find('*') != std::string_view::npos) return true;
  return if_none_match.find(etag) != std::string_view::npos;
}

http::HttpResponse Serve(const Entry& entry, const http::HttpRequest& request) {
  http::HttpResponse response;
  // no-cache: the browser revalidates every time, so a rebuilt binary's UI shows at once;
  // the ETag keeps that revalidation to a 304.
  response.headers.emplace("Cache-Control", "no-cache");
  response.headers.emplace("ETag", entry.etag);
  if (auto match = request.Header("If-None-Match"); match && MatchesEtag(*match, entry.etag)) {
    response.status = 304;
    return response;
  }
  response.content_type = std::string(entry.asset.content_type);
  response.body = std::string(entry.asset.body);
  return response;
}

}  // namespace

std::optional<Asset> FindAsset(std::string_view path) {
  const Entry* entry = FindEntry(path);
  if (entry == nullptr) return std::nullopt;
  return entry->asset;
}

std::vector<std::string_view> AssetPaths() {
  std::vector<std::string_view> paths;
  for (const Entry& entry : Entries()) paths.push_back(entry.asset.path);
  return paths;
}

Status RegisterRoutes(http::HttpServer& server) {
  // The UI's files and the OpenAPI document are public: the UI itself asks for a login when
  // the API answers 401.
  const http::RouteOptions open{.access = http::Access::kPublic};
  if (FindEntry(kIndexPath) != nullptr) {
    RETURN_IF_ERROR(server.Route(
        "GET", "/",
        [](const http::HttpRequest& request) { return Serve(*FindEntry(kIndexPath), request); },
        open));
  }
  for (const Entry& entry : Entries()) {
    RETURN_IF_ERROR(server.Route(
        "GET", entry.asset.path, [&entry](const http::HttpRequest& r) { return Serve(entry, r); },
        open));
  }
  return Status::Ok();
}

}  // namespace kadr::web
