// Roles of API tokens, ordered: viewer < operator < admin. Each role may do what the ones below
// it may, and the server's access levels (http::Access) map onto them:
//   kPublic  -> nobody needs a token (health checks, the web UI's files, login)
//   kRead    -> viewer   (models, jobs and their results, streams, live views, /metrics)
//   kOperate -> operator (submit images and videos)
//   kAdmin   -> admin    (create and delete streams, delete jobs, settings)
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string_view>

#include "http/server.h"

namespace kadr::auth {

enum class Role { kViewer = 1, kOperator = 2, kAdmin = 3 };

// "viewer", "operator", "admin".
std::string_view RoleName(Role role);

// The role named `name` (exactly as RoleName writes it); nullopt for any other text.
std::optional<Role> ParseRole(std::string_view name);

// The least role that may reach a route of `access`; nullopt for kPublic (no token needed).
std::optional<Role> RequiredRole(http::Access access);

// Whether `role` may reach a route of `access`.
bool Allows(Role role, http::Access access);

}  // namespace kadr::auth
