// Response helpers shared by the gateway's image and video routes.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "http/server.h"

namespace kadr::gateway::detail {

// Compact JSON; invalid UTF-8 (from file names, labels) replaced rather than thrown on.
inline std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The protocol's error response, with Retry-After where retrying soon can help.
inline http::HttpResponse ErrorResponse(const Status& status) {
  http::HttpResponse r = http::HttpResponse::Error(status);
  if (status.code() == StatusCode::kResourceExhausted) r.headers.emplace("Retry-After", "1");
  if (status.code() == StatusCode::kUnavailable) r.headers.emplace("Retry-After", "2");
  return r;
}

}  // namespace kadr::gateway::detail
