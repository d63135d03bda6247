// AccessControl: who may call which route. It checks the credentials of every request the HTTP
// server routes (as its http::Authorizer) against the token store, and serves the web UI's
// login:
//
//   POST /api/v1/login   {"token": "kadr_..."} (application/json) -> 200 {"auth": true, "id",
//                        "name", "role"} and a session cookie `kadr_session` (HttpOnly;
//                        SameSite=Strict; Path=/; Secure over TLS; 12 h by default)
//   POST /api/v1/logout  -> 204, the cookie cleared
//   GET  /api/v1/whoami  -> 200 {"auth": false} when access control is off; {"auth": true,
//                        "id", "name", "role"} for valid credentials; 401 otherwise
//
// Credentials: `Authorization: Bearer <token>` (programs) or the session cookie (browsers:
// <img>, MJPEG and EventSource cannot send a header). A header, when present, is the one
// checked. Answers: 401 unauthenticated with `WWW-Authenticate: Bearer` (no or bad
// credentials), 403 permission_denied naming the role needed, 429 with Retry-After once an
// address has made `max_failures` failed attempts (a wrong token, at a route or at login)
// within `failure_window`. A session cookie that no longer verifies (expired, its token
// revoked) gets 401 and is cleared, but is not counted: it guesses nothing.
//
// Thread-safe: the authorizer and the routes run on the server's threads concurrently.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "auth/detail/failure_limiter.h"
#include "auth/role.h"
#include "auth/token_store.h"
#include "common/status.h"
#include "http/server.h"

namespace kadr::auth {

// --auth: auto (on unless the server binds a loopback address), on, off.
enum class AuthMode { kAuto, kOn, kOff };

// "auto", "on", "off"; kInvalidArgument for anything else.
Result<AuthMode> ParseAuthMode(std::string_view text);

// Whether `host` (a bind address or name) is loopback only: localhost, 127.0.0.0/8, ::1.
bool IsLoopbackHost(std::string_view host);

// Whether a server bound to `host` checks credentials in `mode`.
bool AuthRequired(AuthMode mode, std::string_view host);

// The web UI's session cookie.
inline constexpr std::string_view kSessionCookie = "kadr_session";

struct AccessOptions {
  // How long a login lasts.
  std::chrono::seconds session_ttl{std::chrono::hours(12)};
  // Failed attempts an address may make within failure_window before it gets 429.
  std::size_t max_failures = 10;
  std::chrono::seconds failure_window{60};
  // Addresses whose failures are tracked at once (bounds memory; the oldest go first).
  std::size_t max_tracked_clients = 10000;
};

// Who made a request, as their token says.
struct Identity {
  std::string id;
  std::string name;
  Role role = Role::kViewer;
};

class AccessControl {
 public:
  // With a store: credentials required. Without (nullptr): access control off, every route
  // open, /api/v1/whoami answers {"auth": false}.
  AccessControl(AccessOptions options, std::shared_ptr<TokenStore> store);

  bool enabled() const { return store_ != nullptr; }

  // The http::Authorizer's work: nullopt lets `request` through to a route of `access` (and
  // sets request.principal to the token's name); otherwise the 401, 403 or 429 to send.
  std::optional<http::HttpResponse> Authorize(http::HttpRequest& request, http::Access access);

  // Adds /api/v1/login, /api/v1/logout and /api/v1/whoami (Access::kPublic).
  Status RegisterRoutes(http::HttpServer& server);

 private:
  enum class Outcome { kNone, kValid, kBadToken, kBadSession };
  struct Check {
    Outcome outcome = Outcome::kNone;
    Identity identity;
  };
  // The request's credentials, checked (not counted).
  Check Identify(const http::HttpRequest& request);
  std::optional<Identity> FromToken(std::string_view token);
  // 429 when `client` must wait; nullopt when it may try.
  std::optional<http::HttpResponse> Throttled(const std::string& client);
  http::HttpResponse Unauthenticated(std::string message, bool clear_cookie) const;
  http::HttpResponse Login(const http::HttpRequest& request);
  http::HttpResponse Whoami(const http::HttpRequest& request);

  const AccessOptions options_;
  const std::shared_ptr<TokenStore> store_;
  detail::FailureLimiter failures_;
};

// The authorizer for http::HttpServerOptions::authorizer; null when access control is off.
http::Authorizer MakeAuthorizer(std::shared_ptr<AccessControl> access);

}  // namespace kadr::auth
