// FramePublisher and FrameSubscriber: the transport interfaces services are written against.
// Kafka implements them (kafka/); an in-memory fake (fake_bus.h) backs unit tests.
//
// Delivery semantics are at-least-once: a subscriber's message is acknowledged with Ack()
// only after everything it caused has been delivered, and only acknowledged messages are
// committed. Unacknowledged messages are redelivered after a crash or rebalance, so
// consumers recognise duplicates by frame id.
#pragma once

#include <chrono>
#include <functional>
#include <vector>

#include "bus/message.h"
#include "common/status.h"

namespace kadr::bus {

// Called once per published message, from a transport thread, with OK or the final error
// (after the transport's own retries). Must be quick and must not block.
using DeliveryCallback = std::function<void(const Status&)>;

// Thread-safe.
class FramePublisher {
 public:
  virtual ~FramePublisher() = default;

  // Queues `message` for delivery. Blocks up to the publisher's queue timeout when the queue
  // is full (back-pressure). Errors: kTooLarge (over the message size limit),
  // kResourceExhausted (queue still full), kUnavailable (publisher closed). When an error is
  // returned, `on_delivery` is never called.
  virtual Status Publish(Message message, DeliveryCallback on_delivery) = 0;

  // Waits until every queued message is delivered or failed. kDeadlineExceeded on timeout.
  virtual Status Flush(std::chrono::milliseconds timeout) = 0;
};

// One consumer (Kafka: one group member). Poll/Ack/Close from one thread, except Ack,
// which may be called from any thread (e.g. a delivery callback).
class FrameSubscriber {
 public:
  virtual ~FrameSubscriber() = default;

  // Up to `max_messages`, waiting at most `timeout` for the first and `linger` for more.
  // Transport trouble is retried internally and reported as an empty batch.
  virtual std::vector<InboundMessage> Poll(std::size_t max_messages,
                                           std::chrono::milliseconds timeout,
                                           std::chrono::milliseconds linger) = 0;

  // Marks one message done. Commits advance per partition up to the first message that is
  // still not acknowledged.
  virtual void Ack(const AckToken& token) = 0;

  // Commits what is acknowledged and leaves the group. Idempotent.
  virtual Status Close() = 0;
};

}  // namespace kadr::bus
