// Integer fields of JSON read from the bus (results, announcements, job events): nlohmann's
// get<int64_t>() converts a float such as 1e300 with undefined behaviour, so every integer a
// producer outside kadr may write is read through these. Header-only; thread-safe.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kadr::protocol {

// The integer `v`; throws nlohmann::json::type_error when it is not a JSON integer that fits
// in int64 (callers turn json exceptions into kInvalidArgument).
inline std::int64_t JsonInteger(const nlohmann::json& v, std::string_view key) {
  const bool fits = v.is_number_integer() &&
                    (!v.is_number_unsigned() ||
                     v.get<std::uint64_t>() <=
                         static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
  if (!fits) {
    throw nlohmann::json::type_error::create(302, std::string(key) + " must be an integer", &v);
  }
  return v.get<std::int64_t>();
}

// Field `key` of object `j` as an integer; nlohmann::json::out_of_range when absent.
inline std::int64_t IntegerField(const nlohmann::json& j, std::string_view key) {
  return JsonInteger(j.at(std::string(key)), key);
}

// Field `key` of object `j` as an integer, `fallback` when absent or null.
inline std::int64_t IntegerFieldOr(const nlohmann::json& j, std::string_view key,
                                   std::int64_t fallback) {
  const auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  return JsonInteger(*it, key);
}

}  // namespace kadr::protocol
