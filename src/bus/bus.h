// The bus: the messages in transit (Message, its Headers, AckToken, InboundMessage), then
// FramePublisher and FrameSubscriber, the transport interfaces services are written against.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kadr::bus {

// ---------------------------------------------------------------------------------------------
// Messages on the bus: what a frame or a result looks like in transit, independent of the
// transport (Kafka in production, an in-memory fake in unit tests). Plain values.

// Ordered (name, value) pairs; names may repeat, as in Kafka. Values are UTF-8 text.
class Headers {
 public:
  void Set(std::string name, std::string value);  // replaces every header of that name
  void Add(std::string name, std::string value);  // appends
  std::optional<std::string> Get(std::string_view name) const;  // last one of that name
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }
  bool empty() const { return items_.empty(); }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

struct Message {
  std::string topic;
  std::string key;                  // keeps one stream's messages ordered (one partition)
  std::vector<std::uint8_t> value;  // JPEG bytes for frames, JSON for results
  Headers headers;
};

// Identifies a consumed message for acknowledgement (Kafka: partition + offset).
struct AckToken {
  std::string topic;
  int partition = 0;
  std::int64_t offset = 0;
};

struct InboundMessage {
  Message message;
  AckToken token;
  std::int64_t timestamp_ms = 0;  // broker/producer timestamp, Unix ms; 0 if unknown
};

// A message's value as text (JSON values are read this way; no copy, no check).
std::string_view ValueText(const Message& message);
// "topic/partition/offset", for log lines.
std::string Describe(const AckToken& token);

// ---------------------------------------------------------------------------------------------
// FramePublisher and FrameSubscriber: the transport interfaces services are written against.
// Kafka implements them (kafka/); an in-memory fake (fake_bus.h) backs unit tests.
//
// Delivery semantics are at-least-once: a subscriber's message is acknowledged with Ack()
// only after everything it caused has been delivered, and only acknowledged messages are
// committed. Unacknowledged messages are redelivered after a crash or rebalance, so
// consumers recognise duplicates by frame id.

// Called once per published message, from a transport thread, with OK or the final error
// (after the transport's own retries), and where the broker stored the message (Kafka: its
// partition and offset; offset -1 when it failed or the transport does not say). Must be
// quick and must not block.
using DeliveryCallback = std::function<void(const Status&, const AckToken& stored_at)>;

// Messages a broker deleted before a subscriber read them (retention, or the embedded
// broker's 5 MiB per partition): offsets [from, to) of one partition. `to` is -1 when the
// broker did not say where its log starts now.
struct Loss {
  std::string topic;
  int partition = 0;
  std::int64_t from = 0;
  std::int64_t to = -1;
  // How many messages: to - from, or 1 when `to` is unknown.
  std::int64_t count() const { return to > from ? to - from : 1; }
};
// True when `at` lies in `loss` (a known range only).
bool Covers(const Loss& loss, const AckToken& at);

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

  // The losses found since the last call: messages the broker deleted before this
  // subscriber read them. From Poll's thread (it may ask the broker, briefly).
  virtual std::vector<Loss> TakeLosses() { return {}; }
};

}  // namespace kadr::bus
