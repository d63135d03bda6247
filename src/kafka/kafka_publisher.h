// KafkaPublisher: bus::FramePublisher on librdkafka's producer.
//
// Idempotent (enable.idempotence: no duplicates or reordering from retries), acks=all,
// bounded queue with blocking back-pressure, oversized messages refused before sending.
// A background thread serves delivery reports, so callbacks run on that thread.
// Thread-safe. Destruction flushes for up to 10 s, then drops what is left (and logs it).
#pragma once

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

  struct Impl;

 private:
  explicit KafkaPublisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::kafka
