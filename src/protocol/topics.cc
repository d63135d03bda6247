#include "protocol/topics.h"

#include "protocol/frame.h"

namespace kadr::protocol {
namespace {

constexpr std::string_view kHour = "3600000";
constexpr std::string_view kTenMinutes = "600000";
constexpr std::string_view kDay = "86400000";
constexpr std::string_view kWeek = "604800000";

}  // namespace

std::map<std::string, std::string> TopicConfigs(std::string_view topic) {
  const std::string max_bytes = std::to_string(kTopicMaxMessageBytes);
  std::map<std::string, std::string> c;
  if (topic.starts_with(kFramesTopicPrefix) || topic == kAnnotatedTopic ||
      topic.starts_with(kRepliesTopicPrefix) || topic.starts_with(kVideoRepliesTopicPrefix)) {
    c["max.message.bytes"] = max_bytes;
    c["retention.ms"] = kHour;
  } else if (topic == kLiveAnnotatedTopic) {
    c["max.message.bytes"] = max_bytes;
    c["retention.ms"] = kTenMinutes;
  } else if (topic == kLiveResultsTopic) {
    c["retention.ms"] = kTenMinutes;
  } else if (topic == kDeadLetterTopic) {
    c["max.message.bytes"] = max_bytes;
    c["retention.ms"] = kWeek;
  } else if (topic == kResultsTopic) {
    c["retention.ms"] = kWeek;
  } else if (topic == kJobsTopic) {
    // The latest snapshot of every job, kept as long as the history keeps jobs.
    c["cleanup.policy"] = "compact,delete";
    c["retention.ms"] = kWeek;
  } else if (topic == kVideoJobsTopic) {
    c["retention.ms"] = kDay;
  } else if (topic == kWorkersTopic) {
    c["retention.ms"] = kHour;
  }
  return c;
}

std::vector<TopicSpec> TopicPlan(const std::vector<std::string>& models, int partitions) {
  std::vector<std::string> names;
  names.reserve(models.size() + 7);
  for (const auto& m : models) names.push_back(FramesTopic(m));
  for (const std::string_view t :
       {kResultsTopic, kAnnotatedTopic, kLiveResultsTopic, kLiveAnnotatedTopic, kDeadLetterTopic,
        kWorkersTopic, kJobsTopic, kVideoJobsTopic}) {
    names.emplace_back(t);
  }
  std::vector<TopicSpec> plan;
  plan.reserve(names.size());
  for (auto& name : names) {
    TopicSpec spec;
    spec.partitions = name == kWorkersTopic ? 1 : partitions;
    spec.configs = TopicConfigs(name);
    spec.name = std::move(name);
    plan.push_back(std::move(spec));
  }
  return plan;
}

}  // namespace kadr::protocol
