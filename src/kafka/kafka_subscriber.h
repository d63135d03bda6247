// KafkaSubscriber: bus::FrameSubscriber on a librdkafka consumer-group member.
//
// At-least-once: auto-commit is on but offsets are stored only through Ack(), in partition
// order (bus::OffsetTracker), so a commit never covers a message whose results are not yet
// delivered. On rebalance the revoked partitions' acknowledged offsets are committed
// synchronously before they are given up; acks that arrive later for them are dropped (the
// new owner redelivers those frames). Close() commits and leaves the group.
//
// Poll/Close from one thread; Ack from any.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "kafka/kafka_options.h"

namespace kadr::kafka {

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

  struct Impl;

 private:
  explicit KafkaSubscriber(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::kafka
