// Command-line and environment settings for Kafka clients, shared by subcommands.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/metrics.h"
#include "common/status.h"
#include "engine/bus_dispatch.h"
#include "kafka/kafka_bus.h"
#include "protocol/frame.h"

namespace kadr::cli {

struct KafkaFlags {
  std::string brokers;                  // --brokers, KADR_BROKERS
  std::vector<std::string> properties;  // --kafka-property key=value (SASL, TLS, ...)
  int fetch_wait_max_ms = 0;            // --fetch-wait-ms; 0: by broker (10, embedded 3)
  int session_timeout_ms = 10000;       // --session-timeout-ms
  std::size_t frame_budget_mb = 0;      // --frame-budget-mb; 0: by broker (MakeAdmission)
  // --reply-topic-prefix (workers): where frames may send their answers.
  std::vector<std::string> reply_topic_prefixes = {std::string(protocol::kDefaultReplyPrefix)};
};

void AddKafkaFlags(CLI::App& app, KafkaFlags& flags, bool brokers_required);
Result<kafka::KafkaOptions> ToKafkaOptions(const KafkaFlags& flags);
// --frame-budget-mb, for the commands that publish frames (up, gateway, camera).
void AddFrameBudgetFlag(CLI::App& app, KafkaFlags& flags);
// The process's one admission control by bytes (engine/bus_dispatch.h): --frame-budget-mb,
// else the embedded broker's budget (`embedded`) or the default for Apache Kafka.
std::shared_ptr<engine::Admission> MakeAdmission(const KafkaFlags& flags, bool embedded);
// "bootstrap=... security.protocol=SASL_SSL sasl.password=*** fetch.wait.max.ms=10 linger.ms=0"
// for the start-up log.
std::string DescribeKafka(const kafka::KafkaOptions& options);

// --reply-topic-prefix, for the commands that run workers (up, worker).
void AddReplyTopicPrefixFlag(CLI::App& app, KafkaFlags& flags);
// For worker::WorkerOptions::reply_topic_prefixes: the flag's prefixes, or none (any topic)
// when one of them is "".
std::vector<std::string> ReplyTopicPrefixes(const KafkaFlags& flags);

// A worker's consumer of kadr.frames.<model> in `group` (empty: the model's group).
kafka::SubscriberOptions WorkerSubscriberOptions(const std::string& model,
                                                 const std::string& group);
// For worker::WorkerOptions::on_lost: frames the broker deleted before the worker read them
// count in kadr_frames_lost_total{model,reason="deleted_before_read"} of `metrics`.
std::function<void(const bus::Loss&)> CountLostFrames(const std::string& model,
                                                      MetricsRegistry& metrics);

// Makes sure a kadr topic exists, created with the settings docs/protocol.md requires of it
// (protocol::TopicConfigs); waits up to 5 s.
Status EnsureKadrTopic(kafka::KafkaPublisher& publisher, std::string_view topic, int partitions);

}  // namespace kadr::cli
