// The topics a kadr deployment needs and the settings each must have (docs/protocol.md,
// "Topics" and "Size limits and topic settings"). `kadr topics` creates them on Apache Kafka;
// gateways create their own reply topic with TopicConfigs() of it.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace kadr::protocol {

// Largest message a broker must accept: a 16 MiB frame (KafkaOptions::max_message_bytes) plus
// headers and record overhead.
inline constexpr long long kTopicMaxMessageBytes = 17LL << 20;  // 17 MiB

inline constexpr std::string_view kRepliesTopicPrefix = "kadr.replies.";
// Each camera service's own reply topic for the frames of its video jobs:
// kadr.video.replies.<camera id>. Outside kadr.replies.*, so the recorder does not read them.
inline constexpr std::string_view kVideoRepliesTopicPrefix = "kadr.video.replies.";

struct TopicSpec {
  std::string name;
  int partitions = 1;
  std::map<std::string, std::string> configs;  // Kafka topic configs (max.message.bytes, ...)
};

// Topic-level configs for `topic` by its role: max.message.bytes on every topic that carries
// images (frames, annotated, replies, live annotated, dead letters); retention 1 h for frames,
// images and replies (large, only useful while fresh), 10 min for live streams, 7 days for
// results and dead letters, 1 h for worker announcements; kadr.jobs compacted (and 7 days);
// kadr.video.jobs 1 day (a request names an upload that waits on the shared video folder).
std::map<std::string, std::string> TopicConfigs(std::string_view topic);

// Every shared topic, plus kadr.frames.<model> for each of `models`, each with `partitions`
// partitions (kadr.workers: one; announcements are few and keyed per worker).
std::vector<TopicSpec> TopicPlan(const std::vector<std::string>& models, int partitions);

}  // namespace kadr::protocol
