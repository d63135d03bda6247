#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "bus/bus.h"

namespace kadr::bus {
namespace {

using Items = std::vector<std::pair<std::string, std::string>>;

TEST(HeadersTest, StartsEmpty) {
  Headers h;
  EXPECT_TRUE(h.empty());
  EXPECT_TRUE(h.items().empty());
  EXPECT_EQ(h.Get("anything"), std::nullopt);
}

TEST(HeadersTest, GetReturnsTheValueOfAnExactName) {
  Headers h;
  h.Set("kadr-frame-id", "f1");
  EXPECT_FALSE(h.empty());
  EXPECT_EQ(h.Get("kadr-frame-id"), "f1");
  EXPECT_EQ(h.Get("kadr-frame"), std::nullopt);
  EXPECT_EQ(h.Get("KADR-FRAME-ID"), std::nullopt) << "names are case-sensitive, as in Kafka";
}

TEST(HeadersTest, AddAppendsAndKeepsRepeatsInOrder) {
  Headers h;
  h.Add("a", "1");
  h.Add("b", "2");
  h.Add("a", "3");
  EXPECT_EQ(h.items(), (Items{{"a", "1"}, {"b", "2"}, {"a", "3"}}));
}

TEST(HeadersTest, GetReturnsTheLastOfRepeatedNames) {
  Headers h;
  h.Add("a", "1");
  h.Add("b", "2");
  h.Add("a", "3");
  EXPECT_EQ(h.Get("a"), "3");
  EXPECT_EQ(h.Get("b"), "2");
}

TEST(HeadersTest, SetReplacesEveryHeaderOfThatName) {
  Headers h;
  h.Add("a", "1");
  h.Add("b", "2");
  h.Add("a", "3");
  h.Set("a", "4");
  EXPECT_EQ(h.items(), (Items{{"b", "2"}, {"a", "4"}}));
  EXPECT_EQ(h.Get("a"), "4");
}

TEST(HeadersTest, SetOnANewNameAppends) {
  Headers h;
  h.Set("a", "1");
  h.Set("b", "2");
  h.Set("a", "3");
  EXPECT_EQ(h.items(), (Items{{"b", "2"}, {"a", "3"}}));
}

TEST(HeadersTest, EmptyValuesArePresent) {
  Headers h;
  h.Set("a", "");
  EXPECT_EQ(h.Get("a"), "");
  h.Add("a", "x");
  h.Add("a", "");
  EXPECT_EQ(h.Get("a"), "") << "the last one wins even when empty";
}

}  // namespace
}  // namespace kadr::bus
