#include "protocol/topics.h"

#include <set>

#include <gtest/gtest.h>

#include "kafka/kafka_bus.h"
#include "protocol/frame.h"

namespace kadr::protocol {
namespace {

TEST(TopicsTest, ThePlanHasEveryTopicOfTheProtocolOnceWithTheAskedPartitions) {
  const auto plan = TopicPlan({"yolox_nano", "my model"}, 6);
  std::set<std::string> names;
  for (const auto& t : plan) EXPECT_TRUE(names.insert(t.name).second) << "twice: " << t.name;
  EXPECT_EQ(names,
            (std::set<std::string>{"kadr.frames.yolox_nano", "kadr.frames.my_model", "kadr.results",
                                   "kadr.annotated", "kadr.live.results", "kadr.live.annotated",
                                   "kadr.dlq", "kadr.workers", "kadr.jobs", "kadr.video.jobs"}));
  for (const auto& t : plan) {
    EXPECT_EQ(t.partitions, t.name == kWorkersTopic ? 1 : 6) << t.name;
  }
}

TEST(TopicsTest, EveryTopicThatCarriesImagesAcceptsTheLargestFrame) {
  const kafka::KafkaOptions producer;
  for (const std::string name : {"kadr.frames.m", "kadr.annotated", "kadr.live.annotated",
                                 "kadr.dlq", "kadr.replies.gw-1", "kadr.video.replies.cam-1"}) {
    const auto c = TopicConfigs(name);
    ASSERT_TRUE(c.count("max.message.bytes")) << name;
    EXPECT_GT(std::stoll(c.at("max.message.bytes")),
              static_cast<long long>(producer.max_message_bytes))
        << name << ": a frame the producer accepts must fit, headers included";
  }
  // Results are JSON: the broker's default size is enough, their retention is longer.
  EXPECT_FALSE(TopicConfigs(kResultsTopic).count("max.message.bytes"));
  EXPECT_GT(std::stoll(TopicConfigs(kResultsTopic).at("retention.ms")),
            std::stoll(TopicConfigs(FramesTopic("m")).at("retention.ms")));
}

TEST(TopicsTest, JobEventsAreCompactedSoTheLatestSnapshotOfEveryJobStays) {
  const auto c = TopicConfigs(kJobsTopic);
  ASSERT_TRUE(c.count("cleanup.policy"));
  EXPECT_NE(c.at("cleanup.policy").find("compact"), std::string::npos);
}

}  // namespace
}  // namespace kadr::protocol
