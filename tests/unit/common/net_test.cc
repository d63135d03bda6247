#include "common/net.h"

#include <gtest/gtest.h>

namespace kadr::net {
namespace {

bool In(const char* network, const char* address) {
  auto n = ParseNetwork(network);
  auto ip = ParseIp(address);
  return n && ip && n->Contains(*ip);
}

TEST(NetTest, ParsesAddressesWithMappedFormsAsIpv4) {
  EXPECT_TRUE(ParseIp("10.0.0.1"));
  EXPECT_TRUE(ParseIp("fe80::1%eth0"));
  EXPECT_FALSE(ParseIp("example.com"));
  EXPECT_FALSE(ParseIp("10.0.0.256"));
  const auto mapped = ParseIp("::ffff:127.0.0.1");
  ASSERT_TRUE(mapped);
  EXPECT_FALSE(mapped->v6);
  EXPECT_TRUE(ParseIp("::1")->v6);
}

TEST(NetTest, NetworksContainTheirAddressesOnly) {
  EXPECT_TRUE(In("10.0.0.0/8", "10.200.3.4"));
  EXPECT_FALSE(In("10.0.0.0/8", "11.0.0.1"));
  EXPECT_TRUE(In("127.0.0.1", "127.0.0.1"));
  EXPECT_FALSE(In("127.0.0.1", "127.0.0.2"));
  EXPECT_TRUE(In("fd00::/8", "fd12::1"));
  EXPECT_FALSE(In("fd00::/8", "10.0.0.1"));
  EXPECT_TRUE(In("::ffff:10.0.0.0/104", "10.1.1.1"));  // the IPv4 network it carries
  EXPECT_TRUE(In("0.0.0.0/0", "8.8.8.8"));
  EXPECT_TRUE(In("10.0.0.0/8", "::ffff:10.0.0.9"));
}

TEST(NetTest, RefusesBadNetworks) {
  for (const char* bad : {"10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/x", "host/8", ""}) {
    auto n = ParseNetwork(bad);
    ASSERT_FALSE(n) << bad;
    EXPECT_EQ(n.error().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace kadr::net
