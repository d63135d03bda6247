// The librdkafka implementation of bus/: KafkaOptions (the connection settings), then
// KafkaPublisher, then KafkaSubscriber.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bus/bus.h"

namespace kadr::kafka {

// ---------------------------------------------------------------------------------------------
// Connection settings shared by kadr's Kafka producers and consumers.

inline constexpr int kEmbeddedLingerMs = 1;
// fetch.wait.max.ms on the embedded broker, which holds every fetch this long (below). 3 ms:
// `kadr up` (one inference thread, 2 cores) at concurrency 2 served 0.94 of the raw forward
// loop against 0.81 with 10 ms, and 0.86-0.90 with 5-2 ms; an idle `kadr up` then spends
// 130 ms of CPU per second against 67 (docs/performance.md, ADR 0017).
inline constexpr int kEmbeddedFetchWaitMs = 3;

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
  // kEmbeddedFetchWaitMs where `kadr up` starts the embedded broker.
  int fetch_wait_max_ms = 10;
  // Consumer group session timeout, ms: a worker that dies is replaced after this long.
  int session_timeout_ms = 10000;
  int heartbeat_interval_ms = 1000;
  // Passed through to librdkafka unchanged: security.protocol, sasl.*, ssl.*, client.id, ...
  std::map<std::string, std::string> properties;
};

// Keys whose values are secrets; logged as "***".
bool IsSecretProperty(const std::string& key);

// ---------------------------------------------------------------------------------------------
// KafkaPublisher: bus::FramePublisher on librdkafka's producer.
//
// Idempotent (enable.idempotence: no duplicates or reordering from retries), acks=all,
// bounded queue with blocking back-pressure, oversized messages refused before sending.
// A background thread serves delivery reports, so callbacks run on that thread.
// Thread-safe. Destruction flushes for up to 10 s, then drops what is left (and logs it).

class KafkaPublisher final : public bus::FramePublisher {
 public:
  // Errors: kInvalidArgument for a bad setting.
  static Result<std::unique_ptr<KafkaPublisher>> Create(const KafkaOptions& options);
  ~KafkaPublisher() override;

  Status Publish(bus::Message message, bus::DeliveryCallback on_delivery) override;
  Status Flush(std::chrono::milliseconds timeout) override;

  // Asks the cluster for its metadata: Ok when a broker answers within `timeout`, else
  // kUnavailable naming the brokers. For readiness checks; safe to call from any thread.
  Status CheckBroker(std::chrono::milliseconds timeout);

  // Makes sure `topic` exists: CreateTopics with `partitions` (an existing topic is fine),
  // falling back to the broker's auto-creation where the admin API is not offered (the
  // embedded broker). Errors: kInvalidArgument (bad name), kUnavailable (no answer or the
  // topic still does not exist).
  Status EnsureTopic(const std::string& topic, int partitions, std::chrono::milliseconds timeout);

  struct TopicSettings {
    int partitions = 1;
    int replication_factor = -1;                 // -1: the broker's default
    std::map<std::string, std::string> configs;  // max.message.bytes, retention.ms, ...
  };
  // The same with replication and topic configs (applied only when the topic is created
  // here; an existing topic keeps its own). Returns the topic's partition count: the existing
  // topic's, or settings.partitions when created.
  Result<int> EnsureTopic(const std::string& topic, const TopicSettings& settings,
                          std::chrono::milliseconds timeout);

  struct Impl;

 private:
  explicit KafkaPublisher(std::unique_ptr<Impl> impl);
  void WarmTopic(const std::string& topic);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// KafkaSubscriber: bus::FrameSubscriber on a librdkafka consumer-group member.
//
// At-least-once: auto-commit is on but offsets are stored only through Ack(), in partition
// order (bus::OffsetTracker), so a commit never covers a message whose results are not yet
// delivered. On rebalance the revoked partitions' acknowledged offsets are committed
// synchronously before they are given up; acks that arrive later for them are dropped (the
// new owner redelivers those frames). Close() commits and leaves the group.
//
// Poll/Close from one thread; Ack from any.

struct SubscriberOptions {
  std::string group_id;             // consumer group: one per model
  std::vector<std::string> topics;  // subscribed topics (or ^regex patterns)
  std::string auto_offset_reset = "earliest";
  // How often the topic list is refreshed, ms (0: librdkafka's default, 5 min). Lower it when
  // subscribing to ^regex patterns whose topics appear later (the viewer), or to a topic that
  // may not exist yet.
  int metadata_refresh_ms = 0;
};

class KafkaSubscriber final : public bus::FrameSubscriber {
 public:
  static Result<std::unique_ptr<KafkaSubscriber>> Create(const KafkaOptions& options,
                                                         const SubscriberOptions& sub);
  ~KafkaSubscriber() override;

  std::vector<bus::InboundMessage> Poll(std::size_t max_messages, std::chrono::milliseconds timeout,
                                        std::chrono::milliseconds linger) override;
  void Ack(const bus::AckToken& token) override;
  Status Close() override;
  // Messages the broker no longer had at the consumer's position (deleted by retention, or
  // by the embedded broker's 5 MiB per partition, before they were read), each logged as an
  // error when found. Where the reset did not say the new log start, it is asked for.
  std::vector<bus::Loss> TakeLosses() override;

  struct Impl;

 private:
  explicit KafkaSubscriber(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::kafka
