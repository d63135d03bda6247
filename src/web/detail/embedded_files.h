// The files cmake/kadr_embed.cmake compiles into the binary (the web UI and the OpenAPI
// document). The definition is generated at build time; see src/web/CMakeLists.txt.
#pragma once

#include <span>
#include <string_view>

namespace kadr::web::detail {

struct EmbeddedFile {
  std::string_view name;  // path relative to the source root: "web/app.js", "docs/openapi.json"
  std::string_view data;  // the file's bytes, static storage
  std::string_view sha1;  // hex SHA-1 of `data`, computed at build time
};

// Every embedded file, in the order the build listed them. Thread-safe.
std::span<const EmbeddedFile> EmbeddedFiles();

}  // namespace kadr::web::detail
