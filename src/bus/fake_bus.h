// An in-memory bus for unit tests of services written against bus.h: topics are vectors of
// messages (one partition each), publishing appends synchronously, subscribers read one
// topic from the start. Failure injection: FakePublisher::FailNext. Thread-safe.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "bus/bus.h"

namespace kadr::bus {

class FakeBus {
 public:
  void Append(Message m);
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
  FakeSubscriber(FakeBus& bus, std::string topic) : bus_(bus), topic_(std::move(topic)) {}
  std::vector<InboundMessage> Poll(std::size_t max_messages, std::chrono::milliseconds timeout,
                                   std::chrono::milliseconds linger) override;
  void Ack(const AckToken& token) override;
  Status Close() override;

  std::set<std::int64_t> acked() const;
  bool closed() const;

 private:
  FakeBus& bus_;
  std::string topic_;
  std::size_t next_ = 0;
  mutable std::mutex mu_;
  std::set<std::int64_t> acked_;
  bool closed_ = false;
};

}  // namespace kadr::bus
