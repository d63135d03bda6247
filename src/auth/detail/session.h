// Web-UI sessions without server-side state: the cookie value is
//   <token id>.<expiry, Unix seconds>.<hex HMAC-SHA-256(key, "kadr-session/v1|" id "|" expiry)>
// signed with the session key kept in the token file, so that every process sharing that file
// (gateway, viewer, camera) accepts a session any of them issued. A session ends at its
// expiry, or when its token is revoked (the caller checks that the id still exists), or when
// the key changes. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kadr::auth::detail {

// The cookie value of a session of token `id` that ends at `expiry_s`.
std::string SignSession(std::string_view key, std::string_view id, std::int64_t expiry_s);

// The token id of a session cookie value signed with `key` that has not expired at `now_s`;
// nullopt for a malformed, forged or expired value.
std::optional<std::string> VerifySession(std::string_view key, std::string_view value,
                                         std::int64_t now_s);

}  // namespace kadr::auth::detail
