// IP addresses and networks as text from operators and peers: "10.0.0.1", "fd00::/8".
// Pure functions and value types.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/status.h"

namespace kadr::net {

// An address as 16 bytes: IPv4 in the first 4 (v6 false).
struct IpAddress {
  std::array<std::uint8_t, 16> bytes{};
  bool v6 = false;
};

// A numeric address ("10.0.0.1", "fe80::1%eth0": the zone is ignored); nullopt otherwise.
// IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses are the IPv4 address
// they carry, so that a check on the IPv4 form holds for the mapped form too; :: and ::1 stay
// IPv6.
std::optional<IpAddress> ParseIp(std::string_view text);

struct IpNetwork {
  IpAddress base;
  int prefix = 0;  // leading bits that must match

  bool Contains(const IpAddress& ip) const;
};

// "10.1.0.0/16", "fd00::/8" or a bare address (a /32 or /128). A mapped IPv6 network
// (::ffff:10.0.0.0/104) is the IPv4 network it carries.
// kInvalidArgument: not an address, or a bad prefix length.
Result<IpNetwork> ParseNetwork(std::string_view text);

}  // namespace kadr::net
