// An in-memory bus for unit tests of services written against bus.h: topics are vectors of
// messages (one partition each), publishing appends synchronously, subscribers read one or
// more topics from the start. Failure injection: FakePublisher::FailNext,
// FakeSubscriber::AddLoss. Thread-safe.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "bus/bus.h"

namespace kadr::bus {

class FakeBus {
 public:
  // Returns the message's offset in its topic.
  std::int64_t Append(Message m);
  std::vector<Message> Topic(const std::string& topic) const;
  std::size_t Size(const std::string& topic) const;

 private:
  friend class FakeSubscriber;
  mutable std::mutex mu_;
  std::map<std::string, std::vector<Message>> topics_;
};

class FakePublisher final : public FramePublisher {
 public:
  explicit FakePublisher(FakeBus& bus) : bus_(bus) {}
  Status Publish(Message message, DeliveryCallback on_delivery) override;
  Status Flush(std::chrono::milliseconds) override { return Status::Ok(); }

  // The next `n` publishes report `status` to their delivery callback (and are not stored).
  void FailNext(int n, Status status);
  std::size_t max_message_bytes = 1u << 20;

 private:
  FakeBus& bus_;
  std::mutex mu_;
  int fail_next_ = 0;
  Status fail_status_;
};

class FakeSubscriber final : public FrameSubscriber {
 public:
  FakeSubscriber(FakeBus& bus, std::string topic)
      : FakeSubscriber(bus, std::vector{std::move(topic)}) {}
  // Reads every topic of `topics`, each in order (no order between topics).
  FakeSubscriber(FakeBus& bus, std::vector<std::string> topics);
  std::vector<InboundMessage> Poll(std::size_t max_messages, std::chrono::milliseconds timeout,
                                   std::chrono::milliseconds linger) override;
  void Ack(const AckToken& token) override;
  Status Close() override;
  std::vector<Loss> TakeLosses() override;

  // The next TakeLosses reports `loss` (as if the broker had deleted those messages).
  void AddLoss(Loss loss);
  // Offsets acknowledged on the first topic; acked(topic) on any.
  std::set<std::int64_t> acked() const;
  std::set<std::int64_t> acked(const std::string& topic) const;
  bool closed() const;

 private:
  FakeBus& bus_;
  const std::vector<std::string> topics_;
  std::vector<std::size_t> next_;  // per topic
  mutable std::mutex mu_;
  std::map<std::string, std::set<std::int64_t>> acked_;
  std::vector<Loss> losses_;
  bool closed_ = false;
};

}  // namespace kadr::bus
