// Connection settings shared by kadr's Kafka producers and consumers.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <string>

namespace kadr::kafka {

inline constexpr int kEmbeddedLingerMs = 1;

struct KafkaOptions {
  // Bootstrap servers, "host:port[,host:port]".
  std::string brokers = "127.0.0.1:9092";
  // Largest message value accepted, bytes; larger frames are refused with kTooLarge before
  // they reach the broker. Topics need max.message.bytes at least this (docs/protocol.md).
  std::size_t max_message_bytes = 16u << 20;
  // Producer queue bounds: publishing blocks (back-pressure) when either is reached, for up
  // to enqueue_timeout, then fails with kResourceExhausted.
  int queue_max_messages = 10000;
  int queue_max_kbytes = 256 * 1024;
  std::chrono::milliseconds enqueue_timeout{10000};
  // How long the producer keeps retrying one message before reporting it failed, ms.
  int delivery_timeout_ms = 300000;
  // Producer linger, ms. Apache Kafka (bench/transport_bench on a local 4.1.1 broker, 100 KB
  // frames): 0 ms gave a 1.4 ms null-model round trip and kadr/raw-echo throughput 1.12;
  // 1 ms gave 4.8 ms and 0.85, 5 ms 12.7 ms and 1.15. librdkafka still batches what queues
  // while a request is in flight. The embedded broker is faster with 1 ms (4,800 against
  // 4,300 frames/s, same round trip): kEmbeddedLingerMs, set where `kadr up` starts it.
  int linger_ms = 0;
  // Consumer: how long the broker may hold a fetch when no data is waiting. librdkafka 2.0.2's
  // embedded (mock) broker holds an empty fetch this long and is not woken by new data, so
  // each consumer hop costs up to this much (bench/transport_bench, null model, one frame at
  // a time through worker and requester: 10 ms -> 11-22 ms round trip, 5 ms -> 11 ms, 1 ms ->
  // 7 ms; see docs/performance.md). Real brokers answer as soon as data arrives.
  int fetch_wait_max_ms = 10;
  // Consumer group session timeout, ms: a worker that dies is replaced after this long.
  int session_timeout_ms = 10000;
  int heartbeat_interval_ms = 1000;
  // Passed through to librdkafka unchanged: security.protocol, sasl.*, ssl.*, client.id, ...
  std::map<std::string, std::string> properties;
};

// Keys whose values are secrets; logged as "***".
bool IsSecretProperty(const std::string& key);

}  // namespace kadr::kafka
