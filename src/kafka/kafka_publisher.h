// KafkaPublisher: bus::FramePublisher on librdkafka's producer.
//
// Idempotent (enable.idempotence: no duplicates or reordering from retries), acks=all,
// bounded queue with blocking back-pressure, oversized messages refused before sending.
// A background thread serves delivery reports, so callbacks run on that thread.
// Thread-safe. Destruction flushes for up to 10 s, then drops what is left (and logs it).
#pragma once

#include <map>
#include <memory>

#include "bus/bus.h"
#include "kafka/kafka_options.h"

namespace kadr::kafka {

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

}  // namespace kadr::kafka
