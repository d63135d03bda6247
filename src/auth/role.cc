#include "auth/role.h"

namespace kadr::auth {

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::optional<Role> ParseRole(std::string_view name) {
  for (const Role r : {Role::kViewer, Role::kOperator, Role::kAdmin}) {
    if (RoleName(r) == name) return r;
  }
  return std::nullopt;
}

std::optional<Role> RequiredRole(http::Access access) {
  switch (access) {
    case http::Access::kPublic:
      return std::nullopt;
    case http::Access::kRead:
      return Role::kViewer;
    case http::Access::kOperate:
      return Role::kOperator;
    case http::Access::kAdmin:
      return Role::kAdmin;
  }
  return Role::kAdmin;  // an out-of-range level: the strictest
}

bool Allows(Role role, http::Access access) {
  const auto needed = RequiredRole(access);
  return !needed || static_cast<int>(role) >= static_cast<int>(*needed);
}

}  // namespace kadr::auth
