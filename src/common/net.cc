#include "common/net.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <string>

namespace kadr::net {
namespace {

IpAddress Normalised(IpAddress ip) {
  if (!ip.v6) return ip;
  const auto& b = ip.bytes;
  const bool zero10 = std::all_of(b.begin(), b.begin() + 10, [](std::uint8_t x) { return x == 0; });
  const bool mapped = zero10 && b[10] == 0xff && b[11] == 0xff;
  const bool compatible =
      zero10 && b[10] == 0 && b[11] == 0 && !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1);
  if (!mapped && !compatible) return ip;
  IpAddress v4;
  std::copy(b.begin() + 12, b.end(), v4.bytes.begin());
  return v4;
}

}  // namespace

std::optional<IpAddress> ParseIp(std::string_view text) {
  const std::string s(text.substr(0, text.find('%')));
  IpAddress ip;
  if (::inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) return ip;
  if (::inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) == 1) {
    ip.v6 = true;
    return Normalised(ip);
  }
  return std::nullopt;
}

bool IpNetwork::Contains(const IpAddress& ip) const {
  if (ip.v6 != base.v6) return false;
  for (int bit = 0; bit < prefix; ++bit) {
    const int byte = bit / 8;
    const int mask = 0x80 >> (bit % 8);
    if ((ip.bytes[byte] & mask) != (base.bytes[byte] & mask)) return false;
  }
  return true;
}

Result<IpNetwork> ParseNetwork(std::string_view text) {
  const std::size_t slash = text.find('/');
  const std::string_view address = text.substr(0, slash);
  const std::optional<IpAddress> ip = ParseIp(address);
  if (!ip) return InvalidArgumentError("not an address or a network");
  const bool written_v6 = address.find(':') != std::string_view::npos;
  IpNetwork net{*ip, ip->v6 ? 128 : 32};
  if (slash != std::string_view::npos) {
    const std::string_view bits = text.substr(slash + 1);
    int p = -1;
    const auto [ptr, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), p);
    const int max = written_v6 ? 128 : 32;
    if (ec != std::errc() || ptr != bits.data() + bits.size() || p < 0 || p > max) {
      return InvalidArgumentError("bad prefix length");
    }
    net.prefix = written_v6 && !ip->v6 ? std::max(0, p - 96) : p;
  }
  return net;
}

}  // namespace kadr::net
