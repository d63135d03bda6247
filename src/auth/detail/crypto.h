// The cryptographic primitives of access control, over OpenSSL's libcrypto (the only place in
// kadr that includes it): SHA-256, HMAC-SHA-256, random bytes, hex, constant-time comparison.
// Thread-safe (libcrypto 3 is).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kadr::auth::detail {

// `n` bytes from OpenSSL's CSPRNG (seeded from the kernel). Aborts when it fails: nothing
// secure can be made without it.
std::string RandomBytes(std::size_t n);

// SHA-256 of `data` (32 raw bytes).
std::string Sha256(std::string_view data);

// HMAC-SHA-256 of `data` under `key` (32 raw bytes).
std::string HmacSha256(std::string_view key, std::string_view data);

// Lowercase hex of `bytes`, and back (nullopt: odd length or a non-hex digit).
std::string ToHex(std::string_view bytes);
std::optional<std::string> FromHex(std::string_view hex);

// Whether a and b are equal, in time that depends only on their lengths (CRYPTO_memcmp).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace kadr::auth::detail
