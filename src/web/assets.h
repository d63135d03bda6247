// The browser UI and the OpenAPI document, compiled into the binary (no install step).
//
// The files of web/ are served at "/<name>" ("/" is index.html) and docs/openapi.json at
// "/api/v1/openapi.json". They are embedded at build time by cmake/kadr_embed.cmake and
// re-generated whenever a file changes, so a rebuilt `kadr` always serves the current UI.
//
// Thread-safety: every function is thread-safe; the assets are immutable static data that
// live as long as the process.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "http/server.h"

namespace kadr::web {

// One embedded file, addressed by the URL path it is served at.
struct Asset {
  std::string_view path;          // "/index.html", "/app.js", "/api/v1/openapi.json"
  std::string_view content_type;  // "text/javascript; charset=utf-8", from the extension
  std::string_view body;          // the file's bytes
};

// The asset served at URL `path` ("/" means "/index.html"); nullopt when there is none.
std::optional<Asset> FindAsset(std::string_view path);

// The URL paths of all assets, sorted ("/" is not listed separately).
std::vector<std::string_view> AssetPaths();

// Adds a GET (and HEAD) route to `server` for "/" and for every asset path. Responses carry
// `Cache-Control: no-cache` and a strong ETag; a matching If-None-Match gets 304.
// Errors: those of HttpServer::Route (kFailedPrecondition when the server already started,
// kInvalidArgument when a route is rejected).
Status RegisterRoutes(http::HttpServer& server);

}  // namespace kadr::web
