#include "auth/access_control.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "auth/detail/session.h"

namespace kadr::auth {
namespace {

using nlohmann::json;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The value of cookie `name` in the request's Cookie headers; nullopt when absent.
std::optional<std::string> CookieValue(const http::HttpRequest& request, std::string_view name) {
  const auto [begin, end] = request.headers.equal_range("Cookie");
  for (auto it = begin; it != end; ++it) {
    std::string_view rest = it->second;
    while (!rest.empty()) {
      const auto semi = rest.find(';');
      const std::string_view pair = Trim(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
      const auto eq = pair.find('=');
      if (eq != std::string_view::npos && Trim(pair.substr(0, eq)) == name) {
        return std::string(Trim(pair.substr(eq + 1)));
      }
    }
  }
  return std::nullopt;
}

// Whether the client reached us over TLS (ours, or a proxy's that says so).
bool OverTls(const http::HttpRequest& request) {
  if (request.secure) return true;
  const auto proto = request.Header("X-Forwarded-Proto");
  return proto && Lower(Trim(*proto)) == "https";
}

std::string SessionCookie(const http::HttpRequest& request, std::string_view value,
                          std::int64_t max_age_s) {
  std::string c(kSessionCookie);
  c.append("=").append(value).append("; Path=/; HttpOnly; SameSite=Strict; Max-Age=");
  c.append(std::to_string(max_age_s));
  if (OverTls(request)) c.append("; Secure");
  return c;
}

std::string IdentityJson(const Identity& who) {
  return json{{"auth", true}, {"id", who.id}, {"name", who.name}, {"role", RoleName(who.role)}}
      .dump();
}

}  // namespace

Result<AuthMode> ParseAuthMode(std::string_view text) {
  if (text == "auto") return AuthMode::kAuto;
  if (text == "on") return AuthMode::kOn;
  if (text == "off") return AuthMode::kOff;
  return InvalidArgumentError("--auth must be auto, on or off, not '" + std::string(text) + "'");
}

bool IsLoopbackHost(std::string_view host) {
  std::string h = Lower(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h == "localhost" || h.ends_with(".localhost")) return true;
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

bool AuthRequired(AuthMode mode, std::string_view host) {
  switch (mode) {
    case AuthMode::kOn:
      return true;
    case AuthMode::kOff:
      return false;
    case AuthMode::kAuto:
      return !IsLoopbackHost(host);
  }
  return true;
}

AccessControl::AccessControl(AccessOptions options, std::shared_ptr<TokenStore> store)
    : options_(options),
      store_(std::move(store)),
      failures_(options.max_failures, options.failure_window, options.max_tracked_clients) {}

std::optional<Identity> AccessControl::FromToken(std::string_view token) {
  auto info = store_->Verify(token);
  if (!info) return std::nullopt;
  return Identity{info->id, info->name, info->role};
}

AccessControl::Check AccessControl::Identify(const http::HttpRequest& request) {
  Check check;
  if (const auto header = request.Header("Authorization")) {
    const std::string_view value = Trim(*header);
    const auto space = value.find(' ');
    if (space == std::string_view::npos || Lower(value.substr(0, space)) != "bearer") {
      check.outcome = Outcome::kBadToken;
      return check;
    }
    auto who = FromToken(Trim(value.substr(space + 1)));
    check.outcome = who ? Outcome::kValid : Outcome::kBadToken;
    if (who) check.identity = std::move(*who);
    return check;
  }
  const auto cookie = CookieValue(request, kSessionCookie);
  if (!cookie || cookie->empty()) return check;
  check.outcome = Outcome::kBadSession;
  auto key = store_->SessionKey();
  if (!key) {
    spdlog::warn("auth: no session key: {}", key.error().ToString());
    return check;
  }
  const auto id = detail::VerifySession(*key, *cookie, NowSeconds());
  if (!id) return check;
  auto info = store_->Find(*id);  // a revoked token's sessions end with it
  if (!info) return check;
  check.outcome = Outcome::kValid;
  check.identity = Identity{info->id, info->name, info->role};
  return check;
}

std::optional<http::HttpResponse> AccessControl::Throttled(const std::string& client) {
  const auto wait = failures_.RetryAfter(client, detail::FailureLimiter::Clock::now());
  if (wait.count() <= 0) return std::nullopt;
  http::HttpResponse r = http::HttpResponse::Error(
      ResourceExhaustedError("too many failed sign-in attempts from this address; retry in " +
                             std::to_string(wait.count()) + " s"));
  r.headers.emplace("Retry-After", std::to_string(wait.count()));
  return r;
}

http::HttpResponse AccessControl::Unauthenticated(std::string message, bool clear_cookie) const {
  http::HttpResponse r = http::HttpResponse::Error(UnauthenticatedError(std::move(message)));
  r.headers.emplace("WWW-Authenticate", R"(Bearer realm="kadr")");
  if (clear_cookie) {
    r.headers.emplace("Set-Cookie", std::string(kSessionCookie) +
                                        "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
  }
  return r;
}

std::optional<http::HttpResponse> AccessControl::Authorize(http::HttpRequest& request,
                                                           http::Access access) {
  if (!enabled() || access == http::Access::kPublic) return std::nullopt;
  const bool presents = request.Header("Authorization").has_value() ||
                        CookieValue(request, kSessionCookie).has_value();
  if (presents) {
    if (auto throttled = Throttled(request.remote_addr)) return throttled;
  }
  Check check = Identify(request);
  switch (check.outcome) {
    case Outcome::kNone:
      return Unauthenticated(
          "this needs a token: send `Authorization: Bearer <token>`, or log in to the web UI",
          false);
    case Outcome::kBadToken:
      failures_.Fail(request.remote_addr, detail::FailureLimiter::Clock::now());
      spdlog::info("auth: refused an invalid token client={} path={}", request.remote_addr,
                   request.path);
      return Unauthenticated("invalid or revoked token", false);
    case Outcome::kBadSession:
      return Unauthenticated("the session has ended (expired or its token revoked): log in again",
                             true);
    case Outcome::kValid:
      break;
  }
  if (!Allows(check.identity.role, access)) {
    const auto needed = RequiredRole(access);
    return http::HttpResponse::Error(PermissionDeniedError(
        "this needs the " + std::string(RoleName(needed.value_or(Role::kAdmin))) +
        " role; token '" + check.identity.name + "' (" + check.identity.id + ") has " +
        std::string(RoleName(check.identity.role))));
  }
  request.principal = check.identity.name;
  return std::nullopt;
}

http::HttpResponse AccessControl::Login(const http::HttpRequest& request) {
  if (!enabled()) {
    return http::HttpResponse::Error(
        FailedPreconditionError("access control is off on this server: no login needed"));
  }
  if (auto throttled = Throttled(request.remote_addr)) return *throttled;
  const json body = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("token") || !body["token"].is_string()) {
    return http::HttpResponse::Error(
        InvalidArgumentError(R"(the body must be {"token": "kadr_..."})"));
  }
  const auto who = FromToken(body["token"].get<std::string>());
  if (!who) {
    failures_.Fail(request.remote_addr, detail::FailureLimiter::Clock::now());
    spdlog::info("auth: failed login client={}", request.remote_addr);
    return Unauthenticated("invalid or revoked token", false);
  }
  auto key = store_->SessionKey();
  if (!key) return http::HttpResponse::Error(key.error());
  const std::int64_t ttl = options_.session_ttl.count();
  const std::string value = detail::SignSession(*key, who->id, NowSeconds() + ttl);
  http::HttpResponse r = http::HttpResponse::Json(IdentityJson(*who));
  r.headers.emplace("Set-Cookie", SessionCookie(request, value, ttl));
  r.headers.emplace("Cache-Control", "no-store");
  spdlog::info("auth: login token={} name=\"{}\" role={} client={}", who->id, who->name,
               RoleName(who->role), request.remote_addr);
  return r;
}

http::HttpResponse AccessControl::Whoami(const http::HttpRequest& request) {
  if (!enabled()) return http::HttpResponse::Json(R"({"auth":false})");
  const bool presents = request.Header("Authorization").has_value() ||
                        CookieValue(request, kSessionCookie).has_value();
  if (presents) {
    if (auto throttled = Throttled(request.remote_addr)) return *throttled;
  }
  Check check = Identify(request);
  switch (check.outcome) {
    case Outcome::kValid: {
      http::HttpResponse r = http::HttpResponse::Json(IdentityJson(check.identity));
      r.headers.emplace("Cache-Control", "no-store");
      return r;
    }
    case Outcome::kBadToken:
      failures_.Fail(request.remote_addr, detail::FailureLimiter::Clock::now());
      return Unauthenticated("invalid or revoked token", false);
    case Outcome::kBadSession:
      return Unauthenticated("the session has ended: log in again", true);
    case Outcome::kNone:
      break;
  }
  return Unauthenticated("not logged in", false);
}

Status AccessControl::RegisterRoutes(http::HttpServer& server) {
  http::RouteOptions login;
  login.access = http::Access::kPublic;
  login.max_body_bytes = 4096;
  login.content_types = {"application/json"};
  RETURN_IF_ERROR(server.Route(
      "POST", "/api/v1/login", [this](const http::HttpRequest& r) { return Login(r); }, login));
  http::RouteOptions open;
  open.access = http::Access::kPublic;
  RETURN_IF_ERROR(server.Route(
      "POST", "/api/v1/logout",
      [](const http::HttpRequest& r) {
        http::HttpResponse out;
        out.status = 204;
        out.content_type = "";
        out.headers.emplace("Set-Cookie", SessionCookie(r, "", 0));
        return out;
      },
      open));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/whoami", [this](const http::HttpRequest& r) { return Whoami(r); }, open));
  return Status::Ok();
}

http::Authorizer MakeAuthorizer(std::shared_ptr<AccessControl> access) {
  if (!access || !access->enabled()) return nullptr;
  return [access = std::move(access)](http::HttpRequest& request, http::Access level) {
    return access->Authorize(request, level);
  };
}

}  // namespace kadr::auth
