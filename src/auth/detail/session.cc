#include "auth/detail/session.h"

#include <charconv>

#include "auth/detail/crypto.h"

namespace kadr::auth::detail {
namespace {

std::string Mac(std::string_view key, std::string_view id, std::int64_t expiry_s) {
  std::string data = "kadr-session/v1|";
  data.append(id).append("|").append(std::to_string(expiry_s));
  return ToHex(HmacSha256(key, data));
}

}  // namespace

std::string SignSession(std::string_view key, std::string_view id, std::int64_t expiry_s) {
  std::string out(id);
  out.append(".").append(std::to_string(expiry_s)).append(".").append(Mac(key, id, expiry_s));
  return out;
}

std::optional<std::string> VerifySession(std::string_view key, std::string_view value,
                                         std::int64_t now_s) {
  if (key.empty() || value.size() > 256) return std::nullopt;
  const auto first = value.find('.');
  const auto second = first == std::string_view::npos ? first : value.find('.', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  const std::string_view id = value.substr(0, first);
  const std::string_view expiry_text = value.substr(first + 1, second - first - 1);
  const std::string_view mac = value.substr(second + 1);
  if (id.empty() || expiry_text.empty()) return std::nullopt;
  std::int64_t expiry = 0;
  const auto [end, ec] =
      std::from_chars(expiry_text.data(), expiry_text.data() + expiry_text.size(), expiry);
  if (ec != std::errc() || end != expiry_text.data() + expiry_text.size()) return std::nullopt;
  // The MAC first, so that a forged value learns nothing from timing about its expiry.
  if (!ConstantTimeEquals(Mac(key, id, expiry), mac)) return std::nullopt;
  if (expiry <= now_s) return std::nullopt;
  return std::string(id);
}

}  // namespace kadr::auth::detail
