// Command-line and environment settings for Kafka clients, shared by subcommands.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/status.h"
#include "kafka/kafka_bus.h"

namespace kadr::cli {

struct KafkaFlags {
  std::string brokers;                  // --brokers, KADR_BROKERS
  std::vector<std::string> properties;  // --kafka-property key=value (SASL, TLS, ...)
  int fetch_wait_max_ms = 10;           // --fetch-wait-ms
  int session_timeout_ms = 10000;       // --session-timeout-ms
};

void AddKafkaFlags(CLI::App& app, KafkaFlags& flags, bool brokers_required);
Result<kafka::KafkaOptions> ToKafkaOptions(const KafkaFlags& flags);
// "bootstrap=... security.protocol=SASL_SSL sasl.password=***" for the start-up log.
std::string DescribeKafka(const kafka::KafkaOptions& options);

// Makes sure a kadr topic exists, created with the settings docs/protocol.md requires of it
// (protocol::TopicConfigs); waits up to 5 s.
Status EnsureKadrTopic(kafka::KafkaPublisher& publisher, std::string_view topic, int partitions);

}  // namespace kadr::cli
